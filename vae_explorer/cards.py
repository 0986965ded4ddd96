"""Model cards: what a checkpoint is, in Markdown, from the file alone (config,
dataset, parameters per layer, training settings and its last test metrics)."""
from __future__ import annotations

from torch import nn

from .models import Autoencoder

FAMILY = {
    "ae": "Undercomplete MLP autoencoder: a bottleneck code, deterministic.",
    "conv_ae": "Convolutional autoencoder: stride-2 convolutions down, transposed convolutions up.",
    "linear_ae": "Linear autoencoder: no nonlinearity, MSE; learns the PCA subspace.",
    "sparse_ae": "Sparse autoencoder: an L1 penalty on the code activations, may be overcomplete.",
    "denoising_ae": "Denoising autoencoder: learns to reconstruct clean images from corrupted ones.",
    "vae": "Variational autoencoder: Gaussian posterior, KL to N(0, I), trained on the ELBO.",
    "beta_vae": "β-VAE: the VAE with the KL weighted by β, for smoother, more disentangled codes.",
    "conv_vae": "Convolutional VAE.",
    "vq_vae": "VQ-VAE: codes snapped to the nearest of K learned codebook vectors.",
    "rvq_vae": "Residual VQ-VAE: several codebooks, each quantizing what the previous left.",
}


def parameter_table(model: nn.Module) -> list[tuple[str, str, int]]:
    """(layer name, layer type, parameter count) for every module that owns parameters."""
    rows = []
    for name, module in model.named_modules():
        count = sum(p.numel() for p in module.parameters(recurse=False))
        count += sum(b.numel() for n, b in module.named_buffers(recurse=False) if n == "codebook")
        if count:
            rows.append((name or "(model)", type(module).__name__, count))
    return rows


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "×".join(str(x) for x in v) if all(isinstance(x, int) for x in v) and v else str(list(v))
    return str(v)


def model_card(name: str, model: Autoencoder, meta: dict) -> str:
    model_name = meta.get("model", getattr(model, "name", "?"))
    ds = meta.get("dataset", {})
    training = meta.get("training", {})
    metrics = (meta.get("metrics") or [{}])[-1]
    total = sum(p.numel() for p in model.parameters())
    lines = [f"### {name}", f"**{model_name}**: {FAMILY.get(model_name, '')}", ""]
    lines += [f"- dataset: **{ds.get('name', '?')}**, images {_fmt(ds.get('input_shape', model.input_shape))}"
              f" ({ds.get('train_size', '?')} train / {ds.get('test_size', '?')} test)",
              f"- latent: {model.latent_dim} dimensions; {total:,} parameters",
              f"- trained: {meta.get('epoch', '?')} epochs, batch {training.get('batch_size', '?')}, "
              f"lr {training.get('lr', '?')}, seed {training.get('seed', '?')}, on {training.get('device', '?')} "
              f"({training.get('precision', '?')}); created {meta.get('created', '?')}, package {meta.get('version', '?')}",
              ""]
    test = metrics.get("test", {})
    if test:
        lines += ["| test metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in test.items()]
        lines.append("")
    lines += ["| config | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in meta.get("config", {}).items()]
    lines += ["", "| layer | type | parameters |", "|---|---|---:|"]
    lines += [f"| `{n}` | {t} | {c:,} |" for n, t, c in parameter_table(model)]
    return "\n".join(lines)
