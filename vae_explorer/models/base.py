"""The one contract every model follows: what it computes (`encode`, `decode`,
`forward` -> `ModelOutput`) and what the shell may ask it (how to sample, extra
evaluation metrics, learned state worth showing, what kind of code it has).

Loss scale, stated once for the whole package: every term is summed over
pixels and latent dimensions per sample, then averaged over the batch, so a
weight such as beta means the same thing at any batch size.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, fields
from typing import Callable

import numpy as np
import torch
from torch import nn

from . import page
from .likelihoods import LIKELIHOODS
from .page import PageDecoder

log = logging.getLogger(__name__)


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


def setting(default, help: str, **extra):
    """A config field with its help text: the CLI makes a flag of it and the page a setting."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple for sequence defaults")
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class ModelConfig:
    """Fields every model shares; each family's config extends it with its own."""

    input_shape: tuple[int, ...] = setting((1, 8, 8), "the shape of one item; set from the dataset", data=True)
    latent_dim: int = setting(2, "code size")

    def __post_init__(self):
        # JSON round trips give lists; keep tuples so configs compare equal.
        self.input_shape = tuple(int(v) for v in self.input_shape)
        if not self.input_shape or min(self.input_shape) < 1:
            raise ValueError(f"input_shape must have positive sizes, got {self.input_shape}")
        if self.latent_dim < 1:
            raise ValueError(f"latent_dim must be at least 1, got {self.latent_dim}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown config fields for {cls.__name__}: {sorted(unknown)}")
        return cls(**d)


@dataclass
class ImageModelConfig(ModelConfig):
    """The image families' shared fields: backbone, widths, activation, likelihood."""

    arch: str = setting("mlp", "backbone: mlp (Linear layers) or conv (strided convolutions)", choices=("mlp", "conv"))
    hidden: tuple[int, ...] = setting((256,), "MLP widths on the encoder side, e.g. 400 or 512,256")
    channels: tuple[int, ...] = setting((32, 64), "conv channels on the encoder side, e.g. 32,64",
                                        aliases=("--conv-channels",))
    activation: str = setting("relu", "hidden-layer activation", choices=("relu", "leaky_relu", "none"))
    likelihood: str = setting("bernoulli", "p(x|z), the reconstruction likelihood", choices=LIKELIHOODS)
    sigma: float = setting(0.1, "fixed scale of the gaussian / laplace likelihood")
    squash: bool = setting(True, "sigmoid on the decoder mean (keeps images in [0, 1])")

    def __post_init__(self):
        super().__post_init__()
        self.hidden = tuple(int(v) for v in self.hidden)
        self.channels = tuple(int(v) for v in self.channels)
        if len(self.input_shape) != 3:
            raise ValueError(f"input_shape must be (C, H, W), got {self.input_shape}")
        if self.arch not in ("mlp", "conv"):
            raise ValueError(f"arch must be 'mlp' or 'conv', got {self.arch!r}")
        if not self.sigma > 0:
            raise ValueError(f"sigma must be positive, got {self.sigma}")


@dataclass(frozen=True)
class SampleSource:
    """One way a model turns random numbers into outputs, as the Sample view shows it."""

    name: str  # passed back to `Autoencoder.sample`
    label: str  # a picture's title
    explanation: str  # what the picture shows, Markdown
    generative: bool = False  # a real sample of the model's generative distribution


GUESS_PRIOR = SampleSource(
    "prior", "z ~ N(0, T²·I)",
    "z ~ N(0, T²·I). A plain autoencoder was never asked to put its codes there, so most of these decode to "
    "blurs or nothing: this is why AE sampling fails.")
FITTED = SampleSource(
    "fitted", "z ~ a Gaussian fitted to the model's codes",
    "z from a Gaussian fitted to the model's own test codes: closer, yet the codes fill an irregular shape, and "
    "the gaps between classes still decode to non-images. A VAE fixes this by training the codes towards N(0, I).")


class Autoencoder(nn.Module):
    """Base class: images (B, C, H, W) in [0, 1] <-> flat codes (B, latent_dim).

    Subclasses implement `encode`, `decode` and `forward`, and override the questions
    below where their answer differs. The explorer only calls these, so every model
    works in every view.

    A model's construction makes its tensors with torch's factory functions only (no
    .item(), no numpy), so it can be built on the meta device: that is how a run's
    memory is estimated before any of it is allocated (memory.py).
    """

    name: str = "autoencoder"  # set to the registry name by build_model
    data_kind: str = "image"  # the kind of items it encodes (data.DATA_KINDS)
    code_kind: str = "continuous"  # or "quantized": decoded codes snap to a codebook in `encode`

    def __init__(self, config):
        super().__init__()
        self.config = config

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.config.input_shape)

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    def example_input(self, n: int = 1):
        """n neutral items of the model's input (zeros): for counting FLOPs, probing shapes."""
        return torch.zeros(n, *self.input_shape)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> ModelOutput:
        raise NotImplementedError

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    # ---- what the shell asks ---------------------------------------------------------------

    def sample_sources(self) -> tuple[SampleSource, ...]:
        """The ways `sample` can draw, the model's own first (the Sample view shows the first two)."""
        return GUESS_PRIOR, FITTED

    @torch.no_grad()
    def sample(self, n: int, source: str | None = None, temperature: float = 1.0,
               generator: torch.Generator | None = None, codes: np.ndarray | None = None) -> torch.Tensor:
        """Decode n random codes: (n, C, H, W). prior: z ~ N(0, T² I). fitted: z ~ N(mean, T² cov) of
        `codes` (the model's own codes, (N, D))."""
        source = source or self.sample_sources()[0].name
        if n < 1 or not temperature > 0:
            raise ValueError("need at least one sample and a positive temperature")
        eps = torch.randn(n, self.latent_dim, generator=generator)
        if source == "prior":
            z = eps * temperature
        elif source == "fitted":
            if codes is None or len(codes) < 2:
                raise ValueError("fitted sampling needs the model's codes")
            c = torch.as_tensor(np.asarray(codes, np.float64))
            cov = torch.cov(c.T).reshape(self.latent_dim, self.latent_dim)
            # Cholesky with a little jitter: codes of a collapsed dimension give a singular covariance.
            jitter = 1e-6 * max(float(cov.diagonal().mean()), 1e-6)
            chol = torch.linalg.cholesky(cov + jitter * torch.eye(self.latent_dim, dtype=cov.dtype))
            z = (c.mean(0) + temperature * eps.double() @ chol.T).float()
        else:
            names = ", ".join(s.name for s in self.sample_sources())
            raise ValueError(f"{self.name} samples from: {names}; not {source!r}")
        return self.decode(z.to(next(self.parameters()).device))

    def posterior(self, x: torch.Tensor):
        """q(z | x) where the model has one (a VAE): an object with `mean`, `std` and `kl_per_dim()`
        ((B, D) nats against N(0, I)); None where the code is deterministic."""
        return None

    def linear_decoder(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(W (P, D), b (P,)) where `decode` is exactly affine, decode(z).flatten(1) == z @ W.T + b (a linear
        AE, whose column space of W the Diagnostics tab sets against PCA); None where it is not."""
        return None

    def codebooks(self) -> list[torch.Tensor] | None:
        """The codebook of each quantization level, (K, d) each, level 1 first, where codes snap to codebook
        vectors (a VQ-VAE: one level; residual VQ: several); None where the code is not quantized."""
        return None

    def code_indices(self, x: torch.Tensor) -> torch.Tensor | None:
        """(B, levels, T) int64: the codebook index each item's T code tokens use at each level (what
        `encode` snaps to); None where the code is not quantized."""
        return None

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Decode codes given as indices (B, L', T) into the first L' levels' codebooks: each token is the sum
        of its levels' vectors, -1 adding nothing at that level. The first l levels of `code_indices(x)` give
        residual VQ's reconstruction after level l; one index tiled over every token shows what a code means."""
        raise ValueError(f"{self.name} has no codebook")

    def extra_metrics(self, x: torch.Tensor, iwae_k: int) -> dict[str, torch.Tensor]:
        """Per-item metrics beyond the loss terms, (B,) each (a VAE's IWAE bound); {} when it has none."""
        return {}

    def describe_inputs(self) -> str:
        """Markdown describing what the model takes, for its card ("" where the config says it all)."""
        return ""

    def training_defaults(self) -> dict:
        """How the model is trained where a run leaves the choice to it ("auto"): optimizer (adam or
        adamw), weight_decay, eps, schedule (constant or cosine_restarts) and restart_epochs."""
        return {"optimizer": "adam", "schedule": "constant"}

    def learned_state(self) -> dict[str, torch.Tensor]:
        """Learned tensors that are not parameters (an EMA codebook): shown on the model card."""
        return {}

    def page_decoder(self) -> PageDecoder | None:
        """`decode` as plain layer ops and float32 weights that the page runs itself (models/page.py), or
        None where it cannot, and the page asks the server. The default describes a `decoder` module
        followed by a `likelihood`'s mean, which covers the image families; a family decoding otherwise
        overrides this (or keeps None)."""
        decoder, likelihood = getattr(self, "decoder", None), getattr(self, "likelihood", None)
        if not isinstance(decoder, nn.Module) or not hasattr(likelihood, "page_ops"):
            return None
        try:
            return page.describe(decoder, likelihood.page_ops(), self.latent_dim, self.input_shape)
        except page.Unsupported as e:
            log.info("%s: the decoder stays on the server: %s", self.name, e)
            return None
