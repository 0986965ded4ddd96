"""Latent slider -> decoded image latency of the real app, through raw HTTP.

Starts `python app.py` in a subprocess over a temporary copy of the checkpoints
(plus a small MNIST VAE trained for the run, or copied from --mnist-checkpoint),
then for each model times N sequential `decode` calls with varying slider values
the way the page makes them: POST /gradio_api/call/decode, read the SSE stream
until `event: complete`, and GET the returned image URL (checked to be a PNG of
the expected size). With the server idle; while a training started through
`train_start` runs; and while it runs and `train_status` is polled every 0.5 s
as an open Train tab does (--no-status-poll skips that one). Also times the handler and the PNG encoding in this
process, to show how much of the round trip is the server's own overhead.

    python benchmarks/app_latency.py                       # defaults: 300 calls per model and condition
    python benchmarks/app_latency.py --calls 100 --mnist-checkpoint /tmp/mnist_vae.safetensors

Goal: p50 <= 50 ms and p95 <= 100 ms, idle and while training. Writes
benchmarks/results/app_latency.json and prints a table. Every process started
here (the server, its training and UMAP workers) is stopped on exit, failure
and Ctrl-C included. The other benchmarks import the helpers below.
"""
from __future__ import annotations

import argparse
import atexit
import contextlib
import io
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vae_explorer.server.answers import image_bytes  # noqa: E402
from vae_explorer.server.launcher import AppProcess  # noqa: E402  (the one app launcher, shared with the tests)

RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_DATA_ROOT = str(ROOT.parent / "shared" / "datasets") if (ROOT.parent / "shared" / "datasets").is_dir() \
    else "/work/shared/datasets"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_SLIDERS = 8

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ.setdefault("no_proxy", "127.0.0.1,localhost")


# ---- process hygiene ------------------------------------------------------------------------

_CLEANUPS: list = []


def _run_cleanups() -> None:
    while _CLEANUPS:
        fn = _CLEANUPS.pop()
        try:
            fn()
        except Exception as e:  # keep cleaning the rest
            print(f"cleanup failed: {e}", file=sys.stderr)


def install_signal_handlers() -> None:
    """SIGTERM/SIGHUP -> SystemExit, so `finally` blocks and atexit stop the servers."""
    def handler(signum, frame):
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)
    atexit.register(_run_cleanups)


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (Linux /proc; 0.0 when it is gone or unreadable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)
    except (OSError, IndexError, ValueError):
        return 0.0


def child_pids(pid: int) -> list[int]:
    """Direct children of `pid` (Linux /proc; [] where unreadable)."""
    try:
        return [int(c) for task in Path(f"/proc/{pid}/task").iterdir()
                for c in (task / "children").read_text().split()]
    except (OSError, ValueError):
        return []


class CpuShares:
    """Where the machine's CPU went between `start()` and `stop()`: the server process, each of its child
    processes (a training, the UMAP worker) and this benchmark's own process (its client threads). On a
    machine where the clients run beside the server, a busy client takes cores from the server it measures."""

    def __init__(self, server_pid: int):
        self.server_pid = server_pid

    def _read(self) -> dict[str, float]:
        shares = {"server": cpu_seconds(self.server_pid), "clients (this process)": sum(os.times()[:2])}
        for pid in child_pids(self.server_pid):
            try:
                name = " ".join(Path(f"/proc/{pid}/cmdline").read_text().split("\0")[1:3])
            except OSError:
                continue
            shares[f"server child {pid}: {name}"] = cpu_seconds(pid)
        return shares

    def start(self) -> None:
        self._t0, self._before = time.perf_counter(), self._read()

    def stop(self) -> dict:
        """CPU seconds of each process over the interval, and in cores (seconds / wall seconds)."""
        wall, after = time.perf_counter() - self._t0, self._read()
        seconds = {k: round(v - self._before.get(k, 0.0), 2) for k, v in after.items()}
        return {"wall_s": round(wall, 2), "cpu_s": seconds,
                "cores": {k: round(v / wall, 2) for k, v in seconds.items()}}


def machine_info() -> dict:
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
            "loadavg_1_5_15": load_average()}


# ---- the checkpoints copy -------------------------------------------------------------------

def prepare_checkpoints(source: Path, dest: Path, data_root: str | None, mnist_checkpoint: str | None,
                        mnist_epochs: int, mnist_name: str = "mnist_vae") -> str | None:
    """Copy `source`'s checkpoints to `dest`; add an MNIST VAE (copied or trained, latent 20). Returns its name."""
    dest.mkdir(parents=True, exist_ok=True)
    for p in source.glob("*.safetensors"):
        shutil.copy2(p, dest / p.name)
    if mnist_checkpoint:
        shutil.copy2(mnist_checkpoint, dest / f"{mnist_name}.safetensors")
        return mnist_name
    if mnist_epochs <= 0 or not data_root:
        return None
    print(f"training {mnist_name}: vae on mnist, latent 20, {mnist_epochs} epoch(s)...", flush=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "vae_explorer", "train", "--model", "vae", "--dataset", "mnist",
                    "--data-root", data_root, "--epochs", str(mnist_epochs), "--latent-dim", "20",
                    "--out", str(dest / mnist_name), "--quiet"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    print(f"  trained in {time.perf_counter() - t0:.0f} s", flush=True)
    return mnist_name


# ---- the server -----------------------------------------------------------------------------

@contextlib.contextmanager
def running_app(checkpoints: Path, data_root: str | None, **kwargs):
    """`AppProcess` (python app.py in its own process group) whose `stop` also runs from the atexit and
    SIGTERM/SIGHUP cleanups, so no server or worker outlives this script."""
    app = AppProcess(checkpoints, data_root, **kwargs)  # stops itself if it never answers
    _CLEANUPS.append(app.stop)
    try:
        yield app
    finally:
        app.stop()
        if app.stop in _CLEANUPS:
            _CLEANUPS.remove(app.stop)


class CallError(RuntimeError):
    pass


class Client:
    """Raw-HTTP Gradio client, one keep-alive connection and one Gradio session (one per thread), like a tab.

    The session matters: `slider_setup` widens the sliders' ranges for that session only, and the
    server checks each decode's values against them (a call without the session gets the static -3..3).
    """

    def __init__(self, url: str, timeout: float = 60.0, session_hash: str | None = None):
        self.url = url
        self.session_hash = session_hash or uuid.uuid4().hex[:11]
        self.session = requests.Session()
        self.session.trust_env = False  # no proxies for 127.0.0.1
        self.timeout = timeout
        self.fetch_seconds = 0.0  # spent in `fetch`: a page's wait for an answer's images counts in its latency

    def call(self, api_name: str, data: list, timings: dict | None = None) -> list:
        """POST + SSE until complete; returns the output list. `timings` gets post/complete seconds."""
        t0 = time.perf_counter()
        r = self.session.post(f"{self.url}/gradio_api/call/{api_name}",
                              json={"data": data, "session_hash": self.session_hash}, timeout=self.timeout)
        if r.status_code != 200:
            raise CallError(f"{api_name}: POST {r.status_code} {r.text[:200]}")
        event_id = r.json()["event_id"]
        t1 = time.perf_counter()
        event, payload = None, None
        with self.session.get(f"{self.url}/gradio_api/call/{api_name}/{event_id}", stream=True,
                              timeout=self.timeout) as s:
            if s.status_code != 200:
                raise CallError(f"{api_name}: GET {s.status_code}")
            current = None
            # requests reads 512 bytes at a time by default and re-splits the growing line after each: quadratic
            # in a line's length, 0.2 s of this client's CPU for a 350 KB map answer. A chunk is still handed on as
            # soon as it arrives (the stream is chunked).
            for line in s.iter_lines(chunk_size=1 << 16, decode_unicode=True):
                if line.startswith("event:"):
                    current = line[6:].strip()
                elif line.startswith("data:") and current in ("complete", "error"):
                    event, payload = current, line[5:].strip()
                    break
        t2 = time.perf_counter()
        if timings is not None:
            timings["post"], timings["stream"] = t1 - t0, t2 - t1
            timings["bytes"] = len(payload or "")
        if event == "complete":
            out = json.loads(payload)
            if not isinstance(out, list):
                raise CallError(f"{api_name}: complete data is not a list: {payload[:200]}")
            return out
        if event == "error":
            raise CallError(f"{api_name}: error event: {payload[:300]}")
        raise CallError(f"{api_name}: stream ended without a complete event")

    def fetch(self, file: dict | None) -> bytes:
        """The bytes of an output file dict: decoded from its data URL (the app's answer images travel inline),
        or downloaded from its url."""
        if not isinstance(file, dict) or not (file.get("url") or file.get("path")):
            raise CallError(f"not a file output: {str(file)[:200]}")
        t0 = time.perf_counter()
        try:
            return image_bytes(file, self._download)
        finally:
            self.fetch_seconds += time.perf_counter() - t0

    def _download(self, file: dict) -> bytes:
        url = file.get("url") or f"{self.url}/gradio_api/file={file['path']}"
        r = self.session.get(url, timeout=self.timeout)
        if r.status_code != 200:
            raise CallError(f"file {url}: HTTP {r.status_code}")
        return r.content


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR; raises if `data` is not a PNG."""
    if data[:8] != PNG_MAGIC or data[12:16] != b"IHDR":
        raise CallError(f"not a PNG (starts {data[:8]!r})")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def stats_ms(seconds: list[float]) -> dict:
    if not seconds:
        return {"n": 0}
    ms = sorted(1000.0 * s for s in seconds)

    def pct(p):
        k = (len(ms) - 1) * p / 100.0
        lo, hi = int(k), min(int(k) + 1, len(ms) - 1)
        return ms[lo] + (ms[hi] - ms[lo]) * (k - lo)

    return {"n": len(ms), "p50": round(pct(50), 2), "p95": round(pct(95), 2), "p99": round(pct(99), 2),
            "max": round(ms[-1], 2), "mean": round(statistics.fmean(ms), 2), "min": round(ms[0], 2)}


# ---- training in the server -----------------------------------------------------------------

def outlasting_dataset(data_root: str | None) -> str:
    """What a benchmark trains on while it measures: MNIST where the data folder has it, since the server's
    maximum of 1,000 digits epochs can end within a minute, before the load does; else digits."""
    return "mnist" if data_root and (Path(data_root) / "MNIST").is_dir() else "digits"


def train_args(model: str, dataset: str, epochs: int, name: str, latent_dim: int = 2) -> list:
    """The Train tab's inputs: [model, dataset, latent_dim, beta, likelihood, noise_std, epochs, lr, batch_size,
    device, name, more settings, table file, label column, ignored columns]. beta and noise_std are the preset's where the model has them and None where
    not (the page hides them; a value there is refused), as the page sends them."""
    from vae_explorer.models import MODELS

    preset, has = MODELS[model].preset, MODELS[model].settings()
    beta = preset.beta if "beta" in has else None
    noise_std = preset.noise_std if "noise_std" in has else None
    # then the csv dataset's table, label column and ignored columns: none for a built-in dataset
    return [model, dataset, latent_dim, beta, "bernoulli", noise_std, epochs, 1e-3, 128, "cpu", name, "", None, "", ""]


def train_state(client: Client) -> str:
    """The first Markdown line of train_status, e.g. '**x**: vae on digits, latent 2; status **running** on **cpu**'."""
    return str(client.call("train_status", [])[0])


def start_training(client: Client, model: str, dataset: str, epochs: int, name: str, latent_dim: int = 2,
                   timeout: float = 120.0) -> str:
    client.call("train_start", train_args(model, dataset, epochs, name, latent_dim))
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = train_state(client)
        if "status **running**" in status and "epoch " in status:  # past data loading, taking steps
            return status
        if any(f"status **{s}**" in status for s in ("failed", "finished", "cancelled")):
            raise RuntimeError(f"the training did not run: {status}")
        time.sleep(0.5)
    raise RuntimeError(f"the training did not start within {timeout:.0f} s: {status}")


def renice_training(server: AppProcess, niceness: int) -> list[int]:
    """Lower the priority of the server's training worker (an experiment: what `os.nice` in the worker would do).

    Only processes in the server's own process group, which this script started, are touched."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0")
            training = cmd[1:4] == [b"-m", b"vae_explorer", b"train"] and b"--events" in cmd  # the jobs' worker
            if training and os.getpgid(int(d.name)) == server.proc.pid:
                os.setpriority(os.PRIO_PROCESS, int(d.name), niceness)
                pids.append(int(d.name))
        except (OSError, ProcessLookupError):
            continue
    return pids


class StatusPoller:
    """Polls train_status every `interval` s in a thread, like a browser tab showing the Train tab."""

    def __init__(self, url: str, interval: float = 0.5):
        self.client, self.interval = Client(url), interval
        self.stop_flag = threading.Event()
        self.polls, self.errors, self.last = 0, 0, ""
        self.seconds: list[float] = []  # each poll's round trip
        self.sizes: list[int] = []  # each answer's bytes (the loss-curve figure grows with the run)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop_flag.wait(self.interval):
            try:
                t = {}
                t0 = time.perf_counter()
                self.last = str(self.client.call("train_status", [], t)[0])
                self.seconds.append(time.perf_counter() - t0)
                self.sizes.append(t["bytes"])
                self.polls += 1
            except Exception:
                self.errors += 1

    def stop(self):
        self.stop_flag.set()
        self.thread.join(10)

    def summary(self) -> dict:
        return {"polls": self.polls, "errors": self.errors, "round_trip_ms": stats_ms(self.seconds),
                "first_answer_bytes": self.sizes[0] if self.sizes else None,
                "last_answer_bytes": self.sizes[-1] if self.sizes else None}


# ---- the latency measurement ----------------------------------------------------------------

def slider_ranges(client: Client, name: str, index: int) -> list[tuple[float, float, float]]:
    """(min, max, value) of each visible slider, from the app's own slider_setup."""
    out = client.call("slider_setup", [name, index])
    ranges = []
    for u in out[:MAX_SLIDERS]:
        if isinstance(u, dict) and u.get("visible", True) and "minimum" in u:
            ranges.append((float(u["minimum"]), float(u["maximum"]), float(u["value"])))
    if not ranges:
        raise RuntimeError(f"slider_setup({name}) gave no sliders: {str(out)[:300]}")
    return ranges


def decode_values(ranges, rng: random.Random) -> list[float]:
    vals = [round(rng.uniform(lo, hi), 3) for lo, hi, _ in ranges]
    return vals + [0.0] * (MAX_SLIDERS - len(vals))


def time_decodes(client: Client, name: str, index: int, ranges, calls: int, expected_size, seed: int = 0,
                 warmup: int = 20) -> dict:
    """`calls` sequential slider moves: POST, SSE to complete, GET the PNG. Seconds per phase."""
    rng = random.Random(seed)
    for _ in range(warmup):
        out = client.call("decode", [name, index, *decode_values(ranges, rng)])
        client.fetch(out[0])
    total, post, stream, fetch, errors = [], [], [], [], []
    for _ in range(calls):
        values = decode_values(ranges, rng)
        t = {}
        t0 = time.perf_counter()
        try:
            out = client.call("decode", [name, index, *values], t)
            t1 = time.perf_counter()
            size = png_size(client.fetch(out[0]))
            t2 = time.perf_counter()
            if expected_size and size != tuple(expected_size):
                raise CallError(f"image size {size}, expected {tuple(expected_size)}")
        except Exception as e:
            errors.append(f"{type(e).__name__}: {e}")
            continue
        total.append(t2 - t0)
        post.append(t["post"])
        stream.append(t["stream"])
        fetch.append(t2 - t1)
    return {"total": stats_ms(total), "over_100ms": sum(t > 0.1 for t in total), "post": stats_ms(post),
            "sse_until_complete": stats_ms(stream),
            "image_get": stats_ms(fetch), "errors": len(errors), "error_examples": errors[:5]}


def in_process_breakdown(checkpoints: Path, data_root: str | None, names: list[str], repeats: int = 200) -> dict:
    """Handler (Explorer.decode_sliders) and PNG encoding timed in this process, one torch thread like the app."""
    import torch

    from vae_explorer.server import Explorer

    torch.set_num_threads(1)
    ex = Explorer(checkpoints, data_root, projection_cache="")  # "": no UMAP cache folder
    out = {}
    for name in names:
        sliders, _, _ = ex.slider_setup(name, 0)
        rng = random.Random(1)
        handler, encode = [], []
        for i in range(repeats + 10):
            vals = [rng.uniform(s["minimum"], s["maximum"]) for s in sliders]
            t0 = time.perf_counter()
            im = ex.decode_sliders(name, 0, vals)
            t1 = time.perf_counter()
            buf = io.BytesIO()
            im.save(buf, format="png")  # roughly what gradio does with a PIL output of format="png"
            t2 = time.perf_counter()
            if i >= 10:
                handler.append(t1 - t0)
                encode.append(t2 - t1)
        out[name] = {"handler_decode_sliders": stats_ms(handler), "png_encode": stats_ms(encode),
                     "image_size": list(im.size), "png_bytes": len(buf.getvalue())}
    ex.close()
    return out


def noop_overhead(client: Client, calls: int = 100) -> dict:
    """The server's floor: the `checkpoints` endpoint (returns a short list, no image) through the queue."""
    for _ in range(10):
        client.call("checkpoints", [])
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        client.call("checkpoints", [])
        times.append(time.perf_counter() - t0)
    return stats_ms(times)


def expected_decode_size(checkpoints: Path, data_root: str | None, name: str) -> tuple[int, int]:
    """The decoded image's (width, height): the model's input size × IMAGES.scale_for(…, 192)."""
    from vae_explorer.data import IMAGES
    from vae_explorer.server.catalog import Catalog

    shape = Catalog(checkpoints, data_root).get(name).input_shape
    s = IMAGES.scale_for(shape, 192)
    return shape[2] * s, shape[1] * s


def print_table(rows: list[tuple], goal=(50.0, 100.0)) -> None:
    print(f"\n{'condition':<10} {'model':<12} {'n':>5} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'>100ms':>7} "
          f"{'POST':>6} {'SSE':>6} {'GET png':>8}  goal")
    for cond, name, r in rows:
        t = r["total"]
        if not t.get("n"):
            print(f"{cond:<10} {name:<12} no successful calls ({r['errors']} errors)")
            continue
        ok = t["p50"] <= goal[0] and t["p95"] <= goal[1] and r["errors"] == 0
        print(f"{cond:<10} {name:<12} {t['n']:>5} {t['p50']:>8.1f} {t['p95']:>8.1f} {t['max']:>8.1f} "
              f"{r['over_100ms']:>7} {r['post']['p50']:>6.1f} {r['sse_until_complete']['p50']:>6.1f} "
              f"{r['image_get']['p50']:>8.1f}  "
              f"{'met' if ok else 'MISSED'}")
    print("(POST / SSE / GET png: p50 of each phase of one call; training: a training runs in the server; "
          "train+tab: and train_status is polled every 0.5 s, as by an open Train tab)")



def finish(result: dict, out: str) -> None:
    """Write a benchmark's results (also after a failure) and stop every process it started."""
    result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    _run_cleanups()

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=300, help="timed decode calls per model and condition")
    p.add_argument("--warmup", type=int, default=20, help="untimed calls first")
    p.add_argument("--checkpoints", default=str(ROOT / "checkpoints"), help="checkpoints to copy (never written to)")
    p.add_argument("--data-root", default=DEFAULT_DATA_ROOT, help="where MNIST lives")
    p.add_argument("--mnist-checkpoint", default=None, help="use this MNIST VAE instead of training one")
    p.add_argument("--mnist-epochs", type=int, default=1, help="epochs for the MNIST VAE (0: no MNIST model)")
    p.add_argument("--models", default="digits_vae,mnist_vae", help="models whose sliders are timed")
    p.add_argument("--index", type=int, default=0, help="test image the sliders start from")
    p.add_argument("--train-model", default="vae")
    p.add_argument("--train-dataset", default="digits", help="dataset of the training that runs meanwhile")
    p.add_argument("--train-epochs", type=int, default=1000, help="enough to outlast the measurement")
    p.add_argument("--no-status-poll", action="store_true",
                   help="skip the second training condition, with train_status polled every 0.5 s (an open Train tab)")
    p.add_argument("--renice-training", type=int, default=0,
                   help="experiment: run the training worker at this niceness (e.g. 10) to see what it buys")
    p.add_argument("--out", default=str(RESULTS / "app_latency.json"))
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (server log, checkpoints)")
    args = p.parse_args(argv)
    install_signal_handlers()

    tmp = Path(tempfile.mkdtemp(prefix="vae-explorer-latency-"))
    if not args.keep:
        _CLEANUPS.insert(0, lambda: shutil.rmtree(tmp, ignore_errors=True))
    result = {"benchmark": "app_latency", "started": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine_info(),
              "settings": {k: v for k, v in vars(args).items() if k not in ("out", "keep")},
              "goal_ms": {"p50": 50, "p95": 100}}
    try:
        ckpt = tmp / "checkpoints"
        mnist = prepare_checkpoints(Path(args.checkpoints), ckpt, args.data_root, args.mnist_checkpoint,
                                    args.mnist_epochs)
        names = [n for n in args.models.split(",") if n and (n != "mnist_vae" or mnist)]
        sizes = {n: expected_decode_size(ckpt, args.data_root, n) for n in names}
        print("in-process handler and PNG timing...", flush=True)
        result["in_process"] = in_process_breakdown(ckpt, args.data_root, names)
        print("starting the app...", flush=True)
        with running_app(ckpt, args.data_root, log_path=tmp / "app.log") as server:
            result["server_startup_s"] = round(server.startup_s, 2)
            client = Client(server.url)
            ranges = {n: slider_ranges(client, n, args.index) for n in names}
            result["sliders"] = {n: len(r) for n, r in ranges.items()}
            result["noop_call_idle"] = noop_overhead(client)
            rows, runs = [], {}
            for n in names:
                print(f"idle: {args.calls} decodes of {n}...", flush=True)
                r = time_decodes(client, n, args.index, ranges[n], args.calls, sizes[n], warmup=args.warmup)
                runs[f"idle/{n}"] = r
                rows.append(("idle", n, r))
            result["load_during_idle"] = load_average()

            print(f"starting a training ({args.train_model} on {args.train_dataset}, {args.train_epochs} epochs)...",
                  flush=True)
            status = start_training(client, args.train_model, args.train_dataset, args.train_epochs,
                                    "bench_latency_run")
            result["training"] = {"model": args.train_model, "dataset": args.train_dataset,
                                  "epochs": args.train_epochs, "status_at_start": status}
            if args.renice_training:
                result["training"]["reniced_to"] = args.renice_training
                result["training"]["reniced_pids"] = renice_training(server, args.renice_training)
            result["noop_call_training"] = noop_overhead(client)
            conditions = [("training", False)] + ([] if args.no_status_poll else [("train+tab", True)])
            for cond, poll in conditions:
                poller = StatusPoller(server.url) if poll else None
                try:
                    for n in names:
                        print(f"{cond}: {args.calls} decodes of {n}...", flush=True)
                        r = time_decodes(client, n, args.index, ranges[n], args.calls, sizes[n], seed=1,
                                         warmup=args.warmup)
                        runs[f"{cond}/{n}"] = r
                        rows.append((cond, n, r))
                finally:
                    if poller:
                        poller.stop()
                        result["training"]["status_polling"] = poller.summary()
            status_end = train_state(client)
            result["training"]["status_at_end"] = status_end
            result["training"]["still_running_at_end"] = "status **running**" in status_end
            result["load_during_training"] = load_average()
            result["training"]["cancel"] = str(client.call("train_cancel", [])[0])
        result["runs"] = runs
        result["goal_met"] = all(r["total"].get("n") and r["total"]["p50"] <= 50 and r["total"]["p95"] <= 100
                                 and r["errors"] == 0 for r in runs.values())
        print_table(rows)
        ip = result["in_process"]
        print("\nin this process: " + "; ".join(
            f"{n} handler p50 {v['handler_decode_sliders']['p50']:.2f} ms, "
            f"PNG encode p50 {v['png_encode']['p50']:.2f} ms "
            f"({v['image_size'][0]}x{v['image_size'][1]}, {v['png_bytes']} B)" for n, v in ip.items()))
        print(f"no-op call through the queue: p50 {result['noop_call_idle']['p50']:.1f} ms idle, "
              f"{result['noop_call_training']['p50']:.1f} ms training")
        print(f"load average: {result['machine']['loadavg_1_5_15']} at start, {result['load_during_training']} "
              f"after the training runs ({os.cpu_count()} CPUs)")
        print("goal (p50 <= 50 ms, p95 <= 100 ms, no errors):", "met" if result["goal_met"] else "MISSED")
    finally:
        finish(result, args.out)
    return 0 if result.get("goal_met") else 1


if __name__ == "__main__":
    sys.exit(main())
