"""A dataset in memory: whole tensors with a fixed test split and the kind of its items."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .images import ImageKind


class DatasetError(ValueError):
    """A dataset that cannot be loaded; the message says what was expected where."""


@dataclass
class Dataset:
    name: str
    kind: ImageKind  # how to feed, show, corrupt and read its items
    train_x: torch.Tensor  # (N, *item_shape) in the kind's stored form (uint8 images)
    train_y: torch.Tensor  # (N,) int64, -1 = unlabeled
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str] = field(default_factory=list)

    @property
    def item_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])

    def model_settings(self) -> dict:
        """Model config fields this data decides (an image model's input_shape)."""
        return self.kind.model_settings(self.item_shape)

    def label(self, i: int) -> str:
        """Test item i's class name, or "none"."""
        y = int(self.test_y[i])
        return self.classes[y] if 0 <= y < len(self.classes) else "none"

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind.name, "input_shape": list(self.item_shape),
                "train_size": len(self.train_x), "test_size": len(self.test_x), "classes": self.classes}
