"""Shared fixtures: the built-in digits, the repo's MNIST copy, small trained models."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

# gradio_client's huggingface_hub would look huggingface.co up when a Client is made: the tests run offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest
import torch

from vae_explorer import TrainConfig, build_model, fit, load_dataset

REPO = Path(__file__).resolve().parent.parent
SHARED_DATASETS = REPO.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="session")
def mnist_root():
    if not (SHARED_DATASETS / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
        pytest.skip(f"MNIST not present at {SHARED_DATASETS} (the repo's CI machine has it beside the checkout)")
    return str(SHARED_DATASETS)


@pytest.fixture(scope="session")
def trained_vae(digits):
    torch.manual_seed(0)
    model = build_model("vae", input_shape=digits.input_shape, latent_dim=4)
    return fit(model, digits, TrainConfig(epochs=15, batch_size=64, iwae_k=0, history_images=0, device="cpu")).model


def copy_checkpoints(dest: Path) -> Path:
    """A private copy of the shipped checkpoints (and their cached projections), so tests that
    train or tamper with files never touch the repo's."""
    import shutil

    shutil.copytree(REPO / "checkpoints", dest, dirs_exist_ok=True)
    return dest


@pytest.fixture(scope="session")
def explorer(tmp_path_factory):
    """The explorer's shared state over a copy of the shipped checkpoints (handlers as functions)."""
    from vae_explorer.views import Explorer

    ex = Explorer(copy_checkpoints(tmp_path_factory.mktemp("checkpoints")))
    yield ex
    ex.jobs.close()
    ex.umap.close()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(explorer):
    """The real app over `explorer`, on a free port of 127.0.0.1: yields its URL, closes it after."""
    import app

    demo = app.build_app(explorer)
    port = free_port()
    app.launch(demo, port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        demo.close()
        explorer.jobs.close()
        explorer.umap.close()


@pytest.fixture(scope="module")
def app_server(tmp_path_factory):
    """The real app on a free port over a copy of the checkpoints: yields (url, explorer)."""
    from vae_explorer.views import Explorer

    ex = Explorer(copy_checkpoints(tmp_path_factory.mktemp("served-checkpoints")))
    with serve(ex) as url:
        yield url, ex
