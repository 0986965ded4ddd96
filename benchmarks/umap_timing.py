"""UMAP timings through `vae_explorer.server.umap_worker.UmapProjector`, on the MNIST test codes.

The codes are those the app shows: `Catalog(dir, data_root).get(name).codes` of a
small MNIST VAE (latent 20; trained here for one epoch, or --mnist-checkpoint),
10,000 × 20. Measured, each through the projector's public `get` (polled like
the page's 2 s timer, but every 50 ms) or `warm_up`:

  cold_no_numba_cache  a fresh worker with an empty NUMBA_CACHE_DIR: the very first run on a machine
  cold                 a fresh worker, numba's on-disk cache as left by earlier runs (the usual start)
  warm                 a second fit (other key) in that same worker
  app_start            what the app does: `warm_up()` at start (timed), then the first real fit
  cached_disk          a new projector reading the .umap.npy the first fit wrote
  cached_memory        the same projector asked again
  big_warm_up_5000     a fresh worker warmed with 5,000 random points (UMAP's NNDescent path, used from
                       4,096 points on; the app's warm-up fits 300 and then 5,000 points), then the fit

and, in this process after one compiling fit, the warm fit time of other UMAP
settings, to compare with the app's (umap_worker.UMAP_SETTINGS).

Then (skip with --no-server) the app itself: decode latency through raw HTTP
while the server's UMAP worker fits the same codes after a `latent_map` request
with projection "umap", against the same server idle, and how long until the
map switches to UMAP.

    python benchmarks/umap_timing.py
    python benchmarks/umap_timing.py --mnist-checkpoint /tmp/mnist_vae.safetensors --no-server

Goal: warm <= 10 s, cached instant. Writes benchmarks/results/umap_timing.json.
Worker processes and the server are stopped on exit, failure and Ctrl-C included.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from app_latency import (  # noqa: E402
    _CLEANUPS,
    DEFAULT_DATA_ROOT,
    RESULTS,
    ROOT,
    Client,
    decode_values,
    finish,
    install_signal_handlers,
    load_average,
    machine_info,
    png_size,
    prepare_checkpoints,
    running_app,
    slider_ranges,
    stats_ms,
)

sys.path.insert(0, str(ROOT))


def wait_for(projector, key: str, codes: np.ndarray, timeout: float, poll: float = 0.05) -> tuple[float, np.ndarray]:
    """Seconds until `projector.get(key, codes)` gives the embedding."""
    t0 = time.perf_counter()
    while True:
        emb = projector.get(key, codes)
        if emb is not None:
            return time.perf_counter() - t0, emb
        err = projector.error(key)
        if err:
            raise RuntimeError(f"UMAP failed: {err}")
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"no UMAP after {timeout:.0f} s")
        time.sleep(poll)


def projector_timings(codes: np.ndarray, key: str, tmp: Path, timeout: float, skip_uncached: bool,
                      big_warm_up: bool) -> dict:
    from vae_explorer.server.umap_worker import UmapProjector

    out = {}

    def fresh(cache_dir):
        proj = UmapProjector(cache_dir)
        _CLEANUPS.append(proj.close)
        return proj

    if not skip_uncached:
        numba_dir = tmp / "numba-cache"
        numba_dir.mkdir()
        old = os.environ.get("NUMBA_CACHE_DIR")
        os.environ["NUMBA_CACHE_DIR"] = str(numba_dir)  # the worker inherits it: compiles everything
        try:
            proj = fresh(None)
            print("cold fit, empty numba cache...", flush=True)
            out["cold_no_numba_cache_s"] = round(wait_for(proj, key, codes, timeout)[0], 2)
            proj.close()
        finally:
            if old is None:
                os.environ.pop("NUMBA_CACHE_DIR", None)
            else:
                os.environ["NUMBA_CACHE_DIR"] = old

    cache = tmp / "projections"
    proj = fresh(cache)
    print("cold fit (fresh worker)...", flush=True)
    out["cold_s"], emb = wait_for(proj, key, codes, timeout)
    print("warm fit (same worker)...", flush=True)
    out["warm_s"], emb2 = wait_for(proj, f"{key}-again", codes, timeout)
    out["same_result_twice"] = bool(np.array_equal(emb, emb2))
    proj.close()

    proj = fresh(tmp / "projections-app")
    print("app start: warm_up, then the first fit...", flush=True)
    t0 = time.perf_counter()
    proj.warm_up().result(timeout)
    out["app_warm_up_s"] = time.perf_counter() - t0
    out["app_first_fit_after_warm_up_s"] = wait_for(proj, key, codes, timeout)[0]
    proj.close()

    if big_warm_up:
        # What a warm-up of >= 4096 points would give: UMAP switches from exact neighbours to NNDescent
        # at 4096 points, so only such a warm-up compiles the path that the MNIST-sized fits take.
        proj = fresh(None)
        print("warm-up with 5,000 random points, then the first fit...", flush=True)
        t0 = time.perf_counter()
        wait_for(proj, "warm-up-5000", np.random.default_rng(0).normal(size=(5000, 8)).astype(np.float32), timeout)
        out["big_warm_up_5000_s"] = time.perf_counter() - t0
        out["first_fit_after_big_warm_up_s"] = wait_for(proj, key, codes, timeout)[0]
        proj.close()

    reader = fresh(cache)
    t0 = time.perf_counter()
    got = reader.get(key, codes)
    out["cached_disk_ms"] = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    reader.get(key, codes)
    out["cached_memory_ms"] = (time.perf_counter() - t0) * 1000
    out["cached_matches"] = got is not None and bool(np.array_equal(got, emb))
    out["cache_file"] = str(reader.cache_file(key).relative_to(tmp))
    out["cache_file_bytes"] = reader.cache_file(key).stat().st_size
    reader.close()
    out["embedding_shape"] = list(emb.shape)
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}


def parameter_variants(codes: np.ndarray) -> dict:
    """Warm fit times in this process for UMAP settings other than the app's (after one compiling fit)."""
    import umap

    def fit(**kw):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "n_jobs overridden by random_state": known
            emb = umap.UMAP(n_components=2, n_neighbors=15, min_dist=0.1, random_state=0, **kw).fit_transform(codes)
        return round(time.perf_counter() - t0, 2), emb

    fit()  # compile
    out = {}
    for label, kw in (("app_settings", {}), ("n_epochs_200", {"n_epochs": 200}), ("init_pca", {"init": "pca"}),
                      ("n_epochs_200_init_pca", {"n_epochs": 200, "init": "pca"})):
        print(f"  {label}...", flush=True)
        out[f"{label}_s"] = fit(**kw)[0]
    return out


def server_check(ckpt: Path, data_root: str, name: str, tmp: Path, calls: int, timeout: float) -> dict:
    """Decode latency while the app's UMAP worker fits `name`'s codes, against idle."""
    out = {}
    with running_app(ckpt, data_root, log_path=tmp / "app.log") as server:
        client = Client(server.url)
        ranges = slider_ranges(client, name, 0)
        rng = random.Random(0)

        def one_decode():
            t0 = time.perf_counter()
            res = client.call("decode", [name, 0, *decode_values(ranges, rng)])
            png_size(client.fetch(res[0]))
            return time.perf_counter() - t0

        for _ in range(20):
            one_decode()
        out["decode_idle_ms"] = stats_ms([one_decode() for _ in range(calls)])

        def pending() -> tuple[bool, str]:
            res = client.call("latent_map", [name, name, "umap", 0])
            return "being computed" in str(res[2]), json.dumps(res[0])

        t0 = time.perf_counter()
        is_pending, _ = pending()
        if not is_pending:
            raise RuntimeError("latent_map did not start a UMAP (is a cached projection in the copy?)")
        during, last_poll = [], time.perf_counter()
        while is_pending and time.perf_counter() - t0 < timeout:
            during.append(one_decode())
            if time.perf_counter() - last_poll > 2.0:  # the page's umap timer
                is_pending, fig = pending()
                last_poll = time.perf_counter()
        out["umap_in_app_until_shown_s"] = round(time.perf_counter() - t0, 2)
        out["umap_shown"] = not is_pending and "UMAP 1" in fig
        out["decode_during_umap_fit_ms"] = stats_ms(during)
        out["load_during_fit"] = load_average()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoints", default=str(ROOT / "checkpoints"), help="checkpoints to copy (never written to)")
    p.add_argument("--data-root", default=DEFAULT_DATA_ROOT)
    p.add_argument("--mnist-checkpoint", default=None, help="use this MNIST VAE instead of training one")
    p.add_argument("--mnist-epochs", type=int, default=1)
    p.add_argument("--skip-uncached", action="store_true", help="skip the fit with an empty numba cache")
    p.add_argument("--skip-big-warm-up", action="store_true", help="skip the fit after a 5,000-point warm-up")
    p.add_argument("--skip-variants", action="store_true",
                   help="skip timing other UMAP settings (n_epochs=200, init='pca') in this process")
    p.add_argument("--no-server", action="store_true", help="skip the decode-latency check through the app")
    p.add_argument("--calls", type=int, default=100, help="idle decode calls timed in the server check")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds allowed per fit")
    p.add_argument("--out", default=str(RESULTS / "umap_timing.json"))
    args = p.parse_args(argv)
    install_signal_handlers()

    tmp = Path(tempfile.mkdtemp(prefix="vae-explorer-umap-bench-"))
    _CLEANUPS.insert(0, lambda: shutil.rmtree(tmp, ignore_errors=True))
    result = {"benchmark": "umap_timing", "started": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine_info(),
              "settings": {k: v for k, v in vars(args).items() if k != "out"},
              "goal": {"warm_s": 10, "cached": "instant"}}
    try:
        import numba
        import umap  # the version only; fits run in the worker

        from vae_explorer.server.catalog import Catalog

        result["versions"] = {"umap": umap.__version__, "numba": numba.__version__}
        ckpt = tmp / "checkpoints"
        name = prepare_checkpoints(Path(args.checkpoints), ckpt, args.data_root, args.mnist_checkpoint,
                                   args.mnist_epochs)
        if not name:
            raise SystemExit("an MNIST model is needed: --mnist-checkpoint or --mnist-epochs >= 1")
        t0 = time.perf_counter()
        entry = Catalog(ckpt, args.data_root).get(name)
        codes = entry.codes
        result["codes"] = {"model": name, "shape": list(codes.shape), "encode_s": round(time.perf_counter() - t0, 2)}
        result["projector"] = projector_timings(codes, entry.key, tmp, args.timeout, args.skip_uncached,
                                                not args.skip_big_warm_up)
        if not args.skip_variants:
            print("other UMAP settings, warm, in this process...", flush=True)
            result["parameter_variants"] = parameter_variants(codes)
        if not args.no_server:
            print("the app: decode latency while its worker fits UMAP...", flush=True)
            result["server"] = server_check(ckpt, args.data_root, name, tmp, args.calls, args.timeout)
        pr = result["projector"]
        result["goal_met"] = pr["warm_s"] <= 10 and pr["cached_disk_ms"] < 100
        print(json.dumps({k: result[k] for k in ("codes", "projector", "parameter_variants", "server") if k in result},
                         indent=2))
        print(f"load average: {load_average()} ({os.cpu_count()} CPUs)")
        print("goal (warm <= 10 s, cached instant):", "met" if result["goal_met"] else "MISSED")
    finally:
        finish(result, args.out)
    return 0 if result.get("goal_met") else 1


if __name__ == "__main__":
    sys.exit(main())
