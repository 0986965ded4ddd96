"""How fast the Diagnostics tab's prior, disentanglement and linear-AE-vs-PCA views answer on MNIST-size
data: the first call (which computes and caches per checkpoint) and the calls after it.

Models: an AE, a VAE and a linear AE on MNIST (latent 20, trained here for --epochs; 10,000 test images,
60,000 training images for PCA), and the shipped sprites_beta_vae (MNIST has no known factors: on the
MNIST models the disentanglement view answers with its message). Timed twice:

  handler  the Explorer's method, in this process
  server   the app in this process, called over raw HTTP (POST /gradio_api/call/<api>, SSE until complete),
           as the page calls it: serialization of the figures and images included

    python benchmarks/diagnostics_latency.py                       # MNIST from ../shared/datasets
    python benchmarks/diagnostics_latency.py --data-root DIR --epochs 1 --calls 5

Goal: every view under 1 s after its first computation. Writes benchmarks/results/diagnostics_latency.{md,json}.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app_latency import Client, stats_ms  # noqa: E402
from reporting import cpu_name, write_report  # noqa: E402

MNIST_MODELS = {"mnist_ae": "ae", "mnist_vae": "vae", "mnist_linear_ae": "linear_ae"}


def train(dest: Path, data_root: str, epochs: int) -> None:
    for name, model in MNIST_MODELS.items():
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "vae_explorer", "train", "--model", model, "--dataset", "mnist",
                        "--data-root", data_root, "--epochs", str(epochs), "--latent-dim", "20", "--iwae-k", "0",
                        "--seed", "0", "--out", str(dest / name), "--quiet"], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
        print(f"trained {name} ({model}, latent 20, {epochs} epoch(s)) in {time.perf_counter() - t0:.0f} s", flush=True)


# (api name, explorer method, arguments): the page's calls of the three views.
CALLS = [
    ("prior_fit", "prior_fit", ["mnist_ae", "mnist_vae"]),
    ("linear_pca", "linear_pca", ["mnist_linear_ae"]),
    ("linear_pca", "linear_pca", ["mnist_vae"]),  # not linear: the message
    ("disentanglement", "disentanglement", ["mnist_vae"]),  # no known factors: the message
    ("disentanglement", "disentanglement", ["sprites_beta_vae"]),
]


def handler_timings(explorer, calls: int) -> list[dict]:
    rows = []
    for api, method, args in CALLS:
        fn = getattr(explorer, method)

        def once():
            t0 = time.perf_counter()
            if api == "prior_fit":  # the page asks for both models in one call
                fn(args[0]), fn(args[1])
            else:
                fn(*args)
            return time.perf_counter() - t0

        first = once()
        rows.append({"api": api, "args": args, "first_s": round(first, 3), "after": stats_ms([once() for _ in range(calls)])})
        print(f"handler {api}{tuple(args)}: first {first:.2f} s, then p50 {rows[-1]['after']['p50']} ms", flush=True)
    return rows


def server_timings(url: str, calls: int) -> list[dict]:
    client = Client(url, timeout=600)
    rows = []
    for api, _, args in CALLS:
        def once():
            timings = {}
            t0 = time.perf_counter()
            client.call(api, list(args), timings)
            return time.perf_counter() - t0, timings["bytes"]

        first, size = once()
        after = [once()[0] for _ in range(calls)]
        rows.append({"api": api, "args": args, "first_s": round(first, 3), "after": stats_ms(after), "bytes": size})
        print(f"server {api}{tuple(args)}: first {first:.2f} s, then p50 {rows[-1]['after']['p50']} ms "
              f"({size / 1024:.0f} KB)", flush=True)
    return rows


def report(handler: list[dict], server: list[dict], epochs: int, calls: int) -> str:
    lines = ["# Diagnostics views on MNIST-size data\n",
             f"{cpu_name()}; MNIST models latent 20, {epochs} epoch(s); each view: its first call, then {calls} "
             "more (cached per checkpoint). prior_fit computes both of its models (AE and VAE) in one call.\n",
             "| view | models | handler first | handler after (p50 / max) | server first | server after (p50 / max) | "
             "answer |", "|---|---|---|---|---|---|---|"]
    for h, s in zip(handler, server):
        lines.append(f"| {h['api']} | {', '.join(h['args'])} | {h['first_s']:.2f} s | {h['after']['p50']:.0f} / "
                     f"{h['after']['max']:.0f} ms | {s['first_s']:.2f} s | {s['after']['p50']:.0f} / "
                     f"{s['after']['max']:.0f} ms | {s['bytes'] / 1024:.0f} KB |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default=str(ROOT.parent / "shared" / "datasets"))
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--calls", type=int, default=5)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "diagnostics_latency.md"))
    args = p.parse_args(argv)

    import torch

    from vae_explorer.server import Explorer
    from vae_explorer.server.launcher import serve

    torch.set_num_threads(1)  # as app.py's main: requests run in parallel threads
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shutil.copy2(ROOT / "checkpoints" / "sprites_beta_vae.safetensors", folder)
        train(folder, args.data_root, args.epochs)
        explorer = Explorer(folder, args.data_root)
        try:
            handler = handler_timings(explorer, args.calls)
        finally:
            explorer.close()
        explorer = Explorer(folder, args.data_root)  # a fresh one: nothing cached, as after a server start
        try:
            with serve(explorer) as url:
                server = server_timings(url, args.calls)
        finally:
            explorer.close()
    text = report(handler, server, args.epochs, args.calls)
    return write_report(text, {"cpu": cpu_name(), "epochs": args.epochs, "handler": handler, "server": server},
                        Path(args.out))


if __name__ == "__main__":
    sys.exit(main())
