"""Training in motion: the 2-D map of a fixed set of test items after every epoch, recorded while a model trains
and kept in its checkpoint, so the page can play how the codes moved (a VAE's clusters forming, an AE's spreading).

Each frame is the map the Latent map tab would draw for the model at that epoch: the raw code where it is 2-D
(or 1-D), else the codes' top two principal components. PCA's axes are only defined up to sign and order, so
from one epoch to the next a frame could flip or spin; each PCA frame is therefore turned by the orthogonal
Procrustes rotation (rotation or reflection) that brings it closest to the frame before it. Raw frames are the
codes themselves and are never turned.

The number of frames is bounded (`kept_epochs`): every epoch up to `max_frames`, then the first few epochs
(where the map changes most) and evenly spaced ones after them, so a long run's checkpoint grows by tens of KB.
Frames are stored as float16 tensors in the checkpoint ("motion.*"), never in its JSON header.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .latent import raw_2d, resolve_projection

MOTION_SEED = 0  # the subset does not depend on the run's seed: two models of the same data show the same items
EARLY_FRAMES = 8  # epochs always kept from the start of a run (at most a quarter of the frames)
FLOAT16_MAX = 60_000.0  # float16 holds up to 65,504: wider frames are stored as float32


def motion_items(n_test: int, n: int, seed: int = MOTION_SEED) -> np.ndarray:
    """The test indices a run records: `n` of 0..n_test-1 drawn without replacement (seeded), sorted."""
    n = min(n, n_test)
    chosen = torch.randperm(n_test, generator=torch.Generator().manual_seed(seed))[:n]
    return np.sort(chosen.numpy()).astype(np.int64)


def kept_epochs(latest: int, max_frames: int, early: int | None = None) -> list[int]:
    """The epochs (1-based) whose frames are kept once epoch `latest` is recorded: all of them while they are at
    most `max_frames`; after that the first `early` epochs (default a quarter of the frames, at least the first
    epoch, at most EARLY_FRAMES), every
    s-th epoch for the smallest power of two s that fits, and `latest`.

    It depends on `latest` alone and only ever drops frames (the set for epoch E lies within the set for E - 1
    plus E, since s never shrinks and multiples of s are multiples of any smaller power of two), so a run can
    thin its frames as it goes, and a resumed run keeps exactly what an uninterrupted one would.
    """
    if latest <= max_frames:
        return list(range(1, latest + 1))
    early = max(1, min(EARLY_FRAMES, max_frames // 4)) if early is None else early
    stride = 1
    while True:
        kept = sorted(set(range(1, min(early, latest) + 1)) | set(range(stride, latest + 1, stride)) | {latest})
        if len(kept) <= max_frames:
            return kept
        stride *= 2


def align(frame: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """`frame` (N, 2) turned by the orthogonal matrix R (a rotation or a reflection) that minimises
    ||frame R - previous|| (orthogonal Procrustes; both are centred PCA coefficients): the same map, drawn the way
    up that moves it least from the frame before."""
    from scipy.linalg import orthogonal_procrustes  # here: scipy.linalg is a quarter second of every start-up

    rotation, _ = orthogonal_procrustes(np.asarray(frame, np.float64), np.asarray(previous, np.float64))
    return (np.asarray(frame, np.float64) @ rotation).astype(np.float32)


def project(codes: np.ndarray, projection: str) -> np.ndarray:
    """(N, D) codes -> (N, 2) as the Latent map places them: raw, or their coefficients on their own top two
    principal axes (each axis signed as `principal_axes` signs it: its largest component positive). The axes come
    from the eigenvectors of the (D, D) scatter matrix, not an SVD of the (N, D) codes: the same axes, in a
    fraction of the time, after every epoch."""
    codes = np.asarray(codes, np.float64)
    if projection == "raw":
        return raw_2d(codes).astype(np.float32)
    centred = codes - codes.mean(0)
    _, vectors = np.linalg.eigh(centred.T @ centred)  # ascending eigenvalues
    top = vectors[:, ::-1][:, :2]
    signs = np.sign(top[np.abs(top).argmax(0), np.arange(top.shape[1])])
    points = centred @ (top * np.where(signs == 0, 1, signs))
    return np.pad(points, ((0, 0), (0, 2 - points.shape[1]))).astype(np.float32)  # a 1-D code: y = 0


@dataclass
class MotionRecord:
    """The frames of one run. items: (N,) test indices; labels: (N,) their labels (-1: none); projection: "raw" or
    "pca"; epochs[i] is the epoch (1-based) whose map is frames[i] (N, 2)."""

    items: np.ndarray
    labels: np.ndarray
    projection: str
    max_frames: int
    epochs: list[int] = field(default_factory=list)
    frames: list[np.ndarray] = field(default_factory=list)

    @classmethod
    def start(cls, latent_dim: int, test_y: torch.Tensor, n_items: int, max_frames: int) -> "MotionRecord":
        """A new record for a model with `latent_dim`-D codes over the test set whose labels are `test_y`."""
        items = motion_items(len(test_y), n_items)
        labels = test_y[torch.as_tensor(items)].numpy().astype(np.int64) if len(items) else np.zeros(0, np.int64)
        return cls(items, labels, resolve_projection("auto", latent_dim), max_frames)

    @property
    def axis_names(self) -> tuple[str, str]:
        return ("z[0]", "z[1]") if self.projection == "raw" else ("PC 1", "PC 2")

    def add(self, epoch: int, codes: np.ndarray) -> np.ndarray:
        """Record epoch `epoch`'s map from the items' codes (N, D); returns the frame (N, 2) as stored, aligned with
        the previous epoch's for PCA. Frames beyond `max_frames` are thinned (`kept_epochs`)."""
        frame = project(codes, self.projection)
        if self.projection == "pca" and self.frames and len(frame):
            frame = align(frame, self.frames[-1])
        self.epochs.append(int(epoch))
        self.frames.append(frame)
        keep = set(kept_epochs(epoch, self.max_frames))
        pairs = [(e, f) for e, f in zip(self.epochs, self.frames) if e in keep]
        self.epochs, self.frames = [e for e, _ in pairs], [f for _, f in pairs]
        return frame

    def tensors(self) -> dict[str, torch.Tensor]:
        """The record as flat tensors for the checkpoint (save_checkpoint's `motion`)."""
        stacked = np.stack(self.frames) if self.frames else np.zeros((0, len(self.items), 2), np.float32)
        narrow = len(stacked) == 0 or float(np.abs(stacked).max()) < FLOAT16_MAX
        return {"frames": torch.from_numpy(stacked.astype(np.float16 if narrow else np.float32)),
                "epochs": torch.tensor(self.epochs, dtype=torch.int32),
                "items": torch.from_numpy(self.items.astype(np.int32)),
                "labels": torch.from_numpy(self.labels.astype(np.int32))}

    def describe(self) -> dict:
        """What the checkpoint's JSON header says of it (the frames themselves are tensors)."""
        return {"projection": self.projection, "items": len(self.items), "frames": len(self.frames),
                "max_frames": self.max_frames}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], info: dict) -> "MotionRecord | None":
        """The record saved by `tensors` + `describe`; None when the checkpoint has none (trained before frames
        were recorded, or with motion_items=0)."""
        if "frames" not in tensors or not info:
            return None
        frames = tensors["frames"].float().numpy()
        return cls(tensors["items"].numpy().astype(np.int64), tensors["labels"].numpy().astype(np.int64),
                   str(info.get("projection", "pca")), int(info.get("max_frames", len(frames))),
                   [int(e) for e in tensors["epochs"].tolist()], [f for f in frames])
