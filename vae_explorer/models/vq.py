"""Vector-quantized autoencoders: VQ-VAE (van den Oord et al. 2017) and residual
VQ (Zeghidour et al. 2021, SoundStream) as its `levels > 1` preset.

The encoder's flat output (B, latent_dim) is cut into T = latent_dim / code_dim
tokens of code_dim numbers; each token is replaced by its nearest codebook
vector (per level, each level quantizing what the previous levels left).
`encode` returns the quantized vector, `decode` runs the decoder on any vector.
Codebooks learn by gradient of the codebook loss, or (`codebook_update="ema"`) as
moving averages of the encoder outputs assigned to them (van den Oord et al. 2017,
appendix A.1; Razavi et al. 2019).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .base import Autoencoder, ImageModelConfig, ModelOutput, SampleSource, setting
from .likelihoods import build_likelihood
from .networks import build_decoder, build_encoder

CODEBOOK_UPDATES = ("loss", "ema")
EMA_EPS = 1e-5  # Laplace smoothing of the EMA code counts (Sonnet's VectorQuantizerEMA)


@dataclass
class VQConfig(ImageModelConfig):
    latent_dim: int = setting(16, "code size: tokens x code_dim")
    code_dim: int = setting(4, "size of one codebook vector")
    codebook_size: int = setting(64, "codebook vectors per level (K)")
    levels: int = setting(1, "quantization levels; > 1 is residual VQ")
    commitment: float = setting(0.25, "weight of the commitment loss ||z_e - sg(z_q)||^2")
    restart_every: int = setting(50, "training steps between re-seeding unused codes (0: never)")
    codebook_update: str = setting("loss", "loss: codebooks learn by gradient of ||sg(z_e) - e||^2; ema: as "
                                   "moving averages of the encoder outputs assigned to them", choices=CODEBOOK_UPDATES)
    ema_decay: float = setting(0.99, "ema codebook update: weight of the past in every update, in (0, 1)",
                               only_with={"codebook_update": "ema"})

    def __post_init__(self):
        super().__post_init__()
        if self.code_dim < 1 or self.latent_dim % self.code_dim:
            raise ValueError(f"latent_dim ({self.latent_dim}) must be a multiple of code_dim ({self.code_dim})")
        if self.codebook_size < 2 or self.levels < 1:
            raise ValueError("codebook_size must be >= 2 and levels >= 1")
        if self.restart_every < 0:
            raise ValueError(f"restart_every must be >= 0, got {self.restart_every}")
        if not self.commitment >= 0:
            raise ValueError(f"commitment must be >= 0, got {self.commitment}")
        if self.codebook_update not in CODEBOOK_UPDATES:
            raise ValueError(f"codebook_update must be 'loss' or 'ema', got {self.codebook_update!r}")
        if not 0 < self.ema_decay < 1:  # also refuses nan
            raise ValueError(f"ema_decay must be between 0 and 1 (exclusive), got {self.ema_decay}")


def _broadcast(t: torch.Tensor) -> None:
    # Data-dependent codebook edits happen per rank; rank 0's version wins so DDP replicas agree.
    if dist.is_available() and dist.is_initialized():
        dist.broadcast(t, src=0)


class VectorQuantizer(nn.Module):
    def __init__(self, size: int, dim: int, restart_every: int, update: str = "loss", decay: float = 0.99):
        super().__init__()
        # In place: on the meta device (memory.py builds models there to count parameters) an out-of-place
        # division runs a Python decomposition that imports torch._dynamo, seconds of every check.
        codebook = torch.randn(size, dim).div_(dim**0.5)
        self.ema = update == "ema"
        self.decay = decay
        if self.ema:
            # Moved by `_ema_update`, never by the optimizer: a buffer, so no gradient reaches it and
            # "every parameter gets a gradient" stays true. Same state_dict key as the parameter.
            self.register_buffer("codebook", codebook)
            # The code vector is ema_sum / ema_count: each code starts as one observation of itself.
            self.register_buffer("ema_count", torch.ones(size))  # (K,) decayed number of assigned outputs
            self.register_buffer("ema_sum", codebook.clone())  # (K, d) decayed sum of assigned outputs
        else:
            self.codebook = nn.Parameter(codebook)
        self.register_buffer("usage", torch.full((size,), 1.0 / size))  # running code frequencies
        self.register_buffer("initialized", torch.tensor(False))
        self.restart_every = restart_every
        self.steps = 0
        self._ready = False

    def nearest(self, r: torch.Tensor) -> torch.Tensor:
        """(N, d) -> (N,) index of the closest codebook vector."""
        # fp32 even under bf16 autocast: bf16's 8-bit mantissa would pick wrong codes among close ones.
        # (On CUDA, fit() allows TF32 matmuls, 10-bit mantissa: only near-ties can flip there.)
        with torch.autocast(r.device.type, enabled=False):
            r, e = r.float(), self.codebook.float()
            d2 = r.square().sum(1, keepdim=True) - 2 * r @ e.t() + e.square().sum(1)
        return d2.argmin(1)

    @torch.no_grad()
    def _reseed(self, r: torch.Tensor, which: torch.Tensor) -> None:
        # Copy random encoder outputs into the chosen codes (all of them at the first
        # step, unused ones later), the usual cure for a dead codebook.
        pick = torch.randint(0, r.shape[0], (self.codebook.shape[0],), device=r.device)
        fresh = r[pick] + 1e-3 * torch.randn_like(r[pick])
        _broadcast(fresh)
        self.codebook.data = torch.where(which[:, None], fresh.to(self.codebook.dtype), self.codebook.data)
        if self.ema:
            # Restart the statistics too, as one observation of the new vector: left alone, the next
            # update would rebuild the code from its old sum and count and pull it straight back.
            self.ema_count.masked_fill_(which, 1.0)
            self.ema_sum.copy_(torch.where(which[:, None], fresh.to(self.ema_sum.dtype), self.ema_sum))

    @torch.no_grad()
    def _ema_update(self, r: torch.Tensor, idx: torch.Tensor) -> None:
        """Codes <- moving averages of the outputs (N, d) assigned to them (idx (N,)):
        van den Oord et al. 2017, appendix A.1, with Laplace-smoothed counts."""
        # fp32 even under bf16 autocast: decayed sums lose small updates in an 8-bit mantissa.
        with torch.autocast(r.device.type, enabled=False):
            k, d = self.codebook.shape
            r = r.float()
            # [onehot.T @ r | onehot.sum(0)] as (K, d + 1), by index_add_: exact fp32 sums where a
            # matmul may run in TF32 on GPUs, and one tensor for one all-reduce.
            stats = torch.zeros(k, d + 1, device=r.device).index_add_(0, idx, torch.cat([r, r.new_ones(len(r), 1)], 1))
            if dist.is_available() and dist.is_initialized():  # statistics of the global batch: replicas stay equal
                dist.all_reduce(stats)
            ema_sum = self.decay * self.ema_sum.float() + (1 - self.decay) * stats[:, :d]
            count = self.decay * self.ema_count.float() + (1 - self.decay) * stats[:, d]
            # Laplace smoothing keeps an unused code (count -> 0) from a division by ~0.
            n = count.sum()
            smoothed = (count + EMA_EPS) / (n + k * EMA_EPS) * n
            self.ema_sum.copy_(ema_sum)
            self.ema_count.copy_(count)
            self.codebook.copy_(ema_sum / smoothed[:, None])

    # Python-side bookkeeping that torch.compile must not trace: a step counter read into the
    # graph would change its guards at every step and force a recompilation each time. Named
    # here rather than decorated with torch.compiler.disable, which imports torch._dynamo
    # (1.5 s) in every process, compiling or not; training wraps it when it compiles.
    eager_methods = ("_training_step",)

    def _training_step(self, r: torch.Tensor) -> None:
        """Initialise the codebook from data at the first step; re-seed unused codes every restart_every steps."""
        # The buffer persists "initialized" in checkpoints; the Python flag avoids reading it
        # (a host sync on GPU) at every step.
        if not self._ready:
            if not bool(self.initialized):
                self._reseed(r, torch.ones_like(self.usage, dtype=torch.bool))
                self.initialized.fill_(True)
            self._ready = True
        self.steps += 1
        if self.restart_every and self.steps % self.restart_every == 0:
            self._reseed(r, self.usage < 0.01 / self.usage.numel())

    def forward(self, r: torch.Tensor):
        """(N, d) -> quantized (N, d) (no gradient to r), indices (N,)."""
        if self.training:
            self._training_step(r.detach())
        idx = self.nearest(r.detach())
        if self.training:
            with torch.no_grad():
                freq = torch.bincount(idx, minlength=self.usage.numel()).to(self.usage.dtype) / idx.numel()
                if dist.is_available() and dist.is_initialized():  # usage of the global batch, equal on all ranks
                    dist.all_reduce(freq)
                    freq /= dist.get_world_size()
                self.usage.mul_(0.99).add_(0.01 * freq)
        q = F.embedding(idx, self.codebook)  # the codes as assigned, before this step's EMA moves them
        if self.training and self.ema:
            self._ema_update(r.detach(), idx)
        return q, idx


USAGE = SampleSource(
    "usage", "Codes drawn by how often training images use them",
    "each code token drawn independently by how often training images used it (temperature flattens or "
    "sharpens those frequencies). A VQ-VAE has no learned prior over token combinations (the original uses a "
    "PixelCNN for that), so this is not a true sample of the data.")
UNIFORM = SampleSource("uniform", "Codes drawn uniformly", "tokens drawn uniformly from the codebook.")


class VQVAE(Autoencoder):
    name = "vq_vae"
    code_kind = "quantized"

    def __init__(self, config: VQConfig):
        super().__init__(config)
        self.tokens = config.latent_dim // config.code_dim
        self.encoder = build_encoder(config, config.latent_dim)
        self.quantizers = nn.ModuleList(
            VectorQuantizer(config.codebook_size, config.code_dim, config.restart_every, config.codebook_update,
                            config.ema_decay)
            for _ in range(config.levels)
        )
        self.decoder = build_decoder(config, config.latent_dim)
        self.likelihood = build_likelihood(config.likelihood, config.input_shape, config.sigma, config.squash)

    def quantize(self, z_e: torch.Tensor):
        """(B, D) -> quantized (B, D), indices (B, levels, T), codebook loss (B,)."""
        b = z_e.shape[0]
        residual = z_e.reshape(b * self.tokens, self.config.code_dim)
        z_q = torch.zeros_like(residual)
        codebook_loss = torch.zeros(b, device=z_e.device, dtype=z_e.dtype)
        indices = []
        for vq in self.quantizers:
            q, idx = vq(residual)
            codebook_loss = codebook_loss + (residual.detach() - q).square().view(b, -1).sum(1)
            z_q = z_q + q
            residual = residual - q.detach()
            indices.append(idx.view(b, self.tokens))
        return z_q.view(b, -1), torch.stack(indices, 1), codebook_loss

    def encode(self, x):  # the quantized code, (B, C, H, W) -> (B, D)
        return self.quantize(self.encoder(x))[0]

    def decode(self, z):
        return self.likelihood.mean(self.decoder(z))

    def forward(self, x):
        z_e = self.encoder(x)
        z_q, indices, codebook_loss = self.quantize(z_e)
        z = z_e + (z_q - z_e).detach()  # straight-through: decoder gradients flow to the encoder
        params = self.decoder(z)
        terms = {"recon": self.likelihood.nll(params, x).mean()}
        if self.config.codebook_update == "loss":  # with "ema" no gradient reaches the codebook: no such term
            terms["codebook"] = codebook_loss.mean()
        terms["commitment"] = self.config.commitment * (z_e - z_q.detach()).square().sum(1).mean()
        return ModelOutput(
            recon=lambda: self.likelihood.mean(params), latent=z_q, loss=sum(terms.values()), terms=terms,
            stats=lambda: self.code_stats(indices),
        )

    def codebooks(self):
        return [vq.codebook.detach() for vq in self.quantizers]

    @torch.no_grad()
    def code_indices(self, x):
        # Not through `quantize`: in training mode the quantizers' forward moves usage statistics and re-seeds
        # codes, and a question about the codes must not change them.
        b = x.shape[0]
        residual = self.encoder(x).reshape(b * self.tokens, self.config.code_dim)
        indices = []
        for vq in self.quantizers:
            idx = vq.nearest(residual)
            residual = residual - F.embedding(idx, vq.codebook).to(residual.dtype)
            indices.append(idx.view(b, self.tokens))
        return torch.stack(indices, 1)

    @torch.no_grad()
    def decode_indices(self, indices):
        b, levels, t = indices.shape
        if levels > len(self.quantizers) or t != self.tokens:
            raise ValueError(f"{self.name} takes indices (B, at most {len(self.quantizers)} levels, {self.tokens} "
                             f"tokens), got {tuple(indices.shape)}")
        z = torch.zeros(b, t, self.config.code_dim, device=self.quantizers[0].codebook.device)
        for level, vq in enumerate(self.quantizers[:levels]):
            idx = indices[:, level].to(z.device)
            k = vq.codebook.shape[0]
            if bool(((idx < -1) | (idx >= k)).any()):
                raise ValueError(f"code indices at level {level + 1} must be -1 or from 0 to {k - 1}")
            z = z + torch.where(idx[..., None] >= 0, F.embedding(idx.clamp_min(0), vq.codebook), 0.0)
        return self.decode(z.view(b, -1))

    def code_stats(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        """Perplexity (effective number of codes) and the fraction of codes used, averaged over levels."""
        k = self.config.codebook_size
        perplexity, usage = [], []
        for level in range(indices.shape[1]):
            p = torch.bincount(indices[:, level].flatten(), minlength=k).float() / indices[:, level].numel()
            perplexity.append(torch.exp(-(p * torch.log(p.clamp_min(1e-10))).sum()))
            usage.append((p > 0).float().mean())
        return {"perplexity": torch.stack(perplexity).mean(), "codebook_usage": torch.stack(usage).mean()}

    def sample_sources(self):
        return USAGE, UNIFORM

    @torch.no_grad()
    def sample(self, n, source=None, temperature=1.0, generator=None, codes=None):
        """Decode random codes: each token's code drawn uniformly (`source="uniform"`) or by
        its training frequency sharpened/flattened by temperature (`source="usage"`).
        VQ-VAE has no learned prior over code sequences, so tokens are drawn independently."""
        source = source or USAGE.name
        if source not in (USAGE.name, UNIFORM.name):
            raise ValueError(f"{self.name} samples codes by usage or uniformly, not {source!r}")
        if n < 1 or not temperature > 0:
            raise ValueError("need at least one sample and a positive temperature")
        device = self.quantizers[0].codebook.device
        z = torch.zeros(n * self.tokens, self.config.code_dim, device=device)
        for vq in self.quantizers:
            if source == UNIFORM.name:
                probs = torch.ones_like(vq.usage)
            else:
                probs = vq.usage.clamp_min(1e-12) ** (1.0 / max(temperature, 1e-3))
            idx = torch.multinomial(probs.cpu(), n * self.tokens, replacement=True, generator=generator).to(device)
            z = z + vq.codebook[idx]
        return self.decode(z.view(n, -1))

    def learned_state(self):
        # EMA codebooks are buffers moved by averaging, not parameters: without this a card would hide them.
        return {name: buf for name, buf in self.named_buffers() if name.endswith(".codebook")}
