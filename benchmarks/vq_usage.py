"""VQ-VAE codebook usage per epoch (issue 14 item 4): codes used of K, dead codes and perplexity over the whole
test set after every epoch, on digits and MNIST. `fit` evaluates them after each epoch (metrics.evaluate:
codes_used and perplexity_all, from the code counts summed over every test item, so they do not depend on
the batch size), beside the mean of the per-batch perplexity over batches of 500, which does. Numbers, not timings: the load of
the machine only changes how long it takes. Writes benchmarks/results/vq_usage.json and .md.

    python benchmarks/vq_usage.py --data-root ../shared/datasets [--digits-epochs 60] [--mnist-epochs 10]
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
    p.add_argument("--digits-epochs", type=int, default=60)
    p.add_argument("--mnist-epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "vq_usage.md"))
    args = p.parse_args(argv)

    import torch

    from vae_explorer import TrainConfig, build_model, fit, load_dataset

    runs, lines = {}, []
    for dataset, epochs, batch in (("digits", args.digits_epochs, 64), ("mnist", args.mnist_epochs, 128)):
        if epochs <= 0:
            continue
        data = load_dataset(dataset, args.data_root if dataset == "mnist" else None)
        torch.manual_seed(args.seed)
        model = build_model("vq_vae", **data.model_settings())
        size = model.codebooks()[0].shape[0]
        t0 = time.perf_counter()
        result = fit(model, data, TrainConfig(epochs=epochs, batch_size=batch, seed=args.seed, iwae_k=0,
                                              history_images=0, motion_items=0, device="cpu"),
                     callback=lambda ev, d=dataset: ev.kind == "epoch" and print(
                         f"{d} epoch {ev.epoch}: codes used {ev.test.get('codes_used'):.0f}, perplexity "
                         f"{ev.test.get('perplexity_all'):.1f}", flush=True))
        rows = [{"epoch": h["epoch"], "codes_used": int(h["test"]["codes_used"]),
                 "dead": size - int(h["test"]["codes_used"]),
                 "perplexity_test_set": round(h["test"]["perplexity_all"], 2),
                 "perplexity_per_batch": round(h["test"]["perplexity"], 2),
                 "recon": round(h["test"]["recon"], 3)} for h in result.history]
        runs[dataset] = {"codebook_size": size, "batch_size": batch, "test_items": len(data.test_x),
                         "seconds": round(time.perf_counter() - t0, 1), "epochs": rows}
        lines += [f"## {dataset}: K = {size} codes, batch {batch}, {len(data.test_x):,} test items, "
                  f"{runs[dataset]['seconds']:.0f} s", "",
                  "| epoch | codes used / K | dead codes | perplexity, whole test set | per batch of 500 "
                  "(mean) | test recon |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['epoch']} | {r['codes_used']} / {size} | {r['dead']} | {r['perplexity_test_set']:.1f} | "
                  f"{r['perplexity_per_batch']:.1f} | {r['recon']:.2f} |" for r in rows]
        lines.append("")
    text = "\n".join([f"# VQ-VAE codebook usage per epoch ({cpu_name()}, load average at the end "
                      f"{os.getloadavg()[0]:.1f})", "",
                      f"`python benchmarks/vq_usage.py --digits-epochs {args.digits_epochs} --mnist-epochs "
                      f"{args.mnist_epochs}`: the registry's vq_vae, Adam, seed {args.seed}. The perplexity of the "
                      "whole test set's code counts is at most K; a batch's is bounded by its own token count, "
                      "so the per-batch mean is lower and moves with the batch size.", "", *lines])
    return write_report(text, {"seed": args.seed, "runs": runs}, Path(args.out))


if __name__ == "__main__":
    sys.exit(main())
