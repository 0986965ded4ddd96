"""Taking a model's results elsewhere: its test codes with labels as CSV and as the TensorBoard Embedding
Projector's files, figures as PNG and interactive HTML, and a run bundle (the checkpoint, its description,
its metrics and the command that trains it again). Plain functions over arrays, files and checkpoint
metadata; the CLI's `export` and the page's Export view call them.
"""
from __future__ import annotations

import io
import json
import math
import shlex
import zipfile
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .checkpoints import read_metadata
from .latent import encode_items
from .models import model_entry

SPRITE_LIMIT = 8192  # the projector's WebGL texture: the sprite may be at most 8192 pixels on a side
PROJECTOR_FILES = ("tensors.tsv", "metadata.tsv", "sprite.png", "projector_config.pbtxt")


class ExportError(ValueError):
    """An export that cannot be made; the message says why."""


# ---- codes ---------------------------------------------------------------------------------

def test_codes(model, data) -> np.ndarray:
    """(N, D) float32: `encode` of every test item of `data` (AE code, VAE mean, VQ vector)."""
    return encode_items(model, data.test_x, data.kind).numpy()


def label_names(data) -> list[str]:
    # Tabs and newlines would break the projector's TSV rows; commas are quoted in the CSV.
    return [data.label(i).replace("\t", " ").replace("\n", " ") for i in range(len(data.test_x))]


def codes_csv(codes: np.ndarray, labels: np.ndarray, names: list[str]) -> str:
    """The codes as CSV: a header, then per item z0..z{D-1}, its label index and label name.

    Codes come first and are written with 9 significant digits, so float32 values read back exactly:
    np.loadtxt(f, delimiter=",", skiprows=1, usecols=range(D)) returns the codes.
    """
    codes = np.asarray(codes, np.float32)
    d = codes.shape[1]
    lines = [",".join([*(f"z{i}" for i in range(d)), "label", "label_name"])]
    for row, y, name in zip(codes, np.asarray(labels).tolist(), names):
        quoted = '"' + str(name).replace('"', '""') + '"'
        lines.append(",".join([*(f"{v:.9g}" for v in row.tolist()), str(int(y)), quoted]))
    return "\n".join(lines) + "\n"


# ---- the Embedding Projector ---------------------------------------------------------------

def sprite(images: np.ndarray) -> tuple[Image.Image, int]:
    """Thumbnails (N, H, W) or (N, H, W, 3) uint8 of square items -> (the projector's sprite, thumbnail side).

    The projector wants one square image of ceil(sqrt(N)) × ceil(sqrt(N)) square thumbnails in row-major
    order, the first item at the top left, empty cells black; at most SPRITE_LIMIT pixels on a side, so
    bigger thumbnails are shrunk to fit.
    """
    n, h, w = images.shape[:3]
    if h != w:
        raise ExportError(f"the projector's sprite needs square thumbnails; these are {h}×{w}")
    per_row = max(1, math.ceil(math.sqrt(n)))
    side = min(h, SPRITE_LIMIT // per_row)
    if side < 1:
        raise ExportError(f"{n:,} items are too many for one {SPRITE_LIMIT}-pixel sprite")
    mode = "RGB" if images.ndim == 4 else "L"
    sheet = Image.new(mode, (per_row * side, per_row * side), 0)
    for i, item in enumerate(images):
        tile = Image.fromarray(item, mode)
        if side != h:
            tile = tile.resize((side, side), Image.BILINEAR)
        sheet.paste(tile, ((i % per_row) * side, (i // per_row) * side))
    return sheet, side


def projector_config(tensor_shape: tuple[int, int], sprite_side: int | None, name: str = "codes") -> str:
    """projector_config.pbtxt: a ProjectorConfig in protobuf text format, one embedding (TensorBoard's
    projector_config.proto: EmbeddingInfo with tensor_name, tensor_path, tensor_shape, metadata_path and
    sprite {image_path, single_image_dim: width, single_image_dim: height})."""
    lines = ["embeddings {", f"  tensor_name: {json.dumps(name)}", '  tensor_path: "tensors.tsv"',
             f"  tensor_shape: {tensor_shape[0]}", f"  tensor_shape: {tensor_shape[1]}",
             '  metadata_path: "metadata.tsv"']
    if sprite_side is not None:
        lines += ["  sprite {", '    image_path: "sprite.png"', f"    single_image_dim: {sprite_side}",
                  f"    single_image_dim: {sprite_side}", "  }"]
    return "\n".join(lines + ["}"]) + "\n"


def projector_files(codes: np.ndarray, labels: np.ndarray, names: list[str], images: np.ndarray | None,
                    name: str = "codes") -> dict[str, bytes]:
    """The Embedding Projector's files by name: tensors.tsv (one code per line, tab-separated, no header),
    metadata.tsv (a header "index<TAB>label<TAB>label_name", then one line per code: with more than one
    column the projector reads the first line as the header), sprite.png (where items are pictures) and
    projector_config.pbtxt naming them."""
    codes = np.asarray(codes, np.float32)
    tensors = "".join("\t".join(f"{v:.9g}" for v in row) + "\n" for row in codes.tolist())
    meta = "index\tlabel\tlabel_name\n" + "".join(
        f"{i}\t{int(y)}\t{n}\n" for i, (y, n) in enumerate(zip(np.asarray(labels).tolist(), names)))
    files = {"tensors.tsv": tensors.encode(), "metadata.tsv": meta.encode()}
    side = None
    if images is not None:
        sheet, side = sprite(images)
        buf = io.BytesIO()
        sheet.save(buf, format="PNG")
        files["sprite.png"] = buf.getvalue()
    files["projector_config.pbtxt"] = projector_config(codes.shape, side, name).encode()
    return files


def thumbnails(data) -> np.ndarray | None:
    """(N, H, W) or (N, H, W, 3) uint8 pictures of the test items for the sprite; None where items are not
    pictures (table rows)."""
    if data.kind.shown_as != "image":
        return None
    x = data.kind.prepare(data.test_x).clamp(0, 1)  # (N, C, H, W) in [0, 1]
    pixels = (x * 255).round().to(torch.uint8).numpy()
    return pixels[:, 0] if pixels.shape[1] == 1 else pixels[:, :3].transpose(0, 2, 3, 1)


def zip_files(files: dict[str, bytes], folder: str = "") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, content in files.items():
            z.writestr(f"{folder}/{name}" if folder else name, content)
    return buf.getvalue()


# ---- figures -------------------------------------------------------------------------------

def figure_html(fig) -> str:
    """A plotly figure as a page that works offline: plotly.js is inside it."""
    return fig.to_html(include_plotlyjs=True, full_html=True)


def figure_png(fig, width: int = 900, height: int | None = None) -> bytes:
    """A plotly figure as PNG, drawn by kaleido (which runs a local Chrome/Chromium; no network)."""
    try:
        return fig.to_image(format="png", width=width, height=height or fig.layout.height or 500)
    except Exception as e:  # kaleido missing, or no Chrome/Chromium for it to drive
        raise ExportError(f"PNG export needs kaleido and a Chrome or Chromium browser on this machine "
                          f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}); "
                          "the HTML export works without them") from None


# ---- run bundles ---------------------------------------------------------------------------

def run_argv(meta: dict, out: str) -> list[str]:
    """The `python -m vae_explorer train` arguments that train this checkpoint's model again, saved at `out`:
    the model and its settings (those that differ from the preset), the data it was read from, and every
    training setting that differs from the default, from the checkpoint's own metadata."""
    from .runs import DataSpec, RunSpec  # runs imports the training loop: only when a bundle is made
    from .training import TrainConfig

    entry = model_entry(meta["model"])
    config = meta.get("config", {})
    settings = {}
    for name in entry.settings():
        if name in config:
            value = config[name]
            value = tuple(value) if isinstance(value, list) else value
            if value != getattr(entry.preset, name):
                settings[name] = value
    ds = meta.get("dataset", {})
    recorded = str(ds.get("name", "digits"))
    data = {"dataset": recorded.split(":", 1)[0], "data_root": ds.get("root"), "image_size": ds.get("image_size"),
            "image_channels": ds.get("channels"), "data_file": ds.get("path")}
    for key, value in (ds.get("options") or {}).items():  # a table's reading options
        data[key] = ",".join(map(str, value)) if isinstance(value, list) else value
    known = {f.name for f in fields(DataSpec)}
    data_spec = DataSpec(**{k: v for k, v in data.items() if k in known and v is not None})
    training = dict(meta.get("training", {}))
    device = str(training.get("device", "auto"))
    # The device the run had, as a choice that exists elsewhere too: cuda:1 -> cuda.
    training["device"] = "cuda" if device.startswith("cuda") else device if device in ("cpu", "mps") else "auto"
    train = {f.name: training[f.name] for f in fields(TrainConfig) if f.name in training and f.name != "checkpoint"}
    if train.get("optimizer") == "adam" and "weight_decay" in train:  # resolved defaults, not settings
        train.pop("weight_decay")
    spec = RunSpec(meta["model"], settings, data_spec, TrainConfig(**train), out=out)
    return spec.to_argv()


def run_command(meta: dict, out: str) -> str:
    """The shell command that trains this checkpoint again (torchrun where it was trained on several
    processes)."""
    world = int(meta.get("training", {}).get("world_size", 1) or 1)
    head = (f"torchrun --nproc_per_node {world} -m vae_explorer train" if world > 1 else
            "python -m vae_explorer train")
    return head + " " + " ".join(shlex.quote(w) for w in run_argv(meta, out))


def run_bundle(checkpoint: str | Path, card: str | None = None) -> dict[str, bytes]:
    """The files of a run bundle: the checkpoint, its description (model.json: the metadata without the
    per-epoch metrics; model_card.md when `card` is given), metrics.json, and command.sh, which trains the
    same model with the same settings again into reproduced/<name>."""
    path = Path(checkpoint)
    meta = read_metadata(path)
    stem = path.name[: -len(".safetensors")] if path.name.endswith(".safetensors") else path.name
    description = {k: v for k, v in meta.items() if k not in ("metrics", "train_state")}
    files = {path.name: path.read_bytes(),
             "model.json": json.dumps(description, indent=2).encode(),
             "metrics.json": json.dumps(meta.get("metrics", []), indent=2).encode(),
             "command.sh": ("#!/bin/sh\n# Trains this model again with the settings recorded in its checkpoint.\n"
                            + run_command(meta, f"reproduced/{stem}") + "\n").encode()}
    if card:
        files["model_card.md"] = card.encode()
    return files
