"""Reconstruction likelihoods p(x | z): the decoder emits raw parameters, a
likelihood turns them into an image mean and a per-sample negative log-likelihood
(nats, summed over pixels).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LIKELIHOODS = ("bernoulli", "gaussian", "gaussian_learned", "laplace")


class Likelihood(nn.Module):
    def __init__(self, input_shape, sigma: float = 0.1, squash: bool = True):
        super().__init__()
        self.sigma = sigma
        self.squash = squash  # sigmoid on the mean keeps images in [0, 1]; a linear AE turns it off

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        # fp32 even under bf16/fp16 autocast: the likelihood sums thousands of pixel terms.
        params = params.float()
        return torch.sigmoid(params) if self.squash else params

    def page_ops(self) -> list[dict]:
        """`mean` as the page's ops (models/page.py): what turns decoder outputs into the image."""
        return [{"op": "sigmoid"}] if self.squash else []

    @property
    def identity_mean(self) -> bool:
        """Whether `mean` returns the decoder's parameters unchanged (no sigmoid): a linear decoder stays linear."""
        return not self.squash

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) decoder output, (B, C, H, W) target -> (B,) nats."""
        raise NotImplementedError


class Bernoulli(Likelihood):
    # Continuous pixels in [0, 1] as in the classic PyTorch VAE example: BCE on logits.
    identity_mean = False  # the mean is always sigmoid(logits), whatever `squash` says

    def mean(self, params):
        return torch.sigmoid(params.float())

    def page_ops(self):
        return [{"op": "sigmoid"}]

    def nll(self, params, x):
        return F.binary_cross_entropy_with_logits(params.float(), x, reduction="none").flatten(1).sum(1)


class Gaussian(Likelihood):
    # Fixed sigma: the NLL is a scaled MSE plus a constant.
    def nll(self, params, x):
        mu = self.mean(params)
        log_sigma = math.log(self.sigma)
        sq = (x - mu).square().flatten(1).sum(1)
        return 0.5 * sq / self.sigma**2 + x[0].numel() * (log_sigma + 0.5 * math.log(2 * math.pi))


class GaussianLearned(Likelihood):
    # One learned log-sigma per pixel (a calibrated decoder, Rybkin et al. 2021), floored
    # so that always-black border pixels cannot drive the NLL to minus infinity.
    min_log_sigma = math.log(1e-2)

    def __init__(self, input_shape, sigma=0.1, squash=True):
        super().__init__(input_shape, sigma, squash)
        self.log_sigma = nn.Parameter(torch.full(tuple(input_shape), math.log(sigma)))

    def nll(self, params, x):
        mu = self.mean(params)
        log_sigma = self.log_sigma.clamp(min=self.min_log_sigma)
        per_pixel = 0.5 * ((x - mu) * torch.exp(-log_sigma)).square() + log_sigma + 0.5 * math.log(2 * math.pi)
        return per_pixel.flatten(1).sum(1)


class Laplace(Likelihood):
    # Fixed scale b = sigma: an L1 reconstruction loss, robust to outlier pixels.
    def nll(self, params, x):
        mu = self.mean(params)
        return (x - mu).abs().flatten(1).sum(1) / self.sigma + x[0].numel() * math.log(2 * self.sigma)


def build_likelihood(name: str, input_shape, sigma: float = 0.1, squash: bool = True) -> Likelihood:
    classes = {"bernoulli": Bernoulli, "gaussian": Gaussian, "gaussian_learned": GaussianLearned, "laplace": Laplace}
    if name not in classes:
        raise ValueError(f"unknown likelihood {name!r}; choose one of {', '.join(LIKELIHOODS)}")
    return classes[name](input_shape, sigma, squash)
