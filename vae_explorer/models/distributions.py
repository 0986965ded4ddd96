"""The VAE posterior q(z | x) as an object, so the reparameterization trick and
the KL formula live in one place (after diffusers' DiagonalGaussianDistribution).
"""
from __future__ import annotations

import math

import torch


class DiagonalGaussian:
    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor):
        self.mean = mean  # (B, D)
        # Clamp keeps exp() finite when an untrained encoder emits huge values.
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, n: int | None = None) -> torch.Tensor:
        """Reparameterized z = mu + sigma * eps: (B, D), or (n, B, D) when n is given."""
        shape = self.mean.shape if n is None else (n, *self.mean.shape)
        eps = torch.randn(shape, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * eps

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl_per_dim(self) -> torch.Tensor:
        """KL(q_d || N(0, 1)) of each dimension in closed form (Kingma & Welling 2014, appendix B): (B, D)."""
        return 0.5 * (self.mean.square() + self.logvar.exp() - 1.0 - self.logvar)

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)): (B,)."""
        return self.kl_per_dim().sum(-1)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z | x) summed over dims; z is (..., B, D) -> (..., B)."""
        return (-0.5 * ((z - self.mean) / self.std).square() - 0.5 * self.logvar - 0.5 * math.log(2 * math.pi)).sum(-1)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the last dim."""
    return (-0.5 * z.square() - 0.5 * math.log(2 * math.pi)).sum(-1)
