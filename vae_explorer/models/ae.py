"""Deterministic autoencoders: undercomplete, convolutional, linear (= PCA),
sparse and denoising are all this one class with different configs (presets
in models/__init__.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..data.images import add_noise
from .base import Autoencoder, ImageModelConfig, ModelOutput, setting
from .likelihoods import build_likelihood
from .networks import activation_layer, build_decoder, build_encoder


@dataclass
class AEConfig(ImageModelConfig):
    code_activation: str = setting("none", "activation on the code: relu gives non-negative (sparse) codes",
                                   choices=("none", "relu", "leaky_relu"))
    l1_weight: float = setting(0.0, "sparse AE: L1 penalty on the code, per sample", aliases=("--l1",))
    noise_std: float = setting(0.0, "denoising AE: std of the Gaussian noise added to inputs (clipped to [0, 1])")
    mask_prob: float = setting(0.0, "denoising AE: fraction of input pixels zeroed")

    def __post_init__(self):
        super().__post_init__()
        if not (self.l1_weight >= 0 and self.noise_std >= 0):
            raise ValueError("l1_weight and noise_std must be >= 0")
        if not 0 <= self.mask_prob < 1:
            raise ValueError(f"mask_prob must be in [0, 1), got {self.mask_prob}")


class AE(Autoencoder):
    name = "ae"

    def __init__(self, config: AEConfig):
        super().__init__(config)
        self.encoder = build_encoder(config, config.latent_dim)
        self.code_activation = activation_layer(config.code_activation)
        self.decoder = build_decoder(config, config.latent_dim)
        self.likelihood = build_likelihood(config.likelihood, config.input_shape, config.sigma, config.squash)

    def corrupt(self, x: torch.Tensor) -> torch.Tensor:
        """The denoising AE's input corruption (identity for the other presets)."""
        x = add_noise(x, "gaussian", self.config.noise_std)
        return add_noise(x, "masking", self.config.mask_prob)

    def encode(self, x):  # (B, C, H, W) -> (B, D)
        return self.code_activation(self.encoder(x))

    def decode(self, z):  # (B, D) -> (B, C, H, W)
        return self.likelihood.mean(self.decoder(z))

    @torch.no_grad()
    def linear_decoder(self):
        # Affine only for an MLP decoder without nonlinearities and a likelihood whose mean is its parameters
        # (the linear_ae preset); then the product of its Linear layers is the whole map.
        c = self.config
        if c.arch != "mlp" or (c.hidden and c.activation != "none") or not self.likelihood.identity_mean:
            return None
        weight, bias = torch.eye(c.latent_dim), torch.zeros(c.latent_dim)
        for layer in self.decoder.net:
            if isinstance(layer, nn.Linear):
                weight, bias = layer.weight.float() @ weight, layer.weight.float() @ bias + layer.bias.float()
            elif not isinstance(layer, (nn.Identity, nn.Unflatten)):
                return None
        return weight.cpu(), bias.cpu()

    def forward(self, x):
        # The denoising objective: reconstruct the clean x from a corrupted copy,
        # in training and in evaluation alike, so test loss measures denoising.
        z = self.encode(self.corrupt(x))
        params = self.decoder(z)
        terms = {"recon": self.likelihood.nll(params, x).mean()}
        if self.config.l1_weight > 0:
            terms["l1"] = self.config.l1_weight * z.abs().sum(1).mean()
        loss = sum(terms.values())
        return ModelOutput(recon=lambda: self.likelihood.mean(params), latent=z, loss=loss, terms=terms)
