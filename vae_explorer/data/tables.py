"""The table data kind: rows of continuous and categorical columns.

A table lives in memory as two tensors, `Rows.cont` (N, C) float32 and
`Rows.cat` (N, K) int64, and trains by index batches like the images. Every
`Rows` carries its `Schema`, the description of its columns (names, the
standardization of each continuous column, the categories of each categorical
one), so the kind itself holds no state: rows explain themselves wherever they
go, and a model's config holds the schema it was trained on.

Choices, stated once:
- continuous values are standardized with the training split's mean and std;
  heavy-tailed non-negative columns (counts, byte sizes) are log1p-transformed
  first, so one huge value does not squash the rest of the column to zero;
- a missing continuous value is stored as NaN: models see the column's mean (0)
  in its place and leave the cell out of their loss (an explicit mask);
- a categorical column's index 0 is "(missing)" and 1 is "(unknown)": a value
  never seen in the training split maps to 1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .dataset import UploadError

MISSING, UNKNOWN = 0, 1  # the first two indices of every categorical column
RESERVED = ("(missing)", "(unknown)")
LOG_SKEW = 10.0  # a non-negative column this skewed gets log1p before standardizing


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # "continuous" | "categorical"
    mean: float = 0.0  # continuous: of the (log1p) values in the training split
    std: float = 1.0
    log: bool = False  # continuous: log1p before standardizing
    categories: tuple[str, ...] = ()  # categorical: RESERVED, then the values seen in training

    def to_list(self) -> list:
        """A JSON-able form (model configs keep the schema they were trained on)."""
        if self.type == "continuous":
            return [self.name, self.type, self.mean, self.std, self.log]
        return [self.name, self.type, list(self.categories)]

    @classmethod
    def from_list(cls, v) -> "Column":
        if v[1] == "continuous":
            return cls(str(v[0]), "continuous", float(v[2]), float(v[3]), bool(v[4]))
        if v[1] == "categorical":
            return cls(str(v[0]), "categorical", categories=tuple(str(c) for c in v[2]))
        raise ValueError(f"column {v[0]!r}: unknown type {v[1]!r}")

    def standardize(self, values: np.ndarray) -> np.ndarray:
        v = np.log1p(np.maximum(values, 0.0)) if self.log else values
        return (v - self.mean) / self.std

    def original(self, standardized: np.ndarray) -> np.ndarray:
        """Standardized values back in the column's own units."""
        v = np.asarray(standardized, np.float64) * self.std + self.mean
        return np.expm1(np.minimum(v, 700.0)) if self.log else v


@dataclass(frozen=True)
class Schema:
    columns: tuple[Column, ...]

    @property
    def continuous(self) -> list[Column]:
        return [c for c in self.columns if c.type == "continuous"]

    @property
    def categorical(self) -> list[Column]:
        return [c for c in self.columns if c.type == "categorical"]

    @property
    def names(self) -> list[str]:
        """Column names in the order models and tables show them: continuous first, then categorical."""
        return [c.name for c in self.continuous + self.categorical]

    @property
    def cardinalities(self) -> tuple[int, ...]:
        return tuple(len(c.categories) for c in self.categorical)

    def to_list(self) -> list:
        return [c.to_list() for c in self.columns]

    @classmethod
    def from_list(cls, v) -> "Schema":
        return cls(tuple(Column.from_list(c) for c in v))

    def describe(self) -> str:
        parts = [f"{c.name} ({'log, ' if c.log else ''}continuous)" for c in self.continuous]
        parts += [f"{c.name} ({len(c.categories) - 2} categories)" for c in self.categorical]
        return ", ".join(parts)


@dataclass
class Rows:
    """A batch of table rows in model space; behaves like a tensor where the training loop and the
    views need it to (len, slicing, index_select, to, shape).

    cont: (N, C) standardized continuous values, NaN = missing. cat: (N, K) category indices.
    Decoded rows also carry the model's distribution over each cell: cont_scale (N, C), the std
    of each continuous value (standardized units), and cat_logp (N, sum of cardinalities), the
    log-probabilities of every category of every categorical column, column after column.
    """

    cont: torch.Tensor
    cat: torch.Tensor
    schema: Schema = field(repr=False)
    cont_scale: torch.Tensor | None = None
    cat_logp: torch.Tensor | None = None

    def _map(self, fn) -> "Rows":
        return Rows(fn(self.cont), fn(self.cat), self.schema,
                    None if self.cont_scale is None else fn(self.cont_scale),
                    None if self.cat_logp is None else fn(self.cat_logp))

    def __len__(self) -> int:
        return len(self.cont)

    def __getitem__(self, index) -> "Rows":
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        elif not isinstance(index, slice):
            index = torch.as_tensor(np.asarray(index) if not torch.is_tensor(index) else index)
            # A boolean mask selects where it is True; cast to long it would pick rows 0 and 1.
            index = index.nonzero().squeeze(1) if index.dtype == torch.bool else index.long()
        return self._map(lambda t: t[index])

    def index_select(self, dim: int, index: torch.Tensor) -> "Rows":
        return self._map(lambda t: t.index_select(dim, index))

    def to(self, device) -> "Rows":
        return self._map(lambda t: t.to(device))

    def cpu(self) -> "Rows":
        return self.to("cpu")

    @property
    def device(self) -> torch.device:
        return self.cont.device

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), self.cont.shape[1] + self.cat.shape[1])

    @property
    def nbytes(self) -> int:
        """Bytes held, as torch.Tensor.nbytes says of a tensor (memory estimates ask either)."""
        return sum(t.nbytes for t in (self.cont, self.cat, self.cont_scale, self.cat_logp) if t is not None)

    @staticmethod
    def cat_rows(parts: list["Rows"]) -> "Rows":
        first = parts[0]
        join = (lambda name: None if getattr(first, name) is None
                else torch.cat([getattr(p, name) for p in parts]))
        return Rows(torch.cat([p.cont for p in parts]), torch.cat([p.cat for p in parts]), first.schema,
                    join("cont_scale"), join("cat_logp"))

    def observed(self) -> torch.Tensor:
        """(N, C) True where the continuous value is present."""
        return ~torch.isnan(self.cont)

    def filled(self) -> torch.Tensor:
        """Continuous values with missing cells at the column mean (0, standardized)."""
        return torch.nan_to_num(self.cont, nan=0.0)

    def category_logp(self) -> list[torch.Tensor]:
        """Per categorical column, (N, n_categories) log-probabilities (decoded rows only)."""
        out, start = [], 0
        for n in self.schema.cardinalities:
            out.append(self.cat_logp[:, start:start + n])
            start += n
        return out

    def tolist(self) -> dict:
        """JSON-able (a training event's rows); missing values become None."""
        cont = [[None if math.isnan(v) else v for v in row] for row in self.cont.tolist()]
        return {"cont": cont, "cat": self.cat.tolist()}


def column_errors(recon: Rows, x: Rows) -> torch.Tensor:
    """(N, C + K) each cell's negative log-likelihood under the decoded distribution, in nats:
    Gaussian for continuous cells (the decoded mean and scale; scale 1 when the model has none),
    the decoded categorical distribution for categorical cells. Missing cells count 0."""
    mean = recon.cont.float()
    scale = recon.cont_scale.float() if recon.cont_scale is not None else torch.ones_like(mean)
    observed = x.observed()
    z = (x.filled() - mean) / scale
    cont = torch.where(observed, 0.5 * z.square() + scale.log() + 0.5 * math.log(2 * math.pi), torch.zeros_like(z))
    cats = []
    for k, logp in enumerate(recon.category_logp() if recon.cat_logp is not None else []):
        truth = x.cat[:, k]
        nll = -logp.float().gather(1, truth[:, None]).squeeze(1)
        cats.append(torch.where(truth == MISSING, torch.zeros_like(nll), nll))
    return torch.cat([cont, torch.stack(cats, 1) if cats else cont.new_zeros(len(cont), 0)], 1)


class TableKind:
    """Tables: stored and fed to models as `Rows`; errors are per-cell negative log-likelihoods."""

    name = "table"
    item = "row"
    shown_as = "table"  # views show rows as tables (pandas), not pictures
    linear_baseline = False  # PCA of category indices means nothing
    noise_kinds = ("missing", "random")
    error_name = "nats per row"
    fidelity_name = "cells recovered"

    @staticmethod
    def prepare(stored: Rows) -> Rows:
        return stored

    @staticmethod
    def store(x: Rows) -> Rows:
        return x

    @staticmethod
    def model_settings(items: Rows) -> dict:
        """A table model's input: its columns (with their standardization and categories)."""
        return {"input_shape": (items.shape[1],), "schema": as_tuples(items.schema.to_list())}

    @staticmethod
    def column_errors(recon: Rows, x: Rows) -> torch.Tensor:
        return column_errors(recon, x)

    @staticmethod
    def errors(recon: Rows, x: Rows) -> torch.Tensor:
        return column_errors(recon, x).sum(1)

    @staticmethod
    def quality(recon: Rows, x: Rows) -> dict[str, torch.Tensor]:
        """Per row: its NLL, the RMSE of its continuous cells (standardized units), the share of its
        categorical cells decoded to the right category."""
        out = {"nll_per_row": column_errors(recon, x).sum(1)}
        if x.cont.shape[1]:
            observed = x.observed()
            sq = torch.where(observed, (recon.cont.float() - x.filled()).square(), torch.zeros_like(x.filled()))
            out["rmse_standardized"] = (sq.sum(1) / observed.sum(1).clamp_min(1)).sqrt()
        if x.cat.shape[1]:
            out["category_accuracy"] = (recon.cat == x.cat).float().mean(1)
        return out

    @staticmethod
    def fidelity(x: Rows, ref: Rows) -> str:
        """Share of cells within 0.25 standard deviations (continuous) or equal (categorical)."""
        observed = ref.observed()
        close = ((x.filled() - ref.filled()).abs() <= 0.25) & observed
        same = x.cat == ref.cat
        total = int(observed.sum()) + ref.cat.numel()
        return f"{(int(close.sum()) + int(same.sum())) / max(total, 1):.0%}"

    def corrupt(self, x: Rows, kind: str, level: float, generator: torch.Generator | None = None,
                columns: list[str] | None = None) -> Rows:
        """missing: each cell (of `columns`, default all) blanked with probability `level`.
        random: each such cell replaced by a random value: a standard normal draw in the column's standardized
        units (the spread of the training data), or a category seen in training, drawn uniformly."""
        if kind not in self.noise_kinds:
            raise ValueError(f"unknown corruption {kind!r}; choose one of {', '.join(self.noise_kinds)}")
        if not 0 <= level <= 1:
            raise ValueError(f"the corrupted share of cells is a probability, got {level}")
        chosen = _column_mask(x.schema, columns)
        hit = (torch.rand(x.shape, generator=generator) < level) & chosen[None]
        c = x.cont.shape[1]
        cont, cat = x.cont.clone(), x.cat.clone()
        if kind == "missing":
            cont[hit[:, :c]] = float("nan")
            cat[hit[:, c:]] = MISSING
        else:
            cont = torch.where(hit[:, :c], torch.randn(cont.shape, generator=generator), cont)
            seen = torch.tensor([n - len(RESERVED) for n in x.schema.cardinalities], dtype=torch.float32)
            drawn = len(RESERVED) + (torch.rand(cat.shape, generator=generator) * seen.clamp_min(1)).long()
            cat = torch.where(hit[:, c:], torch.minimum(drawn, (seen.long() + len(RESERVED) - 1).clamp_min(0)), cat)
        return Rows(cont, cat, x.schema)

    @staticmethod
    def noise_limit(kind: str) -> float:
        return 1.0

    # ---- showing rows: pandas tables in the columns' own units ----------------------------

    @staticmethod
    def frame(x: Rows, names=None):
        """Rows as a pandas DataFrame in original units; decoded categories show their probability. names:
        what each row is, as a first column `row` (the page's tables do not show a DataFrame's index)."""
        import pandas as pd

        schema, out = x.schema, {} if names is None else {"row": list(names)}
        cont = x.cont.detach().float().cpu().numpy()
        for j, col in enumerate(schema.continuous):
            out[col.name] = col.original(cont[:, j])
        logps = x.category_logp() if x.cat_logp is not None else None
        for k, col in enumerate(schema.categorical):
            idx = x.cat[:, k].cpu().numpy()
            names = np.asarray(col.categories, dtype=object)[idx]
            if logps is not None:
                p = logps[k].detach().float().exp().cpu().numpy()[np.arange(len(idx)), idx]
                names = [f"{n} ({q:.0%})" for n, q in zip(names, p)]
            out[col.name] = names
        return pd.DataFrame(out)

    def show(self, x: Rows, target: int = 0):
        return self.frame(x)

    def grid(self, x: Rows, nrow: int = 0, target: int = 0, padding: int = 0, labels=None, row_labels=None):
        """Rows as one table; labels name them (the first column, `row`). row_labels (one per picture row, for
        images) are not needed: each table row has its own label."""
        return self.frame(x, labels)

    @staticmethod
    def clean_output(x: Rows) -> Rows:
        """A model's output as views use it: on the CPU, without autograd."""
        return x._map(lambda t: t.detach().cpu())

    @staticmethod
    def concat(parts: list[Rows]) -> Rows:
        return Rows.cat_rows(parts)

    @staticmethod
    def blank(item_shape, target: int = 0):
        import pandas as pd
        return pd.DataFrame()

    def read_upload(self, path, item_shape, reference=None):
        raise UploadError("a row cannot be uploaded as a file: choose a row of the test split by its index")

    def explain(self, recon: Rows, x: Rows, top: int = 5) -> str:
        """The columns that cost the first row most, with their share of its error (Markdown)."""
        errors = column_errors(recon[:1], x[:1])[0].double()
        total = float(errors.sum())
        order = torch.argsort(errors, descending=True)[:top].tolist()
        names = x.schema.names
        return ", ".join(f"{names[j]} {float(errors[j]):.2f}" + (f" ({float(errors[j]) / total:.0%})" if total > 0 else "")
                         for j in order)

    def flagged(self, x: Rows, recon: Rows, row_names: list[str], scores) -> object:
        """The flagged rows in their own units, each cell shaded by its share of the row's error (a Styler)."""
        import pandas as pd

        contributions = column_errors(recon, x).double().clamp_min(0).numpy()
        frame = self.frame(x, row_names)
        frame.insert(1, "score", np.asarray(scores, np.float64))
        share = contributions / np.maximum(contributions.max(1, keepdims=True), 1e-12)

        def shade(_):
            cells = [["", ""] + [f"background-color: rgba(214, 39, 40, {0.85 * v:.2f})" for v in row]
                     for row in share]
            return pd.DataFrame(cells, index=frame.index, columns=frame.columns)

        return frame.style.apply(shade, axis=None).format(precision=3)

    @staticmethod
    def attributes(x: Rows) -> dict[str, tuple[np.ndarray, list[str] | None]]:
        """Each column of the rows, to colour a map by: (category indices, category names) or (values, None)."""
        out = {}
        cont = x.cont.numpy()
        for j, col in enumerate(x.schema.continuous):
            out[col.name] = (col.original(cont[:, j]), None)
        for k, col in enumerate(x.schema.categorical):
            out[col.name] = (x.cat[:, k].numpy(), list(col.categories))
        return out


def _column_mask(schema: Schema, columns: list[str] | None) -> torch.Tensor:
    names = schema.names
    if not columns:
        return torch.ones(len(names), dtype=torch.bool)
    unknown = [c for c in columns if c not in names]
    if unknown:
        raise ValueError(f"no column named {unknown[0]!r}; the columns are: {', '.join(names)}")
    return torch.tensor([n in columns for n in names])


def as_tuples(v):
    """Lists -> tuples, recursively (configs compare equal after a JSON round trip)."""
    return tuple(as_tuples(e) for e in v) if isinstance(v, (list, tuple)) else v


TABLES = TableKind()


__all__ = ["Column", "MISSING", "as_tuples", "RESERVED", "Rows", "Schema", "TABLES", "TableKind", "UNKNOWN", "column_errors"]
