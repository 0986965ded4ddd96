"""Adding a model family touches only its class and one registry line: a family defined here,
registered at run time, trains through the CLI, and every explorer action, the model card,
evaluation, sampling, the registry-parametrized contract tests and a background training run
work with it, with no change to the package."""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vae_explorer import MODELS, cli, read_metadata, register_model
from vae_explorer.models import Autoencoder, ModelConfig, ModelOutput, setting
from vae_explorer.models.base import FITTED, GUESS_PRIOR
from vae_explorer.server import Explorer

from . import test_models

NAME = "tied_ae"


@dataclass
class TiedConfig(ModelConfig):
    input_dropout: float = setting(0.1, "fraction of input pixels dropped while training")


class TiedAE(Autoencoder):
    """A one-layer autoencoder whose decoder is its encoder's transpose (tied weights)."""

    def __init__(self, config: TiedConfig):
        super().__init__(config)
        n = math.prod(config.input_shape)
        self.weight = nn.Parameter(torch.randn(config.latent_dim, n) / n**0.5)
        self.code_bias = nn.Parameter(torch.zeros(config.latent_dim))
        self.pixel_bias = nn.Parameter(torch.zeros(n))

    def encode(self, x):  # (B, C, H, W) -> (B, D)
        return F.linear(x.flatten(1), self.weight, self.code_bias)

    def decode(self, z):  # (B, D) -> (B, C, H, W)
        return torch.sigmoid(self._logits(z))

    def _logits(self, z):
        return (z @ self.weight + self.pixel_bias).view(-1, *self.input_shape)

    def forward(self, x):
        z = self.encode(F.dropout(x, self.config.input_dropout, self.training))
        logits = self._logits(z)
        terms = {"recon": F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1).mean()}
        return ModelOutput(recon=lambda: torch.sigmoid(logits), latent=z, loss=terms["recon"], terms=terms)


def register():
    register_model(NAME, TiedAE, TiedConfig(), "Tied-weights autoencoder: the decoder is the encoder transposed.")


if __name__ in os.environ.get("VAE_EXPLORER_PLUGINS", ""):  # imported as a plugin by a training subprocess
    register()


@pytest.fixture
def registered(monkeypatch):
    register()
    # The server's background training is a fresh process: it imports this module to know the family.
    monkeypatch.setenv("VAE_EXPLORER_PLUGINS", __name__)
    yield
    MODELS.pop(NAME)


@pytest.mark.subprocess
def test_a_family_defined_outside_the_package_works_everywhere(registered, tmp_path, capsys):
    folder = tmp_path / "checkpoints"
    # The CLI has a flag for the new family's own setting, and trains it.
    code = cli.main(["train", "--model", NAME, "--epochs", "1", "--batch-size", "64", "--latent-dim", "2",
                     "--input-dropout", "0.2", "--iwae-k", "0", "--out", str(folder / "tied"), "--quiet"])
    assert code == 0, capsys.readouterr().err
    meta = read_metadata(folder / "tied.safetensors")
    assert meta["model"] == NAME and meta["config"]["input_dropout"] == 0.2
    assert cli.main(["eval", "--checkpoint", str(folder / "tied"), "--iwae-k", "5"]) == 0
    assert cli.main(["sample", "--checkpoint", str(folder / "tied"), "-n", "4", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 0

    ex = Explorer(folder, projection_cache=tmp_path / "projections")
    try:
        for projection in ("auto", "raw", "pca"):
            assert ex.latent_map("tied", projection).figure.data
        assert ex.compare_point("tied", "tied", 3)[3].startswith("Test image **3**")
        assert ex.manifold("tied", 5)[0].size[0] > 0
        assert "| tied |" in ex.reconstruct(["tied"], "0-3")[1]
        assert "Threshold" in ex.anomalies("tied", 90)[2]
        sliders, image, _ = ex.slider_setup("tied", 1)
        assert len(sliders) == 2 and image.size[0] > 0
        assert ex.decode_sliders("tied", 1, [s["value"] + 0.5 for s in sliders]).size == image.size
        assert ex.interpolation_strip(["tied"], 0, 1, steps=4)[0].size[0] > 0
        assert ex.interpolate_at("tied", 0, 1, 0.5).size[0] > 0
        assert ex.sample_labels("tied") == (GUESS_PRIOR.label, FITTED.label)  # the base class's, not overridden
        assert "**Left:**" in ex.sample("tied", 1.0, 0)[2]
        assert len(ex.denoise(["tied"], 0)[2]) == 2  # the model and the PCA baseline
        assert "Tied-weights autoencoder" in ex.card("tied") and "input_dropout" in ex.card("tied")
        assert "is not this model's prior" in ex.prior_fit("tied")[2]  # the base class's sample sources
        assert "needs known factors" in ex.disentanglement("tied")[2]  # digits has none
        assert "does not have a linear decoder" in ex.linear_pca("tied")[2]  # the base class answers None
        assert "has no codebook" in ex.codebook("tied")[3] and ex.codebook("tied")[0] is None  # base: None

        # From the page: the background run imports the family through VAE_EXPLORER_PLUGINS.
        ex.train_start(NAME, "digits", "tied_bg", "input_dropout=0.3", latent_dim=2, epochs=1, batch_size=64)
        deadline = time.time() + 90
        while ex.train_running() and time.time() < deadline:
            time.sleep(0.1)
        assert "status **finished**" in ex.train_status()[0], ex.train_status()[0]
        assert read_metadata(folder / "tied_bg.safetensors")["config"]["input_dropout"] == 0.3
    finally:
        ex.close()


def test_the_registry_parametrized_contract_covers_the_new_family(registered, tmp_path):
    for shape in test_models.INPUT_SHAPES:
        test_models.test_contract_shapes_loss_and_gradients(NAME, shape)
    test_models.test_save_load_round_trip_gives_identical_outputs(NAME, tmp_path)
    test_models.test_every_sample_source_the_model_names_works(NAME)
