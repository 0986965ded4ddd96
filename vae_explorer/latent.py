"""Latent-space math: encode a dataset, principal axes of its codes, 2-D views
(raw plane, PCA), latent planes ("manifolds"), slider axes, interpolation,
reconstruction errors and a PCA baseline. Plain functions over tensors and
arrays, deterministic given a seed; the server's explorer turns their results
into pictures.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .models import Autoencoder

PROJECTIONS = ("auto", "raw", "pca", "umap")


@torch.no_grad()
def encode_items(model: Autoencoder, items: torch.Tensor, kind, batch_size: int = 1000) -> torch.Tensor:
    """(N, ...) stored items -> (N, D) float32 codes on the CPU (`model.encode`: AE code, VAE mean, VQ vector)."""
    device = next(model.parameters()).device
    out = [model.encode(kind.prepare(items[i:i + batch_size].to(device))).float().cpu()
           for i in range(0, len(items), batch_size)]
    return torch.cat(out) if out else torch.empty(0, model.latent_dim)


@torch.no_grad()
def reconstruction_errors(model: Autoencoder, items: torch.Tensor, kind, batch_size: int = 1000) -> np.ndarray:
    """(N, ...) stored items -> (N,) the kind's error of `reconstruct` per item (no sampling, no corruption)."""
    errors = []
    for i in range(0, len(items), batch_size):
        x = kind.prepare(items[i:i + batch_size])
        errors.append(kind.errors(model.reconstruct(x), x))
    return torch.cat(errors).numpy() if errors else np.zeros(0, np.float32)


ACTIVE_VARIANCE = 0.01  # Burda, Grosse & Salakhutdinov 2016: a unit is active when Var_x[E_q[z_d]] > 0.01


@dataclass
class LatentUsage:
    """How much each latent dimension is used, over a set of items.

    variance: (D,) variance over the items of the posterior mean (of the code, for
    deterministic models); active: variance > ACTIVE_VARIANCE. kl: (D,) mean
    KL(q(z_d | x) || N(0, 1)) in nats, or None for models without a posterior.
    """

    variance: np.ndarray
    active: np.ndarray
    kl: np.ndarray | None

    @property
    def order(self) -> np.ndarray:
        """Dimensions from the most used: by KL where there is one, else by variance."""
        return np.argsort(-(self.kl if self.kl is not None else self.variance), kind="stable")


def _codes_in_batches(model: Autoencoder, items: torch.Tensor, kind, batch_size: int):
    """(code means (B, D) float64 on the CPU, posterior or None) per batch of (N, ...) stored items: the
    posterior mean where the model has a posterior, else its deterministic code."""
    device = next(model.parameters()).device
    for i in range(0, len(items), batch_size):
        x = kind.prepare(items[i:i + batch_size].to(device))
        q = model.posterior(x)
        yield (q.mean if q is not None else model.encode(x)).double().cpu(), q


@torch.no_grad()
def latent_usage(model: Autoencoder, items: torch.Tensor, kind, batch_size: int = 1000) -> LatentUsage:
    """Per-dimension usage over (N, ...) stored items: posterior-mean variance, active units, KL."""
    means, kls = [], []
    for mean, q in _codes_in_batches(model, items, kind, batch_size):
        means.append(mean)
        if q is not None:
            kls.append(q.kl_per_dim().double().sum(0).cpu())
    mean = torch.cat(means)
    variance = mean.var(0, unbiased=False).numpy()
    kl = (torch.stack(kls).sum(0) / len(mean)).numpy() if kls else None
    return LatentUsage(variance, variance > ACTIVE_VARIANCE, kl)


@dataclass
class CodeMoments:
    """Per-dimension moments of the codes an encoder produces over a set of items, to set against N(0, 1).

    mean: (D,) E_x[mu(x)], the mean code (the posterior mean's, for models with a posterior).
    std: (D,) the std of the codes the decoder is trained on. With a posterior these are samples of the
    aggregate posterior q(z) = E_x q(z | x): sqrt(Var_x[mu_d(x)] + E_x[sigma_d(x)^2]) by the law of total
    variance; a VAE's KL term pulls q(z) towards N(0, I). Without one, the deterministic code's std.
    mean_std: (D,) the std of the posterior means alone (equal to `std` without a posterior).
    """

    mean: np.ndarray
    std: np.ndarray
    mean_std: np.ndarray
    has_posterior: bool


@torch.no_grad()
def code_moments(model: Autoencoder, items: torch.Tensor, kind, batch_size: int = 1000) -> CodeMoments:
    """Mean and std per dimension of what the encoder produces over (N, ...) stored items (`CodeMoments`)."""
    means, variances = [], []
    for mean, q in _codes_in_batches(model, items, kind, batch_size):
        means.append(mean)
        if q is not None:
            variances.append(q.std.double().cpu().square())
    mu = torch.cat(means)
    spread = mu.var(0, unbiased=False)
    total = spread + torch.cat(variances).mean(0) if variances else spread
    return CodeMoments(mu.mean(0).numpy(), total.sqrt().numpy(), spread.sqrt().numpy(), bool(variances))


@torch.no_grad()
def decoder_inputs(model: Autoencoder, items: torch.Tensor, kind, seed: int = 0, batch_size: int = 1000) -> np.ndarray:
    """(N, D) the codes the decoder is trained on, one per item: a seeded draw z ~ q(z | x) where the model has
    a posterior (training decodes samples, not means), else the code itself."""
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, len(items), batch_size):
        x = kind.prepare(items[i:i + batch_size].to(device))
        q = model.posterior(x)
        if q is None:
            out.append(model.encode(x).double().cpu())
        else:
            eps = torch.randn(q.mean.shape, generator=generator, dtype=torch.float64)
            out.append(q.mean.double().cpu() + q.std.double().cpu() * eps)
    return torch.cat(out).numpy() if out else np.zeros((0, model.latent_dim))


def nearest_distances(queries: np.ndarray, references: np.ndarray, leave_one_out: bool = False,
                      chunk: int = 1024) -> np.ndarray:
    """(M,) the Euclidean distance from each of (M, D) queries to its nearest of (N, D) references, exactly
    (brute force in chunks of `chunk` queries). leave_one_out: the queries are the references, and each
    one's distance to itself is left out."""
    q, r = np.asarray(queries, np.float64), np.asarray(references, np.float64)
    r_sq = (r ** 2).sum(1)
    out = np.empty(len(q))
    for start in range(0, len(q), chunk):
        block = q[start:start + chunk]
        # |a - b|² = |a|² - 2 a·b + |b|², clipped at 0 against rounding.
        d2 = (block ** 2).sum(1)[:, None] - 2.0 * block @ r.T + r_sq[None]
        if leave_one_out:
            rows = np.arange(len(block))
            d2[rows, start + rows] = np.inf
        out[start:start + chunk] = np.sqrt(np.maximum(d2.min(1), 0.0))
    return out


@dataclass
class PriorGap:
    """Where samples of N(0, I) land among a model's codes.

    from_prior: (M,) distance from each prior sample to the nearest test code.
    between_codes: (N,) distance from each test code to the nearest other one.
    A decoder only learned to decode near its codes: where prior samples land much farther from any code than
    codes lie from each other, decoding N(0, I) gives things the decoder never saw.
    """

    from_prior: np.ndarray
    between_codes: np.ndarray

    @property
    def ratio(self) -> float:
        """median(from_prior) / median(between_codes): about 1 where the prior covers the codes."""
        return float(np.median(self.from_prior) / max(np.median(self.between_codes), 1e-12))

    @property
    def far(self) -> float:
        """The share of prior samples farther from every code than 95% of codes are from their nearest
        neighbour (0.05 where prior samples and codes are alike)."""
        return float((self.from_prior > np.percentile(self.between_codes, 95)).mean())


def prior_gap(codes: np.ndarray, n_samples: int | None = None, seed: int = 0) -> PriorGap:
    """Distances of `n_samples` (default: as many as codes) seeded draws of N(0, I) to the nearest of (N, D)
    codes, and of each code to its nearest other code (`PriorGap`)."""
    codes = np.asarray(codes, np.float64)
    n = len(codes) if n_samples is None else n_samples
    samples = np.random.default_rng(seed).standard_normal((n, codes.shape[1]))
    return PriorGap(nearest_distances(samples, codes), nearest_distances(codes, codes, leave_one_out=True))


def traversals(center: np.ndarray, dims, offsets, scales: np.ndarray | None = None) -> np.ndarray:
    """Codes for latent traversals: for each dimension d in `dims`, center + t * scales[d] * e_d for t in
    `offsets` (scales default to 1: prior units); (len(dims) * len(offsets), D), one row per dimension."""
    center = np.asarray(center, np.float32)
    offsets = np.asarray(offsets, np.float32)
    z = np.repeat(center[None], len(dims) * len(offsets), 0)
    for row, d in enumerate(dims):
        z[row * len(offsets):(row + 1) * len(offsets), d] += offsets * (1.0 if scales is None else scales[d])
    return z


def _coefficients(z: np.ndarray, center: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """(N, D) codes -> (N, k) their coordinates along k directions (rows of `directions`) through `center`."""
    return (np.asarray(z, np.float32) - center) @ directions.T


@dataclass
class PrincipalAxes:
    """PCA of a set of codes: z ≈ mean + coefs @ directions, coefs[:, i] has std `std[i]`."""

    mean: np.ndarray  # (D,)
    directions: np.ndarray  # (D, D) rows = principal directions, by decreasing variance
    std: np.ndarray  # (D,) std of the codes along each direction

    def coefficients(self, z: np.ndarray) -> np.ndarray:
        return _coefficients(z, self.mean, self.directions)

    def explained(self) -> np.ndarray:
        var = self.std ** 2
        return var / max(var.sum(), 1e-12)


def principal_axes(codes: np.ndarray) -> PrincipalAxes:
    codes = np.asarray(codes, dtype=np.float64)
    mean = codes.mean(0)
    # SVD of the centred codes: right singular vectors are the principal directions. All D of them are needed
    # (sliders and planes take any), which a thin SVD gives only with at least D codes; with fewer, the full one,
    # whose left factor is then small. Full on 10,000 MNIST codes would make a 10,000 × 10,000 left factor:
    # 800 MB and 4 s for the first map of each model.
    _, s, vt = np.linalg.svd(codes - mean, full_matrices=len(codes) < codes.shape[1])
    std = np.zeros(codes.shape[1])
    std[: len(s)] = s / np.sqrt(max(len(codes) - 1, 1))
    # Fix each direction's sign (largest component positive) so plots do not flip between runs.
    signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(1)])
    vt = vt * np.where(signs == 0, 1, signs)[:, None]
    return PrincipalAxes(mean.astype(np.float32), vt.astype(np.float32), std.astype(np.float32))


@dataclass
class SliderAxes:
    """What latent sliders move: z = base + sum_i value_i * directions[i].

    For codes of at most `max_sliders` dims the directions are the coordinate axes
    and a slider's value is the coordinate itself; for wider codes they are the
    top principal directions, and the value is the coefficient along it.
    """

    labels: list[str]
    directions: np.ndarray  # (k, D)
    center: np.ndarray  # (D,)
    low: np.ndarray  # (k,) slider ranges: mean ± 3 std of the codes along each direction
    high: np.ndarray

    def values(self, z: np.ndarray) -> np.ndarray:
        return _coefficients(z, self.center, self.directions)

    def compose(self, z_base: np.ndarray, values) -> np.ndarray:
        """The code with its slider coordinates replaced by `values`, the rest of `z_base` kept."""
        values = np.asarray(values, np.float32)[: len(self.directions)]
        z_base = np.asarray(z_base, np.float32)
        current = self.values(z_base)
        return z_base + (values - current) @ self.directions


def slider_axes(codes: np.ndarray, axes: PrincipalAxes, max_sliders: int = 8) -> SliderAxes:
    d = codes.shape[1]
    if d <= max_sliders:
        mean, std = codes.mean(0), codes.std(0)
        return SliderAxes([f"z[{i}]" for i in range(d)], np.eye(d, dtype=np.float32),
                          np.zeros(d, np.float32), mean - 3 * std, mean + 3 * std)
    k = max_sliders
    share = axes.explained()
    labels = [f"PC {i + 1} ({100 * share[i]:.0f}% of variance)" for i in range(k)]
    return SliderAxes(labels, axes.directions[:k], axes.mean, -3 * axes.std[:k], 3 * axes.std[:k])


def latent_plane(codes: np.ndarray, axes: PrincipalAxes, n: int = 15) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An n×n grid of codes to decode: (n*n, D), and the two axes' tick values (n,), (n,).

    2-D codes: the raw plane over the 1st–99th percentile box of the codes, so the
    holes an AE leaves between classes show as garbage and a VAE's smooth prior
    shows as smooth change. Wider codes: the plane of the top two principal
    directions through the mean, ±2.5 std, the other coordinates at the mean.
    Rows run top to bottom from high to low second coordinate (as a plot's y axis).
    """
    d = codes.shape[1]
    if d == 1:
        lo, hi = np.percentile(codes[:, 0], [1, 99])
        xs = np.linspace(lo, hi, n * n, dtype=np.float32)
        return xs[:, None], xs, np.zeros(1, np.float32)
    if d == 2:
        lo, hi = np.percentile(codes, [1, 99], axis=0)
        xs = np.linspace(lo[0], hi[0], n, dtype=np.float32)
        ys = np.linspace(lo[1], hi[1], n, dtype=np.float32)
        gx, gy = np.meshgrid(xs, ys[::-1])
        return np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32), xs, ys
    xs = np.linspace(-2.5, 2.5, n, dtype=np.float32) * axes.std[0]
    ys = np.linspace(-2.5, 2.5, n, dtype=np.float32) * axes.std[1]
    gx, gy = np.meshgrid(xs, ys[::-1])
    z = axes.mean + gx.ravel()[:, None] * axes.directions[0] + gy.ravel()[:, None] * axes.directions[1]
    return z.astype(np.float32), xs, ys


def interpolate(z0: np.ndarray, z1: np.ndarray, ts, mode: str = "linear") -> np.ndarray:
    """Codes along the path from z0 to z1 at fractions ts: (len(ts), D).

    linear: (1-t) z0 + t z1. spherical (slerp, Shoemake 1985 / White 2016): moves
    along the great circle and interpolates the norm linearly, so the path keeps
    the typical norm of Gaussian codes instead of cutting through the low-norm
    middle of the prior.
    """
    z0, z1 = np.asarray(z0, np.float64), np.asarray(z1, np.float64)
    ts = np.asarray(ts, np.float64).reshape(-1, 1)
    if mode == "linear":
        return ((1 - ts) * z0 + ts * z1).astype(np.float32)
    if mode != "spherical":
        raise ValueError(f"interpolation must be 'linear' or 'spherical', got {mode!r}")
    n0, n1 = np.linalg.norm(z0), np.linalg.norm(z1)
    if n0 < 1e-8 or n1 < 1e-8:
        return ((1 - ts) * z0 + ts * z1).astype(np.float32)
    u0, u1 = z0 / n0, z1 / n1
    omega = np.arccos(np.clip(u0 @ u1, -1.0, 1.0))
    if omega < 1e-4:  # (anti)parallel within rounding: slerp degenerates to lerp
        return ((1 - ts) * z0 + ts * z1).astype(np.float32)
    direction = (np.sin((1 - ts) * omega) * u0 + np.sin(ts * omega) * u1) / np.sin(omega)
    return (direction * ((1 - ts) * n0 + ts * n1)).astype(np.float32)


class PCABaseline:
    """PCA on flattened items as a linear autoencoder: the baseline every AE should beat."""

    def __init__(self, items: torch.Tensor, k: int, kind):
        x = kind.prepare(items).flatten(1).float()  # (N, P)
        self.shape = tuple(items.shape[1:])
        self.k = min(k, x.shape[0], x.shape[1])
        self.mean = x.mean(0, dtype=torch.float64)
        # Eigenvectors of the (P, P) scatter matrix rather than the SVD of the (N, P) data: the same directions
        # several times faster (MNIST's 60,000 × 784: 21 s -> about 6 s on this loaded 2-core machine). The
        # product runs in float32 (2.4x faster than float64; the top-20 eigenvalues agree to 5e-8 on MNIST),
        # the eigensolver in float64.
        centred = x - self.mean.float()
        values, vectors = torch.linalg.eigh((centred.T @ centred).double())  # ascending
        values, vectors = values.flip(0).clamp_min(0), vectors.flip(1)
        self.components = vectors[:, : self.k].T.contiguous()  # (k, P)
        self.explained = (values / values.sum().clamp_min(1e-300))[: self.k]  # (k,) share of the variance

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """(B, ...) prepared items -> projection onto the top-k subspace, clipped to [0, 1]."""
        flat = x.flatten(1).double() - self.mean
        return ((flat @ self.components.T) @ self.components + self.mean).clamp(0, 1).float().view(-1, *self.shape)


def resolve_projection(method: str, latent_dim: int) -> str:
    """'auto' is raw for 2-D codes, PCA otherwise; 'raw' needs 2-D codes."""
    if method not in PROJECTIONS:
        raise ValueError(f"projection must be one of {', '.join(PROJECTIONS)}, got {method!r}")
    if method == "auto":
        return "raw" if latent_dim <= 2 else "pca"
    if method == "raw" and latent_dim > 2:
        return "pca"
    return method


def _two_columns(points: np.ndarray) -> np.ndarray:
    return points[:, :2] if points.shape[1] >= 2 else np.pad(points, ((0, 0), (0, 2 - points.shape[1])))


def raw_2d(codes: np.ndarray) -> np.ndarray:
    """(N, D) -> (N, 2): the first two coordinates (a 1-D code gets a zero second one)."""
    return _two_columns(codes)


def pca_2d(codes: np.ndarray, axes: PrincipalAxes) -> np.ndarray:
    """(N, D) -> (N, 2) coefficients on the top two principal directions."""
    return _two_columns(_coefficients(codes, axes.mean, axes.directions[:2]))


def map_frame(latent_dim: int, method: str, axes: PrincipalAxes | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The affine map the latent map's `method` ("raw" or "pca") applies to a code: (W (2, D), centre (D,)) with
    point = W @ (z - centre), as `raw_2d` and `pca_2d` place the test codes (a missing second row is zeros)."""
    if method == "raw":
        return np.eye(2, latent_dim), np.zeros(latent_dim)
    if method == "pca":
        rows = np.asarray(axes.directions[:2], np.float64)
        return np.vstack([rows, np.zeros((2 - len(rows), latent_dim))]), np.asarray(axes.mean, np.float64)
    raise ValueError(f"{method!r} is not an affine map of the codes (raw, pca)")


def map_ellipse(centre: np.ndarray, cov: np.ndarray, sigmas: float = 2.0, points: int = 73) -> dict:
    """The `sigmas`-σ contour of a 2-D Gaussian N(centre, cov) on a map: {"x", "y" (points, closed), "semi_axes"
    (major first), "angle_deg" (of the major axis from the x axis), "cov"}; every point p satisfies
    (p - centre)ᵀ cov⁻¹ (p - centre) = sigmas²."""
    centre, cov = np.asarray(centre, np.float64), np.asarray(cov, np.float64)
    values, vectors = np.linalg.eigh((cov + cov.T) / 2)  # ascending
    values, vectors = np.clip(values[::-1], 0.0, None), vectors[:, ::-1]
    semi = sigmas * np.sqrt(values)
    t = np.linspace(0.0, 2 * np.pi, points)
    xy = centre[:, None] + (vectors * semi) @ np.stack([np.cos(t), np.sin(t)])
    return {"x": xy[0].tolist(), "y": xy[1].tolist(), "semi_axes": semi.tolist(),
            "angle_deg": float(np.degrees(np.arctan2(vectors[1, 0], vectors[0, 0]))), "cov": cov.tolist()}
