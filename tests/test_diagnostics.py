"""The Diagnostics tab's three newer views, each number against an independent computation:
principal angles against scipy, PCA against scikit-learn, nearest neighbours against a k-d
tree, the aggregate posterior's moments against Monte Carlo draws, and the disentanglement
view against `scorecard` (whose metrics tests/test_disentanglement.py checks). Handlers as
functions, over the shipped checkpoints."""
from __future__ import annotations

import re
import time

import numpy as np
import pytest
import torch
from scipy.linalg import subspace_angles
from scipy.spatial import cKDTree
from sklearn.decomposition import PCA

from vae_explorer.data.images import to_float
from vae_explorer.disentanglement import scorecard
from vae_explorer.latent import code_moments, decoder_inputs, nearest_distances, prior_gap
from vae_explorer.subspaces import principal_angles

TABLE_MODELS = ["breast_cancer_tabular_ae", "breast_cancer_tabular_vae"]


def numbers(text: str, pattern: str) -> list[float]:
    return [float(v) for v in re.findall(pattern, text)]


# ---- principal angles and the linear AE ----------------------------------------------------------

@pytest.mark.parametrize("p, k, m", [(64, 2, 2), (64, 3, 7), (784, 20, 20), (10, 5, 3)])
def test_principal_angles_match_scipy(p, k, m):
    rng = np.random.default_rng(p + k + m)
    a, b = rng.normal(size=(p, k)), rng.normal(size=(p, m))
    np.testing.assert_allclose(principal_angles(a, b), np.sort(subspace_angles(a, b)), atol=1e-12)
    # Nearly the same plane: angles of 1e-9 rad, where arccos of the cosines would give 0 or 1e-8.
    mixed = a @ np.linalg.qr(rng.normal(size=(k, k)))[0] + 1e-9 * rng.normal(size=(p, k))  # another basis
    np.testing.assert_allclose(principal_angles(a, mixed), np.sort(subspace_angles(a, mixed)), rtol=1e-6, atol=1e-15)
    assert principal_angles(a, mixed).max() < 1e-7
    # Perpendicular planes: every angle is 90°.
    q = np.linalg.qr(rng.normal(size=(p, 2 * k)))[0]
    np.testing.assert_allclose(principal_angles(q[:, :k], q[:, k:]), np.full(k, np.pi / 2), atol=1e-12)


def test_only_a_linear_decoder_says_it_is_linear(explorer):
    """linear_decoder() is (W, b) with decode(z) = W z + b exactly for the linear AE, None for every other
    shipped model (tables included)."""
    for name in explorer.checkpoint_names():
        model = explorer.load(name).model
        linear = model.linear_decoder()
        if model.name != "linear_ae":
            assert linear is None, name
            continue
        weight, bias = linear
        z = torch.randn(16, model.latent_dim, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            decoded = model.decode(z).flatten(1)
        torch.testing.assert_close(decoded, z @ weight.T + bias, atol=1e-5, rtol=1e-5)


def test_the_shipped_linear_ae_spans_pcas_plane(explorer):
    fig, grid, text = explorer.linear_pca("digits_linear_ae")
    entry = explorer.load("digits_linear_ae")
    weight, _ = entry.model.linear_decoder()
    train = to_float(entry.data.train_x).flatten(1).double().numpy()
    pca = PCA(n_components=2).fit(train)
    expected = np.sort(np.degrees(subspace_angles(weight.double().numpy(), pca.components_.T)))
    np.testing.assert_allclose(fig.data[0].y, expected, atol=1e-4)  # degrees; the baseline's scatter is float32
    assert expected.max() < 10 and "has found PCA's subspace" in text
    assert f"**{expected.max():.2f}°**" in text and f"({pca.explained_variance_ratio_.sum():.0%} of their variance)" in text
    # Reconstruction errors: PCA's against scikit-learn's inverse transform (clipped to pixels, as shown).
    test = to_float(entry.data.test_x).flatten(1).double().numpy()
    pca_mse = (np.clip(pca.inverse_transform(pca.transform(test)), 0, 1) - test) ** 2
    ae_mse = (entry.reconstruct(to_float(entry.data.test_x)).flatten(1).double().numpy() - test) ** 2
    shown = numbers(text, r"\*\*(\d\.\d{5})\*\*")
    assert shown == pytest.approx([ae_mse.mean(), pca_mse.mean()], abs=1e-5)
    assert grid.size[0] > grid.size[1] * 2  # three rows of eight
    # A random 2-D plane is far from PCA's: the grey bars say what "unrelated" looks like.
    assert min(fig.data[1].y) > 30


@pytest.mark.parametrize("name", ["digits_ae", "digits_vae", "digits_vq_vae", *TABLE_MODELS])
def test_linear_view_explains_itself_for_other_models(explorer, name):
    fig, grid, text = explorer.linear_pca(name)
    assert fig is None and grid is None
    assert "does not have a linear decoder" in text and "linear_ae" in text


# ---- prior vs codes ----------------------------------------------------------------------------

def test_code_moments_against_monte_carlo(explorer):
    """The aggregate posterior's std (law of total variance) against the std of many draws z ~ q(z|x); an
    AE's against numpy's over its codes."""
    entry = explorer.load("digits_conv_vae")
    x = to_float(entry.data.test_x)
    moments = code_moments(entry.model, entry.data.test_x, entry.kind)
    with torch.no_grad():
        q = entry.model.posterior(x)
    torch.manual_seed(0)
    draws = torch.distributions.Normal(q.mean.double(), q.std.double()).sample((400,)).flatten(0, 1).numpy()
    np.testing.assert_allclose(moments.std, draws.std(0), rtol=0.02)
    np.testing.assert_allclose(moments.mean, draws.mean(0), atol=0.02)
    np.testing.assert_allclose(moments.mean_std, q.mean.double().numpy().std(0), rtol=1e-6)
    assert moments.has_posterior
    ae = explorer.load("digits_conv_ae")
    plain = code_moments(ae.model, ae.data.test_x, ae.kind)
    np.testing.assert_allclose(plain.mean, ae.codes.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(plain.std, ae.codes.std(0), rtol=1e-5)
    assert not plain.has_posterior and np.array_equal(plain.std, plain.mean_std)


def test_nearest_distances_against_a_kd_tree():
    rng = np.random.default_rng(0)
    codes, queries = rng.normal(size=(1500, 6)) * 3, rng.normal(size=(700, 6))
    tree = cKDTree(codes)
    np.testing.assert_allclose(nearest_distances(queries, codes, chunk=256), tree.query(queries)[0], rtol=1e-9)
    np.testing.assert_allclose(nearest_distances(codes, codes, leave_one_out=True, chunk=256),
                               tree.query(codes, k=2)[0][:, 1], rtol=1e-9)
    gap = prior_gap(codes, n_samples=500, seed=1)
    samples = np.random.default_rng(1).standard_normal((500, 6))
    np.testing.assert_allclose(gap.from_prior, tree.query(samples)[0], rtol=1e-9)
    assert gap.ratio == pytest.approx(np.median(gap.from_prior) / np.median(gap.between_codes))


def test_prior_view_shows_why_a_vae_samples_and_an_ae_does_not(explorer):
    ae_moments, ae_gap, ae_text = explorer.prior_fit("digits_conv_ae")
    vae_moments, vae_gap, vae_text = explorer.prior_fit("digits_conv_vae")
    entry = explorer.load("digits_conv_vae")
    moments = code_moments(entry.model, entry.data.test_x, entry.kind)
    np.testing.assert_allclose(vae_moments.data[0].y, moments.mean, rtol=1e-6)
    np.testing.assert_allclose(vae_moments.data[0].error_y.array, moments.std, rtol=1e-6)
    gap = prior_gap(decoder_inputs(entry.model, entry.data.test_x, entry.kind))
    assert f"**{gap.ratio:.2f}**" in vae_text and f"**{gap.far:.0%}**" in vae_text
    # The histograms are binned here (the page gets 40 bars, not 10,000 distances): each bar's share is numpy's.
    edges = np.linspace(0, np.percentile(np.concatenate([gap.from_prior, gap.between_codes]), 99.5), 41)
    for trace, values in zip(vae_gap.data, (gap.between_codes, gap.from_prior)):
        expected = np.histogram(np.minimum(values, edges[-1]), edges)[0] / len(values)
        np.testing.assert_allclose(trace.y, expected, atol=1e-12)
        assert trace.y.sum() == pytest.approx(1.0)
    # The AE's codes lie far from N(0, I): most prior samples land off them; the VAE's cover it.
    ae_far, vae_far = (numbers(t, r"\*\*(\d+)%\*\*")[0] for t in (ae_text, vae_text))
    assert ae_far > 50 and vae_far < 20, (ae_far, vae_far)
    assert "this is why sampling N(0, I) fails" in ae_text and "N(0, I) is this model's prior" in vae_text


@pytest.mark.parametrize("name", [*TABLE_MODELS, "digits_vq_vae", "digits_beta_vae", "digits_sparse_ae"])
def test_prior_view_works_for_every_kind_of_model(explorer, name):
    moments, gap, text = explorer.prior_fit(name)
    d = explorer.load(name).model.latent_dim
    assert len(moments.data[0].y) == d and len(gap.data) == 2 and "ratio" in text


# ---- disentanglement ---------------------------------------------------------------------------

def test_disentanglement_view_shows_the_scorecard_with_labelled_traversals(explorer):
    fig, grid, text = explorer.disentanglement("sprites_beta_vae")
    entry = explorer.load("sprites_beta_vae")
    card = scorecard(entry.model, entry.data)  # computed again, independently of the view's cache
    assert f"| MIG | **{card['mig']:.3f}** |" in text
    assert f"| FactorVAE score | **{card['factor_vae']:.3f}** (codes without information: " \
           f"{card['factor_vae_chance']:.3f})" in text
    for key, label in (("dci_disentanglement", "DCI disentanglement"), ("dci_completeness", "DCI completeness"),
                       ("dci_informativeness", "DCI informativeness")):
        assert f"| {label} | **{card[key]:.3f}** |" in text
    for factor in card["factor_names"]:
        assert f"| {factor} | " in text
    np.testing.assert_allclose(np.asarray(fig.data[0].z), np.asarray(card["importance"]))
    assert list(fig.data[0].x) == card["factor_names"]
    d = entry.model.latent_dim
    # One row of 9 traversal steps per dimension, 32-pixel sprites drawn at 2x, plus a label margin.
    assert grid.size[1] == d * (2 * 32 + 2) + 2 and grid.size[0] > 9 * (2 * 32 + 2)


@pytest.mark.parametrize("name", ["digits_vae", *TABLE_MODELS])
def test_disentanglement_view_says_which_data_has_factors(explorer, name):
    fig, grid, text = explorer.disentanglement(name)
    assert fig is None and grid is None
    assert "needs known factors" in text and "**sprites**" in text and "sprites_beta_vae" in text


# ---- speed: cached per checkpoint --------------------------------------------------------------

def test_every_new_view_answers_fast_after_its_first_computation(explorer):
    views = [(explorer.prior_fit, "digits_vae"), (explorer.disentanglement, "sprites_beta_vae"),
             (explorer.linear_pca, "digits_linear_ae"), (explorer.prior_fit, "breast_cancer_tabular_vae")]
    for view, name in views:
        view(name)
        start = time.perf_counter()
        view(name)
        assert time.perf_counter() - start < 1.0, (view.__name__, name)
