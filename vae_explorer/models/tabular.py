"""Autoencoders for tables: rows of continuous and categorical columns (data/tables.py).

The network follows the course notes' tabular VAE: each categorical column is
embedded, continuous columns are standardized, the encoder sees the
concatenation [embeddings, continuous values]; encoder and decoder are stacks of
Linear -> BatchNorm1d -> LeakyReLU(0.1); z = mu + sigma * eps * s with a noise
scale s while training and the posterior mean in evaluation; AdamW with cosine
warm restarts.

Two ways to score a reconstruction, each a preset:
- output="embedding", the notes' loss: smooth-L1 between the decoder's output and
  the input vector (embeddings + continuous values). The embeddings are trained by
  the same loss, so they can shrink toward zero and make every category look
  alike; categories are decoded as the nearest embedding.
- output="typed": a Gaussian per continuous column (a learned scale per column, or
  scale 1) and a softmax per categorical column; the loss is their negative
  log-likelihood, as synthetic-data VAEs do.
Both decode to `Rows` that carry the cell distributions, so a row's anomaly score
is its negative log-likelihood, per column (data/tables.column_errors).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data.tables import MISSING, Rows, Schema, as_tuples
from .base import Autoencoder, ModelConfig, ModelOutput, SampleSource, setting
from .distributions import DiagonalGaussian
from .vae import FITTED_VAE, PRIOR

MIN_LOG_SCALE = math.log(1e-3)  # a learned scale below 0.001 standard deviations would be memorizing a column


@dataclass
class TableModelConfig(ModelConfig):
    input_shape: tuple[int, ...] = setting((2,), "(number of columns,); set from the table", data=True)
    schema: tuple = setting((), "the table's columns, their standardization and categories; set from the table",
                            data=True)
    latent_dim: int = setting(16, "code size")
    hidden: tuple[int, ...] = setting((64, 128, 256, 128, 64), "encoder layer widths (the decoder reverses them)")
    embedding_dim: int = setting(16, "size of each categorical column's embedding")
    batch_norm: bool = setting(True, "BatchNorm1d after each hidden Linear layer")
    output: str = setting("typed", "typed: a Gaussian per continuous and a softmax per categorical column; "
                          "embedding: smooth-L1 against the input embeddings (the course notes)",
                          choices=("typed", "embedding"))
    scale: str = setting("learned", "typed output: each continuous column's Gaussian scale, learned or fixed at 1 "
                         "(standardized units)", choices=("learned", "fixed"), only_with={"output": "typed"})

    def __post_init__(self):
        super().__post_init__()
        self.hidden = tuple(int(v) for v in self.hidden)
        self.schema = as_tuples(self.schema)  # JSON gives lists; tuples keep configs comparable
        if not self.hidden:
            raise ValueError("a table model needs at least one hidden layer")
        if self.embedding_dim < 1:
            raise ValueError(f"embedding_dim must be at least 1, got {self.embedding_dim}")
        if self.output not in ("typed", "embedding"):
            raise ValueError(f"output must be 'typed' or 'embedding', got {self.output!r}")
        if self.scale not in ("learned", "fixed"):
            raise ValueError(f"scale must be 'learned' or 'fixed', got {self.scale!r}")

    def table(self) -> Schema:
        if not self.schema:
            raise ValueError("a table model needs its table's columns: build it with the dataset's model_settings()")
        return Schema.from_list(self.schema)


@dataclass
class TableVAEConfig(TableModelConfig):
    beta: float = setting(0.05, "weight of the KL term (the course notes' kld_beta)")
    noise_scale: float = setting(0.1, "s in z = mu + sigma * eps * s while training (1 = the plain VAE)")

    def __post_init__(self):
        super().__post_init__()
        if self.beta < 0 or self.noise_scale < 0:
            raise ValueError("beta and noise_scale must be >= 0")



def _stack(sizes: list[int], batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), *([nn.BatchNorm1d(b)] if batch_norm else []), nn.LeakyReLU(0.1)]
    return nn.Sequential(*layers)


ROW_PRIOR_GUESS = SampleSource(
    "prior", "z ~ N(0, T²·I)",
    "z ~ N(0, T²·I). A plain autoencoder was never asked to put its codes there: these rows come from codes it "
    "never produced, and often combine values no real row has.")
ROW_FITTED = SampleSource(
    "fitted", "z ~ a Gaussian fitted to the model's codes",
    "z from a Gaussian fitted to the model's own test codes: closer to the data, though the codes' true shape "
    "is rarely Gaussian. A VAE trains its codes toward N(0, I), so its prior samples need no fitting.")


class TableAE(Autoencoder):
    """The notes' network without the variational part: a deterministic code."""

    name = "tabular_ae"
    data_kind = "table"
    code_width_factor = 1  # the encoder's head gives the code itself

    def __init__(self, config: TableModelConfig):
        super().__init__(config)
        self.table = config.table()
        cards = self.table.cardinalities
        self.n_cont, self.n_cat, e = len(self.table.continuous), len(cards), config.embedding_dim
        # One table with an offset per column is K separate embeddings (each column indexes its own rows),
        # looked up in one call instead of K.
        self.embeddings = nn.Embedding(max(sum(cards), 1), e)
        self.register_buffer("offsets", torch.tensor([0, *cards[:-1]], dtype=torch.long).cumsum(0) if cards
                             else torch.zeros(0, dtype=torch.long), persistent=False)
        width = self.n_cont + self.n_cat * e
        self.encoder = nn.Sequential(_stack([width, *config.hidden], config.batch_norm),
                                     nn.Linear(config.hidden[-1], self.code_width_factor * config.latent_dim))
        typed = config.output == "typed"
        out = (self.n_cont + sum(cards)) if typed else width  # typed: means and logits; else the input vector
        self.decoder = nn.Sequential(_stack([config.latent_dim, *reversed(config.hidden)], config.batch_norm),
                                     nn.Linear(config.hidden[0], out))
        if typed and config.scale == "learned":
            self.log_scale = nn.Parameter(torch.zeros(self.n_cont))
        else:
            self.register_buffer("log_scale", torch.zeros(self.n_cont), persistent=False)

    # ---- the input vector and the decoded distribution -----------------------------------

    def _embedded(self, x: Rows) -> torch.Tensor:
        """(B, K * E + C): the notes' encoder input, embeddings then continuous values (missing at the mean)."""
        emb = self.embeddings(x.cat + self.offsets).flatten(1) if self.n_cat else x.cont.new_zeros(len(x), 0)
        return torch.cat([emb, x.filled()], 1)

    def _decoded(self, out: torch.Tensor) -> Rows:
        """The decoder's output as Rows with each cell's distribution."""
        e, cards = self.config.embedding_dim, self.table.cardinalities
        if self.config.output == "typed":
            mean, logits = out[:, :self.n_cont], out[:, self.n_cont:]
            parts = list(logits.split(list(cards), 1)) if cards else []
        else:
            mean = out[:, self.n_cat * e:]
            parts = []
            for k, n in enumerate(cards):  # categories by closeness to their embeddings
                table = self.embeddings.weight[self.offsets[k]:self.offsets[k] + n]
                parts.append(-torch.cdist(out[:, k * e:(k + 1) * e].float(), table.float()).square())
        logp = [F.log_softmax(p.float(), 1) for p in parts]
        cat = torch.stack([p.argmax(1) for p in logp], 1) if logp else torch.zeros(len(out), 0, dtype=torch.long,
                                                                                        device=out.device)
        scale = self.log_scale.clamp_min(MIN_LOG_SCALE).exp().expand(len(out), -1)
        return Rows(mean.float(), cat, self.table, scale, torch.cat(logp, 1) if logp else None)

    def _reconstruction_loss(self, out: torch.Tensor, x: Rows, target: torch.Tensor) -> torch.Tensor:
        """(B,) the reconstruction term, summed over cells; missing cells left out."""
        observed = x.observed()
        if self.config.output == "embedding":
            cells = F.smooth_l1_loss(out, target, reduction="none")
            keep = torch.cat([torch.ones_like(cells[:, :self.n_cat * self.config.embedding_dim], dtype=torch.bool),
                              observed], 1)
            return torch.where(keep, cells, torch.zeros_like(cells)).sum(1)
        mean = out[:, :self.n_cont].float()
        log_scale = self.log_scale.clamp_min(MIN_LOG_SCALE)
        z = (x.filled() - mean) * torch.exp(-log_scale)
        gauss = 0.5 * z.square() + log_scale + 0.5 * math.log(2 * math.pi)
        loss = torch.where(observed, gauss, torch.zeros_like(gauss)).sum(1)
        if self.n_cat:
            logits = out[:, self.n_cont:].float()
            for k, part in enumerate(logits.split(list(self.table.cardinalities), 1)):
                loss = loss + F.cross_entropy(part, x.cat[:, k], ignore_index=MISSING, reduction="none")
        return loss

    # ---- the contract ----------------------------------------------------------------------

    def example_input(self, n: int = 1) -> Rows:
        """n rows at every column's mean, with each categorical column's first category seen in training."""
        first = torch.tensor([min(2, c - 1) for c in self.table.cardinalities], dtype=torch.long)
        return Rows(torch.zeros(n, self.n_cont), first.expand(n, -1).clone(), self.table)

    def encode(self, x: Rows) -> torch.Tensor:
        return self.encoder(self._embedded(x))

    def decode(self, z: torch.Tensor) -> Rows:
        return self._decoded(self.decoder(z))

    def page_decoder(self):
        # Its items are rows (typed cells, categories by softmax) that the page shows as a table drawn by
        # the server: there is no picture for the page to draw.
        return None

    def forward(self, x: Rows) -> ModelOutput:
        target = self._embedded(x)
        z = self.encoder(target)
        out = self.decoder(z)
        terms = {"recon": self._reconstruction_loss(out, x, target).mean()}
        return ModelOutput(recon=lambda: self._decoded(out), latent=z, loss=terms["recon"], terms=terms)

    def sample_sources(self):
        return ROW_PRIOR_GUESS, ROW_FITTED

    def describe_inputs(self) -> str:
        e = self.config.embedding_dim
        lines = ["| column | type | standardization / categories | embedding |", "|---|---|---|---|"]
        lines += [f"| {c.name} | continuous | {'log1p, ' if c.log else ''}mean {c.mean:.4g}, std {c.std:.4g} | — |"
                  for c in self.table.continuous]
        lines += [f"| {c.name} | categorical | {len(c.categories) - 2} seen + missing + unknown | "
                  f"{len(c.categories)} × {e} |" for c in self.table.categorical]
        return "\n".join(lines)

    def training_defaults(self) -> dict:
        # The course notes' optimizer: AdamW (lr 1e-3, weight decay 1e-5, eps 1e-4), cosine warm restarts every 25.
        return {"optimizer": "adamw", "weight_decay": 1e-5, "eps": 1e-4, "schedule": "cosine_restarts",
                "restart_epochs": 25}


class TableVAE(TableAE):
    """The course notes' tabular VAE."""

    name = "tabular_vae"
    code_width_factor = 2  # mu and log sigma^2

    def posterior(self, x: Rows) -> DiagonalGaussian:
        mean, logvar = self.encoder(self._embedded(x)).float().chunk(2, dim=-1)
        return DiagonalGaussian(mean, logvar)

    def encode(self, x: Rows) -> torch.Tensor:
        return self.posterior(x).mode()

    def forward(self, x: Rows) -> ModelOutput:
        target = self._embedded(x)
        mean, logvar = self.encoder(target).float().chunk(2, dim=-1)
        q = DiagonalGaussian(mean, logvar)
        z = mean + q.std * torch.randn_like(mean) * self.config.noise_scale if self.training else mean
        out = self.decoder(z)
        kl = q.kl()
        terms = {"recon": self._reconstruction_loss(out, x, target).mean(), "kl": self.config.beta * kl.mean()}
        return ModelOutput(recon=lambda: self._decoded(out), latent=z, loss=sum(terms.values()), terms=terms,
                           stats=lambda: {"kl_nats": kl.mean()})

    def sample_sources(self):
        return PRIOR, FITTED_VAE
