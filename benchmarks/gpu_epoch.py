"""The MNIST VAE's epoch time on a GPU, with the data resident on the device (speed bar 5).

Trains the yardstick model (784-400-20, Bernoulli, Adam 1e-3) with `fit`, which keeps the
60,000 training images on the device as one uint8 tensor and slices shuffled batches
from it. For each batch size (and with --compile, compiled too) it reports every
epoch's training-loop time (fit waits for the device before it stops the clock), the
median over epochs 2.. (epoch 1 pays CUDA start-up, cuBLAS heuristics and any
compilation), images/s and the test loss. Goal: one 60k-image epoch <= 0.1 s on an H100.

    python benchmarks/gpu_epoch.py --data-root DIR [--batch-sizes 128,1024] [--epochs 5] [--compile]

Writes benchmarks/results/gpu_epoch.json. `--device cpu` runs the same measurement on
a CPU (to try the script where there is no GPU; the goal is a GPU's).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from vae_explorer import TrainConfig, build_model, fit, load_dataset  # noqa: E402
from vae_explorer.devices import resolve_device  # noqa: E402

GOAL_SECONDS = 0.1


def measure(data, device: str, batch_size: int, epochs: int, compile: bool, seed: int) -> dict:
    torch.manual_seed(seed)
    model = build_model("vae", **data.model_settings(), latent_dim=20, hidden=(400,), likelihood="bernoulli")
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=1e-3, seed=seed, device=device, compile=compile,
                         iwae_k=0, history_images=0)
    result = fit(model, data, config)
    seconds = [h["train_seconds"] for h in result.history]
    steady = statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0]
    return {"batch_size": batch_size, "compile": compile, "epoch_seconds": seconds, "epoch_seconds_median": steady,
            "images_per_s": len(data.train_x) / steady, "test_loss": result.history[-1]["test"]["loss"],
            "meets_goal": steady <= GOAL_SECONDS}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default=str(ROOT.parent / "shared" / "datasets"))
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch-sizes", default="128,1024", help="comma-separated")
    p.add_argument("--epochs", type=int, default=5, help="per run; the first is warm-up")
    p.add_argument("--compile", action="store_true", help="also measure each batch size with --compile")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu_epoch.json"))
    args = p.parse_args(argv)
    try:
        device = resolve_device(args.device)
        batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    except ValueError as e:
        print(f"gpu_epoch: {e}", file=sys.stderr)
        return 2
    data = load_dataset("mnist", root=args.data_root)
    runs = []
    for compile in (False, True) if args.compile else (False,):
        for batch_size in batch_sizes:
            run = measure(data, str(device), batch_size, args.epochs, compile, args.seed)
            runs.append(run)
            print(f"batch {batch_size}{' compiled' if compile else ''}: epoch {run['epoch_seconds_median']:.3f} s "
                  f"(median of epochs 2-{args.epochs}), {run['images_per_s']:,.0f} img/s, "
                  f"test loss {run['test_loss']:.2f}", flush=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    result = {"device": name, "torch": torch.__version__, "train_images": len(data.train_x), "epochs": args.epochs,
              "goal_epoch_seconds": GOAL_SECONDS, "runs": runs, "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    best = min(runs, key=lambda r: r["epoch_seconds_median"])
    print(f"{name}: best epoch {best['epoch_seconds_median']:.3f} s at batch {best['batch_size']} "
          f"(goal <= {GOAL_SECONDS} s); wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
