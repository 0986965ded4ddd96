"""Bounds on the files Gradio writes for a long-running server: every answer's image and every upload.

Gradio keeps each such file on disk, and its path in one of `blocks.temp_file_sets`, until its own
sweep (`delete_cache=(frequency, age)`) finds it older than `age`. That bounds the files by age only,
so the disk they use grows with the traffic: a class of 30 pulling images for an hour leaves
hundreds of MB. Its sweep also iterates those sets while request threads add to them, and forgets
nothing it did not delete itself, so a path whose file is gone stays in memory for good.

`CacheJanitor` replaces that sweep (the app passes `delete_cache=None`): every `every_s` seconds it
deletes the files older than `max_age_s`, and, while their total is above `cap_bytes`, the oldest
ones down to 80% of the cap, sparing what is younger than `min_age_s` (a page may still be fetching
it). It reads each set with one `list()` and edits it with `discard`, each atomic under the GIL, so
request threads may add files meanwhile. The files of the last `min_age_s` seconds are the only ones
that can stand above the cap, for at most one sweep interval. A file's time and size are read once, when
the sweep first sees it (a full cache holds tens of thousands of files: one `stat` each every few
seconds would be most of the sweep's work); every `RESTAT_EVERY` sweeps all are read again, which
finds files something else deleted.

`write_answer_image` replaces Gradio's writer of answer images, which rewrote an image answered again in
place while another client could be downloading it; it and the janitor share a lock, so an image handed out
again is never deleted under the page that is about to fetch it.
"""
from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

KEEP_FRACTION = 0.8  # above the cap, delete down to this share of it: not one file per sweep
RESTAT_EVERY = 12  # sweeps (a minute at the default interval) between reading every tracked file's stat again
# Held while the janitor reads a file's time and deletes it, and while write_answer_image touches or writes one:
# an image answered again is then either still there and young (spared for min_age_s) or written anew.
_HAND_OUT = threading.Lock()


@dataclass
class Sweep:
    files: int  # tracked files left
    bytes: int  # their total size
    removed: int  # files deleted by this sweep
    freed: int  # their bytes
    forgotten: int  # tracked paths whose file was already gone


class CacheJanitor:
    def __init__(self, blocks, cap_bytes: int, max_age_s: float = 3600.0, min_age_s: float = 30.0,
                 every_s: float = 5.0, root: str | os.PathLike | None = None):
        if cap_bytes <= 0 or max_age_s <= 0 or min_age_s < 0 or every_s <= 0:
            raise ValueError("the cache cap, its ages and its sweep interval must be positive")
        self.blocks, self.cap, self.max_age, self.min_age, self.every = blocks, cap_bytes, max_age_s, min_age_s, every_s
        self.root = Path(root).resolve() if root else None  # empty folders under it are removed too
        self.last: Sweep | None = None
        self._stats: dict[str, tuple[float, int]] = {}  # path -> (ctime, size), as first read
        self._sweeps = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _tracked(self) -> list[tuple[float, int, str, set]]:
        """(ctime, size, path, its set) of every tracked file, oldest first; forgets paths already gone."""
        kept = set()
        for block in list(self.blocks.blocks.values()):
            kept.update(getattr(block, "keep_in_cache", ()))  # examples and defaults Gradio must keep
        files, self._forgotten = [], 0
        known = {} if self._sweeps % RESTAT_EVERY == 0 else self._stats
        self._sweeps += 1
        stats = {}
        for tracked in list(self.blocks.temp_file_sets):
            for path in list(tracked):  # a copy: request threads add to the set meanwhile
                if path in kept:
                    continue
                stat = known.get(path)
                if stat is None:
                    try:
                        st = os.lstat(path)
                    except FileNotFoundError:
                        tracked.discard(path)
                        self._forgotten += 1
                        continue
                    except OSError:
                        continue
                    stat = (st.st_ctime, st.st_size)
                stats[path] = stat
                files.append((*stat, path, tracked))
        self._stats = stats  # only what is still tracked: the memo never outgrows the sets
        files.sort(key=lambda f: f[0])
        return files

    def sweep(self, now: float | None = None) -> Sweep:
        now = time.time() if now is None else now
        files = self._tracked()
        total = sum(f[1] for f in files)
        excess = total - KEEP_FRACTION * self.cap if total > self.cap else 0
        removed = freed = 0
        for ctime, size, path, tracked in files:
            if not self._expired(now - ctime, excess):
                continue
            with _HAND_OUT:  # the memo may be old: a file handed out again since then was touched
                try:
                    ctime = os.lstat(path).st_ctime
                    if not self._expired(now - ctime, excess):
                        self._stats[path] = (ctime, size)
                        continue
                    os.remove(path)
                except FileNotFoundError:
                    pass
                except OSError as e:
                    log.warning("could not delete the cached file %s: %s", path, e)
                    continue
                tracked.discard(path)
                self._remove_empty_parent(Path(path))
            removed, freed, excess = removed + 1, freed + size, excess - size
        self.last = Sweep(len(files) - removed, total - freed, removed, freed, self._forgotten)
        return self.last

    def _expired(self, age: float, excess: float) -> bool:
        return age > self.max_age or (excess > 0 and age > self.min_age)

    def _remove_empty_parent(self, path: Path) -> None:
        # Gradio puts each file in a folder named by its hash: the folder goes with its last file.
        parent = path.parent
        if self.root is None or parent.resolve() == self.root or self.root not in parent.resolve().parents:
            return
        try:
            parent.rmdir()
        except OSError:
            pass  # not empty, or gone

    def start(self) -> "CacheJanitor":
        self._thread = threading.Thread(target=self._run, name="cache-janitor", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.sweep()
            except Exception:  # noqa: BLE001 - a failed sweep must not end the sweeping
                log.exception("the cache sweep failed")

    def stop(self, delete_all: bool = True) -> None:
        """Stop sweeping; with delete_all, delete every tracked file, as Gradio does at shutdown."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.every + 5)
        if delete_all:
            self.max_age = -1.0
            self.sweep()


def write_answer_image(img, cache_dir: str, name: str = "image", format: str = "webp") -> str:
    """Gradio's `processing_utils.save_pil_to_cache`, without its race: an image is written once, under a
    temporary name renamed into place, and an existing copy is touched instead of rewritten.

    Gradio 6.31 writes each answer's image with `write_bytes` into a folder named by the image's hash, so an
    image answered again (the same sample, the same reconstruction) is truncated and rewritten in place while
    another client may be downloading it; that download then ends short ("Too little data for declared
    Content-Length" in the server log; the soak met it). Its `save_file_to_cache` already writes this way."""
    from gradio import processing_utils

    data = processing_utils.encode_pil_to_bytes(img, format)
    folder = Path(cache_dir).resolve() / processing_utils.hash_bytes(data)
    path = folder / f"{name}.{format}"
    with _HAND_OUT:
        try:
            os.utime(path)  # handed out again: young for the janitor, which re-reads a file's time before deleting
            return str(path)
        except FileNotFoundError:
            pass
        folder.mkdir(exist_ok=True, parents=True)  # the janitor removes a folder with its last file
        fd, staging = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(staging, 0o644)
            os.replace(staging, path)
        except BaseException:
            Path(staging).unlink(missing_ok=True)
            raise
    return str(path)


def install_answer_image_writer() -> None:
    """Route every answer image (gr.Image, gr.Gallery, arrays and PIL images alike) through `write_answer_image`."""
    from gradio import processing_utils

    processing_utils.save_pil_to_cache = write_answer_image
