"""Soak test of the real app: 30 minutes of mixed traffic from 10 clients over every endpoint.

Starts `python app.py` over a temporary copy of the shipped checkpoints, with Gradio's file cache
in a temporary folder of its own (GRADIO_TEMP_DIR), then for --minutes:

- --clients threads, each a gradio_client `Client` (its own session, as a tab), call every named
  endpoint in turn in a random order, pausing about --pause seconds between calls as a person would, with arguments drawn from small sets so that the same call
  comes back often: each answer must equal the first answer to the same call (images compared by
  their pixels), a stale or swapped answer counts as an error;
- a share of the calls upload an image to reconstruct or denoise: random valid images (sizes,
  grey / RGB / RGBA, PNG / JPEG) must be answered, and invalid ones (random bytes named .png, a
  truncated PNG, an empty file) must be refused with a clear message, never an internal error;
- a controller starts a training through `train_start` every --train-every seconds and cancels it
  --train-for seconds later through `train_cancel`;
- a monitor records every --sample-every seconds the server's resident memory (its own and its
  process group's), the disk used by its temporary files (Gradio's cache folder, the training
  logs) and the process count.

At the end the server is stopped and no process of its group (training and UMAP workers
included) may be left. Goals: 0 errors; the server's resident memory grows by at most 50 MB from
the end of the warm-up (--warm-minutes) to the end; the temporary files stay under the cap the app
enforces (`--cache-cap-mb`, see `vae_explorer/server/cache.py`); no orphan process.

    python benchmarks/soak.py                       # 30 minutes, 10 clients
    python benchmarks/soak.py --minutes 3 --warm-minutes 1 --train-every 60 --train-for 30   # a short check

Writes benchmarks/results/soak.json and soak.md, and the curves (memory, disk, latency over time)
as benchmarks/results/soak.html (plotly, opens offline) and soak.png (that page in Chromium, when
Playwright's Chromium is installed).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import requests
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from app_latency import (  # noqa: E402
    _CLEANUPS,
    DEFAULT_DATA_ROOT,
    MAX_SLIDERS,
    RESULTS,
    ROOT,
    install_signal_handlers,
    load_average,
    machine_info,
    outlasting_dataset,
    prepare_checkpoints,
    running_app,
    stats_ms,
    train_args,
)
from reporting import cpu_name, write_report  # noqa: E402
from vae_explorer.server.answers import image_bytes  # noqa: E402  (app_latency put the repo on the path)

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # gradio_client would otherwise look up huggingface.co

PIXEL_TOLERANCE = 2  # grey levels between two answers to the same call (float noise across threads)
RSS_GROWTH_GOAL_MB = 50.0
# Endpoints the clients do not call: the controller drives the training ones, and `checkpoints`
# changes with every training the controller starts (it is called, but its answer is not compared).
CONTROLLER_ENDPOINTS = {"train_start", "train_cancel"}
VOLATILE = {"train_status", "checkpoints"}  # answers that change with the server's state


# ---- what each call sends ----------------------------------------------------------------------

def call_menu(rng_seed: int) -> dict[str, callable]:
    """Per endpoint, a function rng -> its arguments, drawn from small sets so that calls repeat."""
    images = ["digits_ae", "digits_vae", "digits_conv_vae", "digits_vq_vae", "digits_denoising_ae"]
    pairs = [("digits_ae", "digits_vae"), ("digits_conv_ae", "digits_conv_vae"), ("digits_vae", "digits_vq_vae")]
    idx = lambda r: r.randrange(8)  # noqa: E731
    return {
        "latent_map": lambda r: [*r.choice(pairs), r.choice(["auto", "pca"]), idx(r), "label"],
        "select_point": lambda r: [*r.choice(pairs), idx(r)],
        "manifold": lambda r: [*r.choice(pairs), r.choice([5, 9, 15])],
        "reconstruct": lambda r: [r.sample(images, r.randint(1, 3)), f"{idx(r)}, {idx(r)}", None, r.randrange(3)],
        "anomalies": lambda r: [r.choice(images + ["breast_cancer_tabular_vae"]), r.choice([90, 95, 99]),
                                "percentile"],
        "slider_setup": lambda r: [r.choice(images), idx(r)],
        # after a slider_setup of the same item in the session (see `Traffic.decode`): the sliders' share of
        # their range, which the session's setup sets
        "decode": lambda r: [r.choice(images[:4]), idx(r), r.choice([0.25, 0.5, 0.75])],
        "interpolate": lambda r: [*r.choice(pairs), idx(r), idx(r), None, None, r.choice(["linear", "spherical"]),
                                  r.choice([5, 10])],
        "interpolate_at": lambda r: [*r.choice(pairs), idx(r), idx(r), None, None, "linear",
                                     r.choice([0.0, 0.25, 0.5, 1.0])],
        "sample": lambda r: [r.choice(images), r.choice([0.5, 1.0]), r.randrange(4)],
        "denoise": lambda r: [r.sample(["digits_denoising_ae", "digits_ae", "digits_vae"], 2), idx(r), None,
                              r.choice(["gaussian", "salt_and_pepper", "masking"]), r.choice([0.3, 0.5]), r.randrange(3),
                              []],
        "latent_usage": lambda r: [r.choice(["digits_vae", "digits_conv_vae", "digits_beta_vae"])],
        "prior_fit": lambda r: list(r.choice(pairs)),
        "disentanglement": lambda r: ["sprites_beta_vae"],
        "linear_pca": lambda r: ["digits_linear_ae"],
        "codebook": lambda r: [r.choice(["digits_vq_vae", "digits_rvq_vae"]), 1, r.choice([None, 0, 3])],
        "model_card": lambda r: [r.choice(images + ["breast_cancer_tabular_ae", "sprites_beta_vae"])],
        "train_status": lambda r: [],
        "checkpoints": lambda r: [],
    }


def random_upload(rng: random.Random, folder: Path, n: int) -> tuple[Path, bool]:
    """A file to upload and whether the app must accept it: valid images of random size, mode and format,
    or invalid files (random bytes named .png, a truncated PNG, an empty file)."""
    kind = rng.choices(["image", "garbage", "truncated", "empty"], [6, 2, 1, 1])[0]
    path = folder / f"up_{n}_{kind}.{'jpg' if kind == 'image' and rng.random() < 0.3 else 'png'}"
    if kind == "image":
        w, h = rng.randint(8, 200), rng.randint(8, 200)
        mode = rng.choice(["L", "RGB", "RGBA"]) if path.suffix == ".png" else rng.choice(["L", "RGB"])
        channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
        pixels = np.random.default_rng(rng.randrange(2**32)).integers(0, 256, (h, w, channels), dtype=np.uint8)
        Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode).save(path)
        return path, True
    if kind == "garbage":
        path.write_bytes(rng.randbytes(rng.randint(1, 5000)))
    elif kind == "truncated":
        buf = io.BytesIO()
        Image.new("L", (64, 64), 128).save(buf, format="PNG")
        data = buf.getvalue()
        path.write_bytes(data[: rng.randint(10, data.index(b"IDAT") + 12)])  # cut inside the pixel data
    else:
        path.write_bytes(b"")
    return path, False


# ---- comparing answers ----------------------------------------------------------------------------

def _file_path(value) -> str | None:
    """The local path gradio_client gives for a file output (download_files=False: a dict with a path or url)."""
    if isinstance(value, dict):
        if isinstance(value.get("value"), dict):  # an update: {"value": {...file...}, "visible": ...}
            return _file_path(value["value"])
        return value.get("url") or value.get("path")
    return None


class Answers:
    """The first answer to each call; later answers to the same call must equal it."""

    def __init__(self):
        self.first: dict[str, list] = {}
        self.lock = threading.Lock()

    @staticmethod
    def normalise(outputs, fetch) -> list:
        out = []
        for value in outputs if isinstance(outputs, (list, tuple)) else [outputs]:
            url = _file_path(value)
            if url and str(url).startswith("data:image/"):  # the app's answer images travel inline
                out.append(np.asarray(Image.open(io.BytesIO(image_bytes({"url": url})))))
            elif url and str(url).split("?")[0].lower().endswith((".png", ".jpg", ".jpeg", ".webp")):
                out.append(np.asarray(Image.open(io.BytesIO(fetch(url)))))
            elif isinstance(value, dict) and "plot" in value:
                out.append(json.loads(value["plot"]) if isinstance(value["plot"], str) else value["plot"])
            else:
                out.append(json.dumps(value, sort_keys=True, default=str))
        return out

    def check(self, key: str, answer: list) -> None:
        with self.lock:
            first = self.first.setdefault(key, answer)
        if first is answer:
            return
        if len(first) != len(answer):
            raise AssertionError(f"{len(answer)} outputs, the first answer had {len(first)}")
        for i, (a, b) in enumerate(zip(first, answer)):
            if isinstance(a, np.ndarray):
                if not isinstance(b, np.ndarray) or a.shape != b.shape:
                    raise AssertionError(f"output {i}: an image of another shape than the first answer's")
                diff = np.abs(a.astype(np.int16) - b.astype(np.int16)).max() if a.size else 0
                if diff > PIXEL_TOLERANCE:
                    raise AssertionError(f"output {i}: pixels differ by up to {diff} from the first answer's")
            elif a != b:
                raise AssertionError(f"output {i} differs from the first answer: {str(b)[:120]!r}")


# ---- the traffic ---------------------------------------------------------------------------------

def internal_error(message: str) -> bool:
    """An answer that leaks the server's internals instead of saying what is wrong with the input."""
    lowered = message.lower()
    return any(s in lowered for s in ("traceback", "exception", "object at 0x", "original error",
                                      "unexpected error", "internal server error"))


class Traffic:
    def __init__(self, url: str, session_files: Path, seed: int, deadline: float, upload_share: float,
                 pause_s: float):
        self.url, self.files, self.seed, self.deadline = url, session_files, seed, deadline
        self.upload_share, self.pause_s = upload_share, pause_s
        self.records: list[dict] = []
        self.fetch_retries = 0  # image GETs sent again after a closed kept-alive connection
        self.answers = Answers()
        self.lock = threading.Lock()

    def record(self, **rec) -> None:
        with self.lock:
            self.records.append(rec)

    def client(self, k: int) -> None:
        from gradio_client import Client, handle_file

        rng = random.Random(self.seed * 1000 + k)
        menu = call_menu(self.seed)
        client = Client(self.url, verbose=False, download_files=False)
        fetch_session = requests.Session()
        fetch_session.trust_env = False

        def fetch(url):
            if not str(url).startswith("http"):
                url = f"{self.url}/gradio_api/file={url}"
            for attempt in range(3):
                try:
                    r = fetch_session.get(url, timeout=300)  # as patient as a browser with an image
                    break
                except requests.ConnectionError:
                    # A kept-alive connection the server closed as this GET went out (uvicorn closes idle
                    # ones after 5 s): a browser sends the GET again on a new connection, and so does this.
                    if attempt == 2:
                        raise
                    with self.lock:
                        self.fetch_retries += 1
            r.raise_for_status()
            return r.content

        n = 0
        while time.time() < self.deadline:
            names = list(menu)
            rng.shuffle(names)
            for api in names:
                if time.time() >= self.deadline:
                    break
                n += 1
                upload = None
                if api in ("reconstruct", "denoise") and rng.random() < self.upload_share:
                    upload = random_upload(rng, self.files, k * 1_000_000 + n)
                args = menu[api](rng)
                if upload:
                    args[2] = handle_file(str(upload[0]))
                t0 = time.time()
                rec = {"client": k, "api": api, "t": t0, "upload": None if not upload else
                       ("valid" if upload[1] else "invalid")}
                try:
                    if api == "decode":
                        args = self.slider_values(client, *args)
                    out = client.predict(*args, api_name=f"/{api}")
                    rec["seconds"] = time.time() - t0
                    if upload and not upload[1]:
                        raise AssertionError(f"an invalid upload ({upload[0].name}) was accepted")
                    if api not in VOLATILE and not upload:
                        key = json.dumps([api, args], default=str)
                        self.answers.check(key, Answers.normalise(out, fetch))
                    rec["ok"] = True
                except Exception as e:  # noqa: BLE001 - every failure is counted and reported
                    rec.setdefault("seconds", time.time() - t0)
                    message = str(e)
                    refused = type(e).__name__ == "AppError"
                    # An invalid upload must be refused with a message that says what is wrong with it.
                    rec["ok"] = bool(upload and not upload[1] and refused and message and not internal_error(message))
                    if not rec["ok"]:
                        rec["error"] = f"{api}: {type(e).__name__}: {message}"[:400]
                    else:
                        rec["refusal"] = message[:200]
                finally:
                    if upload:
                        upload[0].unlink(missing_ok=True)
                self.record(**rec)
                time.sleep(rng.uniform(0.5, 1.5) * self.pause_s)  # a person looks at the answer first


    @staticmethod
    def slider_values(client, name: str, index: int, share: float) -> list:
        """A decode's arguments, as a tab sends them: the session's slider setup for the item first (the
        server checks each value against the ranges that setup gave), then each slider at `share` of its range."""
        setup = client.predict(name, index, api_name="/slider_setup")
        values = []
        for update in setup[:MAX_SLIDERS]:
            if isinstance(update, dict) and update.get("visible", True) and "minimum" in update:
                lo, hi = update["minimum"], update["maximum"]
                values.append(round(lo + share * (hi - lo), 3))
            else:
                values.append(0)
        return [name, index, *values]


class Controller:
    """Starts a training every `every` s and cancels it `run_for` s later, through the app's endpoints."""

    def __init__(self, url: str, deadline: float, every: float, run_for: float, dataset: str = "digits"):
        self.url, self.deadline, self.every, self.run_for = url, deadline, every, run_for
        self.dataset = dataset  # outlasting_dataset: 1,000 digits epochs can end before the cancel comes
        self.events: list[dict] = []
        self.errors: list[str] = []

    def run(self) -> None:
        from gradio_client import Client

        client = Client(self.url, verbose=False, download_files=False)
        n = 0
        next_start = time.time() + min(30.0, self.every / 2)
        while next_start + self.run_for < self.deadline:  # a run that would outlast the traffic is not started
            time.sleep(max(0.0, next_start - time.time()))
            n += 1
            try:
                client.predict(*train_args("vae", self.dataset, 1000, f"soak_run_{n}"), api_name="/train_start")
                started = str(client.predict(api_name="/train_status")[0])
                self.events.append({"t": time.time(), "event": "start", "status": started[:200]})
                time.sleep(self.run_for)
                client.predict(api_name="/train_cancel")
                for _ in range(60):  # the worker stops at its next step
                    status = str(client.predict(api_name="/train_status")[0])
                    if "status **running**" not in status:
                        break
                    time.sleep(0.5)
                self.events.append({"t": time.time(), "event": "cancel", "status": status[:200]})
                if "cancelled" not in status:
                    self.errors.append(f"run {n} did not end as cancelled: {status[:200]}")
            except Exception as e:  # noqa: BLE001
                self.errors.append(f"run {n}: {type(e).__name__}: {e}"[:300])
            next_start += self.every


# ---- the server's resources ------------------------------------------------------------------------

def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def group_pids(pgid: int) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if os.getpgid(int(d.name)) == pgid:
                    pids.append(int(d.name))
            except (ProcessLookupError, PermissionError):
                continue
    return pids


def folder_mb(path: Path) -> tuple[float, int]:
    total, count = 0, 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
                count += 1
            except OSError:
                continue
    return total / 2**20, count


class Monitor:
    def __init__(self, pid: int, cache: Path, checkpoints: Path, every: float):
        self.pid, self.cache, self.checkpoints, self.every = pid, cache, checkpoints, every
        self.samples: list[dict] = []
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop_flag.is_set():
            pids = group_pids(self.pid)
            cache_mb, cache_files = folder_mb(self.cache)
            self.samples.append({"t": time.time(), "server_rss_mb": round(_rss_mb(self.pid), 1),
                                 "group_rss_mb": round(sum(_rss_mb(p) for p in pids), 1), "processes": len(pids),
                                 "cache_mb": round(cache_mb, 2), "cache_files": cache_files,
                                 "checkpoints_mb": round(folder_mb(self.checkpoints)[0], 2),
                                 "load": load_average()[0]})
            self.stop_flag.wait(self.every)

    def stop(self) -> None:
        self.stop_flag.set()
        self.thread.join(10)


# ---- the report ---------------------------------------------------------------------------------------

def windows(records: list[dict], start: float, width: float) -> list[dict]:
    """Per `width`-second window: calls, errors, p50/p95 latency."""
    by = defaultdict(list)
    for r in records:
        by[int((r["t"] - start) // width)].append(r)
    out = []
    for w in sorted(by):
        rs = by[w]
        s = stats_ms([r["seconds"] for r in rs if r["ok"]])
        out.append({"minute": round((w + 0.5) * width / 60, 2), "calls": len(rs),
                    "errors": sum(not r["ok"] for r in rs), "p50_ms": s.get("p50"), "p95_ms": s.get("p95")})
    return out


def plot(result: dict, html: Path, png: Path) -> str:
    """The curves as an offline plotly page, and its screenshot in Chromium when Playwright has one."""
    from plotly.subplots import make_subplots

    start = result["started_at"]
    s = result["samples"]
    minutes = [(x["t"] - start) / 60 for x in s]
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.07,
                        subplot_titles=("resident memory (MB)", "temporary files (MB)",
                                        "latency per minute (ms)"))
    fig.add_scatter(x=minutes, y=[x["server_rss_mb"] for x in s], name="server", row=1, col=1)
    fig.add_scatter(x=minutes, y=[x["group_rss_mb"] for x in s], name="server + workers", row=1, col=1)
    fig.add_scatter(x=minutes, y=[x["cache_mb"] for x in s], name="Gradio's cache", row=2, col=1)
    fig.add_hline(y=result["settings"]["cache_cap_mb"], line_dash="dot", row=2, col=1,
                  annotation_text="cap")
    w = result["windows"]
    fig.add_scatter(x=[x["minute"] for x in w], y=[x["p50_ms"] for x in w], name="p50", row=3, col=1)
    fig.add_scatter(x=[x["minute"] for x in w], y=[x["p95_ms"] for x in w], name="p95", row=3, col=1)
    for e in result["training_events"]:
        fig.add_vline(x=(e["t"] - start) / 60, line_dash="dot", line_color="green" if e["event"] == "start"
                      else "red", opacity=0.4)
    fig.update_xaxes(title_text="minutes (green: training started, red: cancelled)", row=3, col=1)
    fig.update_layout(height=900, width=1000, title=f"vae-explorer soak: {result['settings']['clients']} clients, "
                                                     f"{result['settings']['minutes']} min")
    fig.write_html(html, include_plotlyjs=True)
    try:
        from playwright.sync_api import sync_playwright

        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, headless=True)
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            page.goto(html.resolve().as_uri())
            page.wait_for_selector(".js-plotly-plot")
            page.screenshot(path=str(png))
            browser.close()
        return str(png)
    except Exception as e:  # noqa: BLE001 - the HTML is the plot; the PNG is a convenience
        return f"no PNG ({type(e).__name__}: {e})"[:200]


def markdown(result: dict) -> str:
    g, st = result["goals"], result["settings"]
    lines = [f"# Soak: {st['clients']} clients for {st['minutes']} minutes",
             "", f"{result['machine']['cpu']} ({result['machine']['cpus']} CPUs); "
             f"`python benchmarks/soak.py {result['argv']}`", "",
             "| goal | measured | met |", "| --- | --- | --- |",
             f"| 0 errors | {result['errors']} errors in {result['calls']} calls "
             f"({result['uploads']['valid']} valid uploads answered, {result['uploads']['invalid']} invalid "
             f"refused), {len(result['training_errors'])} training-control errors; "
             f"{result['image_fetch_retries']} image GETs sent again on a new connection | {g['no_errors']} |",
             f"| server memory grows ≤ {RSS_GROWTH_GOAL_MB:.0f} MB after warm-up | "
             f"{result['rss']['after_warmup_mb']} → {result['rss']['end_mb']} MB "
             f"({result['rss']['growth_mb']:+.1f} MB; peak {result['rss']['peak_mb']} MB) | {g['memory']} |",
             f"| temporary files under the cap ({st['cache_cap_mb']} MB) | peak {result['cache']['peak_mb']} MB, "
             f"{result['cache']['peak_files']} files | {g['disk']} |",
             f"| no orphan processes | {len(result['orphans'])} left | {g['no_orphans']} |", "",
             f"Throughput {result['calls_per_s']} calls/s; latency p50 {result['latency_ms']['p50']} ms, "
             f"p95 {result['latency_ms']['p95']} ms over the run; first minute p95 "
             f"{result['windows'][0]['p95_ms']} ms, last {result['windows'][-1]['p95_ms']} ms. "
             f"{len(result['training_events']) // 2} trainings started and cancelled.", "",
             "| endpoint | calls | p50 ms | p95 ms |", "| --- | ---: | ---: | ---: |"]
    for api, s in sorted(result["per_endpoint_ms"].items()):
        lines.append(f"| {api} | {s['n']} | {s['p50']} | {s['p95']} |")
    if result["error_examples"]:
        lines += ["", "Errors:", *[f"- {e}" for e in result["error_examples"]]]
    lines += ["", f"Curves: `benchmarks/results/soak.html` ({result['png']}).", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--warm-minutes", type=float, default=5.0, help="memory growth is measured from here")
    p.add_argument("--train-every", type=float, default=180.0, help="seconds between training starts")
    p.add_argument("--train-for", type=float, default=60.0, help="seconds each training runs before its cancel")
    p.add_argument("--upload-share", type=float, default=0.3, help="share of reconstruct/denoise calls uploading")
    p.add_argument("--pause", type=float, default=1.0,
                   help="mean seconds each client waits between calls (0: back to back)")
    p.add_argument("--sample-every", type=float, default=5.0)
    p.add_argument("--cache-cap-mb", type=float, default=2.0, help="the app's --cache-cap-mb during the soak: small, so that the cap is reached")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-root", default=DEFAULT_DATA_ROOT)
    p.add_argument("--out", default=str(RESULTS / "soak.json"))
    args = p.parse_args(argv)
    install_signal_handlers()

    tmp = Path(tempfile.mkdtemp(prefix="vae-explorer-soak-"))
    _CLEANUPS.insert(0, lambda: shutil.rmtree(tmp, ignore_errors=True))
    ckpt, cache, uploads = tmp / "checkpoints", tmp / "gradio_cache", tmp / "uploads"
    cache.mkdir()
    uploads.mkdir()
    prepare_checkpoints(ROOT / "checkpoints", ckpt, args.data_root, None, 0)
    os.environ["GRADIO_TEMP_DIR"] = str(cache)  # the app's file cache, measured on its own
    result = {"benchmark": "soak", "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "machine": {**machine_info(), "cpu": cpu_name()},
              "argv": " ".join(sys.argv[1:] if argv is None else argv),
              "settings": {k: v for k, v in vars(args).items() if k != "out"}}
    print(f"starting the app (cache {cache}, cap {args.cache_cap_mb} MB)...", flush=True)
    with running_app(ckpt, args.data_root, log_path=tmp / "app.log",
                     extra_args=("--cache-cap-mb", str(args.cache_cap_mb))) as server:
        pgid = server.proc.pid
        start = time.time()
        deadline = start + args.minutes * 60
        result["started_at"] = start
        monitor = Monitor(server.proc.pid, cache, ckpt, args.sample_every)
        traffic = Traffic(server.url, uploads, args.seed, deadline, args.upload_share, args.pause)
        controller = Controller(server.url, deadline, args.train_every, args.train_for,
                                outlasting_dataset(args.data_root))
        threads = [threading.Thread(target=traffic.client, args=(k,), daemon=True) for k in range(args.clients)]
        threads.append(threading.Thread(target=controller.run, daemon=True))
        for t in threads:
            t.start()
        reported = 0
        while any(t.is_alive() for t in threads):
            time.sleep(30)
            done = list(traffic.records)
            for r in [r for r in done if not r["ok"]][reported:]:
                print("  error:", r["error"], flush=True)
            reported = sum(not r["ok"] for r in done)
            print(f"{(time.time() - start) / 60:5.1f} min: {len(done)} calls, "
                  f"{sum(not r['ok'] for r in done)} errors; server {monitor.samples[-1]['server_rss_mb']} MB, "
                  f"cache {monitor.samples[-1]['cache_mb']} MB", flush=True)
        for t in threads:
            t.join()
        monitor.stop()
        covered = set(call_menu(0)) | CONTROLLER_ENDPOINTS
        from gradio_client import Client

        named = set(Client(server.url, verbose=False, download_files=False).view_api(
            print_info=False, return_format="dict")["named_endpoints"])
        result["endpoints_not_called"] = sorted(e.lstrip("/") for e in named if e.lstrip("/") not in covered)
        log_tail = server.log_tail(400)
    time.sleep(2)
    orphans = group_pids(pgid)
    for d in Path("/proc").iterdir():  # anything else still holding the temporary folder
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                if str(tmp) in (d / "cmdline").read_bytes().decode(errors="replace"):
                    orphans.append(int(d.name))
            except OSError:
                continue
    records, samples = traffic.records, monitor.samples
    warm_t = start + args.warm_minutes * 60
    after_warm = [s["server_rss_mb"] for s in samples if warm_t <= s["t"] < warm_t + 60]
    last = [s["server_rss_mb"] for s in samples if s["t"] >= deadline - 60]
    errors = [r for r in records if not r["ok"]]
    result.update({
        "calls": len(records), "errors": len(errors),
        "errors_by_endpoint": dict(Counter(r["api"] for r in errors)),
        "error_examples": sorted({r["error"] for r in errors})[:10],
        "uploads": {"valid": sum(r["upload"] == "valid" and r["ok"] for r in records),
                    "invalid": sum(r["upload"] == "invalid" and r["ok"] for r in records),
                    "refusals": sorted({r["refusal"] for r in records if "refusal" in r})[:8]},
        "calls_per_s": round(len(records) / (args.minutes * 60), 2),
        "latency_ms": stats_ms([r["seconds"] for r in records if r["ok"]]),
        "per_endpoint_ms": {api: stats_ms([r["seconds"] for r in records if r["api"] == api and r["ok"]])
                            for api in sorted({r["api"] for r in records})},
        "windows": windows(records, start, 60.0),
        "samples": samples,
        "rss": {"after_warmup_mb": round(statistics.median(after_warm), 1) if after_warm else None,
                "end_mb": round(statistics.median(last), 1) if last else None,
                "peak_mb": max(s["server_rss_mb"] for s in samples)},
        "cache": {"peak_mb": max(s["cache_mb"] for s in samples), "peak_files": max(s["cache_files"] for s in samples),
                  "end_mb": samples[-1]["cache_mb"]},
        "image_fetch_retries": traffic.fetch_retries,
        "training_events": controller.events, "training_errors": controller.errors,
        "orphans": sorted(set(orphans)),
        "server_log_errors": [line for line in log_tail.splitlines() if "Traceback" in line or "ERROR" in line][:10],
    })
    rss = result["rss"]
    rss["growth_mb"] = round(rss["end_mb"] - rss["after_warmup_mb"], 1) if after_warm and last else float("nan")
    result["goals"] = {"no_errors": result["errors"] == 0 and not controller.errors,
                       "memory": rss["growth_mb"] <= RSS_GROWTH_GOAL_MB,
                       "disk": result["cache"]["peak_mb"] <= args.cache_cap_mb,
                       "no_orphans": not result["orphans"]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    result["png"] = plot(result, Path(args.out).with_suffix(".html"), Path(args.out).with_suffix(".png"))
    write_report(markdown(result), result, Path(args.out).with_suffix(".md"))
    return 0 if all(result["goals"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
