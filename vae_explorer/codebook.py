"""Codebook statistics of a vector-quantized model over a whole set of items.

Training reports perplexity per batch, which depends on the batch size (a batch of 8
items can use at most 8·T codes); here the codes are counted over every item first,
so codes used, dead codes and perplexity describe the model, not the batch. The model
answers `codebooks()`, `code_indices(x)` and `decode_indices(indices)`; nothing here
knows its class.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["CodebookUsage", "codebook_usage", "count_codes", "perplexity", "level_errors", "top_items",
           "code_images"]


def perplexity(counts: np.ndarray) -> float:
    """exp(H(p)) of the usage distribution p = counts / counts.sum(): the effective number of codes in use
    (K when every code is used equally often, 1 when one code takes everything)."""
    counts = np.asarray(counts, np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


@torch.no_grad()
def count_codes(indices: torch.Tensor, size: int) -> torch.Tensor:
    """(B, levels, T) indices -> (levels, size) int64 counts over items and tokens."""
    levels = indices.shape[1]
    flat = indices.transpose(0, 1).reshape(levels, -1).long()
    offsets = torch.arange(levels, device=flat.device)[:, None] * size
    return torch.bincount((flat + offsets).flatten(), minlength=levels * size).view(levels, size).cpu()


@dataclass
class CodebookUsage:
    """What a model's codes do over a set of items."""

    counts: np.ndarray  # (levels, K) int64: how many (item, token) positions use each code
    indices: np.ndarray  # (N, levels, T) int64: each item's codes
    codebook_size: int

    @property
    def levels(self) -> int:
        return self.counts.shape[0]

    @property
    def tokens(self) -> int:
        return self.indices.shape[2]

    @property
    def used(self) -> np.ndarray:
        """(levels,) number of codes used at least once."""
        return (self.counts > 0).sum(1)

    def dead(self, level: int) -> list[int]:
        """Codes of `level` (0-based) no item uses."""
        return np.flatnonzero(self.counts[level] == 0).tolist()

    @property
    def perplexity(self) -> np.ndarray:
        return np.array([perplexity(c) for c in self.counts])


@torch.no_grad()
def codebook_usage(model, items: torch.Tensor, kind, batch_size: int = 500) -> CodebookUsage | None:
    """Count the codes of every item (stored form, e.g. uint8 images); None for a model without codebooks."""
    books = model.codebooks()
    if books is None:
        return None
    was_training = model.training
    model.eval()  # a training-mode quantizer would move its usage statistics and re-seed codes
    try:
        indices = torch.cat([model.code_indices(kind.prepare(items[s:s + batch_size])).cpu()
                             for s in range(0, len(items), batch_size)])
    finally:
        model.train(was_training)
    size = books[0].shape[0]
    return CodebookUsage(count_codes(indices, size).numpy(), indices.numpy(), size)


def top_items(usage: CodebookUsage, level: int, code: int, n: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """The (up to) n items whose tokens use `code` at `level` most often, and how many of their T tokens do;
    ties by item index. Items that never use it are left out."""
    per_item = (usage.indices[:, level] == code).sum(1)
    order = np.lexsort((np.arange(len(per_item)), -per_item))
    order = order[per_item[order] > 0][:n]
    return order, per_item[order]


@torch.no_grad()
def level_errors(model, x: torch.Tensor, kind, indices: torch.Tensor) -> tuple[list[torch.Tensor], np.ndarray]:
    """Residual VQ's reconstructions after levels 1, 1+2, ... of items x (model input) with their codes
    `indices` (B, levels, T), and the mean error (kind.errors) of each over the items."""
    recons = [model.decode_indices(indices[:, :level]) for level in range(1, indices.shape[1] + 1)]
    return recons, np.array([float(kind.errors(r, x).mean()) for r in recons])


@torch.no_grad()
def code_images(model, level: int, codes: list[int], tokens: int, levels: int) -> torch.Tensor:
    """What each code of `level` decodes to on its own: the code's vector in every token position, nothing at
    the other levels (for residual VQ a deeper level's code is a correction, so its picture is faint)."""
    idx = torch.full((len(codes), levels, tokens), -1, dtype=torch.long)
    idx[:, level] = torch.as_tensor(codes, dtype=torch.long)[:, None]
    return model.decode_indices(idx[:, :level + 1])
