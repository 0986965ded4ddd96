"""Quality bars 3 and 4: every autoencoder against PCA at the same code size,
and the denoising AE's PSNR on MNIST.

    python benchmarks/quality.py --data-root ../shared/datasets [--mnist-epochs 10]

Digits (k = 2 and k = 10) for every registry model; MNIST at 30 dimensions for
the MLP and conv AE and VAE; MNIST denoising with Gaussian noise factor 0.5.
Reconstruction MSE per pixel is decode(encode(x)) on the test set, against the
clean image. Writes benchmarks/results/quality.json.
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

from vae_explorer import MODELS, TrainConfig, add_noise, build_model, fit, load_dataset, psnr, to_float  # noqa: E402


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


def train(name, data, k, epochs, batch_size, lr=1e-3, **overrides):
    torch.manual_seed(0)
    if name in ("vq_vae", "rvq_vae"):
        overrides.setdefault("code_dim", 2 if k % 2 == 0 else 1)
    model = build_model(name, input_shape=data.input_shape, latent_dim=k, **overrides)
    t0 = time.perf_counter()
    fit(model, data, TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, iwae_k=0, history_images=0))
    return model, time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default="../shared/datasets")
    p.add_argument("--digits-epochs", type=int, default=100)
    p.add_argument("--mnist-epochs", type=int, default=10)
    p.add_argument("--conv", action="store_true", help="also the conv AE and VAE on MNIST (slow on CPU)")
    args = p.parse_args()
    result = {"digits": {}, "mnist": {}}

    digits = load_dataset("digits")
    for k in (2, 10):
        row = {"pca": pca_mse(digits, k)}
        for name in MODELS:
            if name == "sparse_ae":
                model, _ = train(name, digits, k, args.digits_epochs, 64, l1_weight=0.01)
            else:
                model, _ = train(name, digits, k, args.digits_epochs, 64, lr=3e-3 if name == "linear_ae" else 1e-3)
            row[name] = model_mse(model, digits)
        result["digits"][f"k={k}"] = row
        print(f"digits k={k}:", json.dumps({n: round(v, 4) for n, v in row.items()}), flush=True)

    mnist = load_dataset("mnist", args.data_root, download=False)
    row = {"pca": pca_mse(mnist, 30)}
    mnist_models = [("ae", {"hidden": (512, 256)}), ("vae", {"hidden": (512, 256)})]
    if args.conv:
        mnist_models += [("conv_ae", {}), ("conv_vae", {})]
    for name, extra in mnist_models:
        model, seconds = train(name, mnist, 30, args.mnist_epochs, 128, **extra)
        row[name] = model_mse(model, mnist)
        print(f"mnist k=30 {name}: {row[name]:.4f} (PCA {row['pca']:.4f}), {seconds:.0f} s", flush=True)
    result["mnist"]["k=30"] = row

    # Bar 4: denoising. Fixed noise on the test set; PSNR of the output against the clean image.
    model, seconds = train("denoising_ae", mnist, 64, args.mnist_epochs, 128, hidden=(512, 256), noise_std=0.5)
    g = torch.Generator().manual_seed(0)
    clean = to_float(mnist.test_x)
    noisy = add_noise(clean, "gaussian", 0.5, generator=g)
    with torch.no_grad():
        out = torch.cat([model.reconstruct(noisy[i:i + 1000]) for i in range(0, len(noisy), 1000)])
    result["mnist"]["denoising"] = {
        "noise": "gaussian 0.5, clipped", "psnr_noisy_input_db": psnr(noisy, clean).mean().item(),
        "psnr_denoised_db": psnr(out, clean).mean().item(), "train_seconds": seconds,
    }
    print("mnist denoising:", json.dumps(result["mnist"]["denoising"]), flush=True)
    out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "quality.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
