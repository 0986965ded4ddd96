"""Quality bars 3 and 4: every autoencoder against PCA at the same code size,
and the denoising AE's PSNR on MNIST.

    python benchmarks/quality.py --data-root ../shared/datasets [--mnist-epochs 10] [--only digits]

Digits (k = 2 and k = 10) for every registry model; MNIST at 30 dimensions for
the MLP AE and VAE (and the conv ones with --conv); MNIST denoising with Gaussian
noise factor 0.5. Reconstruction MSE per pixel is decode(encode(x)) on the test
set (encode = the posterior mean for VAEs), against the clean image. Every row
states what was trained (likelihood, sigma, beta, epochs, ...), read back from
the built model's config. Writes benchmarks/results/quality.json.

The VAEs on digits: two rows each.
  "<name> (gaussian sigma=0.1)": the bar row. A fixed Gaussian likelihood with
      sigma = 0.1: the model assumes pixel noise of std 0.1 on the [0, 1] scale
      (about 1.6 of the 16 grey levels), so each unit of squared error costs
      1 / (2 sigma^2) = 50 nats against the KL. 0.1 is the package's default sigma
      and close to the value a calibrated decoder (gaussian_learned) settles on at
      k = 10 (median per-pixel sigma 0.10-0.11 after 100 epochs), i.e. about the
      RMS error the models reach. beta stays the preset's (4 for beta_vae).
  "<name> (bernoulli, preset)": the preset as shipped. On 8x8 digits with
      continuous grey levels, the Bernoulli likelihood weighs 64 pixels so lightly
      against the KL that most latent dimensions switch off (about 3.5 nats of KL
      at k = 10), and with beta = 4 all of them (the output is the mean image).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vae_explorer import MODELS, TrainConfig, build_model, fit, load_dataset, psnr  # noqa: E402
from vae_explorer.data.images import add_noise, to_float  # noqa: E402

VAES = ("vae", "beta_vae", "conv_vae")
# The digits VAEs' likelihood for the PCA bar (see the module docstring).
VAE_GAUSSIAN = {"likelihood": "gaussian", "sigma": 0.1}
REFERENCE = "linear_ae"  # learns the PCA subspace: it should match PCA, not beat it


def pca_mse(data, k: int) -> float:
    x = to_float(data.train_x).flatten(1).double().numpy()
    mean = x.mean(0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    basis = vt[:k]
    t = to_float(data.test_x).flatten(1).double().numpy() - mean
    return float(np.mean((t @ basis.T @ basis - t) ** 2))


@torch.no_grad()
def model_mse(model, data, batch=1000) -> float:
    model.eval()
    total = 0.0
    for i in range(0, len(data.test_x), batch):
        x = to_float(data.test_x[i:i + batch])
        total += (model.reconstruct(x) - x).square().sum().item()
    return total / data.test_x.numel()


def describe(model, epochs: int, batch_size: int, lr: float, overrides: dict) -> dict:
    """What was trained, read from the built model's config (not from what we meant to pass)."""
    c = model.config
    sigma = {"gaussian": c.sigma, "laplace": c.sigma,
             "gaussian_learned": f"learned per pixel (init {c.sigma}, floor 0.01)"}.get(c.likelihood)
    d = {"model": model.name, "likelihood": c.likelihood, "sigma": sigma}
    if hasattr(c, "beta"):
        d["beta"] = c.beta
    d.update({"latent_dim": c.latent_dim, "arch": c.arch,
              **({"hidden": list(c.hidden)} if c.arch == "mlp" else {"channels": list(c.channels)}),
              "epochs": epochs, "batch_size": batch_size, "lr": lr})
    d["overrides"] = {k: v for k, v in overrides.items() if k != "latent_dim"}
    return d


def short(s: dict) -> str:
    sigma = "" if s["sigma"] is None else f" sigma={s['sigma']}"
    beta = f" beta={s['beta']}" if "beta" in s else ""
    return f"{s['likelihood']}{sigma}{beta}, {s['epochs']} epochs"


def train(name, data, k, epochs, batch_size, lr=1e-3, **overrides):
    torch.manual_seed(0)
    if name in ("vq_vae", "rvq_vae"):
        overrides.setdefault("code_dim", 2 if k % 2 == 0 else 1)
    model = build_model(name, **data.model_settings(), latent_dim=k, **overrides)
    t0 = time.perf_counter()
    fit(model, data, TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, iwae_k=0, history_images=0))
    return model, time.perf_counter() - t0, describe(model, epochs, batch_size, lr, overrides)


def digits_rows():
    """(row name, registry name, lr, overrides) for every digits row."""
    for name in MODELS:
        if name in VAES:
            yield f"{name} (gaussian sigma={VAE_GAUSSIAN['sigma']})", name, 1e-3, dict(VAE_GAUSSIAN)
            yield f"{name} (bernoulli, preset)", name, 1e-3, {}
        elif name == "sparse_ae":
            yield name, name, 1e-3, {"l1_weight": 0.01}
        elif name == "linear_ae":
            yield name, name, 3e-3, {}
        else:
            yield name, name, 1e-3, {}


def verdict(row_name: str, mse: float, pca: float) -> str:
    if row_name == REFERENCE:
        return "matches PCA (reference)" if abs(mse / pca - 1) < 0.05 else ("beats" if mse < pca else "loses")
    return "beats" if mse < pca else "loses"


def run_digits(epochs: int) -> dict:
    digits = load_dataset("digits")
    out = {"epochs": epochs, "batch_size": 64, "settings": {}, "verdict": {}}
    for k in (2, 10):
        row, verdicts = {"pca": pca_mse(digits, k)}, {}
        for row_name, name, lr, overrides in digits_rows():
            model, seconds, settings = train(name, digits, k, epochs, 64, lr=lr, **overrides)
            row[row_name] = model_mse(model, digits)
            verdicts[row_name] = verdict(row_name, row[row_name], row["pca"])
            out["settings"].setdefault(row_name, {kk: v for kk, v in settings.items() if kk != "latent_dim"})
            print(f"digits k={k} {row_name:34s} {row[row_name]:.4f} (PCA {row['pca']:.4f}) {verdicts[row_name]:8s}"
                  f" [{short(settings)}] {seconds:.0f} s", flush=True)
        out[f"k={k}"] = row
        out["verdict"][f"k={k}"] = verdicts
    return out


def run_mnist(data_root: str, epochs: int, conv: bool) -> dict:
    mnist = load_dataset("mnist", data_root, download=False)
    out = {"epochs": epochs, "batch_size": 128, "settings": {}}
    row = {"pca": pca_mse(mnist, 30)}
    mnist_models = [("ae", {"hidden": (512, 256)}), ("vae", {"hidden": (512, 256)})]
    if conv:
        mnist_models += [("conv_ae", {}), ("conv_vae", {})]
    for name, extra in mnist_models:
        model, seconds, settings = train(name, mnist, 30, epochs, 128, **extra)
        row[name] = model_mse(model, mnist)
        out["settings"][name] = settings
        print(f"mnist k=30 {name}: {row[name]:.4f} (PCA {row['pca']:.4f}) {verdict(name, row[name], row['pca'])}"
              f" [{short(settings)}] {seconds:.0f} s", flush=True)
    out["k=30"] = row

    # Bar 4: denoising. Fixed noise on the test set; PSNR of the output against the clean image.
    model, seconds, settings = train("denoising_ae", mnist, 64, epochs, 128, hidden=(512, 256), noise_std=0.5)
    out["settings"]["denoising_ae"] = settings
    g = torch.Generator().manual_seed(0)
    clean = to_float(mnist.test_x)
    noisy = add_noise(clean, "gaussian", 0.5, generator=g)
    with torch.no_grad():
        recon = torch.cat([model.reconstruct(noisy[i:i + 1000]) for i in range(0, len(noisy), 1000)])
    out["denoising"] = {
        "noise": "gaussian 0.5, clipped", "psnr_noisy_input_db": psnr(noisy, clean).mean().item(),
        "psnr_denoised_db": psnr(recon, clean).mean().item(), "train_seconds": seconds,
    }
    print("mnist denoising:", json.dumps(out["denoising"]), flush=True)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default="../shared/datasets")
    p.add_argument("--digits-epochs", type=int, default=100)
    p.add_argument("--mnist-epochs", type=int, default=10)
    p.add_argument("--conv", action="store_true", help="also the conv AE and VAE on MNIST (slow on CPU)")
    p.add_argument("--only", choices=("digits", "mnist"), help="run one part; the other part of quality.json is kept")
    args = p.parse_args()
    out_path = ROOT / "benchmarks" / "results" / "quality.json"
    t0 = time.perf_counter()
    result = {}
    if args.only is not None and out_path.exists():
        result = json.loads(out_path.read_text())
        result.pop("total_seconds", None)  # no longer the runtime of one full run
    if args.only in (None, "digits"):
        result["digits"] = run_digits(args.digits_epochs)
    if args.only in (None, "mnist"):
        result["mnist"] = run_mnist(args.data_root, args.mnist_epochs, args.conv)
    if args.only is None:
        result["total_seconds"] = round(time.perf_counter() - t0, 1)
    print(f"done in {time.perf_counter() - t0:.0f} s", flush=True)
    out_path.parent.mkdir(exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
