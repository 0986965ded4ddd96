"""FusedAdam against torch.optim.Adam(fused=True) in the MNIST VAE's training step.

Both call the same fused kernel; what differs is what surrounds it. Measured in one
process, interleaved: two copies of the yardstick model (784-400-20, Bernoulli, batch
128, the precision `fit` picks here), one per optimizer, train alternately in blocks of
25 steps through fit's own loss function; the block order alternates, and the ratio of
each pair of blocks is kept. Reports the median step time of each, the median ratio,
and the median time of zero_grad + step alone. Then, in fresh processes, the time to
build each optimizer (torch.optim imports torch._dynamo on the first one).

    python benchmarks/optimizer_step.py --data-root ../shared/datasets [--blocks 100]

Writes benchmarks/results/optimizer_step.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from vae_explorer import TrainConfig, build_model, load_dataset  # noqa: E402
from vae_explorer.devices import autocast, choose_precision  # noqa: E402
from vae_explorer.optim import FusedAdam  # noqa: E402
from vae_explorer.training import _epoch_permutation, _loss_function  # noqa: E402

BATCH = 128
BUILD = {  # a fresh process builds one optimizer; prints the seconds it took
    "torch.optim.Adam": "torch.optim.Adam(p, lr=1e-3, fused=True)",
    "FusedAdam": "__import__('vae_explorer.optim', fromlist=['FusedAdam']).FusedAdam(p, lr=1e-3)",
}


def yardstick_model(data):
    torch.manual_seed(0)
    return build_model("vae", **data.model_settings(), latent_dim=20, hidden=(400,), likelihood="bernoulli")


class Trainer:
    def __init__(self, name: str, data, precision: str):
        self.name = name
        self.model = yardstick_model(data)
        params = self.model.parameters()
        self.opt = torch.optim.Adam(params, lr=1e-3, fused=True) if name == "torch.optim.Adam" else FusedAdam(params)
        self.loss_function, _ = _loss_function(self.model, autocast(torch.device("cpu"), precision), False, BATCH)
        self.step_seconds, self.optimizer_seconds = [], []
        self.i = 0

    def block(self, data, perm, steps: int = 25) -> None:
        optimizer_time = 0.0
        t0 = time.perf_counter()
        for _ in range(steps):
            s = self.i % (len(perm) // BATCH)
            self.i += 1
            x = data.kind.prepare(data.train_x.index_select(0, perm[s * BATCH:(s + 1) * BATCH]))
            loss, _ = self.loss_function(x)
            t = time.perf_counter()
            self.opt.zero_grad(set_to_none=True)
            optimizer_time += time.perf_counter() - t
            loss.backward()
            t = time.perf_counter()
            self.opt.step()
            optimizer_time += time.perf_counter() - t
        self.step_seconds.append((time.perf_counter() - t0) / steps)
        self.optimizer_seconds.append(optimizer_time / steps)


def build_seconds(name: str, repeats: int) -> float:
    code = ("import time, torch; p = [torch.zeros(1, requires_grad=True)]; t = time.perf_counter(); "
            f"{BUILD[name]}; print(time.perf_counter() - t)")
    runs = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                                 check=True).stdout) for _ in range(repeats)]
    return statistics.median(runs)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default=str(ROOT.parent / "shared" / "datasets"))
    p.add_argument("--blocks", type=int, default=100, help="timed blocks of 25 steps per optimizer")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "optimizer_step.json"))
    args = p.parse_args(argv)
    data = load_dataset("mnist", root=args.data_root)
    perm = _epoch_permutation(len(data.train_x), 0, 0, "cpu")
    precision = choose_precision(TrainConfig().precision, torch.device("cpu"), yardstick_model(data))
    ref, ours = Trainer("torch.optim.Adam", data, precision), Trainer("FusedAdam", data, precision)
    for t in (ref, ours):
        t.block(data, perm, 10)  # warm-up, not kept
        t.step_seconds.clear()
        t.optimizer_seconds.clear()
    for b in range(args.blocks):
        for t in ((ref, ours) if b % 2 == 0 else (ours, ref)):
            t.block(data, perm)
    ratios = [a / b for a, b in zip(ref.step_seconds, ours.step_seconds)]
    result = {"precision": precision, "threads": torch.get_num_threads(), "blocks": args.blocks, "steps_per_block": 25}
    for t in (ref, ours):
        result[t.name] = {"step_ms_median": 1e3 * statistics.median(t.step_seconds),
                          "zero_grad_plus_step_ms_median": 1e3 * statistics.median(t.optimizer_seconds),
                          "build_seconds_fresh_process": build_seconds(t.name, repeats=3)}
    result["step_speedup_median"] = statistics.median(ratios)
    quartiles = statistics.quantiles(ratios, n=4)
    result["step_speedup_quartiles"] = [quartiles[0], quartiles[2]]
    for t in (ref, ours):
        r = result[t.name]
        print(f"{t.name:17s} step {r['step_ms_median']:.3f} ms, zero_grad + step {r['zero_grad_plus_step_ms_median']:.3f} ms, "
              f"built in a fresh process in {r['build_seconds_fresh_process']:.2f} s")
    print(f"FusedAdam steps {result['step_speedup_median']:.3f}x as fast (median of {len(ratios)} block pairs; "
          f"quartiles {quartiles[0]:.3f}-{quartiles[2]:.3f})")
    result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
