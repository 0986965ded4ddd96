"""The model registry: names -> (class, preset config). Variants are presets, not copies."""
from __future__ import annotations

from dataclasses import replace

from .ae import AE, AEConfig
from .base import Autoencoder, ModelConfig, ModelOutput
from .likelihoods import LIKELIHOODS
from .vae import VAE, VAEConfig
from .vq import VQVAE, VQConfig

MODELS: dict[str, tuple[type[Autoencoder], ModelConfig]] = {
    "ae": (AE, AEConfig()),
    "conv_ae": (AE, AEConfig(arch="conv")),
    # No nonlinearity and a Gaussian (MSE) likelihood: learns the PCA subspace (Baldi & Hornik 1989).
    "linear_ae": (AE, AEConfig(hidden=(), activation="none", likelihood="gaussian", squash=False)),
    "sparse_ae": (AE, AEConfig(latent_dim=128, code_activation="relu", l1_weight=0.05)),
    "denoising_ae": (AE, AEConfig(latent_dim=16, noise_std=0.5)),
    "vae": (VAE, VAEConfig()),
    "beta_vae": (VAE, VAEConfig(beta=4.0)),
    "conv_vae": (VAE, VAEConfig(arch="conv")),
    "vq_vae": (VQVAE, VQConfig()),
    "rvq_vae": (VQVAE, VQConfig(levels=4)),
}


def _lookup(name: str) -> tuple[type[Autoencoder], ModelConfig]:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    return MODELS[name]


def model_config(name: str, **overrides) -> ModelConfig:
    """The preset config of `name` with `overrides` applied (None values ignored)."""
    _, preset = _lookup(name)
    return replace(preset, **{k: v for k, v in overrides.items() if v is not None})


def build_model(name: str, config: ModelConfig | None = None, **overrides) -> Autoencoder:
    cls, _ = _lookup(name)
    config = config if config is not None else model_config(name, **overrides)
    model = cls(config)
    model.name = name  # the registry name travels with the instance (checkpoints, model cards)
    return model


__all__ = [
    "AE", "AEConfig", "Autoencoder", "LIKELIHOODS", "MODELS", "ModelConfig", "ModelOutput",
    "VAE", "VAEConfig", "VQConfig", "VQVAE", "build_model", "model_config",
]
