"""The disentanglement scorecard of β-VAEs on sprites: β ∈ {1, 4, 8}, several seeds.

    python benchmarks/beta_sweep.py [--betas 1,4,8] [--seeds 0,1,2] [--epochs 40] [--threads 1]

Each run trains `beta_vae` (latent_dim 10, the MLP backbone with hidden widths
512,256, Bernoulli likelihood, Adam 1e-3, batch 64, fp32) on the sprites' training
split, then scores the posterior means of the 922 test items with
`vae_explorer.disentanglement.scorecard`: MIG, the FactorVAE score (with the score
of noise codes on the same items, its chance level here), DCI, and the factor each
active dimension carries. Writes a Markdown table, mean ± sample std over seeds per
β and every run below it, to stdout and benchmarks/results/beta_sweep.md.

One torch thread by default: on a 2-core machine shared with other jobs, two
threads wait on each other and an epoch takes 5-20× longer, while one thread takes
about 2 s an epoch. The whole default sweep (9 runs × 40 epochs) takes about 12 minutes.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vae_explorer import TrainConfig, build_model, fit, load_dataset  # noqa: E402
from vae_explorer.disentanglement import COLLAPSED_STD, scorecard  # noqa: E402

LATENT_DIM = 10
HIDDEN = (512, 256)
METRICS = (("mig", "MIG"), ("factor_vae", "FactorVAE"), ("dci_disentanglement", "DCI D"),
           ("dci_completeness", "DCI C"), ("dci_informativeness", "DCI I"))


def train_and_score(data, beta: float, seed: int, epochs: int, threads: int) -> dict:
    model = build_model("beta_vae", latent_dim=LATENT_DIM, beta=beta, hidden=HIDDEN, **data.model_settings())
    config = TrainConfig(epochs=epochs, batch_size=64, seed=seed, precision="fp32", threads=threads, iwae_k=0,
                         history_images=0)
    start = time.perf_counter()
    result = fit(model, data, config)
    card = scorecard(model, data, seed=seed)
    test = result.history[-1]["test"]
    return {**card, "beta": beta, "seed": seed, "recon": test["recon"], "kl": test["kl"] / beta,  # KL unweighted
            "seconds": time.perf_counter() - start}


def carried_factors(card: dict) -> str:
    """The factors the active dimensions carry, most used first: "x, y, scale"."""
    active = sorted((d for d in card["dims"] if d["std"] >= COLLAPSED_STD), key=lambda d: -d["std"])
    return ", ".join(d["factor"] or "none" for d in active) or "none"


def markdown(runs: list[dict], epochs: int, wall: float) -> str:
    betas = sorted({r["beta"] for r in runs})
    seeds = sorted({r["seed"] for r in runs})
    lines = [f"β-VAE on sprites: latent_dim {LATENT_DIM}, MLP {','.join(map(str, HIDDEN))}, Bernoulli, {epochs} "
             f"epochs, batch 64, Adam 1e-3, seeds {', '.join(map(str, seeds))}; metrics on the "
             f"{runs[0]['items']} test items (posterior means). Mean ± sample std over seeds. "
             f"Wall time {wall / 60:.1f} min.",
             "",
             "| β | " + " | ".join(label for _, label in METRICS) + " | FactorVAE chance | active dims | "
             "recon (nats) | KL (nats) |",
             "|---|" + "---|" * (len(METRICS) + 4)]

    def spread(values) -> str:
        values = np.asarray(values, float)
        return f"{values.mean():.2f} ± {values.std(ddof=1):.2f}" if len(values) > 1 else f"{values[0]:.2f}"

    for beta in betas:
        group = [r for r in runs if r["beta"] == beta]
        cells = [spread([r[key] for r in group]) for key, _ in METRICS]
        cells += [spread([r["factor_vae_chance"] for r in group])]
        cells += [f"{np.mean([r[key] for r in group]):.1f}" for key in ("active_dims", "recon", "kl")]
        lines.append(f"| {beta:g} | " + " | ".join(cells) + " |")
    lines += ["", "Every run (active dimensions: std of the posterior mean ≥ 0.05, labelled by the factor each "
              "carries the largest share of, by normalized mutual information; none below 0.1):", "",
              "| β | seed | " + " | ".join(label for _, label in METRICS) + " | active dims carry | seconds |",
              "|---|---|" + "---|" * (len(METRICS) + 2)]
    for r in sorted(runs, key=lambda r: (r["beta"], r["seed"])):
        lines.append(f"| {r['beta']:g} | {r['seed']} | " + " | ".join(f"{r[key]:.3f}" for key, _ in METRICS)
                     + f" | {carried_factors(r)} | {r['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--betas", default="1,4,8")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (see the module docstring)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "beta_sweep.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # the scorecard's encoding too, not only fit's steps
    start = time.perf_counter()
    data = load_dataset("sprites")
    runs = []
    for beta in (float(b) for b in args.betas.split(",")):
        for seed in (int(s) for s in args.seeds.split(",")):
            run = train_and_score(data, beta, seed, args.epochs, args.threads)
            runs.append(run)
            print(f"β={beta:g} seed={seed}: " + ", ".join(f"{label} {run[key]:.3f}" for key, label in METRICS)
                  + f"; carries {carried_factors(run)}; {run['seconds']:.0f} s", file=sys.stderr, flush=True)
    table = markdown(runs, args.epochs, time.perf_counter() - start)
    print(table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(table)


if __name__ == "__main__":
    main()
