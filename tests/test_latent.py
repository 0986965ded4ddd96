"""The latent math against independent references: PCA (scikit-learn), slerp's
defining properties, the slider and plane geometry, sampling statistics."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from vae_explorer import build_model
from vae_explorer.data import IMAGES
from vae_explorer.latent import (
    PCABaseline,
    encode_items,
    interpolate,
    latent_plane,
    pca_2d,
    principal_axes,
    reconstruction_errors,
    resolve_projection,
    slider_axes,
)


@pytest.fixture(scope="module")
def codes():
    rng = np.random.default_rng(0)
    # Anisotropic, correlated 12-D codes with a non-zero mean.
    return (rng.normal(size=(500, 12)) @ rng.normal(size=(12, 12)) * np.linspace(3, 0.1, 12) + 2.0).astype(np.float32)


def test_principal_axes_match_sklearn_pca(codes):
    axes = principal_axes(codes)
    ref = PCA().fit(codes)
    np.testing.assert_allclose(axes.mean, ref.mean_, rtol=1e-5, atol=1e-5)
    # Same directions up to sign, same spread along each.
    cos = np.abs((axes.directions * ref.components_).sum(1))
    assert cos[:6].min() > 0.999
    np.testing.assert_allclose(axes.std, np.sqrt(ref.explained_variance_), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(pca_2d(codes, axes),
                               ref.transform(codes)[:, :2] * np.sign((axes.directions[:2] * ref.components_[:2]).sum(1)),
                               rtol=1e-3, atol=1e-3)



@pytest.mark.parametrize("n", [3, 12, 40])
def test_principal_axes_give_every_direction_for_few_or_many_codes(codes, n):
    """All D orthonormal directions, whether there are fewer codes than dimensions (the full SVD) or more
    (the thin one, which never builds the N × N left factor); the spread matches sklearn's where it exists."""
    few = codes[:n]
    axes = principal_axes(few)
    d = few.shape[1]
    assert axes.directions.shape == (d, d) and axes.std.shape == (d,)
    np.testing.assert_allclose(axes.directions @ axes.directions.T, np.eye(d), atol=1e-5)
    k = min(n - 1, d)  # directions with a spread: the rest of the std is zero
    ref = PCA(n_components=k).fit(few)
    np.testing.assert_allclose(axes.std[:k], np.sqrt(ref.explained_variance_), rtol=1e-4, atol=1e-4)
    assert np.all(axes.std[n:] == 0)

def test_pca_baseline_matches_sklearn_reconstruction(digits):
    k = 10
    base = PCABaseline(digits.train_x, k, IMAGES)
    x = digits.test_x[:50].float() / 255
    ref = PCA(n_components=k).fit(digits.train_x.flatten(1).numpy() / 255.0)
    expected = np.clip(ref.inverse_transform(ref.transform(x.flatten(1).numpy())), 0, 1)
    np.testing.assert_allclose(base.reconstruct(x).flatten(1).numpy(), expected, atol=1e-4)


def test_linear_interpolation_endpoints_and_midpoint():
    z0, z1 = np.array([1.0, 0, 2]), np.array([-1.0, 4, 0])
    path = interpolate(z0, z1, [0, 0.5, 1], "linear")
    np.testing.assert_allclose(path, [z0, (z0 + z1) / 2, z1], atol=1e-6)


def test_slerp_follows_the_great_circle_with_interpolated_norm():
    rng = np.random.default_rng(1)
    z0, z1 = rng.normal(size=16), rng.normal(size=16) * 2
    ts = np.linspace(0, 1, 11)
    path = interpolate(z0, z1, ts, "spherical").astype(np.float64)
    np.testing.assert_allclose(path[0], z0, atol=1e-5)
    np.testing.assert_allclose(path[-1], z1, atol=1e-5)
    norms = np.linalg.norm(path, axis=1)
    np.testing.assert_allclose(norms, (1 - ts) * np.linalg.norm(z0) + ts * np.linalg.norm(z1), rtol=1e-5)
    # Equal angular steps: the angle between consecutive directions is constant.
    u = path / norms[:, None]
    steps = np.arccos(np.clip((u[1:] * u[:-1]).sum(1), -1, 1))
    np.testing.assert_allclose(steps, steps.mean(), rtol=1e-3)
    # Every point stays in the plane of z0 and z1.
    basis, _ = np.linalg.qr(np.stack([z0, z1], 1))
    np.testing.assert_allclose(basis @ (basis.T @ path.T), path.T, atol=1e-4)


def test_slerp_of_parallel_codes_falls_back_to_lerp():
    z = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(interpolate(z, 2 * z, [0.5], "spherical")[0], 1.5 * z, rtol=1e-6)
    with pytest.raises(ValueError):
        interpolate(z, z, [0.5], "cubic")


def test_sliders_on_wide_codes_move_along_principal_directions(codes):
    axes = principal_axes(codes)
    sliders = slider_axes(codes, axes, max_sliders=8)
    assert len(sliders.labels) == 8 and sliders.labels[0].startswith("PC 1")
    z = codes[3]
    values = sliders.values(z)
    np.testing.assert_allclose(sliders.compose(z, values), z, atol=1e-4)  # unchanged sliders: the same code
    moved = values.copy()
    moved[0] += 1.5
    np.testing.assert_allclose(sliders.compose(z, moved) - z, 1.5 * axes.directions[0], atol=1e-4)
    np.testing.assert_allclose(sliders.high, 3 * axes.std[:8], rtol=1e-5)


def test_sliders_on_narrow_codes_are_the_coordinates(codes):
    narrow = codes[:, :2]
    sliders = slider_axes(narrow, principal_axes(narrow))
    assert sliders.labels == ["z[0]", "z[1]"]
    np.testing.assert_allclose(sliders.compose(narrow[0], [0.25, -1.0]), [0.25, -1.0], atol=1e-6)
    np.testing.assert_allclose(sliders.low, narrow.mean(0) - 3 * narrow.std(0), rtol=1e-5)


def test_latent_plane_covers_the_codes(codes):
    two = codes[:, :2]
    z, xs, ys = latent_plane(two, principal_axes(two), n=9)
    assert z.shape == (81, 2)
    np.testing.assert_allclose([xs[0], xs[-1]], np.percentile(two[:, 0], [1, 99]), rtol=1e-5)
    assert z[0, 1] == pytest.approx(ys[-1]) and z[-1, 1] == pytest.approx(ys[0])  # top row = high z[1]
    axes = principal_axes(codes)
    z, _, _ = latent_plane(codes, axes, n=5)
    coefs = axes.coefficients(z)
    assert np.abs(coefs[:, 2:]).max() < 1e-3  # only the top two directions vary
    assert coefs[:, 0].max() == pytest.approx(2.5 * axes.std[0], rel=1e-4)


def test_fitted_gaussian_samples_have_the_codes_moments():
    model = build_model("ae", input_shape=(1, 8, 8), latent_dim=3)
    rng = np.random.default_rng(0)
    codes = rng.multivariate_normal([1, -2, 0.5], [[2, 0.5, 0], [0.5, 1, 0], [0, 0, 0.1]], size=4000)
    captured = {}
    original = model.decode
    model.decode = lambda z: (captured.setdefault("z", z), original(z))[1]
    model.sample(4000, "fitted", 1.0, torch.Generator().manual_seed(0), codes=codes)
    z = captured["z"].double().numpy()
    np.testing.assert_allclose(z.mean(0), codes.mean(0), atol=0.08)
    np.testing.assert_allclose(np.cov(z.T), np.cov(codes.T), atol=0.12)
    model.decode = original
    a = model.sample(4, "prior", 1.0, torch.Generator().manual_seed(7))
    b = model.sample(4, "prior", 1.0, torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and a.shape == (4, 1, 8, 8)
    with pytest.raises(ValueError, match="samples from: prior, fitted"):
        model.sample(4, "usage")  # code sampling is for VQ models
    vq = build_model("vq_vae", input_shape=(1, 8, 8))
    assert [s.name for s in vq.sample_sources()] == ["usage", "uniform"] and vq.code_kind == "quantized"
    with pytest.raises(ValueError, match="usage or uniformly"):
        vq.sample(4, "prior")


def test_encode_and_errors_batch_independently(digits):
    model = build_model("vae", input_shape=(1, 8, 8), latent_dim=2).eval()
    whole = encode_items(model, digits.test_x[:70], IMAGES, batch_size=1000)
    pieces = encode_items(model, digits.test_x[:70], IMAGES, batch_size=16)
    torch.testing.assert_close(whole, pieces)
    errors = reconstruction_errors(model, digits.test_x[:70], IMAGES, batch_size=16)
    x = digits.test_x[:70].float() / 255
    expected = (model.reconstruct(x) - x).square().flatten(1).mean(1).numpy()
    np.testing.assert_allclose(errors, expected, rtol=1e-5)


def test_projection_choice():
    assert resolve_projection("auto", 2) == "raw" and resolve_projection("auto", 16) == "pca"
    assert resolve_projection("raw", 16) == "pca" and resolve_projection("umap", 2) == "umap"
    with pytest.raises(ValueError):
        resolve_projection("tsne", 2)


def test_latent_usage_matches_torch_distributions_and_numpy(trained_vae, digits):
    from torch.distributions import Normal, kl_divergence

    from vae_explorer.latent import ACTIVE_VARIANCE, latent_usage

    usage = latent_usage(trained_vae, digits.test_x, IMAGES, batch_size=100)  # batches must not matter
    x = digits.test_x.float() / 255
    with torch.no_grad():
        q = trained_vae.posterior(x)
        reference = kl_divergence(Normal(q.mean, q.std), Normal(0.0, 1.0)).mean(0).double().numpy()
        kl_term = trained_vae(x).terms["kl"] / trained_vae.config.beta  # the loss's KL, averaged over items
    np.testing.assert_allclose(usage.kl, reference, rtol=1e-4, atol=1e-6)
    assert usage.kl.sum() == pytest.approx(float(kl_term), rel=1e-4)
    np.testing.assert_allclose(usage.variance, np.var(q.mean.double().numpy(), axis=0), rtol=1e-6)
    np.testing.assert_array_equal(usage.active, usage.variance > ACTIVE_VARIANCE)
    assert list(usage.order) == list(np.argsort(-usage.kl))

    ae = build_model("ae", input_shape=(1, 8, 8), latent_dim=3).eval()
    plain = latent_usage(ae, digits.test_x, IMAGES)
    assert plain.kl is None  # no posterior: variance of the code itself
    with torch.no_grad():
        np.testing.assert_allclose(plain.variance, np.var(ae.encode(x).double().numpy(), axis=0), rtol=1e-6)


def test_traversals_move_one_dimension_at_a_time():
    from vae_explorer.latent import traversals

    center = np.array([1.0, -1.0, 0.5], np.float32)
    z = traversals(center, [2, 0], [-1.0, 0.0, 2.0], scales=np.array([10.0, 1.0, 0.5]))
    assert z.shape == (6, 3)
    np.testing.assert_allclose(z[:3, 2], [0.0, 0.5, 1.5]) and np.testing.assert_allclose(z[:3, :2], [[1, -1]] * 3)
    np.testing.assert_allclose(z[3:, 0], [-9.0, 1.0, 21.0]) and np.testing.assert_allclose(z[3:, 1:], [[-1, 0.5]] * 3)
