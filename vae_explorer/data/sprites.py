"""Procedural sprites with known factors of variation, after dSprites (Matthey et al.
2017): a white square, ellipse or heart on black, at several scales, rotations and
positions, every combination once. Deterministic and offline: the images are
rasterized here (4×4 supersampled) in a couple of seconds, and every image carries
the index of each factor, so a β-VAE's traversals and the disentanglement metrics
have a ground truth to compare with.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from .dataset import Dataset
from .images import IMAGES

SIZE = 32  # pixels per side
SHAPES = ("square", "ellipse", "heart")
# Each factor's values. Rotations span a quarter turn, so that no two of them draw the same square.
FACTORS = {
    "shape": SHAPES,
    "scale": (0.5, 0.65, 0.8, 0.95),
    "rotation": tuple(round(15.0 * i, 1) for i in range(6)),  # degrees
    "x": tuple(np.linspace(0.3, 0.7, 8).round(3)),  # centre, as a fraction of the width
    "y": tuple(np.linspace(0.3, 0.7, 8).round(3)),
}
EXTENT = 0.22  # the largest sprite's half-size, as a fraction of the image side
SUPERSAMPLE = 4


def _inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether points (u, v) in the sprite's own frame (half-size 1, v up) are inside it."""
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8
    if shape == "ellipse":
        return (u / 1.0) ** 2 + (v / 0.5) ** 2 <= 1.0
    # The heart curve (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0, centred and scaled into the unit box.
    x, y = u * 1.25, v * 1.25 + 0.15
    return (x * x + y * y - 1) ** 3 - x * x * y**3 <= 0


def render(shape: str, scale: float, rotation: float, x: float, y: float, size: int = SIZE) -> np.ndarray:
    """One sprite: (size, size) float in [0, 1], the covered fraction of each pixel."""
    n = size * SUPERSAMPLE
    centres = (np.arange(n) + 0.5) / n  # sample points, as fractions of the side
    px, py = np.meshgrid(centres, centres)
    dx, dy = px - x, (1.0 - py) - y  # image rows grow downwards; y grows upwards
    angle = math.radians(rotation)
    cos, sin = math.cos(angle), math.sin(angle)
    half = EXTENT * scale
    u = (cos * dx + sin * dy) / half  # rotate the sample points back into the sprite's frame
    v = (-sin * dx + cos * dy) / half
    covered = _inside(shape, u, v).astype(np.float32)
    return covered.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean((1, 3))


def factor_grid() -> np.ndarray:
    """(N, 5) int64: every combination of factor indices, in the order of FACTORS."""
    return np.array(list(itertools.product(*(range(len(v)) for v in FACTORS.values()))), dtype=np.int64)


def load_sprites(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """Every combination of the factors once (4,608 images, 1×32×32 uint8), a fixed seeded test split;
    labels are the shape, and `factors` holds every factor's index per image."""
    grid = factor_grid()
    names = list(FACTORS)
    images = np.empty((len(grid), 1, SIZE, SIZE), np.uint8)
    for i, idx in enumerate(grid):
        values = {name: FACTORS[name][j] for name, j in zip(names, idx)}
        images[i, 0] = np.round(render(**values) * 255.0)
    x, f = torch.from_numpy(images), torch.from_numpy(grid)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(len(x) * test_fraction))
    test, train = perm[:n_test], perm[n_test:]
    return Dataset("sprites", IMAGES, x[train], f[train, 0], x[test], f[test, 0], classes=list(SHAPES),
                   factor_names=tuple(names), train_factors=f[train], test_factors=f[test],
                   factor_values={name: [str(v) for v in values] for name, values in FACTORS.items()})
