"""Decoders for the page: each checkpoint's `page_decoder()` written once as a JSON index (the layer ops,
where each tensor lies) and a float32 little-endian blob, in a folder the app serves as static files.

File names carry a digest of the contents, so a retrained checkpoint of the same name gets new files
(pages fetch the new decoder; a browser's cache of the old URL cannot be served in its place), and the
same weights always give the same files. Each description is checked against the model's own `decode`
before it is written: a page never runs a decoder that disagrees with the server's.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from ..models import page

log = logging.getLogger(__name__)
PAGE_SCRIPT = Path(__file__).resolve().parent / "static" / "decoder.js"  # what runs them in the page
PAGE_CHANNELS = (1, 3)  # grey or RGB: what the page draws


@dataclass(frozen=True)
class PageExport:
    """A model's decoder as the page gets it: its index file, or why the server decodes instead."""

    index_file: Path | None
    reason: str | None  # None when the page decodes
    summary: str = ""  # the layers and the weights' size, for the page's caption


class PageDecoders:
    """The folder of decoders written for pages; safe to share between request threads."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._lock = threading.Lock()

    def export(self, model, name: str) -> PageExport:
        """Write `model`'s decoder for checkpoint `name` (if not written yet) and say where it is."""
        desc = model.page_decoder()
        if desc is None:
            return PageExport(None, "this model's decoder has no description the page can run")
        shape = desc.output_shape
        if len(shape) != 3 or shape[0] not in PAGE_CHANNELS:
            return PageExport(None, f"the page draws grey or RGB images, and this model decodes {shape}")
        try:
            err = page.check(desc, model.decode)
        except page.Unsupported as e:
            log.warning("%s: the page's decoder would differ from the model's (%s); the server decodes", name, e)
            return PageExport(None, "the page's version of this decoder did not match the model's")
        index, blob = desc.index(), desc.blob()
        digest = hashlib.sha256(json.dumps(index, sort_keys=True).encode() + blob).hexdigest()[:16]
        stem = f"{name}-{digest}"
        index["blob"] = f"{stem}.bin"
        index["max_error"] = err  # against decode, over a few random codes: the page's caption can say it
        target = self.folder / f"{stem}.json"
        with self._lock:
            if not target.exists():
                self.folder.mkdir(parents=True, exist_ok=True)
                _write(self.folder / f"{stem}.bin", blob)
                _write(target, json.dumps(index).encode())  # last: its presence means both are complete
                self._forget_older(name, stem)
        return PageExport(target, None, f"{desc.describe()}; {len(blob) / 1024:.0f} KB of weights")

    def _forget_older(self, name: str, keep: str) -> None:
        # A checkpoint rewritten (the next epoch of a run) leaves its earlier decoders behind: remove them.
        pattern = re.compile(re.escape(name) + r"-[0-9a-f]{16}\.(json|bin)")
        for p in self.folder.iterdir():
            if pattern.fullmatch(p.name) and not p.name.startswith(keep):
                try:
                    p.unlink()
                except OSError:
                    pass


def _write(path: Path, data: bytes) -> None:
    """Whole or not at all: a page fetching the file never reads half of it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
