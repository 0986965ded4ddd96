"""Comparing linear subspaces: principal angles, and a linear autoencoder's decoder
set against PCA (Baldi & Hornik 1989: an MSE-trained linear AE spans the top-k
principal subspace of its data, though its basis need not be the principal
directions). Plain functions over numpy arrays.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def orthonormal_basis(a: np.ndarray, rtol: float = 1e-10) -> np.ndarray:
    """(P, k) columns -> (P, r) an orthonormal basis of their span (r = the numerical rank), from the SVD."""
    a = np.asarray(a, np.float64)
    u, s, _ = np.linalg.svd(a, full_matrices=False)
    rank = int((s > rtol * max(s.max(initial=0.0), 1e-300)).sum())
    return u[:, :rank]


def principal_angles(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The principal angles between the column spaces of a (P, k) and b (P, m), in radians, smallest first;
    min(rank a, rank b) of them (Björck & Golub 1973).

    Cosines are the singular values of Qa^T Qb. arccos loses every digit near 0 (cos 1e-8 rounds to 1), so
    angles whose cosine² is at least 1/2 come from their sines instead: the singular values of the part of
    Qb outside span(a), (I - Qa Qa^T) Qb (Knyazev & Argentati 2002, the recipe scipy.linalg.subspace_angles
    follows; it lists them largest first).
    """
    qa, qb = orthonormal_basis(a), orthonormal_basis(b)
    if qa.shape[1] < qb.shape[1]:  # project the smaller basis onto the larger, so the residual has r columns
        qa, qb = qb, qa
    cross = qa.T @ qb  # (ra, rb), rb <= ra
    cos = np.clip(np.linalg.svd(cross, compute_uv=False), -1.0, 1.0)  # largest first = smallest angles
    sin = np.clip(np.linalg.svd(qb - qa @ cross, compute_uv=False), -1.0, 1.0)  # largest first
    from_cos = np.arccos(cos)
    from_sin = np.arcsin(sin[::-1])  # smallest sine first, aligned with the largest cosine
    return np.where(cos ** 2 >= 0.5, from_sin, from_cos)


def pca_components(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, P) data -> its top-k principal directions as rows (k, P) and the share of the total variance each
    explains (k,), from the SVD of the centred data."""
    x = np.asarray(x, np.float64)
    centred = x - x.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    var = s ** 2
    return vt[:k], var[:k] / max(var.sum(), 1e-300)


@dataclass
class SubspaceComparison:
    """A linear decoder's column space against the top-k PCA subspace of the data it was trained on."""

    angles: np.ndarray  # (k,) radians, smallest first
    random_angles: np.ndarray  # (k,) a random k-D subspace's angles to the same PCA subspace: what "unrelated" is
    explained: np.ndarray  # (k,) share of the data's variance along each of the top-k principal directions

    @property
    def degrees(self) -> np.ndarray:
        return np.degrees(self.angles)


def compare_with_pca(weight: np.ndarray, components: np.ndarray, explained: np.ndarray,
                     seed: int = 0) -> SubspaceComparison:
    """weight (P, D): a linear decoder's matrix (decode(z) = W z + b); components (k, P): principal directions
    as rows. The random reference is a seeded Gaussian (P, D) matrix, whose span is a uniformly random D-plane."""
    weight = np.asarray(weight, np.float64)
    random = np.random.default_rng(seed).normal(size=weight.shape)
    return SubspaceComparison(principal_angles(weight, components.T), principal_angles(random, components.T),
                              np.asarray(explained, np.float64))
