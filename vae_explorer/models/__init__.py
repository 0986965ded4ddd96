"""The model registry: name -> (class, preset config, one-line description).
Variants are presets, not copies. A new family is its file here plus one
`register_model` line; the rest of the package only asks the registry and the
model contract (base.py).

Models defined outside the package register themselves when their module is
imported; `load_plugins` imports the modules named in $VAE_EXPLORER_PLUGINS
(comma-separated), and the CLI and the app call it, so the server's background
training knows them too.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field, fields, replace

from .ae import AE, AEConfig
from .base import Autoencoder, ModelConfig, ModelOutput, SampleSource, setting
from .likelihoods import LIKELIHOODS
from .tabular import TableAE, TableModelConfig, TableVAE, TableVAEConfig
from .vae import VAE, VAEConfig
from .vq import VQVAE, VQConfig


@dataclass(frozen=True)
class ModelEntry:
    cls: type[Autoencoder]
    preset: ModelConfig
    description: str  # one line, for model cards and pickers
    shipped: dict = field(default_factory=dict)  # settings of its shipped checkpoint beyond the preset (CLI names)

    def settings(self) -> dict[str, object]:
        """Config field name -> dataclass field, without those the data sets (input_shape)."""
        return {f.name: f for f in fields(self.preset) if not f.metadata.get("data")}


MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, cls: type[Autoencoder], preset: ModelConfig, description: str,
                   shipped: dict | None = None) -> None:
    if not isinstance(preset, ModelConfig):
        raise TypeError(f"{name}: the preset must be a ModelConfig, got {type(preset).__name__}")
    MODELS[name] = ModelEntry(cls, preset, description, dict(shipped or {}))


register_model("ae", AE, AEConfig(), "Undercomplete MLP autoencoder: a bottleneck code, deterministic.")
register_model("conv_ae", AE, AEConfig(arch="conv"),
               "Convolutional autoencoder: stride-2 convolutions down, transposed convolutions up.",
               shipped={"latent_dim": 8})
# No nonlinearity and a Gaussian (MSE) likelihood: learns the PCA subspace (Baldi & Hornik 1989).
register_model("linear_ae", AE, AEConfig(hidden=(), activation="none", likelihood="gaussian", squash=False),
               "Linear autoencoder: no nonlinearity, MSE; learns the PCA subspace.", shipped={"lr": 3e-3})
register_model("sparse_ae", AE, AEConfig(latent_dim=128, code_activation="relu", l1_weight=0.05),
               "Sparse autoencoder: an L1 penalty on the code activations, may be overcomplete.")
register_model("denoising_ae", AE, AEConfig(latent_dim=16, noise_std=0.5),
               "Denoising autoencoder: learns to reconstruct clean images from corrupted ones.")
register_model("vae", VAE, VAEConfig(), "Variational autoencoder: Gaussian posterior, KL to N(0, I), trained on the ELBO.")
register_model("beta_vae", VAE, VAEConfig(beta=4.0),
               "β-VAE: the VAE with the KL weighted by β, for smoother, more disentangled codes.")
register_model("conv_vae", VAE, VAEConfig(arch="conv"), "Convolutional VAE.", shipped={"latent_dim": 8})
register_model("vq_vae", VQVAE, VQConfig(), "VQ-VAE: codes snapped to the nearest of K learned codebook vectors.")
register_model("rvq_vae", VQVAE, VQConfig(levels=4),
               "Residual VQ-VAE: several codebooks, each quantizing what the previous left.")
TABLE_SHIPPED = {"dataset": "breast_cancer", "batch_size": 32, "epochs": 100}
register_model("tabular_vae", TableVAE, TableVAEConfig(),
               "Tabular VAE: embedded categorical and standardized continuous columns, a Gaussian per continuous "
               "and a softmax per categorical column.", shipped=TABLE_SHIPPED)
register_model("tabular_vae_notes", TableVAE, TableVAEConfig(output="embedding"),
               "Tabular VAE with the course notes' loss: smooth-L1 against the input embeddings.",
               shipped=TABLE_SHIPPED)
register_model("tabular_ae", TableAE, TableModelConfig(),
               "Tabular autoencoder: the tabular VAE's network without the variational part.", shipped=TABLE_SHIPPED)


def shipped_checkpoint(name: str) -> str:
    """The name of the checkpoint shipped for registry model `name`: DATASET_MODEL (scripts/make_checkpoints.py)."""
    return f"{model_entry(name).shipped.get('dataset', 'digits')}_{name}"


def model_entry(name: str) -> ModelEntry:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    return MODELS[name]


def model_config(name: str, **overrides) -> ModelConfig:
    """The preset config of `name` with `overrides` applied (None values ignored)."""
    return replace(model_entry(name).preset, **{k: v for k, v in overrides.items() if v is not None})


def build_model(name: str, config: ModelConfig | None = None, **overrides) -> Autoencoder:
    cls = model_entry(name).cls
    config = config if config is not None else model_config(name, **overrides)
    model = cls(config)
    model.name = name  # the registry name travels with the instance (checkpoints, model cards)
    return model


def load_plugins() -> None:
    """Import the modules named in $VAE_EXPLORER_PLUGINS: each registers its models."""
    for module in filter(None, (m.strip() for m in os.environ.get("VAE_EXPLORER_PLUGINS", "").split(","))):
        importlib.import_module(module)

__all__ = [
    "AE", "AEConfig", "Autoencoder", "LIKELIHOODS", "MODELS", "ModelConfig", "ModelEntry", "ModelOutput",
    "SampleSource", "TableAE", "TableModelConfig", "TableVAE", "TableVAEConfig", "VAE", "VAEConfig", "VQConfig", "VQVAE", "build_model", "load_plugins", "model_config", "model_entry",
    "register_model", "setting", "shipped_checkpoint",
]
