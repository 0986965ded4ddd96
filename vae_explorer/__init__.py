"""vae_explorer: autoencoders and VAEs to train, inspect and explore.

The flat public API: models (registry, contract), data, training, checkpoints,
metrics. The browser explorer (app.py) calls only these.
"""
__version__ = "0.1.0"

from .checkpoints import CheckpointError, load_checkpoint, read_metadata, save_checkpoint
from .data import DATASETS, DatasetError, ImageData, load_dataset, to_float
from .metrics import evaluate, psnr
from .models import LIKELIHOODS, MODELS, Autoencoder, ModelOutput, build_model, model_config
from .noise import NOISE_KINDS, add_noise
from .training import FitResult, TrainConfig, TrainEvent, TrainingError, fit, resolve_device

__all__ = [
    "Autoencoder", "CheckpointError", "DATASETS", "DatasetError", "FitResult", "ImageData", "LIKELIHOODS",
    "MODELS", "ModelOutput", "NOISE_KINDS", "TrainConfig", "TrainEvent", "TrainingError", "add_noise",
    "build_model", "evaluate", "fit", "load_checkpoint", "load_dataset", "model_config", "psnr",
    "read_metadata", "resolve_device", "save_checkpoint", "to_float",
]
