"""Variational autoencoder (Kingma & Welling 2014): Gaussian encoder, closed-form
KL to N(0, I), ELBO objective, and the importance-weighted bound on log p(x)
(Burda et al. 2016). beta-VAE (Higgins et al. 2017) is the preset beta != 1;
conv_vae is the preset arch="conv".
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .base import FITTED, Autoencoder, ImageModelConfig, ModelOutput, SampleSource, setting
from .distributions import DiagonalGaussian, standard_normal_log_prob
from .likelihoods import build_likelihood
from .networks import build_decoder, build_encoder


@dataclass
class VAEConfig(ImageModelConfig):
    beta: float = setting(1.0, "weight of the KL term (beta-VAE: > 1)")

    def __post_init__(self):
        super().__post_init__()
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")


PRIOR = SampleSource(
    "prior", "z ~ N(0, T²·I), the prior",
    "z ~ N(0, T²·I), the VAE's prior: its decodes are its generative samples.", generative=True)
FITTED_VAE = SampleSource(
    "fitted", FITTED.label,
    "z from a Gaussian fitted to the test codes, for comparison; a well-trained VAE's codes already look like "
    "N(0, I), so both should look alike.")


class VAE(Autoencoder):
    name = "vae"

    def __init__(self, config: VAEConfig):
        super().__init__(config)
        self.encoder = build_encoder(config, 2 * config.latent_dim)  # -> (mu, log sigma^2)
        self.decoder = build_decoder(config, config.latent_dim)
        self.likelihood = build_likelihood(config.likelihood, config.input_shape, config.sigma, config.squash)

    def posterior(self, x: torch.Tensor) -> DiagonalGaussian:
        # fp32 even under bf16 autocast: the KL and log q(z|x) sum over latent dims, and z's noise
        # should not be rounded to 8 bits (the decoder's first layer casts z back down anyway).
        mean, logvar = self.encoder(x).float().chunk(2, dim=-1)
        return DiagonalGaussian(mean, logvar)

    def encode(self, x):  # the posterior mean, (B, C, H, W) -> (B, D)
        return self.posterior(x).mode()

    def decode(self, z):
        return self.likelihood.mean(self.decoder(z))

    def forward(self, x):
        # z is sampled in evaluation too: the loss is the single-sample ELBO estimate,
        # as in the classic PyTorch example whose test loss we compare against.
        q = self.posterior(x)
        z = q.sample()
        params = self.decoder(z)
        nll = self.likelihood.nll(params, x)
        kl = q.kl()
        terms = {"recon": nll.mean(), "kl": self.config.beta * kl.mean()}
        return ModelOutput(recon=lambda: self.likelihood.mean(params), latent=z, loss=sum(terms.values()), terms=terms,
                           stats=lambda: {"elbo": -(nll + kl).mean()})

    def sample_sources(self):
        return PRIOR, FITTED_VAE

    def extra_metrics(self, x, iwae_k):
        return {"nll_iwae": -self.log_likelihood(x, k=iwae_k)} if iwae_k > 0 else {}

    @torch.no_grad()
    def log_likelihood(self, x: torch.Tensor, k: int = 100, chunk: int = 25) -> torch.Tensor:
        """IWAE estimate of log p(x) with k importance samples: (B,) nats.

        log p(x) >= log (1/k) sum_i p(x, z_i) / q(z_i | x),  z_i ~ q(z | x);
        k = 1 is the ELBO and the bound tightens as k grows.
        """
        q = self.posterior(x)
        log_w = []
        for start in range(0, k, chunk):
            n = min(chunk, k - start)
            z = q.sample(n)  # (n, B, D)
            params = self.decoder(z.flatten(0, 1))  # (n * B, C, H, W)
            target = x.expand(n, *x.shape).flatten(0, 1)
            log_px_z = -self.likelihood.nll(params, target).view(n, -1)
            log_w.append(log_px_z + standard_normal_log_prob(z) - q.log_prob(z))
        return torch.logsumexp(torch.cat(log_w), dim=0) - math.log(k)
