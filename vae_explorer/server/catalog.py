"""The checkpoints folder as the explorer sees it: safe names -> loaded models,
each with its dataset and its test-set codes computed once and cached.

A name from the UI or the API is a bare file stem ("digits_vae"): no folders,
no "..", no absolute paths, no symlinks, so nothing outside the folder is read.
Loading goes through `load_checkpoint` (safetensors + JSON), never pickle.
"""
from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..checkpoints import SUFFIX, CheckpointError, load_checkpoint, read_metadata
from ..data import DATA_KINDS, DataNotFound, Dataset, DatasetError, load_dataset_for
from ..data.downloads import DOWNLOADABLE
from ..latent import encode_items, principal_axes
from ..models import Autoencoder
from .errors import ViewError

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class CatalogError(ViewError):
    """A checkpoint name that is refused or cannot be loaded; the message says why (on the page too)."""


class DatasetMissing(CatalogError):
    """A checkpoint whose dataset is not in the data folder: `missing` says which, what files, where; the
    message says how to get it, and what works without it."""

    def __init__(self, checkpoint: str, missing: DataNotFound):
        title = DOWNLOADABLE.get(missing.dataset, missing.dataset)
        super().__init__(
            f"{checkpoint} was trained on {title}, which is not in this server's data folder: this view needs "
            f"it. Expected files: {', '.join(missing.files)} (or the same names with .gz) in {missing.folder}. "
            f"Get it with Download in 'Datasets' at the top of the page (or by choosing {missing.dataset} on the "
            f"Train tab) when this machine is online, or put the files there yourself. Sample and Latent sliders "
            f"work without it.")
        self.missing = missing


@dataclass
class LoadedCheckpoint:
    """A model ready to explore. Lazily computed parts are cached on first use."""

    name: str
    path: Path
    model: Autoencoder
    meta: dict
    key: str  # changes whenever the file's contents change: keys the projection cache
    data_root: str | None = None
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)  # lazy parts need each other
    _cache: dict = field(default_factory=dict, repr=False)

    def cached(self, what: str, compute):
        """A value computed once per loaded checkpoint (the codes, a view's statistics)."""
        with self._lock:
            if what not in self._cache:
                self._cache[what] = compute()
            return self._cache[what]

    @property
    def kind(self):
        """The kind of items the model takes (data/): known without loading the dataset."""
        return DATA_KINDS[self.model.data_kind]

    @property
    def data(self) -> Dataset:
        def load():
            try:
                # Never a download as a side effect of opening a view: the page offers it (a click, with progress).
                return load_dataset_for(self.meta, self.data_root, download=False)
            except DataNotFound as e:
                raise DatasetMissing(self.name, e) from None
            except DatasetError as e:
                raise CatalogError(f"{self.name}: its dataset cannot be loaded: {e}") from None

        return self.cached("data", load)

    @property
    def codes(self) -> np.ndarray:
        """(N_test, D) float32: `encode` of every test item (AE code, VAE mean, VQ vector)."""
        return self.cached("codes", lambda: encode_items(self.model, self.data.test_x, self.kind).numpy())

    @property
    def axes(self):
        """Principal axes of the test codes (mean, directions, std), for sliders and planes."""
        return self.cached("axes", lambda: principal_axes(self.codes))

    @property
    def labels(self) -> np.ndarray:
        return self.data.test_y.numpy()

    @property
    def dataset_name(self) -> str:
        return str(self.meta.get("dataset", {}).get("name", "?"))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.model.input_shape

    @torch.no_grad()
    def decode(self, z: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(B, D) codes -> (B, ...) items on the CPU, as the kind shows them (images in [0, 1])."""
        z = torch.as_tensor(np.asarray(z, dtype=np.float32)).reshape(-1, self.model.latent_dim)
        return self.kind.clean_output(self.model.decode(z))

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, ...) prepared items -> (B, D) codes."""
        return self.model.encode(x).float()

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.kind.clean_output(self.model.reconstruct(x))


# Models kept loaded (with their test-set codes, map axes and hover tiles). It should hold every checkpoint a
# class uses: below that, requests that walk the list evict and reload models on every call (measured: a
# 30-client load over 24 checkpoints spent most of its decode time rebuilding evicted ones). A loaded digits
# model takes well under 1 MB; an MNIST one with its codes about 2 MB (the datasets are shared, not per model).
DEFAULT_LOADED_MODELS = 64


class Catalog:
    """Checkpoints in one folder, loaded on demand, kept in an LRU cache of `capacity` models.

    A file that changes on disk (a training run writing its next epoch) is
    reloaded on the next request. Safe to share between request threads.
    """

    def __init__(self, root: str | Path, data_root: str | None = None, capacity: int = DEFAULT_LOADED_MODELS):
        self.root = Path(root).resolve()
        self.data_root = data_root
        self.capacity = capacity
        self._lock = threading.Lock()
        self._loaded: OrderedDict[str, tuple[tuple, LoadedCheckpoint]] = OrderedDict()

    def names(self) -> list[str]:
        """Stems of the readable-looking checkpoints in the folder, sorted."""
        if not self.root.is_dir():
            return []
        out = []
        for p in self.root.iterdir():
            if p.suffix == SUFFIX and not p.name.startswith(".") and NAME_PATTERN.fullmatch(p.stem) \
                    and p.is_file() and not p.is_symlink():
                out.append(p.stem)
        return sorted(out)

    def path(self, name: str) -> Path:
        """The file behind a checkpoint name; refuses anything that could leave the folder."""
        name = str(name or "").strip()
        if name.endswith(SUFFIX):
            name = name[: -len(SUFFIX)]
        if not NAME_PATTERN.fullmatch(name):
            raise CatalogError(f"{name!r} is not a checkpoint name: use a name from the list "
                               "(letters, digits, '_', '-', '.'; no folders)")
        path = self.root / f"{name}{SUFFIX}"
        if path.is_symlink():
            raise CatalogError(f"{name}: checkpoints that are symbolic links are not loaded")
        if path.resolve().parent != self.root:
            raise CatalogError(f"{name}: outside the checkpoints folder")
        if not path.is_file():
            # The message reaches browsers: name the folder's role, not the server's path.
            raise CatalogError(f"no checkpoint named {name!r} in the checkpoints folder")
        return path

    def metadata(self, name: str) -> dict:
        try:
            return read_metadata(self.path(name))
        except CheckpointError as e:
            raise CatalogError(str(e)) from None

    def get(self, name: str) -> LoadedCheckpoint:
        path = self.path(name)
        st = path.stat()
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self._lock:
            hit = self._loaded.get(path.stem)
            if hit is not None and hit[0] == stamp:
                self._loaded.move_to_end(path.stem)
                return hit[1]
        try:
            model, meta = load_checkpoint(path, "cpu")
        except CheckpointError as e:
            raise CatalogError(str(e)) from None
        key = hashlib.sha256(repr((meta.get("created"), meta.get("epoch"), st.st_size,
                                   meta.get("config"))).encode()).hexdigest()[:16]
        entry = LoadedCheckpoint(path.stem, path, model, meta, key, self.data_root)
        with self._lock:
            self._loaded[path.stem] = (stamp, entry)
            self._loaded.move_to_end(path.stem)
            while len(self._loaded) > self.capacity:
                self._loaded.popitem(last=False)
        return entry

    def version(self) -> tuple:
        """Changes when checkpoints appear, vanish or are rewritten: cheap to poll."""
        if not self.root.is_dir():
            return ()
        return tuple(sorted((p.name, p.stat().st_mtime_ns) for p in self.root.glob(f"*{SUFFIX}")
                            if p.is_file() and not p.name.startswith(".")))
