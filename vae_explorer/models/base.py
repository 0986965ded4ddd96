"""The one contract every model follows, and the typed output of `forward`.

Loss scale, stated once for the whole package: every term is summed over
pixels and latent dimensions per sample, then averaged over the batch, so a
weight such as beta means the same thing at any batch size.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Callable

import torch
from torch import nn


class ModelOutput:
    """What `forward` returns.

    recon: (B, C, H, W) reconstruction mean, in image space.
    latent: (B, D) the code the decoder saw (sampled z for VAEs).
    loss: scalar, the sum of `terms`: the training objective.
    terms: named scalar parts of `loss`.
    stats: named scalar diagnostics, not in the loss.

    recon and stats may be given as zero-argument functions, run on first read: the
    training loop reads neither, so its steps skip a sigmoid (and under autocast a
    cast) over every pixel, and the diagnostics' small ops.
    """

    def __init__(self, recon: torch.Tensor | Callable[[], torch.Tensor], latent: torch.Tensor, loss: torch.Tensor,
                 terms: dict[str, torch.Tensor],
                 stats: dict[str, torch.Tensor] | Callable[[], dict[str, torch.Tensor]] | None = None):
        self._recon, self._stats = recon, stats
        self.latent, self.loss, self.terms = latent, loss, terms

    @property
    def recon(self) -> torch.Tensor:
        if callable(self._recon):
            self._recon = self._recon()
        return self._recon

    @property
    def stats(self) -> dict[str, torch.Tensor]:
        if callable(self._stats):
            self._stats = self._stats()
        return self._stats or {}


@dataclass
class ModelConfig:
    """Fields every model shares; each model's config extends it with its own."""

    input_shape: tuple[int, int, int] = (1, 8, 8)  # (C, H, W)
    latent_dim: int = 2
    arch: str = "mlp"  # "mlp" or "conv" backbone (networks.py)
    hidden: tuple[int, ...] = (256,)  # MLP widths, encoder side
    channels: tuple[int, ...] = (32, 64)  # conv channels, encoder side
    activation: str = "relu"
    likelihood: str = "bernoulli"  # likelihoods.LIKELIHOODS
    sigma: float = 0.1  # fixed scale of the gaussian / laplace likelihoods
    squash: bool = True  # sigmoid on the decoder mean

    def __post_init__(self):
        # JSON round trips give lists; keep tuples so configs compare equal.
        self.input_shape = tuple(int(v) for v in self.input_shape)
        self.hidden = tuple(int(v) for v in self.hidden)
        self.channels = tuple(int(v) for v in self.channels)
        if len(self.input_shape) != 3 or min(self.input_shape) < 1:
            raise ValueError(f"input_shape must be (C, H, W) with positive sizes, got {self.input_shape}")
        if self.latent_dim < 1:
            raise ValueError(f"latent_dim must be at least 1, got {self.latent_dim}")
        if self.arch not in ("mlp", "conv"):
            raise ValueError(f"arch must be 'mlp' or 'conv', got {self.arch!r}")
        if self.sigma <= 0:
            raise ValueError(f"sigma must be positive, got {self.sigma}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown config fields for {cls.__name__}: {sorted(unknown)}")
        return cls(**d)


class Autoencoder(nn.Module):
    """Base class: images (B, C, H, W) in [0, 1] <-> flat codes (B, latent_dim).

    Subclasses implement `encode`, `decode` and `forward`. The explorer only calls
    `encode`/`decode`/`reconstruct` (and `sample` where `can_sample`), so every
    model works in every view.
    """

    name: str = "autoencoder"
    can_sample: bool = False  # True where decoding z ~ N(0, I) is meaningful

    def __init__(self, config):
        super().__init__()
        self.config = config

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.config.input_shape)

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> ModelOutput:
        raise NotImplementedError

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decode z ~ N(0, temperature^2 I). Only a VAE prior makes this a real sample."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.latent_dim, generator=generator, device="cpu").to(device) * temperature
        return self.decode(z)
