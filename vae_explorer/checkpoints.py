"""Self-describing checkpoints: one .safetensors file holding the weights (no
pickle anywhere) and, in its JSON header, the model name and config, dataset,
training settings, per-epoch metrics, creation time and package version.
Optional "train." tensors (optimizer moments, RNG; layout in `train_state`)
make a run resumable; optional "motion." tensors hold the map of a fixed set of
test codes after each epoch (`vae_explorer.motion`), kept in shipped checkpoints.

Writes are atomic (temporary file, fsync, rename), so a crash mid-write leaves
the previous checkpoint intact.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from . import __version__
from .models import MODELS, Autoencoder, build_model

SUFFIX = ".safetensors"
META_KEY = "vae_explorer"
FORMAT_VERSION = 1
DEFAULT_DIR = "checkpoints"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read; the message names the file."""


def checkpoint_path(path: str | os.PathLike) -> Path:
    """Where a checkpoint named `path` is written: the path with the .safetensors suffix."""
    path = Path(path)
    return path if path.suffix == SUFFIX else path.with_name(path.name + SUFFIX)


def find_checkpoint(name: str | os.PathLike) -> Path:
    """The file a user means by `name`: the path as given, with the suffix added, or a bare name
    in checkpoints/; the name `train --out` was given works everywhere."""
    path = Path(name)
    candidates = [path, checkpoint_path(path)]
    if len(path.parts) == 1:
        candidates.append(checkpoint_path(Path(DEFAULT_DIR) / path))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise CheckpointError(f"{name}: no such checkpoint file (looked for {', '.join(map(str, candidates[1:]))})")


def save_checkpoint(path, model: Autoencoder, meta: dict, train_state: dict[str, torch.Tensor] | None = None,
                    motion: dict[str, torch.Tensor] | None = None) -> Path:
    """Write weights + metadata (+ optional resumable training state, + optional training-in-motion frames)
    atomically; returns the path."""
    path = checkpoint_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    for k, v in (train_state or {}).items():
        tensors[f"train.{k}"] = v.detach().cpu().contiguous().clone()
    for k, v in (motion or {}).items():
        tensors[f"motion.{k}"] = v.detach().cpu().contiguous().clone()
    header = {
        "format": "vae-explorer-checkpoint", "format_version": FORMAT_VERSION,
        "model": model.name, "config": model.config.to_dict(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "version": __version__, **meta,
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={META_KEY: json.dumps(header)})
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide checkpoints from other users
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a writer killed mid-save
        stale.unlink(missing_ok=True)
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        os.fsync(dir_fd)
        os.close(dir_fd)
    except OSError:
        pass
    return path


def read_metadata(path) -> dict:
    """The JSON header only (cheap: no tensors are read)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(META_KEY)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({e})") from None
    if raw is None:
        raise CheckpointError(f"{path}: a safetensors file without vae_explorer metadata")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: corrupt metadata ({e})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: corrupt metadata (the metadata is not a JSON object)")
    if not isinstance(meta.get("model"), str) or meta["model"] not in MODELS:  # a list would not even hash
        raise CheckpointError(f"{path}: unknown model {meta.get('model')!r}")
    return meta


def _tensor_shapes(path: Path, prefix: str) -> dict[str, tuple[int, ...]]:
    """Names and shapes from the header alone: no tensor is read."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k[len(prefix):]: tuple(f.get_slice(k).get_shape()) for k in f.keys() if k.startswith(prefix)}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: tensors could not be read ({e})") from None


def _read_tensors(path: Path, prefix: str) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k[len(prefix):]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: tensors could not be read ({e})") from None


def load_checkpoint(path, device: str | torch.device = "cpu") -> tuple[Autoencoder, dict]:
    """Rebuild the model from the file alone; returns (model in eval mode, metadata)."""
    path = Path(path)
    meta = read_metadata(path)
    try:
        config = type(MODELS[meta["model"]].preset).from_dict(meta["config"])
        # Shapes first, on the meta device: a header claiming a huge model must not allocate it.
        with torch.device("meta"):
            skeleton = build_model(meta["model"], config)
    except (TypeError, ValueError, KeyError, AttributeError, RuntimeError, OverflowError) as e:
        raise CheckpointError(f"{path}: invalid model config ({' '.join(str(e).split())[:200]})") from None
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    found = _tensor_shapes(path, "model.")
    if found != expected:
        wrong = [k for k in expected if k in found and found[k] != expected[k]]
        detail = (f"{wrong[0]} is {list(found[wrong[0]])} in the file, {list(expected[wrong[0]])} in the model"
                  if wrong else f"missing {sorted(set(expected) - set(found))[:3]}, "
                                f"unexpected {sorted(set(found) - set(expected))[:3]}")
        raise CheckpointError(f"{path}: weights do not fit a {meta['model']} with this config: {detail}")
    model = build_model(meta["model"], config)  # now bounded by the tensors the file really holds
    state = _read_tensors(path, "model.")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[:3]
        raise CheckpointError(f"{path}: weights do not fit a {meta['model']} with this config: {' '.join(first)}") from None
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{path}: non-finite weights in {', '.join(bad[:3])}")
    return model.to(device).eval(), meta


def load_train_state(path) -> dict[str, torch.Tensor]:
    """The resumable training state (optimizer, RNG) saved with a checkpoint, or {}."""
    return _read_tensors(Path(path), "train.")


def load_motion(path) -> dict[str, torch.Tensor]:
    """The training-in-motion frames saved with a checkpoint (`vae_explorer.motion.MotionRecord.tensors`), or {}."""
    return _read_tensors(Path(path), "motion.")


# ---- the training state's layout -----------------------------------------------------------
# Flat tensors (safetensors holds no nesting): "optim.<param index>.<name>" for the optimizer's
# per-parameter state (torch.optim.Adam's layout), "rng.cpu" / "rng.cuda"; the JSON part holds the
# optimizer's param_groups and, for fp16, the GradScaler's state.

def train_state(optimizer, scaler: torch.amp.GradScaler) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer + RNG (+ fp16 loss scale) as flat tensors and JSON, for an exact resume."""
    sd = optimizer.state_dict()
    tensors = {f"optim.{i}.{k}": v for i, s in sd["state"].items() for k, v in s.items() if torch.is_tensor(v)}
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    info = {"param_groups": sd["param_groups"]}
    if scaler.is_enabled():
        info["grad_scaler"] = scaler.state_dict()
    return tensors, info


def restore_train_state(optimizer, scaler: torch.amp.GradScaler, tensors: dict[str, torch.Tensor],
                        info: dict) -> None:
    state: dict[int, dict] = defaultdict(dict)
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, i, k = key.split(".", 2)
            state[int(i)][k] = v
    optimizer.load_state_dict({"state": dict(state), "param_groups": info["param_groups"]})
    if scaler.is_enabled() and "grad_scaler" in info:
        scaler.load_state_dict(info["grad_scaler"])
    torch.set_rng_state(tensors["rng.cpu"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
