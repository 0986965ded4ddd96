"""Datasets as whole uint8 tensors with a fixed test split.

Each dataset is loaded once into memory, (N, C, H, W) uint8 plus int64 labels
(-1 where there are none); training slices shuffled index batches from these
tensors on the training device instead of going through a per-item DataLoader.
"""
from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "folder")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
DEFAULT_DATA_ROOT = os.environ.get("VAE_EXPLORER_DATA", "data")


class DatasetError(ValueError):
    """A dataset that cannot be loaded; the message says what was expected where."""


@dataclass
class ImageData:
    name: str
    train_x: torch.Tensor  # (N, C, H, W) uint8
    train_y: torch.Tensor  # (N,) int64, -1 = unlabeled
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str] = field(default_factory=list)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])

    def to(self, device) -> "ImageData":
        return ImageData(self.name, self.train_x.to(device), self.train_y.to(device),
                         self.test_x.to(device), self.test_y.to(device), self.classes)

    def describe(self) -> dict:
        return {"name": self.name, "input_shape": list(self.input_shape),
                "train_size": len(self.train_x), "test_size": len(self.test_x), "classes": self.classes}


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in [0, 1], in one pass (true division promotes to float32)."""
    return x / 255.0


def _split(x: torch.Tensor, y: torch.Tensor, test_fraction: float, seed: int = 0):
    # A fixed permutation, so the test set is the same on every machine and every run.
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_test = max(1, int(round(len(x) * test_fraction)))
    test, train = perm[:n_test], perm[n_test:]
    return x[train], y[train], x[test], y[test]


def _load_digits():
    # scikit-learn ships the digits as a small CSV (64 pixels in 0..16, then the label). Reading it
    # directly is the same data as sklearn's load_digits without importing sklearn (seconds at start-up).
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz" if spec else None
    if path is not None and path.is_file():
        table = np.loadtxt(path, delimiter=",")
        pixels, target = table[:, :-1].reshape(-1, 8, 8), table[:, -1]
    else:
        from sklearn.datasets import load_digits

        d = load_digits()
        pixels, target = d.images, d.target
    x = torch.from_numpy(np.round(pixels * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)  # (1797, 1, 8, 8)
    y = torch.from_numpy(target.astype(np.int64))
    return ImageData("digits", *_split(x, y, 0.2), classes=[str(i) for i in range(10)])


_TORCHVISION = {
    # name: (torchvision class name, folder it reads, files it expects there)
    "mnist": ("MNIST", "MNIST/raw", ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                     "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST/raw", ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                                           "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]),
    "cifar10": ("CIFAR10", "cifar-10-batches-py", ["data_batch_1", "...", "data_batch_5", "test_batch"]),
}


_MNIST_CLASSES = {  # as torchvision names them, so checkpoints agree whichever reader loaded the data
    "mnist": [f"{i} - {w}" for i, w in enumerate("zero one two three four five six seven eight nine".split())],
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"],
}


def _read_idx(path: Path) -> np.ndarray:
    """One IDX file (the MNIST format: magic, dims, then uint8 data), raw or .gz."""
    import gzip

    raw = path.read_bytes() if path.is_file() else gzip.decompress(path.with_name(path.name + ".gz").read_bytes())
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetError(f"{path.name}: not an IDX file of unsigned bytes")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != math.prod(dims):
        raise DatasetError(f"{path.name}: truncated ({data.size} values for dimensions {dims})")
    return data.reshape(dims)


def _load_idx_files(name: str, root: str) -> ImageData | None:
    """MNIST and Fashion-MNIST straight from their IDX files (raw or .gz) when all are there:
    the same arrays torchvision reads, without importing it (over a second at start-up)."""
    _, folder, files = _TORCHVISION[name]
    base = Path(root).expanduser() / folder
    if not all((base / f).is_file() or (base / (f + ".gz")).is_file() for f in files):
        return None
    trx, try_, tex, tey = (torch.from_numpy(_read_idx(base / f).copy()) for f in files)
    return ImageData(name, trx.unsqueeze(1), try_.long(), tex.unsqueeze(1), tey.long(), classes=_MNIST_CLASSES[name])


def _load_torchvision(name: str, root: str, download: bool):
    if name in _MNIST_CLASSES and (data := _load_idx_files(name, root)) is not None:
        return data
    import torchvision.datasets as tvd

    cls_name, folder, files = _TORCHVISION[name]
    cls = getattr(tvd, cls_name)
    try:
        train, test = cls(root, train=True, download=False), cls(root, train=False, download=False)
    except (RuntimeError, OSError) as missing:
        if not download:
            raise DatasetError(_missing_message(name, root, folder, files, missing)) from None
        try:
            train, test = cls(root, train=True, download=True), cls(root, train=False, download=True)
        except Exception as failed:  # network refused, DNS, HTTP errors, read-only root...
            raise DatasetError(_missing_message(name, root, folder, files, failed, tried_download=True)) from None

    def as_tensor(ds):
        data = ds.data if isinstance(ds.data, torch.Tensor) else torch.from_numpy(np.asarray(ds.data))
        x = data.unsqueeze(1) if data.ndim == 3 else data.permute(0, 3, 1, 2)  # -> (N, C, H, W)
        return x.contiguous().to(torch.uint8), torch.as_tensor(ds.targets, dtype=torch.int64)

    (trx, try_), (tex, tey) = as_tensor(train), as_tensor(test)
    return ImageData(name, trx, try_, tex, tey, classes=[str(c) for c in train.classes])


def _missing_message(name, root, folder, files, error, tried_download=False) -> str:
    where = Path(root).expanduser().resolve() / folder
    detail = " ".join(str(error).split())[:300]  # one line, however chatty the underlying error
    attempt = f"; downloading failed too ({type(error).__name__}: {detail})" if tried_download else ""
    return (f"{name} not found: expected {', '.join(files)} in {where}{attempt}. "
            f"Put the files there or pass --data-root to the folder that holds {folder.split('/')[0]}/.")


def _load_folder(root: str, image_size: int, channels: int | None):
    from PIL import Image, UnidentifiedImageError

    base = Path(root).expanduser()
    if not base.is_dir():
        raise DatasetError(f"folder dataset: {base.resolve()} is not a directory of images")
    paths = sorted(p for p in base.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise DatasetError(f"folder dataset: no images ({', '.join(IMAGE_SUFFIXES)}) found under {base.resolve()}")
    images, skipped = [], []
    for p in paths:
        try:
            with Image.open(p) as im:
                im.load()
                images.append((p, im.copy()))
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError) as e:
            skipped.append(f"{p.name} ({e})")
    if not images:
        raise DatasetError(f"folder dataset: none of the {len(paths)} files under {base.resolve()} could be read: "
                           + "; ".join(skipped[:3]))
    if channels is None:  # colour if any image has colour
        channels = 3 if any(im.mode not in ("1", "L", "LA", "I", "I;16", "F") for _, im in images) else 1
    from .images import pil_to_uint8

    x = torch.stack([pil_to_uint8(im, (channels, image_size, image_size)) for _, im in images])
    # Labels from the first sub-folder under root (ImageFolder layout); -1 for loose files.
    rel = [p.relative_to(base).parts for p, _ in images]
    classes = sorted({r[0] for r in rel if len(r) > 1})
    y = torch.tensor([classes.index(r[0]) if len(r) > 1 else -1 for r in rel], dtype=torch.int64)
    if len(x) < 2:
        raise DatasetError(f"folder dataset: {base.resolve()} has only {len(x)} readable image; need at least 2")
    return ImageData(f"folder:{base.name}", *_split(x, y, 0.1), classes=classes)


def _resize(data: ImageData, image_size: int | None, channels: int | None) -> ImageData:
    def fix(x: torch.Tensor) -> torch.Tensor:
        if channels is not None and x.shape[1] != channels:
            x = x.float().mean(1, keepdim=True).round().to(torch.uint8) if channels == 1 else x.expand(-1, channels, -1, -1)
        if image_size is not None and x.shape[-1] != image_size:
            x = F.interpolate(x.float(), size=(image_size, image_size), mode="bilinear", antialias=True,
                              align_corners=False).round().clamp(0, 255).to(torch.uint8)
        return x.contiguous()

    return ImageData(data.name, fix(data.train_x), data.train_y, fix(data.test_x), data.test_y, data.classes)


@functools.lru_cache(maxsize=8)
def load_dataset(name: str = "digits", root: str | None = None, image_size: int | None = None,
                 channels: int | None = None, download: bool = True) -> ImageData:
    """Load a dataset once (cached per process). Treat the returned tensors as read-only.

    name: one of DATASETS. root: where torchvision datasets live (default
    $VAE_EXPLORER_DATA or ./data), or the image folder for "folder".
    image_size / channels: optional resize and grey<->RGB conversion.
    """
    if name == "digits":
        data = _load_digits()
    elif name in _TORCHVISION:
        data = _load_torchvision(name, root or DEFAULT_DATA_ROOT, download)
    elif name == "folder":
        if root is None:
            raise DatasetError("folder dataset: pass --data-root pointing at a folder of images")
        return _load_folder(root, image_size or 32, channels)
    else:
        raise DatasetError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return _resize(data, image_size, channels)


def load_dataset_for(meta: dict, root: str | None = None) -> ImageData:
    """The dataset a checkpoint was trained on, as its metadata describes it
    (name, root, size, channels); `root` overrides the recorded data root."""
    ds = meta.get("dataset", {})
    recorded = str(ds.get("name", "digits"))
    name = "folder" if recorded.startswith("folder:") else recorded
    data = load_dataset(name, root or ds.get("root"), ds.get("image_size"), ds.get("channels"))
    shape = tuple(meta.get("config", {}).get("input_shape", data.input_shape))
    if tuple(data.input_shape) != shape:
        raise DatasetError(f"{name} images are {tuple(data.input_shape)} but the model expects {shape}")
    return data
