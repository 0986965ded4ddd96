"""Checkpoints written before the contract redesign (tests/fixtures, made by commit c327530's
CLI) still load, evaluate to the metrics they recorded, and resume training."""
from __future__ import annotations

import shutil

import pytest
import torch

from vae_explorer import TrainConfig, evaluate, find_checkpoint, fit, load_checkpoint, load_dataset, read_metadata

from .conftest import REPO

FIXTURES = REPO / "tests" / "fixtures"


def test_an_old_vq_checkpoint_loads_and_reproduces_its_recorded_test_metrics():
    path = FIXTURES / "old_main_vq_ema.safetensors"
    model, meta = load_checkpoint(path)
    assert meta["model"] == "vq_vae" and model.config.codebook_update == "ema"
    assert "quantizers.0.codebook" in model.learned_state()  # an EMA codebook: a buffer, shown on cards
    data = load_dataset("digits")
    torch.manual_seed(0)
    now = evaluate(model, data.test_x, data.kind)
    recorded = meta["metrics"][-1]["test"]
    # A VQ model in eval mode is deterministic: the old code's numbers come back.
    for key in ("loss", "recon", "commitment", "mse_per_pixel", "psnr", "perplexity"):
        assert now[key] == pytest.approx(recorded[key], rel=1e-5, abs=1e-6), key


@pytest.mark.parametrize("name", ["old_main_vq_ema", "old_main_conv_vae_fp16"])
def test_an_old_checkpoint_resumes_with_the_new_code(tmp_path, name):
    path = shutil.copy(FIXTURES / f"{name}.safetensors", tmp_path / f"{name}.safetensors")
    before = read_metadata(path)
    model, _ = load_checkpoint(path)
    training = before["training"]
    config = TrainConfig(epochs=3, batch_size=training["batch_size"], lr=training["lr"], seed=training["seed"],
                         device="cpu", precision=training["precision"], iwae_k=0, checkpoint=str(path))
    result = fit(model, load_dataset("digits"), config, resume=True)
    after = read_metadata(path)
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert after["metrics"][:2] == before["metrics"][:2]  # the old epochs are kept as they were
    if training["precision"] == "fp16":  # the loss scale came back from the old file and went on
        assert "grad_scaler" in before["train_state"] and "grad_scaler" in after["train_state"]
    assert find_checkpoint(tmp_path / name) == path  # the name without its suffix finds it
