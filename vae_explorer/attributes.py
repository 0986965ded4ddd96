"""Attribute vectors: the direction in latent space from one group of items to another (e.g. label 3 -> label 8),
how consistently individual pairs agree with it, codes moved along it, and every code's position along it.
Plain functions over (N, D) code arrays; the Explorer's attribute view decodes and draws them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class AttributeVector:
    """The direction from group A's mean code to group B's.

    direction: (D,) mean(codes[B]) - mean(codes[A]) (not normalised: adding it to a typical A code lands at
    a typical B code). consistency: in [-1, 1], how well individual pairs agree with the direction (see
    `attribute_vector`). pairs: the number of (a, b) pairs it averages over.
    """

    direction: np.ndarray
    consistency: float
    pairs: int
    size_a: int
    size_b: int

    @property
    def unit(self) -> np.ndarray:
        norm = float(np.linalg.norm(self.direction))
        return self.direction / norm if norm > 0 else self.direction


def attribute_vector(codes: np.ndarray, in_a: np.ndarray, in_b: np.ndarray, max_pairs: int = 20_000,
                     seed: int = 0) -> AttributeVector:
    """The attribute vector between two groups of codes (boolean masks or index arrays into `codes`).

    consistency = mean over pairs (a, b), a in A and b in B, of cos(b - a, direction): the mean cosine similarity
    between each individual pair difference and the mean-difference direction. 1: every pair moves exactly
    along the direction (the attribute is one consistent shift); near 0: the groups differ in many unrelated
    ways and the mean difference describes few pairs. All |A|·|B| pairs when there are at most `max_pairs`,
    else `max_pairs` pairs drawn uniformly (seeded). Pairs with b == a are skipped (no direction).
    """
    codes = np.asarray(codes, np.float64)
    a = np.flatnonzero(in_a) if np.asarray(in_a).dtype == bool else np.asarray(in_a, int)
    b = np.flatnonzero(in_b) if np.asarray(in_b).dtype == bool else np.asarray(in_b, int)
    if len(a) == 0 or len(b) == 0:
        raise ValueError("both groups need at least one item")
    direction = codes[b].mean(0) - codes[a].mean(0)
    if len(a) * len(b) <= max_pairs:
        ia, ib = np.repeat(a, len(b)), np.tile(b, len(a))
    else:
        rng = np.random.default_rng(seed)
        ia, ib = rng.choice(a, max_pairs), rng.choice(b, max_pairs)
    diffs = codes[ib] - codes[ia]
    norms = np.linalg.norm(diffs, axis=1)
    keep = norms > 0
    length = float(np.linalg.norm(direction))
    if length == 0 or not keep.any():
        consistency = 0.0
    else:
        consistency = float(np.mean(diffs[keep] @ direction / (norms[keep] * length)))
    return AttributeVector(direction, consistency, int(keep.sum()), len(a), len(b))


def apply_attribute(code: np.ndarray, vector: AttributeVector, strengths) -> np.ndarray:
    """(S, D): `code` + s · direction for each strength s (1: the full group difference)."""
    return np.asarray(code, np.float64)[None, :] + np.asarray(strengths, np.float64)[:, None] * vector.direction[None, :]


def projections(codes: np.ndarray, vector: AttributeVector) -> np.ndarray:
    """(N,) each code's coordinate along the direction: its dot product with the unit vector."""
    return np.asarray(codes, np.float64) @ vector.unit
