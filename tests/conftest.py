"""Shared fixtures: the built-in digits, the repo's MNIST copy, small trained models."""
from __future__ import annotations

import os
from pathlib import Path

# gradio_client's huggingface_hub would look huggingface.co up when a Client is made: the tests run offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest
import torch

from vae_explorer import TrainConfig, build_model, fit, load_dataset
from vae_explorer.server.launcher import serve

REPO = Path(__file__).resolve().parent.parent

# Test lanes: `pytest -m "not slow"` runs the functional core in well under a minute; the README's
# test command runs everything. Tests that start a server, a subprocess or a browser are slow.
SERVER_FIXTURES = {"app_server", "server", "client", "ui"}


def pytest_collection_modifyitems(items):
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.server)
        if any(item.get_closest_marker(m) for m in ("server", "subprocess", "browser")):
            item.add_marker(pytest.mark.slow)
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
    model = build_model("vae", **digits.model_settings(), latent_dim=4)
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
    from vae_explorer.server import Explorer

    ex = Explorer(copy_checkpoints(tmp_path_factory.mktemp("checkpoints")))
    yield ex
    ex.close()


@pytest.fixture(scope="module")
def app_server(tmp_path_factory):
    """The real app on a free port over a copy of the checkpoints: yields (url, explorer)."""
    from vae_explorer.server import Explorer

    ex = Explorer(copy_checkpoints(tmp_path_factory.mktemp("served-checkpoints")))
    with serve(ex) as url:
        yield url, ex


def shown(output):
    """An image output as a client gets it, ready for `Image.open`: the app's answer images travel inline
    (a dict with a data URL, read here into a file object); a large one is a file path. An update (a dict
    with a value, from the views whose visibility goes with each answer) gives its value."""
    import io

    from vae_explorer.server.answers import image_bytes

    if isinstance(output, dict) and "value" in output:
        output = output["value"]
    if isinstance(output, dict) and str(output.get("url") or "").startswith("data:"):
        return io.BytesIO(image_bytes(output))
    return output


def write_fault_table(path: Path, n: int = 1500, seed: int = 0) -> Path:
    """A CSV whose rare `fault` rows break the relation the normal rows follow (b = 2a + [colour is red]) by
    ±4: two standard deviations of b, forty of the relation's own noise. With an id column to ignore and a
    `kind` label. A model whose code has room for a and the colour alone (tabular_ae, latent 2) finds the
    faults: ROC-AUC 1.0 after 30 epochs."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    colour = rng.choice(["red", "green", "blue"], n)
    fault = rng.random(n) < 0.05
    b = 2 * a + (colour == "red") + np.where(fault, rng.choice([-4, 4], n), 0) + 0.1 * rng.normal(size=n)
    pd.DataFrame({"id": np.arange(n), "a": a.round(4), "b": b.round(4), "colour": colour,
                  "kind": np.where(fault, "fault", "normal")}).to_csv(path, index=False)
    return path


def wait_for(predicate, timeout: float, poll: float = 0.05) -> bool:
    """Poll `predicate` until it is true (True) or `timeout` seconds pass (False)."""
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return False
