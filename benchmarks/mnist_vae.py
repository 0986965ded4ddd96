"""Speed and quality against the yardstick: the classic PyTorch-examples MNIST VAE.

Runs, one after the other in this one invocation, on the same machine:
  1. fp32 matmul throughput at the model's shapes (GFLOP/s);
  2. the classic loop (torchvision MNIST + ToTensor + DataLoader, batch 128),
     copied from pytorch/examples vae/main.py, in its own process;
  3. ours: `python -m vae_explorer train` with the same model (784-400-20, BCE,
     Adam 1e-3, batch 128, same number of images), in its own process, twice:
     with the defaults (fp32, eager) and with `--precision bf16 --compile`.
Each process is timed whole (imports, data loading, evaluation included) and
each reports its training-loop time per epoch. Prints a JSON summary and writes
it to benchmarks/results/mnist_vae.json.

    python benchmarks/mnist_vae.py --data-root ../shared/datasets [--epochs 10]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLOP_PER_IMAGE = 3.3e6  # forward + backward of 784-400-20(x2)-400-784, no input gradient


def classic(data_root: str, epochs: int, seed: int) -> dict:
    """pytorch/examples vae/main.py, CPU path, without the argument parsing."""
    import torch
    import torch.nn.functional as F
    from torch import nn, optim
    from torchvision import datasets, transforms
    from torchvision.utils import save_image

    torch.manual_seed(seed)
    train_loader = torch.utils.data.DataLoader(
        datasets.MNIST(data_root, train=True, download=False, transform=transforms.ToTensor()),
        batch_size=128, shuffle=True)
    test_loader = torch.utils.data.DataLoader(
        datasets.MNIST(data_root, train=False, transform=transforms.ToTensor()), batch_size=128, shuffle=False)

    class VAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(784, 400)
            self.fc21 = nn.Linear(400, 20)
            self.fc22 = nn.Linear(400, 20)
            self.fc3 = nn.Linear(20, 400)
            self.fc4 = nn.Linear(400, 784)

        def encode(self, x):
            h1 = F.relu(self.fc1(x))
            return self.fc21(h1), self.fc22(h1)

        def reparameterize(self, mu, logvar):
            std = torch.exp(0.5 * logvar)
            eps = torch.randn_like(std)
            return mu + eps * std

        def decode(self, z):
            h3 = F.relu(self.fc3(z))
            return torch.sigmoid(self.fc4(h3))

        def forward(self, x):
            mu, logvar = self.encode(x.view(-1, 784))
            z = self.reparameterize(mu, logvar)
            return self.decode(z), mu, logvar

    model = VAE()
    optimizer = optim.Adam(model.parameters(), lr=1e-3)

    def loss_function(recon_x, x, mu, logvar):
        bce = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
        kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        return bce + kld

    out_dir = tempfile.mkdtemp(prefix="classic_vae_")
    epoch_seconds, test_losses = [], []
    for epoch in range(1, epochs + 1):
        model.train()
        train_loss = 0
        t0 = time.perf_counter()
        for batch_idx, (data, _) in enumerate(train_loader):
            optimizer.zero_grad()
            recon_batch, mu, logvar = model(data)
            loss = loss_function(recon_batch, data, mu, logvar)
            loss.backward()
            train_loss += loss.item()
            optimizer.step()
        epoch_seconds.append(time.perf_counter() - t0)
        model.eval()
        test_loss = 0
        with torch.no_grad():
            for i, (data, _) in enumerate(test_loader):
                recon_batch, mu, logvar = model(data)
                test_loss += loss_function(recon_batch, data, mu, logvar).item()
                if i == 0:
                    n = min(data.size(0), 8)
                    comparison = torch.cat([data[:n], recon_batch.view(128, 1, 28, 28)[:n]])
                    save_image(comparison.cpu(), f"{out_dir}/reconstruction_{epoch}.png", nrow=n)
        test_losses.append(test_loss / len(test_loader.dataset))
        with torch.no_grad():
            sample = model.decode(torch.randn(64, 20))
            save_image(sample.view(64, 1, 28, 28), f"{out_dir}/sample_{epoch}.png")
    return {"epoch_seconds": epoch_seconds, "test_loss": test_losses, "train_images": len(train_loader.dataset)}


def matmul_gflops(repeats: int = 7) -> dict:
    """fp32 GFLOP/s of the model's own matmuls at batch 128 (forward and backward shapes)."""
    import torch

    shapes = [(128, 784, 400), (128, 400, 784), (784, 128, 400), (400, 128, 784)]  # fc1/fc4 fwd + weight grads
    mats = [(torch.randn(m, k), torch.randn(k, n)) for m, k, n in shapes]
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        flop = 0
        for _ in range(50):
            for a, b in mats:
                a @ b
                flop += 2 * a.shape[0] * a.shape[1] * b.shape[1]
        rates.append(flop / (time.perf_counter() - t0) / 1e9)
    big = torch.randn(1024, 1024)
    big @ big
    t0 = time.perf_counter()
    for _ in range(20):
        big @ big
    big_rate = 20 * 2 * 1024**3 / (time.perf_counter() - t0) / 1e9
    return {"model_shapes_gflops": statistics.median(rates), "square_1024_gflops": big_rate,
            "threads": torch.get_num_threads()}


def run_timed(cmd: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return wall, proc.stdout


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default="../shared/datasets")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--skip-classic", action="store_true")
    p.add_argument("--_classic", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._classic:
        print(json.dumps(classic(args.data_root, args.epochs, args.seed)))
        return

    root = Path(__file__).resolve().parent.parent
    result = {"epochs": args.epochs, "matmul": matmul_gflops()}
    if not args.skip_classic:
        wall, out = run_timed([sys.executable, __file__, "--_classic", "--data-root", args.data_root,
                               "--epochs", str(args.epochs), "--seed", str(args.seed)])
        c = json.loads(out)
        loop = sum(c["epoch_seconds"])
        result["classic"] = {
            "process_seconds": wall, "loop_seconds": loop,
            "loop_images_per_s": c["train_images"] * args.epochs / loop,
            "epoch_images_per_s_median": statistics.median(c["train_images"] / s for s in c["epoch_seconds"]),
            "process_images_per_s": c["train_images"] * args.epochs / wall, "test_loss": c["test_loss"][-1],
        }
    gflops = result["matmul"]["model_shapes_gflops"]
    n = 60000
    # "ours": the defaults (fp32, eager); "ours_fast": bf16 autocast + torch.compile, compilation included.
    for key, flags in (("ours", []), ("ours_fast", ["--precision", "bf16", "--compile"])):
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = os.path.join(tmp, "vae_mnist")
            wall, _ = run_timed([sys.executable, "-m", "vae_explorer", "train", "--model", "vae", "--dataset", "mnist",
                                 "--data-root", args.data_root, "--epochs", str(args.epochs), "--batch-size", "128",
                                 "--lr", "1e-3", "--latent-dim", "20", "--hidden", "400", "--likelihood", "bernoulli",
                                 "--seed", str(args.seed), "--device", "cpu", "--out", ckpt, "--quiet", *flags])
            sys.path.insert(0, str(root))
            from vae_explorer import read_metadata

            history = read_metadata(ckpt + ".safetensors")["metrics"]
        loop = sum(h["train_seconds"] for h in history)
        ours = result[key] = {
            "flags": " ".join(flags) or "(defaults)",
            "process_seconds": wall, "loop_seconds": loop, "loop_images_per_s": n * args.epochs / loop,
            "epoch_images_per_s_median": statistics.median(h["images_per_s"] for h in history),
            "process_images_per_s": n * args.epochs / wall, "test_loss": history[-1]["test"]["loss"],
            "test_nll_iwae_k16_500": history[-1]["test"].get("nll_iwae"),
        }
        ours["arithmetic_fraction"] = ours["loop_images_per_s"] * FLOP_PER_IMAGE / 1e9 / gflops
        if "classic" in result:
            c = result["classic"]
            c["arithmetic_fraction"] = c["loop_images_per_s"] * FLOP_PER_IMAGE / 1e9 / gflops
            ours["speedup_loop"] = ours["loop_images_per_s"] / c["loop_images_per_s"]
            ours["speedup_loop_epoch_median"] = ours["epoch_images_per_s_median"] / c["epoch_images_per_s_median"]
            ours["speedup_process"] = c["process_seconds"] / wall
    out_dir = root / "benchmarks" / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "mnist_vae.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
