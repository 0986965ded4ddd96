"""Attribute vectors (issue 14 item 7), checked against plain numpy loops."""
from __future__ import annotations

import numpy as np
import pytest

from vae_explorer.attributes import apply_attribute, attribute_vector, projections


def test_direction_and_consistency_against_a_loop():
    rng = np.random.default_rng(1)
    codes = rng.normal(size=(40, 5))
    a, b = np.arange(0, 12), np.arange(20, 29)
    v = attribute_vector(codes, a, b)
    direction = codes[b].mean(0) - codes[a].mean(0)
    np.testing.assert_allclose(v.direction, direction)
    cosines = []
    for i in a:
        for j in b:
            d = codes[j] - codes[i]
            cosines.append(d @ direction / (np.linalg.norm(d) * np.linalg.norm(direction)))
    assert v.consistency == pytest.approx(np.mean(cosines))
    assert v.pairs == len(a) * len(b) and (v.size_a, v.size_b) == (12, 9)
    masks = attribute_vector(codes, np.isin(np.arange(40), a), np.isin(np.arange(40), b))  # masks work too
    np.testing.assert_allclose(masks.direction, direction)


def test_a_pure_shift_is_perfectly_consistent_and_noise_is_not():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(200, 8)) * 0.01
    shift = np.zeros(8)
    shift[3] = 5.0
    codes = np.concatenate([base[:100], base[100:] + shift])
    v = attribute_vector(codes, np.arange(100), np.arange(100, 200))
    assert v.consistency > 0.99
    np.testing.assert_allclose(v.unit, np.eye(8)[3], atol=0.01)
    noise = attribute_vector(rng.normal(size=(400, 8)), np.arange(200), np.arange(200, 400))
    assert abs(noise.consistency) < 0.3  # two samples of one distribution: pair differences point anywhere


def test_sampled_pairs_estimate_the_full_mean():
    rng = np.random.default_rng(2)
    codes = rng.normal(size=(600, 4)) + np.repeat([[0, 0, 0, 0], [1, 0, 0, 0]], 300, axis=0)
    full = attribute_vector(codes, np.arange(300), np.arange(300, 600), max_pairs=10**6)
    sampled = attribute_vector(codes, np.arange(300), np.arange(300, 600), max_pairs=5_000)
    assert sampled.pairs == 5_000 and full.pairs == 90_000
    assert sampled.consistency == pytest.approx(full.consistency, abs=0.02)


def test_applying_and_projecting():
    codes = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 1.0], [2.0, 1.0]])
    v = attribute_vector(codes, [0, 2], [1, 3])
    np.testing.assert_allclose(v.direction, [2.0, 0.0])
    assert v.consistency == pytest.approx(np.mean([1, 2 / np.sqrt(5), 2 / np.sqrt(5), 1]))
    np.testing.assert_allclose(apply_attribute([1.0, 1.0], v, [0, 0.5, 1]), [[1, 1], [2, 1], [3, 1]])
    np.testing.assert_allclose(projections(codes, v), codes @ np.array([1.0, 0.0]))


def test_empty_groups_are_refused():
    with pytest.raises(ValueError, match="at least one"):
        attribute_vector(np.zeros((3, 2)), [], [1])


def test_explorer_attribute_view(explorer):
    from vae_explorer.server import ViewError

    assert explorer.attribute_groups("digits_vae") == [str(d) for d in range(10)]
    strip, fig, text = explorer.attribute_view("digits_vae", "1", "7", 5)
    entry = explorer.load("digits_vae")
    expected = attribute_vector(entry.codes, entry.labels == 1, entry.labels == 7)
    assert f"Consistency **{expected.consistency:.2f}**" in text
    names = [t.name for t in fig.data]
    assert any(n.startswith("1 (") for n in names) and any(n.startswith("7 (") for n in names)
    shown = np.concatenate([t.x for t in fig.data])
    np.testing.assert_allclose(np.sort(shown), np.sort(entry.codes.astype(np.float64) @ expected.unit), rtol=1e-6)
    assert strip.size[0] > strip.size[1] * 4  # one row: the item, then 7 strengths
    image = explorer.attribute_at("digits_vae", "1", "7", 5, 0.0)
    assert image.size[0] >= 64
    with pytest.raises(ViewError, match="two different groups"):
        explorer.attribute_view("digits_vae", "3", "3", 0)
    with pytest.raises(ViewError, match="choose two of those groups"):
        explorer.attribute_view("digits_vae", "3", "cat", 0)
    with pytest.raises(ViewError, match="Strength"):
        explorer.attribute_at("digits_vae", "1", "7", 5, 9.0)
