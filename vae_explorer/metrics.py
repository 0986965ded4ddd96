"""Test-set metrics for any model: the objective and its terms, the data kind's
reconstruction quality (pixel error and PSNR for images), and whatever extra
metrics the model has (a VAE's IWAE estimate of log p(x))."""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from .codebook import count_codes, perplexity
from .data import DATA_KINDS
from .data.images import psnr
from .models import Autoencoder

__all__ = ["evaluate", "psnr"]


@torch.no_grad()
def evaluate(model: Autoencoder, items: torch.Tensor, kind=None, batch_size: int = 500, iwae_k: int = 0,
             iwae_images: int | None = None) -> dict[str, float]:
    """Average metrics over `items` (stored form, e.g. (N, C, H, W) uint8, on the model's device).

    loss: the training objective per item (nats for likelihood models); one key
    per loss term and per model statistic; the kind's quality measures of the
    reconstruction in forward (for the denoising AE: of the corrupted input,
    against the clean image); the model's extra metrics over the first
    `iwae_images` items (nll_iwae, -log p(x) with k = iwae_k, for VAEs). Models with codebooks add
    codes_used (codes used at least once by any item) and perplexity_all (exp of the entropy of the code
    counts summed over all items), each the mean over quantization levels.
    """
    kind = kind or DATA_KINDS[model.data_kind]
    was_training = model.training
    model.eval()
    sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=items.device))
    n = len(items)
    books = model.codebooks()
    counts = None
    for start in range(0, n, batch_size):
        x = kind.prepare(items[start:start + batch_size])
        out = model(x)
        if books is not None:
            # A second encoder pass for the indices: forward keeps them private, and VQ encoders are small.
            batch_counts = count_codes(model.code_indices(x), books[0].shape[0])
            counts = batch_counts if counts is None else counts + batch_counts
        b = len(x)
        sums["loss"] += out.loss.float() * b
        for k, v in {**out.terms, **out.stats}.items():
            sums[k] += v.float() * b
        for k, v in kind.quality(out.recon, x).items():
            sums[k] += v.sum()
    metrics = {k: float(v) / n for k, v in sums.items()}  # one host sync per metric, at the end
    if counts is not None:
        metrics["codes_used"] = float((counts > 0).sum(1).double().mean())
        metrics["perplexity_all"] = float(np.mean([perplexity(c) for c in counts.numpy()]))
    subset = items[: iwae_images or n]
    extra: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=items.device))
    for start in range(0, len(subset), batch_size):
        for k, v in model.extra_metrics(kind.prepare(subset[start:start + batch_size]), iwae_k).items():
            extra[k] += v.float().sum()
    if extra:
        metrics.update({k: float(v) / len(subset) for k, v in extra.items()})
        metrics["iwae_k"] = iwae_k
    model.train(was_training)
    return metrics
