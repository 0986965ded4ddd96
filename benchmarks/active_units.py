"""Active units per epoch (issue 14 item 1): an MNIST VAE with a 20-D code and a β-VAE (β = 4), 10 epochs each,
the shape of the classic pytorch/examples VAE (784-400-20, Bernoulli likelihood, Adam 1e-3, batch 128). `fit`
records after every epoch the count of active units (Var_x E_q[z_d] > 0.01 over the test set, Burda et al.
2016) and the KL per dimension; this script trains both and reports them. Numbers, not timings: the load of
the machine only changes how long it takes. Writes benchmarks/results/active_units.json and .md.

    python benchmarks/active_units.py --data-root ../shared/datasets [--epochs 10] [--seed 0]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.reporting import cpu_name, write_report  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "active_units.md"))
    args = p.parse_args(argv)

    import torch

    from vae_explorer import TrainConfig, build_model, fit, load_dataset

    data = load_dataset("mnist", args.data_root)
    runs = {}
    for name, model_name, beta in (("VAE", "vae", 1.0), ("β-VAE (β = 4)", "beta_vae", 4.0)):
        torch.manual_seed(args.seed)
        model = build_model(model_name, **data.model_settings(), latent_dim=20, hidden=(400,), beta=beta)
        t0 = time.perf_counter()
        result = fit(model, data, TrainConfig(epochs=args.epochs, batch_size=128, lr=1e-3, seed=args.seed,
                                              iwae_k=0, history_images=0, device="cpu"),
                     callback=lambda ev: ev.kind == "epoch" and print(
                         f"{name} epoch {ev.epoch}: active units {ev.test.get('active_units')}, KL "
                         f"term {ev.test.get('kl', 0):.2f} (β × KL)", flush=True))
        runs[name] = {"model": model_name, "beta": beta, "seconds": round(time.perf_counter() - t0, 1),
                      "epochs": [{"epoch": h["epoch"], "active_units": h["latent"]["active_units"],
                                  "kl": round(sum(h["latent"]["kl_per_dim"]), 3), "recon": round(h["test"]["recon"], 3),
                                  "kl_per_dim": h["latent"]["kl_per_dim"]} for h in result.history]}
        print(name, [e["active_units"] for e in runs[name]["epochs"]], flush=True)

    lines = [f"# Active units of MNIST VAEs (20-D code), {args.epochs} epochs", "",
             f"784-400-20 MLP, Bernoulli likelihood, Adam 1e-3, batch 128, seed {args.seed}, CPU ({cpu_name()}; "
             f"load average at the end {os.getloadavg()[0]:.1f}). A unit is active when the variance over the "
             "10,000 test images of its posterior mean exceeds 0.01 (Burda, Grosse & Salakhutdinov 2016). KL: the sum "
             "of the per-dimension KL to N(0, 1), in nats per image (without β).", "",
             "| epoch | " + " | ".join(f"{n}: active of 20 | {n}: KL (nats)" for n in runs) + " |",
             "|---" * (1 + 2 * len(runs)) + "|"]
    for k in range(args.epochs):
        cells = []
        for run in runs.values():
            e = run["epochs"][k]
            cells += [str(e["active_units"]), f"{e['kl']:.2f}"]
        lines.append(f"| {k + 1} | " + " | ".join(cells) + " |")
    lines += [""] + [f"- {n}: KL per dimension after the last epoch, largest first: "
                     + ", ".join(f"{v:.2f}" for v in sorted(r["epochs"][-1]["kl_per_dim"], reverse=True))
                     for n, r in runs.items()]
    return write_report("\n".join(lines) + "\n", {"epochs": args.epochs, "seed": args.seed, "runs": runs},
                        Path(args.out))


if __name__ == "__main__":
    sys.exit(main())
