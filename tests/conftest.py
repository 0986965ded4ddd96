"""Shared fixtures: the built-in digits, the repo's MNIST copy, small trained models."""
from __future__ import annotations

from pathlib import Path

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
