"""Datasets and the kinds of items they hold.

A `Dataset` is whole tensors in memory with a fixed test split; its `kind`
(`IMAGES`, data/images.py, or `TABLES`, data/tables.py) says how its items are fed to models, shown,
corrupted and read from an upload, so views never branch on what the items are.
`DATASETS` names every loadable dataset with its kind; a new kind of data is a
kind object, its loaders and a line each here.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Callable

from .dataset import DataKind, DataNotFound, Dataset, DatasetError
from .image_sets import folder_size, load_digits, load_folder, load_torchvision, resize
from .images import IMAGES
from .sprites import load_sprites
from .table_sets import TableOptions, load_breast_cancer, load_kddcup99, load_table_file
from .tables import TABLES, Rows

DATA_KINDS: dict[str, DataKind] = {IMAGES.name: IMAGES, TABLES.name: TABLES}


@dataclass(frozen=True)
class DatasetEntry:
    kind: DataKind
    load: Callable[..., Dataset]  # images: (root, download) -> Dataset; tables: (root, download, path, options)
    description: str
    needs_root: bool = False  # reads a folder the user names (--data-root)
    needs_file: bool = False  # reads a file the user gives (--data; the page: an upload)
    trainable_from_page: bool = True
    known_factors: bool = False  # each item carries its factors of variation (the disentanglement scorecard's need)
    # (root, image_size, channels) -> (items, bytes as stored) from the files' count, before reading any; None
    # where it cannot tell. For datasets whose size is not known in advance (the built-in ones are).
    stored_bytes: Callable[..., tuple[int, int] | None] | None = None


DATASETS: dict[str, DatasetEntry] = {
    "digits": DatasetEntry(IMAGES, lambda root, download: load_digits(),
                           "8×8 handwritten digits shipped with scikit-learn (offline)"),
    "sprites": DatasetEntry(IMAGES, lambda root, download: load_sprites(),
                            "32×32 sprites with known factors: shape, scale, rotation, x, y (generated, offline)",
                            known_factors=True),
    "mnist": DatasetEntry(IMAGES, functools.partial(load_torchvision, "mnist"), "MNIST 28×28 digits"),
    "fashion_mnist": DatasetEntry(IMAGES, functools.partial(load_torchvision, "fashion_mnist"),
                                  "Fashion-MNIST 28×28 clothes"),
    "cifar10": DatasetEntry(IMAGES, functools.partial(load_torchvision, "cifar10"), "CIFAR-10 32×32 colour photos"),
    "folder": DatasetEntry(IMAGES, lambda root, download, image_size=None, channels=None:
                           load_folder(root, image_size or 32, channels),
                           "your own folder of images (sub-folders become labels)", needs_root=True,
                           trainable_from_page=False, stored_bytes=folder_size),
    "breast_cancer": DatasetEntry(TABLES, lambda root, download, path, options: load_breast_cancer(options),
                                  "a table: scikit-learn's breast-cancer measurements, 5% malignant rows as "
                                  "anomalies (offline)"),
    "kddcup99": DatasetEntry(TABLES, lambda root, download, path, options: load_kddcup99(root, download, options),
                             "a table: KDD Cup 99 network connections with categorical columns; normal ones are "
                             "the rare class"),
    "csv": DatasetEntry(TABLES, lambda root, download, path, options: load_table_file(path, options),
                        "your own table: a CSV or Parquet file (--data)", needs_file=True),
}


@functools.lru_cache(maxsize=8)
def load_dataset(name: str = "digits", root: str | None = None, image_size: int | None = None,
                 channels: int | None = None, download: bool = True, path: str | None = None,
                 table: TableOptions | None = None) -> Dataset:
    """Load a dataset once (cached per process). Treat the returned tensors as read-only.

    name: one of DATASETS. root: where torchvision datasets live (default
    $VAE_EXPLORER_DATA or ./data), or the image folder for "folder".
    image_size / channels: optional resize and grey<->RGB conversion.
    path / table: a table's file and how to read it (label, ignored columns, types, split).
    """
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    entry = DATASETS[name]
    if entry.kind is TABLES:
        return entry.load(root, download, path, table or TableOptions())
    if entry.needs_root:
        if root is None:
            raise DatasetError(f"{name} dataset: pass --data-root pointing at a folder of images")
        return entry.load(root, download, image_size=image_size, channels=channels)
    return resize(entry.load(root, download), image_size, channels)


def load_dataset_for(meta: dict, root: str | None = None, download: bool = True) -> Dataset:
    """The dataset a checkpoint was trained on, as its metadata describes it
    (name, root, size, channels); `root` overrides the recorded data root. download=False: a dataset
    that is not there is a DataNotFound at once (the explorer offers the download instead)."""
    ds = meta.get("dataset", {})
    recorded = str(ds.get("name", "digits"))
    name = recorded.split(":", 1)[0] if ":" in recorded else recorded  # folder:NAME, csv:NAME
    table = TableOptions.from_dict(ds["options"]) if "options" in ds else None
    data = load_dataset(name, root or ds.get("root"), ds.get("image_size"), ds.get("channels"),
                        download=download, path=ds.get("path"), table=table)
    expected = data.model_settings()
    config = meta.get("config", {})
    for key, value in expected.items():
        # Compared as JSON: the checkpoint's config went through JSON (tuples became lists).
        if key in config and json.loads(json.dumps(value)) != config[key]:
            what = "columns" if key == "schema" else "items"
            raise DatasetError(f"{recorded}'s {what} are not what the model was trained on "
                               f"({key}: {_short(value)} now, {_short(config[key])} in the checkpoint)")
    return data


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) < 80 else text[:77] + "..."


__all__ = ["DATASETS", "DATA_KINDS", "DataKind", "DataNotFound", "Dataset", "DatasetEntry", "DatasetError", "IMAGES", "Rows", "TABLES",
           "TableOptions", "load_dataset", "load_dataset_for"]
