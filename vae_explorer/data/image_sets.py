"""Image datasets as whole uint8 tensors with a fixed test split: the built-in
digits, MNIST / Fashion-MNIST / CIFAR-10 (torchvision's files and downloader),
and a folder of the user's images.

Each dataset is loaded once into memory, (N, C, H, W) uint8 plus int64 labels
(-1 where there are none); training slices shuffled index batches from these
tensors on the training device instead of going through a per-item DataLoader.
"""
from __future__ import annotations

import gzip
import importlib.util
import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from .dataset import DataNotFound, Dataset, DatasetError
from .images import IMAGES, pil_to_uint8

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
DEFAULT_DATA_ROOT = os.environ.get("VAE_EXPLORER_DATA", "data")


def _split(x: torch.Tensor, y: torch.Tensor, test_fraction: float, seed: int = 0):
    # A fixed permutation, so the test set is the same on every machine and every run.
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_test = max(1, int(round(len(x) * test_fraction)))
    test, train = perm[:n_test], perm[n_test:]
    return x[train], y[train], x[test], y[test]


def load_digits() -> Dataset:
    # scikit-learn ships the digits as a small CSV (64 pixels in 0..16, then the label). Reading it
    # directly is the same data as sklearn's load_digits without importing sklearn (seconds at start-up).
    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz" if spec else None
    if path is not None and path.is_file():
        table = np.loadtxt(path, delimiter=",")
        pixels, target = table[:, :-1].reshape(-1, 8, 8), table[:, -1]
    else:
        from sklearn.datasets import load_digits as sklearn_digits

        d = sklearn_digits()
        pixels, target = d.images, d.target
    x = torch.from_numpy(np.round(pixels * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)  # (1797, 1, 8, 8)
    y = torch.from_numpy(target.astype(np.int64))
    return Dataset("digits", IMAGES, *_split(x, y, 0.2), classes=[str(i) for i in range(10)])


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
    raw = path.read_bytes() if path.is_file() else gzip.decompress(path.with_name(path.name + ".gz").read_bytes())
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetError(f"{path.name}: not an IDX file of unsigned bytes")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != math.prod(dims):
        raise DatasetError(f"{path.name}: truncated ({data.size} values for dimensions {dims})")
    return data.reshape(dims)


def _load_idx_files(name: str, root: str) -> Dataset | None:
    """MNIST and Fashion-MNIST straight from their IDX files (raw or .gz) when all are there:
    the same arrays torchvision reads, without importing it (over a second at start-up)."""
    _, folder, files = _TORCHVISION[name]
    base = Path(root).expanduser() / folder
    if not all((base / f).is_file() or (base / (f + ".gz")).is_file() for f in files):
        return None
    trx, try_, tex, tey = (torch.from_numpy(_read_idx(base / f).copy()) for f in files)
    return Dataset(name, IMAGES, trx.unsqueeze(1), try_.long(), tex.unsqueeze(1), tey.long(),
                   classes=_MNIST_CLASSES[name])


def load_torchvision(name: str, root: str | None, download: bool) -> Dataset:
    root = root or DEFAULT_DATA_ROOT
    if name in _MNIST_CLASSES and (data := _load_idx_files(name, root)) is not None:
        return data
    cls_name, folder, files = _TORCHVISION[name]
    if name in _MNIST_CLASSES and not download:  # their IDX files are all torchvision would read: absent
        raise _not_found(name, root, "the files are not there")
    import torchvision.datasets as tvd  # only here: importing torchvision costs seconds

    cls = getattr(tvd, cls_name)
    try:
        train, test = cls(root, train=True, download=False), cls(root, train=False, download=False)
    except (RuntimeError, OSError) as missing:
        if not download:
            raise _not_found(name, root, missing) from None
        try:
            train, test = cls(root, train=True, download=True), cls(root, train=False, download=True)
        except Exception as failed:  # network refused, DNS, HTTP errors, read-only root...
            raise _not_found(name, root, failed, tried_download=True) from None

    def as_tensor(ds):
        data = ds.data if isinstance(ds.data, torch.Tensor) else torch.from_numpy(np.asarray(ds.data))
        x = data.unsqueeze(1) if data.ndim == 3 else data.permute(0, 3, 1, 2)  # -> (N, C, H, W)
        return x.contiguous().to(torch.uint8), torch.as_tensor(ds.targets, dtype=torch.int64)

    (trx, try_), (tex, tey) = as_tensor(train), as_tensor(test)
    return Dataset(name, IMAGES, trx, try_, tex, tey, classes=[str(c) for c in train.classes])


def expected_files(name: str, root: str | None) -> tuple[Path, list[str]]:
    """Where a torchvision dataset's files belong under `root` (absolute) and their names."""
    _, folder, files = _TORCHVISION[name]
    return Path(root or DEFAULT_DATA_ROOT).expanduser().resolve() / folder, list(files)


def _not_found(name, root, error, tried_download=False) -> DataNotFound:
    where, files = expected_files(name, root)
    folder = _TORCHVISION[name][1]
    detail = " ".join(str(error).split())[:300]  # one line, however chatty the underlying error
    attempt = f"; downloading failed too ({type(error).__name__}: {detail})" if tried_download else ""
    gz = " (or the same names with .gz)" if name in _MNIST_CLASSES else ""
    return DataNotFound(f"{name} not found: expected {', '.join(files)}{gz} in {where}{attempt}. "
                        f"Put the files there or pass --data-root to the folder that holds {folder.split('/')[0]}/.",
                        name, where, files)


def _image_files(base: Path) -> list[Path]:
    return sorted(p for p in base.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def folder_size(root: str | None, image_size: int | None, channels: int | None) -> tuple[int, int] | None:
    """(images, bytes they take loaded) of a folder dataset, from the count of its image files: none is
    opened. Colour is assumed where channels is not given (the loader decides by reading them)."""
    if root is None or not Path(root).expanduser().is_dir():
        return None  # the loader says what is wrong
    n = len(_image_files(Path(root).expanduser()))
    side = image_size or 32
    return n, n * ((channels or 3) * side * side + 8)  # uint8 pixels and an int64 label each


_GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def load_folder(root: str, image_size: int, channels: int | None) -> Dataset:
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DatasetError(f"folder dataset: {base.resolve()} is not a directory of images")
    paths = _image_files(base)
    if not paths:
        raise DatasetError(f"folder dataset: no images ({', '.join(IMAGE_SUFFIXES)}) found under {base.resolve()}")
    readable_errors = (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError)
    skipped = []
    if channels is None:  # colour if any image has colour: the headers say, without decoding a pixel
        modes = []
        for p in paths:
            try:
                with Image.open(p) as im:
                    modes.append(im.mode)
            except readable_errors:
                continue  # skipped with its reason below
        channels = 3 if any(mode not in _GREY_MODES for mode in modes) else 1
    # Each image is decoded and shrunk on its own: holding them all at full size first would need the
    # photos' size in memory (a folder of 12-megapixel photos: 36 MB each), not the dataset's.
    kept, items = [], []
    for p in paths:
        try:
            with Image.open(p) as im:
                im.load()
                items.append(pil_to_uint8(im, (channels, image_size, image_size)))
                kept.append(p)
        except readable_errors as e:
            skipped.append(f"{p.name} ({e})")
    if not items:
        raise DatasetError(f"folder dataset: none of the {len(paths)} files under {base.resolve()} could be read: "
                           + "; ".join(skipped[:3]))
    x = torch.stack(items)
    # Labels from the first sub-folder under root (ImageFolder layout); -1 for loose files.
    rel = [p.relative_to(base).parts for p in kept]
    classes = sorted({r[0] for r in rel if len(r) > 1})
    y = torch.tensor([classes.index(r[0]) if len(r) > 1 else -1 for r in rel], dtype=torch.int64)
    if len(x) < 2:
        raise DatasetError(f"folder dataset: {base.resolve()} has only {len(x)} readable image; need at least 2")
    return Dataset(f"folder:{base.name}", IMAGES, *_split(x, y, 0.1), classes=classes)


def resize(data: Dataset, image_size: int | None, channels: int | None) -> Dataset:
    def fix(x: torch.Tensor) -> torch.Tensor:
        if channels is not None and x.shape[1] != channels:
            x = x.float().mean(1, keepdim=True).round().to(torch.uint8) if channels == 1 else x.expand(-1, channels, -1, -1)
        if image_size is not None and x.shape[-1] != image_size:
            x = F.interpolate(x.float(), size=(image_size, image_size), mode="bilinear", antialias=True,
                              align_corners=False).round().clamp(0, 255).to(torch.uint8)
        return x.contiguous()

    if image_size is None and channels is None:
        return data
    return Dataset(data.name, data.kind, fix(data.train_x), data.train_y, fix(data.test_x), data.test_y, data.classes)
