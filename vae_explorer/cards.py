"""Model cards: what a checkpoint is, in Markdown, from the file alone (what the
registry says of the model, config, dataset, parameters per layer, learned
state that is not a parameter, training settings and its last test metrics)."""
from __future__ import annotations

from torch import nn

from .models import Autoencoder, ModelEntry


def parameter_table(model: nn.Module) -> list[tuple[str, str, int]]:
    """(layer name, layer type, parameter count) for every module that owns parameters."""
    rows = []
    for name, module in model.named_modules():
        count = sum(p.numel() for p in module.parameters(recurse=False))
        if count:
            rows.append((name or "(model)", type(module).__name__, count))
    return rows


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "×".join(str(x) for x in v) if all(isinstance(x, int) for x in v) and v else str(list(v))
    return str(v)


def model_card(name: str, model: Autoencoder, meta: dict, entry: ModelEntry | None = None) -> str:
    model_name = meta.get("model", getattr(model, "name", "?"))
    ds = meta.get("dataset", {})
    training = meta.get("training", {})
    metrics = (meta.get("metrics") or [{}])[-1]
    total = sum(p.numel() for p in model.parameters())
    code = "quantized (snapped to a codebook)" if model.code_kind == "quantized" else "continuous"
    lines = [f"### {name}", f"**{model_name}**: {entry.description if entry else ''}", ""]
    lines += [f"- dataset: **{ds.get('name', '?')}**, items {_fmt(ds.get('input_shape', model.input_shape))}"
              f" ({ds.get('train_size', '?')} train / {ds.get('test_size', '?')} test)",
              f"- latent: {model.latent_dim} dimensions, {code}; {total:,} parameters",
              "- samples: " + "; ".join(s.label for s in model.sample_sources()),
              f"- trained: {meta.get('epoch', '?')} epochs, batch {training.get('batch_size', '?')}, "
              f"lr {training.get('lr', '?')}, seed {training.get('seed', '?')}, on {training.get('device', '?')} "
              f"({training.get('precision', '?')}); created {meta.get('created', '?')}, package {meta.get('version', '?')}",
              ""]
    test = metrics.get("test", {})
    if test:
        lines += ["| test metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in test.items()]
        lines.append("")
    inputs = model.describe_inputs()
    if inputs:
        lines += ["Inputs:", "", inputs, ""]
    data_fields = set(entry.settings()) ^ set(meta.get("config", {})) if entry else set()
    lines += ["| config | value |", "|---|---|"]
    # Fields the data sets are shown above (input shape in the dataset line, a table's columns as a table).
    lines += [f"| {k} | {_fmt(v)} |" for k, v in meta.get("config", {}).items() if k not in data_fields]
    lines += ["", "| layer | type | parameters |", "|---|---|---:|"]
    lines += [f"| `{n}` | {t} | {c:,} |" for n, t, c in parameter_table(model)]
    learned = model.learned_state()
    if learned:
        lines += ["", "Learned without gradients (not counted above):", "",
                  "| tensor | shape | values |", "|---|---|---:|"]
        lines += [f"| `{n}` | {_fmt(list(t.shape))} | {t.numel():,} |" for n, t in learned.items()]
    return "\n".join(lines)
