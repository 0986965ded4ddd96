"""vae_explorer: autoencoders and VAEs to train, inspect and explore.

The flat public API below is imported on first use (PEP 562), so `import
vae_explorer` costs nothing and each submodule pays only for what it imports
itself: the CLI's `models` command never loads the training code, the UMAP
worker never loads torch's optimizers. The browser explorer lives in
`vae_explorer.server` and `app.py`.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_API = {
    "checkpoints": ("CheckpointError", "find_checkpoint", "load_checkpoint", "read_metadata", "save_checkpoint"),
    "data": ("DATASETS", "DATA_KINDS", "Dataset", "DatasetError", "load_dataset"),
    "devices": ("resolve_device",),
    "memory": ("MemoryEstimate",),
    "metrics": ("evaluate", "psnr"),
    "models": ("LIKELIHOODS", "MODELS", "Autoencoder", "ModelOutput", "build_model", "model_config",
               "register_model"),
    "runs": ("RunError", "RunSpec"),
    "training": ("FitResult", "TrainConfig", "TrainEvent", "TrainingError", "fit"),
}
_WHERE = {name: module for module, names in _API.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'vae_explorer' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value  # looked up once
    return value


def __dir__():
    return sorted([*globals(), *__all__])
