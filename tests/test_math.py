"""The math, checked against independent references: torch.distributions, PCA,
plain re-implementations."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.linalg import subspace_angles
from torch import distributions as D

from vae_explorer import TrainConfig, build_model, fit
from vae_explorer.data.images import to_float
from vae_explorer.models.distributions import DiagonalGaussian, standard_normal_log_prob
from vae_explorer.models.likelihoods import build_likelihood


def test_kl_matches_torch_distributions():
    torch.manual_seed(0)
    mean, logvar = torch.randn(6, 5) * 2, torch.randn(6, 5)
    q = DiagonalGaussian(mean, logvar)
    ref = D.kl_divergence(D.Normal(mean, torch.exp(0.5 * logvar)), D.Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(q.kl(), ref)


def test_log_probs_match_torch_distributions():
    torch.manual_seed(0)
    mean, logvar = torch.randn(4, 3), torch.randn(4, 3)
    q = DiagonalGaussian(mean, logvar)
    z = q.sample(7)
    assert z.shape == (7, 4, 3)
    ref = D.Normal(mean, torch.exp(0.5 * logvar)).log_prob(z).sum(-1)
    torch.testing.assert_close(q.log_prob(z), ref)
    torch.testing.assert_close(standard_normal_log_prob(z), D.Normal(0.0, 1.0).log_prob(z).sum(-1))


def test_reparameterized_samples_have_the_posterior_moments():
    torch.manual_seed(0)
    q = DiagonalGaussian(torch.tensor([[1.0, -2.0]]), torch.tensor([[0.0, 2 * math.log(0.5)]]))
    z = q.sample(200_000)[:, 0]
    torch.testing.assert_close(z.mean(0), torch.tensor([1.0, -2.0]), atol=0.01, rtol=0)
    torch.testing.assert_close(z.std(0), torch.tensor([1.0, 0.5]), atol=0.01, rtol=0)


@pytest.mark.parametrize("name", ["bernoulli", "gaussian", "gaussian_learned", "laplace"])
def test_likelihood_nll_matches_torch_distributions(name):
    torch.manual_seed(0)
    shape = (1, 4, 4)
    lik = build_likelihood(name, shape, sigma=0.3)
    if name == "gaussian_learned":
        with torch.no_grad():
            lik.log_sigma.copy_(torch.randn(shape) * 0.3 - 1)
    params, x = torch.randn(3, *shape), torch.rand(3, *shape)
    mean = torch.sigmoid(params)
    if name == "bernoulli":
        # Bernoulli log-likelihood extended to continuous targets: x log p + (1 - x) log(1 - p).
        ref = -(x * torch.log(mean) + (1 - x) * torch.log1p(-mean)).flatten(1).sum(1)
    else:
        scale = lik.log_sigma.exp().detach() if name == "gaussian_learned" else 0.3
        dist = D.Laplace(mean, scale) if name == "laplace" else D.Normal(mean, scale)
        ref = -dist.log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(lik.nll(params, x), ref, rtol=1e-5, atol=1e-4)


def test_loss_is_sum_over_pixels_and_latents_mean_over_batch():
    torch.manual_seed(0)
    model = build_model("vae", latent_dim=3)
    x = torch.rand(10, 1, 8, 8)
    torch.manual_seed(1)
    out = model(x)
    torch.manual_seed(1)
    q = model.posterior(x)
    z = q.sample()
    params = model.decoder(z)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(params, x, reduction="sum") / len(x)
    kl = (-0.5 * (1 + q.logvar - q.mean.pow(2) - q.logvar.exp()).sum()) / len(x)  # the classic example's formula
    torch.testing.assert_close(out.terms["recon"], bce)
    torch.testing.assert_close(out.terms["kl"], kl)
    beta = build_model("beta_vae", latent_dim=3)
    beta.load_state_dict(model.state_dict())
    torch.manual_seed(1)
    torch.testing.assert_close(beta(x).terms["kl"], beta.config.beta * kl)


def test_iwae_bound_is_above_the_elbo_and_grows_with_k(trained_vae, digits):
    x = to_float(digits.test_x)
    torch.manual_seed(0)
    elbo = trained_vae(x).stats["elbo"].item()
    bounds = []
    for k in (1, 10, 100):
        torch.manual_seed(k)
        bounds.append(trained_vae.log_likelihood(x, k=k).mean().item())
    assert abs(bounds[0] - elbo) < 0.5  # k = 1 is the ELBO (two independent single-sample estimates)
    assert bounds[1] > bounds[0] and bounds[2] > bounds[1]
    assert bounds[2] > elbo


def test_linear_ae_learns_the_pca_subspace(digits):
    k = 4
    torch.manual_seed(0)
    model = build_model("linear_ae", latent_dim=k)
    fit(model, digits, TrainConfig(epochs=300, batch_size=256, lr=1e-2, iwae_k=0, history_images=0, device="cpu"))
    x = to_float(digits.train_x).flatten(1).numpy().astype(np.float64)
    x = x - x.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    pcs = vt[:k].T  # (64, k)
    decoder_columns = model.decoder.net[0].weight.detach().double().numpy()  # (64, k)
    angles = np.degrees(subspace_angles(decoder_columns, pcs))
    assert angles.max() < 5.0, f"principal angles to the top-{k} PCA subspace: {angles}"


def test_vq_straight_through_passes_gradients_to_the_encoder():
    torch.manual_seed(0)
    for name in ("vq_vae", "rvq_vae"):
        model = build_model(name)
        out = model(torch.rand(8, 1, 8, 8))
        out.terms["recon"].backward()  # the reconstruction alone: only the straight-through path reaches the encoder
        grads = [p.grad for p in model.encoder.parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads)
        assert all(q.codebook.grad is None for q in model.quantizers)  # argmin is not differentiable


def test_vq_quantizes_to_nearest_codes_and_rvq_reduces_the_error():
    torch.manual_seed(0)
    single = build_model("vq_vae")
    single(torch.rand(64, 1, 8, 8))  # codebook initialised from encoder outputs
    single.eval()
    z_e = single.encoder(torch.rand(32, 1, 8, 8)).detach()
    z_q, idx, _ = single.quantize(z_e)
    book = single.quantizers[0].codebook.detach()
    tokens = z_e.view(-1, single.config.code_dim)
    brute = torch.cdist(tokens, book).argmin(1)
    assert torch.equal(idx.flatten(), brute)
    torch.testing.assert_close(z_q.view(-1, single.config.code_dim), book[brute])

    residual = build_model("rvq_vae")
    residual.encoder.load_state_dict(single.encoder.state_dict())
    residual.train()
    residual(torch.rand(64, 1, 8, 8))
    residual.eval()
    r = residual.encoder(torch.rand(32, 1, 8, 8)).detach()
    err = []
    for levels in range(1, residual.config.levels + 1):
        quantizers = residual.quantizers
        residual.quantizers = quantizers[:levels]
        z_q, _, _ = residual.quantize(r)
        residual.quantizers = quantizers
        err.append((r - z_q).square().mean().item())
    assert err[-1] < 0.5 * err[0], f"quantization error per number of levels: {err}"
