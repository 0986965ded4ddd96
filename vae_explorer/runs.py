"""One description of a training run: which model with which settings, on which
data, trained how, saved where.

The config dataclasses are the single source: `add_flags` makes a CLI flag of
every field (help text from the field's metadata), the page builds the same
`RunSpec` from its widgets, and `validate` gives both the same refusals with
the same messages. `to_argv` turns a spec back into the CLI's words: the
server's background job runs exactly that command.
"""
from __future__ import annotations

import argparse
import math
import os
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from datetime import datetime

import torch

from .checkpoints import DEFAULT_DIR
from .data import DATASETS, Dataset, DatasetError, TableOptions, load_dataset
from .devices import resolve_device
from .memory import EVAL_BATCH, GB, MEMORY_SHARE, MemoryEstimate, activation_bytes, free_memory, human, parameter_bytes
from .models import MODELS, ModelConfig, build_model, model_config, model_entry, setting
from .training import TrainConfig


class RunError(ValueError):
    """A run that cannot start; the message says why, in the words of its settings."""


@dataclass
class DataSpec:
    dataset: str = setting("digits", "dataset: " + ", ".join(DATASETS), choices=tuple(DATASETS))
    data_root: str | None = setting(None, "folder with the torchvision datasets or kddcup99's file, or the image folder")
    image_size: int | None = setting(None, "images: resize to this square size", kind="image")
    image_channels: int | None = setting(None, "images: convert to 1 (grey) or 3 (RGB) channels", choices=(1, 3),
                                         kind="image")
    data_file: str | None = setting(None, "tables: the CSV (comma, semicolon or tab) or Parquet file of --dataset csv",
                                    aliases=("--data",), kind="table")
    label_column: str | None = setting(None, "tables: the column that labels rows (colours the map; with "
                                       "--anomaly-label, gives ROC/PR)", kind="table")
    anomaly_label: str | None = setting(None, "tables: label values that mark anomalies, comma-separated "
                                        "(default: guessed for a two-valued label such as 0/1)", kind="table")
    ignore_columns: str | None = setting(None, "tables: columns to leave out (ids), comma-separated", kind="table")
    categorical: str | None = setting(None, "tables: columns to treat as categorical, comma-separated", kind="table")
    continuous: str | None = setting(None, "tables: columns to treat as continuous, comma-separated", kind="table")
    normal_only: bool = setting(False, "tables: train on the rows whose label is not an anomaly", kind="table")
    test_fraction: float = setting(0.2, "tables: share of rows held out as the test split (fixed seed)",
                                   kind="table")
    header: str = setting("auto", "tables: does the CSV's first line name the columns", choices=("auto", "yes", "no"),
                          kind="table")

    def kind(self) -> str:
        return DATASETS[self.dataset].kind.name

    def check_kind(self) -> None:
        """Settings of another kind of data than the dataset's are refused, not ignored."""
        for f in fields(self):
            wanted = f.metadata.get("kind")
            if wanted and wanted != self.kind() and getattr(self, f.name) != f.default:
                applies = ", ".join(n for n, d in DATASETS.items() if d.kind.name == wanted)
                raise RunError(f"{f.name} applies to {wanted} datasets ({applies}), not to {self.dataset}")
        if not 0 < self.test_fraction < 1:
            raise RunError(f"test_fraction must be between 0 and 1, got {self.test_fraction}")

    def table_options(self) -> TableOptions:
        def names(text):
            return tuple(n.strip() for n in (text or "").split(",") if n.strip())

        return TableOptions(self.label_column, names(self.ignore_columns), names(self.categorical),
                            names(self.continuous), names(self.anomaly_label), self.normal_only,
                            self.test_fraction, self.header)

    def load(self) -> Dataset:
        try:
            if self.kind() == "table":
                return load_dataset(self.dataset, self.data_root, path=self.data_file, table=self.table_options())
            return load_dataset(self.dataset, self.data_root, self.image_size, self.image_channels)
        except DatasetError as e:
            raise RunError(str(e)) from None


@dataclass
class RunSpec:
    model: str = "vae"
    settings: dict = field(default_factory=dict)  # model config fields that differ from the preset
    data: DataSpec = field(default_factory=DataSpec)
    train: TrainConfig = field(default_factory=TrainConfig)
    out: str | None = None  # checkpoint path; None: checkpoints/MODEL_DATASET_TIME
    resume: bool = False
    memory_limit: float | None = None  # GB the run may use, RAM or GPU memory; None: MEMORY_SHARE of what is free

    def validate(self) -> "RunSpec":
        """Check everything that needs no data; returns self with values coerced to their fields' types."""
        try:
            entry = model_entry(self.model)
        except ValueError as e:
            raise RunError(str(e)) from None
        if self.data.dataset not in DATASETS:
            raise RunError(f"unknown dataset {self.data.dataset!r}; choose one of: {', '.join(DATASETS)}")
        applicable = entry.settings()
        unknown = sorted(set(self.settings) - set(model_settings()))
        if unknown:
            raise RunError(f"unknown model setting {unknown[0]!r}; model settings are: {', '.join(model_settings())}")
        for name, value in list(self.settings.items()):
            if name not in applicable:
                raise RunError(f"{name} does not apply to model {self.model} (its settings: {', '.join(applicable)})")
            self.settings[name] = coerce(applicable[name], value)
        self.data = _coerced(self.data)
        self.data.check_kind()
        if entry.cls.data_kind != self.data.kind():
            takes = ", ".join(n for n, d in DATASETS.items() if d.kind.name == entry.cls.data_kind)
            raise RunError(f"{self.model} takes {entry.cls.data_kind}s but {self.data.dataset} holds "
                           f"{self.data.kind()}s; choose a model for it, or one of these datasets: {takes}")
        self.train = _coerced(self.train)
        config = self.model_config()  # the model's own checks first: their words say what a setting is for
        for name, value in self.settings.items():
            if isinstance(value, float) and not math.isfinite(value):
                # NaN and ±inf pass a config's "< 0" checks (every comparison with NaN is false).
                raise RunError(f"{name} must be a finite number, got {value}")
        for name in self.settings:
            for other, wanted in applicable[name].metadata.get("only_with", {}).items():
                if getattr(config, other) != wanted:
                    raise RunError(f"{name} applies only with {other} {wanted}")
        if self.data.image_size is not None and self.data.image_size < 1:
            raise RunError(f"image_size must be positive, got {self.data.image_size}")
        self.memory_limit = _coerce("memory_limit", float, True, None, self.memory_limit)
        if self.memory_limit is not None and not (math.isfinite(self.memory_limit) and self.memory_limit > 0):
            raise RunError(f"memory_limit must be a positive number of GB, got {self.memory_limit}")
        try:
            self.train.validate()
        except ValueError as e:
            raise RunError(str(e)) from None
        return self

    def model_config(self, data: Dataset | None = None) -> ModelConfig:
        """The model's config: its preset, these settings, and what the data decides (input shape)."""
        try:
            return model_config(self.model, **self.settings, **(data.model_settings() if data else {}))
        except (ValueError, TypeError) as e:
            raise RunError(str(e)) from None

    def load_data(self, hint: str = "--memory-limit") -> Dataset:
        """The data, after checking that it fits where its size can be told before reading it (a folder)."""
        size = DATASETS[self.data.dataset].stored_bytes
        count = size(self.data.data_root, self.data.image_size, self.data.image_channels) if size else None
        if count is not None:
            items, stored = count
            allowed, why = self._allowed(torch.device("cpu"))
            if allowed is not None and stored > allowed:
                raise RunError(f"the {self.data.dataset} dataset needs about {human(stored)} of memory ({items:,} "
                               f"items) but {human(allowed)} is allowed ({why}); use fewer or smaller items "
                               f"(image_size), or a larger limit with {hint}")
        data = self.data.load()
        try:
            self.train.validate(data)
        except ValueError as e:
            raise RunError(str(e)) from None
        return data

    def check_memory(self, data: Dataset, gpu: bool = True, hint: str = "--memory-limit") -> MemoryEstimate:
        """Refuse a run whose parameters, gradients, Adam's moments, activations and data would not fit in
        the memory it may use, with the estimate; returns it. Nothing big is allocated before the parameters
        are known to fit. gpu=False leaves the GPU to the training process's own check (asking CUDA makes a
        context of several hundred MB, which a page server should not keep). hint: how to raise the limit."""
        config = self.model_config(data)
        try:
            trainable, weights = parameter_bytes(lambda: build_model(self.model, config))
        except (RuntimeError, ValueError, TypeError, OverflowError, MemoryError):
            # Sizes beyond what torch can represent (a latent_dim of 2^70): its words name C++ types, not settings.
            given = ", ".join(f"{k}={_short(v)}" for k, v in self.settings.items()) or "its preset"
            raise RunError(f"{self.model} cannot be built with these settings ({given}): a size is too large for "
                           "torch to represent") from None
        device = resolve_device(self.train.device)
        stored = data.train_x.nbytes + data.test_x.nbytes  # tensors, or table rows
        estimate = MemoryEstimate(weights, 3 * trainable, stored)
        if not self._refuse_beyond(estimate, device, gpu, hint):
            return estimate  # nothing to compare with: no real model is built just to measure its activations
        with torch.random.fork_rng(devices=[]):  # building draws initial weights: the run's own stay as seeded
            model = build_model(self.model, config)

        def items(n: int) -> torch.Tensor:  # n model inputs, repeating items if the data has fewer
            return data.kind.prepare(data.train_x[torch.arange(n) % len(data.train_x)])

        activations = activation_bytes(model, items, self.train.batch_size, min(EVAL_BATCH, len(data.test_x)),
                                       self.train.iwae_k)
        del model
        estimate = MemoryEstimate(weights, 3 * trainable, stored, activations)
        self._refuse_beyond(estimate, device, gpu, hint)
        return estimate

    def _refuse_beyond(self, estimate: MemoryEstimate, device: torch.device, gpu: bool, hint: str) -> bool:
        """RunError if the estimate is over what is allowed; False if there was nothing to compare it with."""
        checks = [("GPU memory", estimate, device)] if device.type == "cuda" and gpu else []
        checks.append(("memory", estimate.host_part() if device.type == "cuda" else estimate, torch.device("cpu")))
        compared = False
        for where, need, on in checks:
            allowed, why = self._allowed(on)
            if allowed is not None and need.total > allowed:
                raise RunError(f"this run needs {need.describe()} of {where} but {human(allowed)} is allowed "
                               f"({why}); choose smaller sizes (latent_dim, hidden, channels, batch_size) or a "
                               f"larger limit with {hint}")
            compared = compared or allowed is not None
        return compared

    def _allowed(self, device: torch.device) -> tuple[int | None, str]:
        """Bytes this run may use on `device`, and why; None where the system does not say and no limit is set."""
        if self.memory_limit is not None:
            return int(self.memory_limit * GB), "the limit set for this run"
        free = free_memory(device)
        if free is None:
            return None, ""
        return int(free * MEMORY_SHARE), f"{MEMORY_SHARE:.0%} of the {human(free)} free now"

    def default_name(self) -> str:
        return f"{self.model}_{self.data.dataset}_{datetime.now():%Y%m%d-%H%M%S}"

    def checkpoint(self) -> str:
        """Where the run saves; fixed on first ask, so what is printed and what is written agree."""
        if self.out is None:
            self.out = os.path.join(DEFAULT_DIR, self.default_name())
        return self.out

    def to_argv(self) -> list[str]:
        """The `python -m vae_explorer train` arguments that describe this run (defaults left out)."""
        argv = ["--model", self.model]
        for name, value in self.settings.items():
            argv += flag_words(name, value)
        for part in (self.data, self.train):
            for f in _cli_fields(type(part)):
                value = getattr(part, f.name)
                if value != f.default:
                    argv += flag_words(f.name, value)
        argv += ["--out", self.checkpoint()]
        if self.memory_limit is not None:
            argv += ["--memory-limit", str(self.memory_limit)]
        return argv + (["--resume"] if self.resume else [])


# ---- settings and their flags ---------------------------------------------------------------

def _cli_fields(cls) -> list[Field]:
    return [f for f in fields(cls) if f.metadata.get("cli", True) and not f.metadata.get("data")]


def model_settings() -> dict[str, Field]:
    """Every model setting of every registry entry, by name (the first entry's field where they share one)."""
    out: dict[str, Field] = {}
    for entry in MODELS.values():
        for name, f in entry.settings().items():
            out.setdefault(name, f)
    return out


_BASE_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


def _resolve(f: Field) -> tuple[type, bool]:
    """(base type, optional) of a config field: int, float, str, bool or tuple (of whole numbers).
    Config modules use postponed annotations, so the type is its text, e.g. "int | None"."""
    parts = [p.strip() for p in str(f.type).split("|")]
    base = next(p for p in parts if p != "None")
    return (tuple if base.startswith("tuple") else _BASE_TYPES[base]), "None" in parts


def coerce(f: Field, value):
    """A value from a flag (text) or the page (number, text, list) as field `f`'s type; RunError if it is not one."""
    kind, optional = _resolve(f)
    return _coerce(f.name, kind, optional, f.metadata.get("choices"), value)


def _coerce(name: str, kind: type, optional: bool, choices, value):
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in ("", "none")):
        if optional:
            return None
        raise RunError(f"{name} needs a value")
    try:
        if kind is bool:
            if isinstance(value, str):
                if value.strip().lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                value = value.strip().lower() in ("true", "1", "yes")
            if not isinstance(value, (bool, int)) or value not in (0, 1):
                raise ValueError
            out = bool(value)
        elif kind is int:
            number = _parse_number(value) if isinstance(value, str) else value
            # An int is whole at any size (float() of 2^1100 would overflow); a float must be finite and whole.
            if isinstance(number, bool) or not (isinstance(number, int) or (
                    isinstance(number, float) and math.isfinite(number) and number.is_integer())):
                raise RunError(f"{name} must be a whole number, got {_short(value)}")
            out = int(number)
        elif kind is float:
            if isinstance(value, bool):
                raise ValueError
            out = float(value.strip() if isinstance(value, str) else value)
        elif kind is tuple:
            parts = value.split(",") if isinstance(value, str) else list(value)
            try:
                out = tuple(_coerce(name, int, False, None, p) for p in parts if str(p).strip())
            except RunError:
                raise ValueError from None
            if any(v < 1 for v in out):
                raise RunError(f"{name} sizes must be positive, got {value!r}")
        else:
            if not isinstance(value, str):
                raise ValueError
            out = value.strip()
    except RunError:
        raise
    except (ValueError, TypeError, OverflowError):
        raise RunError(f"{name} must be {_describe(kind)}, got {_short(value)}") from None
    if choices is not None and out not in choices:
        raise RunError(f"unknown {name} {out!r}; choose one of: {', '.join(map(str, choices))}")
    return out


def _parse_number(text: str) -> int | float:
    """Text as an int when it is one (exact, however long: "1180591620717411303424"), else as a float."""
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        return float(text)


def _short(value) -> str:
    """A value for a message, cut short: a client may send a number of thousands of digits."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _describe(kind) -> str:
    return {bool: "true or false", int: "a whole number", float: "a number", tuple: "comma-separated whole numbers",
            str: "text"}.get(kind, str(kind))


def _coerced(obj):
    """A config dataclass with every field coerced to its type (the page sends floats for whole numbers)."""
    return replace(obj, **{f.name: coerce(f, getattr(obj, f.name)) for f in fields(obj)})


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def flag_words(name: str, value) -> list[str]:
    """A setting as the CLI's words: ["--name", "value"], ["--flag"] / ["--no-flag"] for booleans."""
    if isinstance(value, bool):
        return [flag(name) if value else "--no-" + flag(name)[2:]]
    if isinstance(value, tuple):
        return [flag(name), ",".join(map(str, value))]
    return [flag(name), str(value)]


def add_flags(parser: argparse.ArgumentParser) -> None:
    """A flag for every field of the run: model settings (default: the model's preset), data, training."""
    parser.add_argument("--model", default="vae", help=f"one of: {', '.join(MODELS)}")
    groups = [("model settings (apply to the models that have them)", "model", model_settings().values(), True),
              ("data", "data", _cli_fields(DataSpec), False), ("training", "train", _cli_fields(TrainConfig), False)]
    for title, dest_prefix, group_fields, from_preset in groups:
        group = parser.add_argument_group(title)
        for f in group_fields:
            names = [flag(f.name), *f.metadata.get("aliases", ())]
            default = None if from_preset else (None if f.default is MISSING else f.default)
            help_text = f.metadata.get("help", "") + ("" if from_preset or default is None else f" (default {default})")
            kind, _ = _resolve(f)
            if kind is bool:
                group.add_argument(*names, dest=f"{dest_prefix}.{f.name}", action=argparse.BooleanOptionalAction,
                                   default=default, help=help_text)
            else:
                choices = f.metadata.get("choices")
                metavar = "{" + ",".join(map(str, choices)) + "}" if choices else f.name.upper()
                group.add_argument(*names, dest=f"{dest_prefix}.{f.name}", default=default, help=help_text,
                                   metavar=metavar)
    data = parser.add_argument_group("data")
    data.add_argument("--grayscale", dest="data.image_channels", action="store_const", const=1,
                      help="same as --image-channels 1")
    data.add_argument("--rgb", dest="data.image_channels", action="store_const", const=3,
                      help="same as --image-channels 3")
    parser.add_argument("--out", default=None, help=f"checkpoint path (default: {DEFAULT_DIR}/MODEL_DATASET_TIME)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint at --out")
    parser.add_argument("--memory-limit", metavar="GB", default=None,
                        help=f"memory the run may use, RAM or GPU memory (default {MEMORY_SHARE * 100:.0f}%% of what is free); "
                             "a run estimated to need more is refused before it starts")


def spec_from_args(args: argparse.Namespace) -> RunSpec:
    """The RunSpec the flags describe (not yet validated)."""
    values = vars(args)
    settings = {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("model.") and v is not None}
    data = DataSpec(**{k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("data.")})
    train = TrainConfig(**{k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("train.")})
    return RunSpec(args.model, settings, data, train, args.out, args.resume, args.memory_limit)


def parse_settings(text: str) -> dict[str, str]:
    """'name=value' pairs, one per line or separated by ';' (the page's extra settings box)."""
    out = {}
    for part in str(text or "").replace(";", "\n").splitlines():
        part = part.strip()
        if not part or part.startswith("#"):
            continue
        name, eq, value = part.partition("=")
        name = name.strip().lstrip("-").replace("-", "_")
        if not eq or not name:
            raise RunError(f"{part!r} is not a setting: write name=value, e.g. commitment=0.5")
        out[name] = value.strip()
    return out


def split_settings(values: dict) -> tuple[dict, dict, dict]:
    """Named values -> (model settings, data fields, training fields); RunError for a name that is none."""
    data_names = {f.name for f in _cli_fields(DataSpec)}
    train_names = {f.name for f in _cli_fields(TrainConfig)}
    known = set(model_settings())
    model, data, train = {}, {}, {}
    for name, value in values.items():
        if name in train_names:
            train[name] = value
        elif name in data_names:
            data[name] = value
        elif name in known:
            model[name] = value
        else:
            raise RunError(f"unknown setting {name!r}; settings are: "
                           f"{', '.join(sorted(known | data_names | train_names))}")
    return model, data, train
