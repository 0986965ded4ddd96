"""Sprite sheets for the latent map's hover: every point's input image in one PNG, a tile per item in
index order, `columns` tiles a row, each at the item's own size. The page shows a point's tile beside the
cursor by moving one sheet's background (no request per hover, 10,000 points in one file).

Sheets are written once per set of items into a folder the app serves as static files, named by a digest
of the items themselves: a changed dataset gets a new file, and models of one dataset share theirs.
"""
from __future__ import annotations

import hashlib
import math
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from .page_decoders import _write

MAX_COLUMNS = 100  # 10,000 MNIST digits: a 100 × 100 grid of 28 × 28 tiles, a 2800 × 2800 PNG


@dataclass(frozen=True)
class TileSheet:
    """Where item i's tile lies in `file`: column i % columns, row i // columns, each tile width × height."""

    file: Path
    columns: int
    width: int
    height: int
    count: int

    def position(self, index: int) -> tuple[int, int]:
        """Item `index`'s tile: (left, top) in the sheet's pixels."""
        row, column = divmod(int(index), self.columns)
        return column * self.width, row * self.height

    def as_meta(self, url: str) -> dict:
        """What the page needs to find a tile: the sheet's URL and the grid."""
        return {"url": url, "columns": self.columns, "width": self.width, "height": self.height, "count": self.count}


class HoverTiles:
    """The folder of sprite sheets written for pages; safe to share between request threads."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._lock = threading.Lock()

    def sheet(self, items: torch.Tensor, kind, point_set: str) -> TileSheet | None:
        """The sheet of `items` (stored form, (N, ...)) as the data kind shows them, one tile per item; None
        where the kind does not show its items as pictures (table rows keep the map's text hover)."""
        if kind.shown_as != "image" or len(items) == 0:
            return None
        prepared = kind.prepare(items)
        height, width = prepared.shape[-2:]
        columns = min(MAX_COLUMNS, len(items))
        digest = hashlib.sha256(repr((kind.name, tuple(items.shape), str(items.dtype))).encode()
                                + items.contiguous().numpy().tobytes()).hexdigest()[:16]
        sheet = TileSheet(self.folder / f"{point_set}-{digest}.png", columns, int(width), int(height), len(items))
        with self._lock:
            if not sheet.file.exists():
                # The kind's own grid at scale 1 (target = the item's height) and no frame: tiles meet exactly.
                picture = kind.grid(prepared, nrow=columns, target=int(height), padding=0)
                assert picture.size == (columns * width, math.ceil(len(items) / columns) * height)
                self.folder.mkdir(parents=True, exist_ok=True)
                from io import BytesIO

                buffer = BytesIO()
                picture.save(buffer, format="PNG", optimize=False)
                _write(sheet.file, buffer.getvalue())
        return sheet
