"""Speed and quality against the yardstick: the classic PyTorch-examples MNIST VAE.

Each round runs, one process after another on the same machine:
  - fp32 and bf16 matmul throughput at the model's shapes (GFLOP/s);
  - the classic loop (torchvision MNIST + ToTensor + DataLoader, batch 128),
    copied from pytorch/examples vae/main.py;
  - ours: `python -m vae_explorer train` with the same model (784-400-20, BCE,
    Adam 1e-3, batch 128, same number of images) three ways: the defaults
    (precision auto: bf16 autocast on a CPU with native bf16, as here), `--precision
    fp32`, and the defaults plus `--compile` (first round with an empty inductor
    cache, later rounds warm).
Each process is timed whole (imports, data loading, evaluation included) and
reports its training-loop time per epoch. This machine's speed drifts by tens of
percent from minute to minute, so every ratio is taken within one round against
that round's classic run, the order of runs rotates between rounds, and the
summary quotes medians over rounds. Writes benchmarks/results/mnist_vae.json.

The test loss after 10 epochs moves by about 0.1 nats from seed to seed, for the
classic loop and ours alike. `--loss-seeds 2,3,4` also trains both (untimed) with
those seeds and reports the spread, so a comparison with the 105.6 yardstick does
not rest on one seed. Writes benchmarks/results/mnist_vae_seeds.json.

    python benchmarks/mnist_vae.py --data-root ../shared/datasets [--epochs 10] [--rounds 3] [--loss-seeds 2,3,4]
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
    """GFLOP/s of the model's own matmuls at batch 128 (forward and weight-gradient shapes), fp32 and bf16."""
    import torch

    shapes = [(128, 784, 400), (128, 400, 784), (784, 128, 400), (400, 128, 784)]  # fc1/fc4 fwd + weight grads
    result = {"threads": torch.get_num_threads()}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        mats = [(torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)) for m, k, n in shapes]
        for a, b in mats * 5:  # warm-up: thread pool, packing buffers
            a @ b
        rates = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(50):
                for a, b in mats:
                    a @ b
            flop = 50 * sum(2 * a.shape[0] * a.shape[1] * b.shape[1] for a, b in mats)
            rates.append(flop / (time.perf_counter() - t0) / 1e9)
        result[f"model_shapes_{name}_gflops"] = statistics.median(rates)
    return result


def run_timed(cmd: list[str], env: dict | None = None) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return wall, proc.stdout


# name -> extra `train` flags. "ours" is what a user gets without flags.
OURS = {"ours": [], "ours_fp32": ["--precision", "fp32"], "ours_compile": ["--compile"]}
N_TRAIN = 60000


def run_classic(args) -> dict:
    wall, out = run_timed([sys.executable, __file__, "--_classic", "--data-root", args.data_root,
                           "--epochs", str(args.epochs), "--seed", str(args.seed)])
    c = json.loads(out)
    loop = sum(c["epoch_seconds"])
    return {"process_seconds": wall, "loop_seconds": loop, "loop_images_per_s": c["train_images"] * args.epochs / loop,
            "epoch_images_per_s_median": statistics.median(c["train_images"] / s for s in c["epoch_seconds"]),
            "test_loss": c["test_loss"][-1]}


def run_ours(args, flags: list[str], env: dict) -> dict:
    from vae_explorer import read_metadata

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = os.path.join(tmp, "vae_mnist")
        wall, _ = run_timed([sys.executable, "-m", "vae_explorer", "train", "--model", "vae", "--dataset", "mnist",
                             "--data-root", args.data_root, "--epochs", str(args.epochs), "--batch-size", "128",
                             "--lr", "1e-3", "--latent-dim", "20", "--hidden", "400", "--likelihood", "bernoulli",
                             "--seed", str(args.seed), "--device", "cpu", "--out", ckpt, "--quiet", *flags], env)
        meta = read_metadata(ckpt + ".safetensors")
    history = meta["metrics"]
    loop = sum(h["train_seconds"] for h in history)
    return {"flags": " ".join(flags) or "(none)", "precision": meta["training"]["precision"],
            "process_seconds": wall, "loop_seconds": loop, "loop_images_per_s": N_TRAIN * args.epochs / loop,
            "epoch_images_per_s_median": statistics.median(h["images_per_s"] for h in history),
            "test_loss": history[-1]["test"]["loss"], "test_nll_iwae_k16_500": history[-1]["test"].get("nll_iwae")}


def loss_over_seeds(args, seeds: list[int], env: dict, timed: dict[str, float]) -> dict:
    """Test loss after args.epochs epochs for args.seed (`timed`: from the timed rounds; a fixed
    seed gives the same loss every run) and each of `seeds`, classic and ours (defaults)."""
    result = {}
    for name in ("classic", "ours"):
        losses = {args.seed: timed[name]}
        for seed in seeds:
            seed_args = argparse.Namespace(**{**vars(args), "seed": seed})
            run = run_classic(seed_args) if name == "classic" else run_ours(seed_args, OURS[name], env)
            losses[seed] = run["test_loss"]
            print(f"seed {seed}: {name} test loss {losses[seed]:.3f}", file=sys.stderr, flush=True)
        values = list(losses.values())
        result[name] = {"test_loss_by_seed": losses, "mean": statistics.mean(values), "median": statistics.median(values),
                        "min": min(values), "max": max(values),
                        "stdev": statistics.stdev(values) if len(values) > 1 else 0.0}
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default="../shared/datasets")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--loss-seeds", default="", help="comma-separated seeds for the test-loss spread (untimed), e.g. 2,3,4")
    p.add_argument("--_classic", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._classic:
        print(json.dumps(classic(args.data_root, args.epochs, args.seed)))
        return

    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root))
    inductor_cache = tempfile.mkdtemp(prefix="inductor_")  # empty in round 1: that round pays a cold compile
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": inductor_cache}
    names = ["classic", *OURS]
    rounds = []
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]  # rotate, so no run always follows the same one
        result = {"round": r + 1, "order": order, "matmul": matmul_gflops()}
        for name in order:
            result[name] = run_classic(args) if name == "classic" else run_ours(args, OURS[name], env)
            print(f"round {r + 1}: {name} {result[name]['loop_images_per_s']:.0f} img/s, "
                  f"{result[name]['process_seconds']:.1f} s", file=sys.stderr, flush=True)
        c, gflops = result["classic"], result["matmul"]["model_shapes_fp32_gflops"]
        for name in names:
            run = result[name]
            run["arithmetic_fraction_of_fp32_matmul"] = run["loop_images_per_s"] * FLOP_PER_IMAGE / 1e9 / gflops
            if name != "classic":
                run["speedup_loop"] = run["loop_images_per_s"] / c["loop_images_per_s"]
                run["speedup_loop_epoch_median"] = run["epoch_images_per_s_median"] / c["epoch_images_per_s_median"]
                run["speedup_process"] = c["process_seconds"] / run["process_seconds"]
        rounds.append(result)

    def median(name, key):
        return statistics.median(r[name][key] for r in rounds)

    summary = {name: {key: median(name, key) for key in ("loop_images_per_s", "process_seconds", "test_loss")}
               for name in names}
    for name in OURS:
        summary[name].update({key: median(name, key) for key in
                              ("speedup_loop", "speedup_loop_epoch_median", "speedup_process",
                               "arithmetic_fraction_of_fp32_matmul")})
        summary[name]["precision"] = rounds[0][name]["precision"]
    summary["classic"]["arithmetic_fraction_of_fp32_matmul"] = median("classic", "arithmetic_fraction_of_fp32_matmul")
    summary["matmul_fp32_gflops"] = statistics.median(r["matmul"]["model_shapes_fp32_gflops"] for r in rounds)
    summary["matmul_bf16_gflops"] = statistics.median(r["matmul"]["model_shapes_bf16_gflops"] for r in rounds)
    result = {"epochs": args.epochs, "rounds": args.rounds, "summary_medians": summary, "per_round": rounds}
    out_dir = root / "benchmarks" / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "mnist_vae.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(summary, indent=2))
    if args.loss_seeds:
        seeds = [int(s) for s in args.loss_seeds.split(",") if int(s) != args.seed]
        spread = loss_over_seeds(args, seeds, env, {name: rounds[0][name]["test_loss"] for name in ("classic", "ours")})
        (out_dir / "mnist_vae_seeds.json").write_text(json.dumps({"epochs": args.epochs, **spread}, indent=2))
        print(json.dumps({k: {m: v[m] for m in ("mean", "median", "min", "max", "stdev")} for k, v in spread.items()},
                         indent=2))


if __name__ == "__main__":
    main()
