"""This checkout against another one (an earlier commit's worktree) on the same training run,
interleaved in one session: did a change slow the training hot path or start-up?

    git worktree add ../before <commit>
    python benchmarks/compare_checkouts.py --other ../before --data-root ../shared/datasets [--rounds 4]

Each round trains the MNIST VAE of benchmarks/mnist_vae.py (784-400-20, Bernoulli, Adam 1e-3,
batch 128, defaults otherwise) once with each checkout's own `python -m vae_explorer train`, in
rotating order, each in its own process. Reported per checkout: the whole process's wall time and
the training loop's images/s (from the checkpoint's per-epoch record), medians over rounds, and the
ratio this / other within each round (the machine's speed drifts between rounds). Writes
benchmarks/results/compare_checkouts.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from safetensors import safe_open

ROOT = Path(__file__).resolve().parent.parent
N_TRAIN = 60000


def run(checkout: Path, args, out: Path) -> dict:
    cmd = [sys.executable, "-m", "vae_explorer", "train", "--model", "vae", "--dataset", "mnist", "--data-root",
           str(Path(args.data_root).resolve()), "--epochs", str(args.epochs), "--batch-size", "128", "--lr", "1e-3",
           "--latent-dim", "20", "--hidden", "400", "--likelihood", "bernoulli", "--seed", "1", "--device", "cpu",
           "--out", str(out), "--quiet"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=checkout, capture_output=True, text=True)  # -m finds the checkout's package
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"{checkout}: training failed:\n{proc.stderr[-2000:]}")
    with safe_open(str(out) + ".safetensors", framework="pt") as f:
        meta = json.loads(f.metadata()["vae_explorer"])
    loop = sum(h["train_seconds"] for h in meta["metrics"])
    return {"process_seconds": round(wall, 2), "loop_images_per_s": round(N_TRAIN * args.epochs / loop),
            "test_loss": meta["metrics"][-1]["test"]["loss"], "precision": meta["training"]["precision"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--other", required=True, help="the other checkout (a git worktree of an earlier commit)")
    p.add_argument("--data-root", default=str(ROOT.parent / "shared" / "datasets"))
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "compare_checkouts.json"))
    args = p.parse_args(argv)
    checkouts = {"this": ROOT, "other": Path(args.other).resolve()}
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = list(checkouts) if r % 2 == 0 else list(reversed(checkouts))
            result = {name: run(checkouts[name], args, Path(tmp) / f"{name}_{r}") for name in order}
            result["loop_ratio"] = round(result["this"]["loop_images_per_s"] / result["other"]["loop_images_per_s"], 3)
            result["process_ratio"] = round(result["other"]["process_seconds"] / result["this"]["process_seconds"], 3)
            rounds.append(result)
            print(f"round {r + 1}: " + ", ".join(f"{n} {result[n]['loop_images_per_s']:,} img/s "
                                               f"{result[n]['process_seconds']:.1f} s" for n in order)
                  + f"; this/other loop {result['loop_ratio']:.3f}, process {result['process_ratio']:.3f}", flush=True)
    summary = {name: {key: statistics.median(r[name][key] for r in rounds)
                      for key in ("process_seconds", "loop_images_per_s")} for name in checkouts}
    summary["loop_ratio_median"] = statistics.median(r["loop_ratio"] for r in rounds)
    summary["process_ratio_median"] = statistics.median(r["process_ratio"] for r in rounds)
    summary["test_loss"] = {name: rounds[0][name]["test_loss"] for name in checkouts}
    Path(args.out).write_text(json.dumps({"args": vars(args), "rounds": rounds, "summary": summary}, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
