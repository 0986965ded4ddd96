"""Test-set metrics for any model: the objective and its terms, pixel error,
PSNR, and for VAEs the ELBO and the IWAE estimate of log p(x)."""
from __future__ import annotations

from collections import defaultdict

import torch

from .data import to_float
from .models import VAE, Autoencoder


def psnr(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of x against ref, both (B, C, H, W) in [0, 1]: (B,)."""
    mse = (x - ref).square().flatten(1).mean(1).clamp_min(1e-10)
    return 10.0 * torch.log10(1.0 / mse)


@torch.no_grad()
def evaluate(model: Autoencoder, images: torch.Tensor, batch_size: int = 500, iwae_k: int = 0,
             iwae_images: int | None = None) -> dict[str, float]:
    """Average metrics over `images` ((N, C, H, W) uint8 on the model's device).

    loss: the training objective per image (nats for likelihood models); one key
    per loss term and per model statistic; mse_per_pixel and psnr of the
    reconstruction in forward (for the denoising AE: of the corrupted input,
    against the clean image); nll_iwae (-log p(x), k = iwae_k) for VAEs.
    """
    was_training = model.training
    model.eval()
    sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=images.device))
    n = len(images)
    for start in range(0, n, batch_size):
        x = to_float(images[start:start + batch_size])
        out = model(x)
        b = len(x)
        sums["loss"] += out.loss.float() * b
        for k, v in {**out.terms, **out.stats}.items():
            sums[k] += v.float() * b
        sums["mse_per_pixel"] += (out.recon.float() - x).square().flatten(1).mean(1).sum()
        sums["psnr"] += psnr(out.recon.float(), x).sum()
    metrics = {k: float(v) / n for k, v in sums.items()}  # one host sync per metric, at the end
    if isinstance(model, VAE) and iwae_k > 0:
        subset = images[: iwae_images or n]
        total = torch.zeros((), device=images.device)
        for start in range(0, len(subset), batch_size):
            total += model.log_likelihood(to_float(subset[start:start + batch_size]), k=iwae_k).sum()
        metrics["nll_iwae"] = -float(total) / len(subset)
        metrics["iwae_k"] = iwae_k
    model.train(was_training)
    return metrics
