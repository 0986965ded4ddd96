"""The procedural sprites: deterministic, every factor combination once, and each factor
recoverable from the images alone (by an independent recipe: image moments and 1-nearest-neighbour)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler

from vae_explorer.data import load_dataset
from vae_explorer.data.sprites import FACTORS, SIZE, load_sprites, render


@pytest.fixture(scope="module")
def sprites():
    return load_dataset("sprites")


def test_deterministic_and_every_combination_once(sprites):
    again = load_sprites()
    assert torch.equal(again.train_x, sprites.train_x) and torch.equal(again.test_factors, sprites.test_factors)
    factors = torch.cat([sprites.train_factors, sprites.test_factors])
    assert len(factors) == math.prod(len(v) for v in FACTORS.values()) == len(torch.unique(factors, dim=0))
    images = torch.cat([sprites.train_x, sprites.test_x]).flatten(1)
    assert len(torch.unique(images, dim=0)) == len(images)  # no two combinations draw the same picture
    assert sprites.item_shape == (1, SIZE, SIZE) and sprites.classes == list(FACTORS["shape"])
    assert torch.equal(sprites.test_y, sprites.test_factors[:, 0])  # labels are the shape
    assert sprites.describe()["factors"]["rotation"] == [str(v) for v in FACTORS["rotation"]]


def test_a_sprite_covers_the_area_its_shape_and_scale_say():
    square = render("square", 1.0, 0.0, 0.5, 0.5)
    side = 2 * 0.8 * 0.22 * SIZE  # the square's half-size is 0.8 of the sprite's extent
    # 4×4 supersampling puts each edge within 1/8 pixel: about ±4% on an 11-pixel square's area.
    assert square.sum() == pytest.approx(side**2, rel=0.06)
    ellipse = render("ellipse", 0.5, 30.0, 0.4, 0.6)
    assert ellipse.sum() == pytest.approx(math.pi * 1.0 * 0.5 * (0.22 * 0.5 * SIZE) ** 2, rel=0.08)
    assert render("heart", 0.8, 45.0, 0.5, 0.5).max() == 1.0 and 0.0 <= render("heart", 0.5, 0, 0.3, 0.7).min()


def _moments(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(centroid (N, 2), normalized central moments of orders 2 to 4 plus area (N, 13))."""
    x = x[:, 0].double().numpy() / 255.0
    ys, xs = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    m = x.sum((1, 2))
    cx, cy = (x * xs).sum((1, 2)) / m, (x * ys).sum((1, 2)) / m
    dx, dy = xs[None] - cx[:, None, None], ys[None] - cy[:, None, None]
    shape = [m] + [(x * dx**p * dy**q).sum((1, 2)) / m ** ((p + q) / 2 + 1)
                   for p in range(5) for q in range(5 - p) if p + q >= 2]
    return np.stack([cx, cy], 1), np.stack(shape, 1)


def test_every_factor_is_recoverable_from_the_images(sprites):
    (pos, shape), (pos_t, shape_t) = _moments(sprites.train_x), _moments(sprites.test_x)
    scaler = StandardScaler().fit(shape)
    for j, name in enumerate(sprites.factor_names):
        features, features_t = (pos, pos_t) if name in ("x", "y") else (scaler.transform(shape), scaler.transform(shape_t))
        clf = KNeighborsClassifier(1).fit(features, sprites.train_factors[:, j].numpy())
        accuracy = clf.score(features_t, sprites.test_factors[:, j].numpy())
        assert accuracy > 0.95, (name, accuracy)
