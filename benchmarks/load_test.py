"""Load test of the real app while a training runs: many concurrent clients, every answer checked.

Starts `python app.py` over a temporary copy of the checkpoints (plus a small
MNIST VAE, trained here or copied from --mnist-checkpoint), starts a training
through `train_start` (and polls `train_status` every 0.5 s like an open Train
tab), then runs --clients threads × --calls calls each, mixing `decode` (after
a `slider_setup` in the thread's own session, as a browser tab does),
`reconstruct`, `sample` and `interpolate_at`, all through raw HTTP (POST, SSE
until complete, GET of every returned image).

Every request has its own parameters and its expected outputs are computed
beforehand in this process with the same `Explorer` methods, so each answer is
checked for: a `complete` event, outputs of the right kinds (image file dicts,
Markdown strings), images fetchable as PNG, of the expected size and pixels
(within ±2 grey levels), and the expected text. A swapped or stale answer
counts as an error.

    python benchmarks/load_test.py                      # 20 clients × 50 calls
    python benchmarks/load_test.py --classroom          # 30 clients for 60 s: maps, reconstruct, sample, denoise, cards
    python benchmarks/load_test.py --clients 5 --calls 10 --mnist-checkpoint /tmp/mnist_vae.safetensors

Before the clock starts, one call of each kind and model is made (untimed but
checked; --no-warm skips it): the first use of a model loads its dataset and
encodes its test set, seconds that belong to a cold start, not to the load.

Goal: 0 errors. Reports p50/p95 per kind and overall, the throughput and the cores each process used
during the load (the server, its training, and these clients, which share the machine); writes
benchmarks/results/load_test.json. The server and its workers are stopped on
exit, failure and Ctrl-C included.
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import random
import shlex
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from app_latency import (  # noqa: E402
    _CLEANUPS,
    DEFAULT_DATA_ROOT,
    MAX_SLIDERS,
    RESULTS,
    ROOT,
    CallError,
    Client,
    StatusPoller,
    finish,
    install_signal_handlers,
    CpuShares,
    load_average,
    machine_info,
    outlasting_dataset,
    prepare_checkpoints,
    running_app,
    start_training,
    stats_ms,
    train_state,
)

sys.path.insert(0, str(ROOT))

KINDS = ("decode", "reconstruct", "sample", "interpolate_at", "latent_map", "denoise", "model_card")
# Issue 15's classroom: the calls that stay on the server (the sliders' and t's frames are drawn in the page).
CLASSROOM_MIX = "latent_map=0.2,reconstruct=0.2,sample=0.2,denoise=0.2,model_card=0.2"
PIXEL_TOLERANCE = 2  # grey levels: float noise across thread counts; a wrong image is off by far more


def plan_requests(ex, names: set[str], clients: int, calls: int, seed: int, mix: dict[str, float]) -> list[list[dict]]:
    """Per client, its calls: {kind, api, data, expect: [np.ndarray | str, ...]} computed with `ex` (an Explorer)."""
    digits_decode = [n for n in ("digits_vae", "digits_ae", "digits_conv_vae", "digits_vq_vae") if n in names]
    decode_models = digits_decode + (["mnist_vae"] if "mnist_vae" in names else [])
    sample_models = [n for n in ("digits_vae", "digits_vq_vae", "digits_ae", "mnist_vae") if n in names]
    pairs = [(a, b) for a, b in (("digits_ae", "digits_vae"), ("digits_vae", "digits_conv_vae"),
                                 ("mnist_vae", "mnist_vae")) if a in names and b in names]
    rec_sets = [s for s in (["digits_ae", "digits_vae"], ["digits_vq_vae"], ["mnist_vae"]) if set(s) <= names]
    map_pairs = [p for p in (("digits_ae", "digits_vae"), ("digits_conv_ae", "digits_conv_vae"),
                             ("mnist_vae", "mnist_vae")) if set(p) <= names]
    denoise_sets = [s for s in (["digits_denoising_ae", "digits_vae"], ["digits_conv_ae"], ["mnist_vae"])
                    if set(s) <= names]
    kinds, weights = zip(*[(k, w) for k, w in mix.items() if w > 0])
    sliders_cache: dict[tuple, list[dict]] = {}
    plans = []
    for c in range(clients):
        rng = random.Random(seed * 1000 + c)
        # the tab's slider setup: one model and start image per client, set up in its session first
        sl_model = decode_models[c % len(decode_models)]
        n_sl = len(ex.load(sl_model).data.test_x)
        sl_index = rng.randrange(n_sl)
        key = (sl_model, sl_index)
        if key not in sliders_cache:
            sliders_cache[key] = ex.slider_setup(sl_model, sl_index)[0]
        sliders = sliders_cache[key]
        plan = [{"kind": "slider_setup", "api": "slider_setup", "data": [sl_model, sl_index], "expect": None,
                 "setup": True}]
        for _ in range(calls):
            kind = rng.choices(kinds, weights)[0]
            if kind == "decode":
                values = [round(rng.uniform(s["minimum"], s["maximum"]), 3) for s in sliders]
                data = [sl_model, sl_index, *values, *[0.0] * (MAX_SLIDERS - len(values))]
                expect = [ex.decode_sliders(sl_model, sl_index, values), None]
            elif kind == "reconstruct":
                chosen = rng.choice(rec_sets)
                n = len(ex.load(chosen[0]).data.test_x)
                idx = sorted(rng.sample(range(n), rng.randint(1, 8)))
                text_idx = ", ".join(map(str, idx))
                seed_ = rng.randrange(1000)
                data = [chosen, text_idx, None, seed_]
                grid, text = ex.reconstruct(chosen, text_idx, None, seed_)
                expect = [grid, None, text]  # the table twin is hidden for pictures
            elif kind == "sample":
                name = rng.choice(sample_models)
                temp = round(rng.randint(10, 30) * 0.05, 2)
                seed_ = rng.randrange(10_000)
                data = [name, temp, seed_]
                a, b, caption, _columns = ex.sample(name, temp, seed_)
                expect = [a, b, None, None, caption, None]  # the tables and the columns' plot are for table models
            elif kind == "latent_map":
                a, b = rng.choice(map_pairs)
                n = len(ex.load(a).data.test_x)
                projection, index = rng.choice(["auto", "pca"]), rng.randrange(n)
                data = [a, b, projection, index, "label"]
                ma, mb = ex.latent_map(a, projection, index), ex.latent_map(b, projection, index)
                note = ma.note if ma.note == mb.note else f"**Left:** {ma.note}  \n**Right:** {mb.note}"
                expect = [("plot", ma.figure.layout.title.text, n), ("plot", mb.figure.layout.title.text, n), note,
                          None]
            elif kind == "denoise":
                chosen = rng.choice(denoise_sets)
                n = len(ex.load(chosen[0]).data.test_x)
                index, noise = rng.randrange(n), rng.choice(["gaussian", "masking", "salt_and_pepper"])
                level, seed_ = round(rng.uniform(0.1, 0.6), 2), rng.randrange(1000)
                data = [chosen, index, None, noise, level, seed_, []]
                first, picture, results, caption = ex.denoise(chosen, index, None, noise, level, seed_)
                expect = [first, picture, ("gallery", [np.asarray(im) for im, _ in results], [c for _, c in results]),
                          None, caption]
            elif kind == "model_card":
                name = rng.choice(sorted(names))
                data, expect = [name], [ex.card(name)]
            else:
                a, b = rng.choice(pairs)
                n = len(ex.load(a).data.test_x)
                ia, ib = rng.randrange(n), rng.randrange(n)
                mode = rng.choice(["linear", "spherical"])
                t = round(rng.random(), 2)
                data = [a, b, ia, ib, None, None, mode, t]
                expect = [ex.interpolate_at(a, ia, ib, t, mode), None, ex.interpolate_at(b, ia, ib, t, mode), None]
            plan.append({"kind": kind, "api": kind, "data": data,
                         "expect": [np.asarray(e) if isinstance(e, Image.Image) else e for e in expect]})
        plans.append(plan)
    return plans


def check_image(client: Client, o, e: np.ndarray, what: str) -> float:
    """Raises CallError unless the image file `o` has the pixels of `e`; returns the largest difference."""
    if not isinstance(o, dict) or not o.get("url"):
        raise CallError(f"{what} is not an image file: {str(o)[:150]}")
    data = client.fetch(o)
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise CallError(f"{what} is not a PNG")
    got = np.asarray(Image.open(io.BytesIO(data)))
    if got.shape != e.shape:
        raise CallError(f"{what}: image {got.shape}, expected {e.shape}")
    diff = float(np.abs(got.astype(np.int16) - e.astype(np.int16)).max()) if got.size else 0.0
    if diff > PIXEL_TOLERANCE:
        raise CallError(f"{what}: pixels differ by up to {diff:.0f} grey levels from the expected image")
    return diff


def check_plot(o, title: str, points: int, what: str) -> None:
    """A gr.Plot output: plotly JSON with the expected title and one marker per test item (plus the ring)."""
    if not isinstance(o, dict) or o.get("type") != "plotly":
        raise CallError(f"{what} is not a plotly figure: {str(o)[:150]}")
    figure = json.loads(o["plot"])
    if figure["layout"]["title"]["text"] != title:
        raise CallError(f"{what}: title {figure['layout']['title']['text']!r}, expected {title!r}")
    shown = sum(_length(t["customdata"]) for t in figure["data"] if t.get("name") != "selected" and "customdata" in t)
    if shown != points:
        raise CallError(f"{what}: {shown} points, expected {points}")


def _length(array) -> int:
    """Items of a plotly array: a list, or numpy's typed array {dtype, bdata (base64)}."""
    if isinstance(array, list):
        return len(array)
    return len(base64.b64decode(array["bdata"])) // np.dtype(array["dtype"]).itemsize


def check_outputs(client: Client, out: list, expect: list) -> float:
    """Raises CallError unless `out` matches `expect`; returns the largest pixel difference seen. An expected
    None is not checked (a timer's state, a hidden table); a component update's value is what is checked."""
    if len(out) != len(expect):
        raise CallError(f"{len(out)} outputs, expected {len(expect)}")
    worst = 0.0
    for i, (o, e) in enumerate(zip(out, expect)):
        if isinstance(o, dict) and o.get("__type__") == "update":
            o = o.get("value")
        if e is None:
            continue
        if isinstance(e, np.ndarray):
            worst = max(worst, check_image(client, o, e, f"output {i}"))
        elif isinstance(e, tuple) and e[0] == "plot":
            check_plot(o, e[1], e[2], f"output {i}")
        elif isinstance(e, tuple) and e[0] == "gallery":
            if not isinstance(o, list) or len(o) != len(e[1]):
                raise CallError(f"output {i}: a gallery of {len(e[1])} expected, got {str(o)[:150]}")
            for k, (item, image, caption) in enumerate(zip(o, e[1], e[2])):
                worst = max(worst, check_image(client, item.get("image"), image, f"output {i}, picture {k}"))
                if item.get("caption") != caption:
                    raise CallError(f"output {i}, picture {k}: caption {item.get('caption')!r}, expected {caption!r}")
        else:
            if not isinstance(o, str):
                raise CallError(f"output {i} is {type(o).__name__}, expected Markdown text")
            if o != e:
                raise CallError(f"output {i}: text differs from the expected ({o[:80]!r}…)")
    return worst


def warm_calls(plans: list[list[dict]]) -> list[dict]:
    """One request of each (kind, model) in the plans: run once, in order, before the timed load."""
    seen, out = set(), []
    for plan in plans:
        setup = plan[0]  # the client's slider_setup: its decodes need it in the same session first
        for req in plan[1:]:
            model = req["data"][0]
            key = (req["kind"], ",".join(model) if isinstance(model, list) else model)
            if key not in seen:
                seen.add(key)
                if req["kind"] == "decode" and not any(r is setup for r in out):
                    out.append(setup)
                out.append(req)
    return out


def run_client(url: str, plan: list[dict], barrier: threading.Barrier, records: list, timeout: float,
               seconds: float | None = None) -> None:
    """One client's calls, in order, each as soon as the previous is answered. With `seconds`, the plan's calls
    (its setup once) go round again until that much time has passed since the barrier."""
    client = Client(url, timeout=timeout)
    try:
        barrier.wait(120)
    except threading.BrokenBarrierError:
        pass
    deadline = None if seconds is None else time.perf_counter() + seconds
    for req in plan if deadline is None else _until(plan, deadline):
        t0 = time.perf_counter()
        model = req["data"][0]
        rec = {"kind": req["kind"], "model": ",".join(model) if isinstance(model, list) else model, "ok": False,
               "setup": req.get("setup", False)}
        try:
            # The latency is the answer's and its images' (as a page waits for them), not this client's checks.
            client.fetch_seconds = 0.0
            out = client.call(req["api"], req["data"])
            answered = time.perf_counter() - t0
            if req["expect"] is not None:
                rec["pixel_diff"] = check_outputs(client, out, req["expect"])
            elif not (isinstance(out, list) and len(out) == MAX_SLIDERS + 3):  # sliders, image, rows, text
                raise CallError(f"slider_setup gave {len(out)} outputs")
            else:
                image = out[MAX_SLIDERS]
                client.fetch(image.get("value") if image.get("__type__") == "update" else image)
            rec["ok"] = True
        except Exception as e:
            rec["error"] = f"{type(e).__name__}: {e}"[:300]
        rec["t0"] = t0
        rec["seconds"] = answered + client.fetch_seconds if rec["ok"] else time.perf_counter() - t0
        records.append(rec)


def _until(plan: list[dict], deadline: float):
    """The plan once, then its calls (not its setup) again and again until `deadline` (perf_counter)."""
    yield plan[0]
    while time.perf_counter() < deadline:
        for req in plan[1:]:
            if time.perf_counter() >= deadline:
                return
            yield req


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--calls", type=int, default=50, help="calls per client (after its slider_setup)")
    p.add_argument("--mix", default="decode=0.4,interpolate_at=0.25,sample=0.2,reconstruct=0.15",
                   help=f"share of each kind of call, of {', '.join(KINDS)}")
    p.add_argument("--seconds", type=float, default=None,
                   help="run each client for this long instead of --calls calls (its planned calls go round again)")
    p.add_argument("--classroom", action="store_true",
                   help=f"issue 15's class: 30 clients for 60 s over the server's own calls ({CLASSROOM_MIX}); "
                        "sets --clients 30 --seconds 60 --mix and the goal p95 <= 1 s")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoints", default=str(ROOT / "checkpoints"), help="checkpoints to copy (never written to)")
    p.add_argument("--data-root", default=DEFAULT_DATA_ROOT)
    p.add_argument("--mnist-checkpoint", default=None, help="use this MNIST VAE instead of training one")
    p.add_argument("--mnist-epochs", type=int, default=1, help="epochs for the MNIST VAE (0: digits models only)")
    p.add_argument("--train-model", default="vae")
    p.add_argument("--train-dataset", default=None,
                   help="default: mnist where --data-root has it (a run of the allowed 1,000 epochs on digits can "
                        "end within a minute, before the load does), else digits")
    p.add_argument("--train-epochs", type=int, default=1000)
    p.add_argument("--no-training", action="store_true", help="run the load without a training")
    p.add_argument("--app-args", default="", help='flags for the app, e.g. "--view-slots 4"')
    p.add_argument("--no-warm", dest="warm", action="store_false",
                   help="skip the untimed warm-up (one call per kind and model: loads each model's data and codes)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per HTTP request")
    p.add_argument("--out", default=str(RESULTS / "load_test.json"))
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (server log, checkpoints)")
    args = p.parse_args(argv)
    if args.classroom:
        args.clients, args.seconds, args.mix = 30, 60.0, CLASSROOM_MIX
    if args.train_dataset is None:
        args.train_dataset = outlasting_dataset(args.data_root)
    install_signal_handlers()
    mix = {k: float(v) for k, v in (part.split("=") for part in args.mix.split(",") if part)}
    unknown = set(mix) - set(KINDS)
    if unknown:
        p.error(f"unknown kinds in --mix: {', '.join(sorted(unknown))}")

    tmp = Path(tempfile.mkdtemp(prefix="vae-explorer-load-"))
    if not args.keep:
        _CLEANUPS.insert(0, lambda: shutil.rmtree(tmp, ignore_errors=True))
    result = {"benchmark": "load_test", "started": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine_info(),
              "settings": {k: v for k, v in vars(args).items() if k not in ("out", "keep")}, "goal": "0 errors"}
    try:
        ckpt = tmp / "checkpoints"
        prepare_checkpoints(Path(args.checkpoints), ckpt, args.data_root, args.mnist_checkpoint, args.mnist_epochs)

        import torch

        from vae_explorer.server import Explorer

        torch.set_num_threads(1)  # as the server does: same arithmetic, same pixels
        ex = Explorer(ckpt, args.data_root, projection_cache="")
        names = set(ex.checkpoint_names())
        print(f"planning {args.clients} × {args.calls} calls and their expected outputs...", flush=True)
        t0 = time.perf_counter()
        plans = plan_requests(ex, names, args.clients, args.calls, args.seed, mix)
        result["planning_s"] = round(time.perf_counter() - t0, 1)
        result["planned"] = dict(Counter(r["kind"] for plan in plans for r in plan))

        print("starting the app...", flush=True)
        with running_app(ckpt, args.data_root, log_path=tmp / "app.log",
                         extra_args=tuple(shlex.split(args.app_args))) as server:
            client = Client(server.url)
            poller = None
            if not args.no_training:
                status = start_training(client, args.train_model, args.train_dataset, args.train_epochs,
                                        "bench_load_run")
                result["training"] = {"model": args.train_model, "dataset": args.train_dataset,
                                      "epochs": args.train_epochs, "status_at_start": status}
                poller = StatusPoller(server.url)
            if args.warm:
                print("warming up: one call per kind and model...", flush=True)
                warm_records: list[dict] = []
                run_client(server.url, warm_calls(plans), threading.Barrier(1), warm_records, args.timeout)
                result["warm_up_calls"] = [{"kind": r["kind"], "model": r["model"], "ok": r["ok"],
                                            "ms": round(r["seconds"] * 1000, 1),
                                            **({"error": r["error"]} if "error" in r else {})}
                                           for r in warm_records]
            records: list[dict] = []
            barrier = threading.Barrier(args.clients + 1)
            threads = [threading.Thread(target=run_client, args=(server.url, plan, barrier, records, args.timeout,
                                                                 args.seconds), daemon=True) for plan in plans]
            for t in threads:
                t.start()
            print(f"running {args.clients} clients...", flush=True)
            barrier.wait(120)
            t_start = time.perf_counter()
            cpu = CpuShares(server.proc.pid)
            cpu.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t_start
            result["cpu_during_load"] = cpu.stop()
            if poller:
                poller.stop()
                end = train_state(client)
                result["training"].update({"status_polling": poller.summary(), "status_at_end": end,
                                           "still_running_at_end": "status **running**" in end,
                                           "cancel": str(client.call("train_cancel", [])[0])})
            result["load_at_end"] = load_average()
            server_log = server.log_tail(200)

        timed = [r for r in records if not r["setup"]]
        errors = [r for r in records if not r["ok"]]
        by_kind = defaultdict(list)
        for r in timed:
            if r["ok"]:
                by_kind[r["kind"]].append(r["seconds"])
        result["wall_s"] = round(wall, 2)
        result["calls"] = len(timed)
        result["setup_calls"] = len(records) - len(timed)
        result["errors"] = len(errors)
        result["errors_by_kind"] = dict(Counter(r["kind"] for r in errors))
        result["error_examples"] = sorted({r["error"] for r in errors})[:10]
        result["throughput_calls_per_s"] = round(len(timed) / wall, 2)
        result["latency_ms"] = {k: stats_ms(v) for k, v in sorted(by_kind.items())}
        result["latency_ms"]["overall"] = stats_ms([r["seconds"] for r in timed if r["ok"]])
        slowest = sorted(timed, key=lambda r: -r["seconds"])[:15]
        result["slowest_calls"] = [{"kind": r["kind"], "model": r["model"], "ms": round(r["seconds"] * 1000, 1),
                                    "started_s_after_start": round(r["t0"] - t_start, 2)} for r in slowest]
        buckets = Counter(int((r["t0"] + r["seconds"] - t_start) // 10) for r in timed)
        result["completed_per_10s"] = [buckets.get(i, 0) for i in range(max(buckets, default=-1) + 1)]
        result["max_pixel_diff"] = max((r.get("pixel_diff", 0.0) for r in records), default=0.0)
        result["server_log_errors"] = [line for line in server_log.splitlines()
                                       if "ERROR" in line or "Traceback" in line][:10]
        answered_all = len(records) == sum(len(p) for p in plans) if args.seconds is None else True
        trained_throughout = args.no_training or result["training"]["still_running_at_end"]
        result["goal_met"] = result["errors"] == 0 and answered_all and trained_throughout
        if args.classroom:  # and the class's latency goal
            result["goal"] = "0 errors, every answer correct, p95 <= 1 s"
            result["goal_met"] = result["goal_met"] and result["latency_ms"]["overall"]["p95"] <= 1000

        print(f"\n{'kind':<16} {'n':>5} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
        for k, s in result["latency_ms"].items():
            if s.get("n"):
                print(f"{k:<16} {s['n']:>5} {s['p50']:>8.1f} {s['p95']:>8.1f} {s['max']:>8.1f}")
        print(f"\n{len(timed)} calls (+{result['setup_calls']} slider setups) by {args.clients} clients "
              f"in {wall:.1f} s: "
              f"{result['throughput_calls_per_s']} calls/s; errors: {len(errors)} {result['errors_by_kind'] or ''}; "
              f"largest pixel difference {result['max_pixel_diff']:.0f}")
        print("slowest:", ", ".join(f"{r['kind']}/{r['model']} {r['ms']:.0f} ms at {r['started_s_after_start']} s"
                                    for r in result["slowest_calls"][:5]))
        for e in result["error_examples"]:
            print("  error:", e)
        if "training" in result:
            print(f"training still running at the end: {result['training']['still_running_at_end']}; "
                  f"{result['training']['status_polling']['polls']} status polls")
        print(f"load average at the end: {result['load_at_end']} ({result['machine']['cpus']} CPUs)")
        print("cores used during the load:", ", ".join(f"{k} {v}" for k, v in result["cpu_during_load"]["cores"].items()))
        print(f"goal ({result['goal']}):", "met" if result["goal_met"] else "MISSED")
    finally:
        finish(result, args.out)
    return 0 if result.get("goal_met") else 1


if __name__ == "__main__":
    sys.exit(main())
