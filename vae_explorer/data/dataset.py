"""A dataset in memory: whole tensors with a fixed test split, and the kind of its
items: the interface every view, the training loop and evaluation ask instead of
checking what the items are (data/images.py's IMAGES is one)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from PIL import Image


class DataKind(Protocol):
    name: str  # the kind's name, as models give it in `data_kind`
    item: str  # what one item is called on the page ("image")
    noise_kinds: tuple[str, ...]  # the corruptions `corrupt` knows
    error_name: str  # the unit of `errors`
    fidelity_name: str  # what `fidelity` reports

    def prepare(self, stored: torch.Tensor) -> torch.Tensor: ...  # stored items -> model input (B, ...)
    def store(self, x: torch.Tensor) -> torch.Tensor: ...  # model output -> stored form
    def model_settings(self, items) -> dict: ...  # config fields the data decides (stored items -> shape, schema)
    def errors(self, recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor: ...  # (B,) reconstruction errors
    def quality(self, recon: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]: ...  # evaluation measures
    def fidelity(self, x: torch.Tensor, ref: torch.Tensor) -> str: ...  # how close, for people
    def show(self, x: torch.Tensor, target: int = 128) -> Image.Image: ...  # one item
    def grid(self, x: torch.Tensor, nrow: int, target: int = 48, padding: int = 1, labels=None,
             row_labels=None) -> Image.Image: ...  # labels: one per item; row_labels: one per row of `nrow`
    def blank(self, item_shape, target: int = 128) -> Image.Image: ...  # a placeholder the size of one item
    def noise_limit(self, kind: str) -> float: ...
    def corrupt(self, x: torch.Tensor, kind: str, level: float,
                generator: torch.Generator | None = None) -> torch.Tensor: ...
    def read_upload(self, path, item_shape, reference: torch.Tensor | None = None) -> tuple[torch.Tensor, str]: ...
    shown_as: str  # "image" (PIL pictures) or "table" (pandas frames): which component shows an item
    linear_baseline: bool  # PCA of the flattened items is a meaningful baseline
    def concat(self, parts: list) -> object: ...  # items joined along the first dimension
    def clean_output(self, x) -> object: ...  # a model's output as views use it (images: clamped to [0, 1], CPU)
    def explain(self, recon, x) -> str: ...  # what differs in the first item's reconstruction, Markdown ("" = nothing)
    def flagged(self, x, recon, row_names: list[str], scores) -> object: ...  # flagged items with their reconstructions
    def attributes(self, items) -> dict: ...  # name -> (class indices, names) or (values, None): map colourings


class UploadError(ValueError):
    """An uploaded file that cannot be used as an item; the message says why, for the user."""


class DatasetError(ValueError):
    """A dataset that cannot be loaded; the message says what was expected where."""


class DataNotFound(DatasetError):
    """A downloadable dataset whose files are not in the data folder (and were not, or could not be,
    downloaded): which dataset, the files expected and the folder they belong in."""

    def __init__(self, message: str, dataset: str, folder, files: list[str]):
        super().__init__(message)
        self.dataset, self.folder, self.files = dataset, folder, list(files)


@dataclass
class Dataset:
    name: str
    kind: DataKind  # how to feed, show, corrupt and read its items
    train_x: torch.Tensor  # (N, *item_shape) in the kind's stored form (uint8 images)
    train_y: torch.Tensor  # (N,) int64, -1 = unlabeled
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str] = field(default_factory=list)
    # Known factors of variation, where the data has them (sprites): each item's index per factor.
    factor_names: tuple[str, ...] = ()
    train_factors: torch.Tensor | None = None  # (N, F) int64
    test_factors: torch.Tensor | None = None
    factor_values: dict[str, list[str]] = field(default_factory=dict)  # what each index means
    anomaly_classes: tuple[int, ...] = ()  # the classes that mark anomalies, where labels say so (tables)
    source: dict = field(default_factory=dict)  # how to load it again (a file's path, reading options)

    @property
    def item_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])

    def model_settings(self) -> dict:
        """Model config fields this data decides (an image model's input_shape)."""
        return self.kind.model_settings(self.train_x)

    def label(self, i: int) -> str:
        """Test item i's class name, or "none"."""
        y = int(self.test_y[i])
        return self.classes[y] if 0 <= y < len(self.classes) else "none"

    def attributes(self) -> dict[str, tuple[np.ndarray, list[str] | None]]:
        """What the test items can be coloured by besides their label: known factors, and whatever the kind
        reads off its items (a table's columns). name -> (class indices, class names) or (values, None)."""
        out = {name: (self.test_factors[:, i].numpy(), list(self.factor_values.get(name, [])) or None)
               for i, name in enumerate(self.factor_names)} if self.test_factors is not None else {}
        return {**out, **self.kind.attributes(self.test_x)}

    def is_anomaly(self, y) -> np.ndarray:
        """(N,) True where a label marks an anomaly."""
        return np.isin(np.asarray(y), self.anomaly_classes)

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind.name, "input_shape": list(self.item_shape),
                "train_size": len(self.train_x), "test_size": len(self.test_x), "classes": self.classes,
                **({"factors": self.factor_values} if self.factor_names else {}),
                **({"anomaly": [self.classes[i] for i in self.anomaly_classes]} if self.anomaly_classes else {}),
                **self.source}
