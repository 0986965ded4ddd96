"""Draw to encode: a stroke's drawing -> both map models' points, ellipses and pictures, round trip of the real app.

Starts `python app.py` over a temporary copy of the checkpoints and times, for each pair of map models, N
drawings (280×280 PNG data URLs of random strokes, dark ink on white, as the sketchpad sends them) the way
the page sends them: one POST to the sketchpad's server function `draw_encode` (/gradio_api/component_server/,
no queue), whose answer is everything the page needs to update both maps (it then draws a small SVG overlay,
no figure is re-sent). For comparison, the same through the queued API endpoint /draw_encode (POST + SSE).
With the server idle, and while a training started through `train_start` runs. With --browser, also in
headless Chromium: strokes drawn with the mouse on the sketchpad, timed in the page from the stroke's end to
both maps' marks redrawn with the whole stroke.

    python benchmarks/draw_encode.py                 # 200 drawings per pair and condition
    python benchmarks/draw_encode.py --calls 100 --browser 30

Goal: p95 <= 200 ms from a stroke's end to both maps updated, idle and while training. Writes
benchmarks/results/draw_encode.json and .md.
"""
from __future__ import annotations

import argparse
import base64
import io
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from app_latency import (CallError, Client, install_signal_handlers, load_average, machine_info,  # noqa: E402
                         running_app, stats_ms, train_args, train_state, _run_cleanups, _CLEANUPS)
from reporting import cpu_name, write_report  # noqa: E402

GOAL_P95_MS = 200.0
PAIRS = ("digits_ae+digits_vae", "digits_conv_ae+digits_conv_vae")  # the default map (raw 2-D); a PCA map


def drawing(rng: random.Random, side: int = 280) -> str:
    """A random stroke of 2-5 segments, 16-44 px wide, as the sketchpad's PNG data URL."""
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (side, side), "white")
    points = [(rng.uniform(30, side - 30), rng.uniform(30, side - 30)) for _ in range(rng.randint(3, 6))]
    ImageDraw.Draw(im).line(points, fill="black", width=rng.randint(16, 44), joint="curve")
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


class PadCaller:
    """The page's call: POST /gradio_api/component_server/ to the sketchpad's `draw_encode`, one keep-alive
    connection, one session, as a tab."""

    def __init__(self, url: str):
        self.url = url
        self.session = requests.Session()
        self.session.trust_env = False
        config = self.session.get(f"{url}/config", timeout=60).json()
        self.component = next(c["id"] for c in config["components"]
                              if c.get("props", {}).get("elem_id") == "draw_pad")

    def encode(self, left: str, right: str, picture: str) -> dict:
        body = {"session_hash": "drawbench", "component_id": self.component, "fn_name": "draw_encode",
                "data": {"left": left, "right": right, "projection": "auto", "drawing": picture}}
        r = self.session.post(f"{self.url}/gradio_api/component_server/", json=body, timeout=60)
        if r.status_code != 200:
            raise CallError(f"draw_encode: HTTP {r.status_code} {r.text[:200]}")
        return r.json()


def check(answer: dict, left: str, right: str) -> None:
    """Both maps answered: a point for each model, pictures, and an ellipse for a model with a posterior."""
    maps = answer.get("maps") if isinstance(answer, dict) else None
    if not maps or len(maps) != 2 or any("error" in m or "x" not in m for m in maps):
        raise CallError(f"not an answer for both maps: {str(answer)[:300]}")
    if [m["model"] for m in maps] != [left, right] or not all(m["reconstruction"].startswith("data:image/png")
                                                              for m in maps):
        raise CallError(f"unexpected answer: {str(answer)[:300]}")


def time_pad(caller: PadCaller, pair: str, drawings: list[str], warmup: int = 10) -> dict:
    left, right = pair.split("+")
    for d in drawings[:warmup]:
        check(caller.encode(left, right, d), left, right)
    seconds, errors = [], []
    for d in drawings:
        t0 = time.perf_counter()
        try:
            check(caller.encode(left, right, d), left, right)
        except Exception as e:
            errors.append(f"{type(e).__name__}: {e}")
            continue
        seconds.append(time.perf_counter() - t0)
    return {"total": stats_ms(seconds), "errors": len(errors), "error_examples": errors[:3]}


def time_api(client: Client, pair: str, drawings: list[str], warmup: int = 5) -> dict:
    left, right = pair.split("+")
    for d in drawings[:warmup]:
        check(client.call("draw_encode", [left, right, "auto", d])[0], left, right)
    seconds, errors = [], []
    for d in drawings:
        t0 = time.perf_counter()
        try:
            check(client.call("draw_encode", [left, right, "auto", d])[0], left, right)
        except Exception as e:
            errors.append(f"{type(e).__name__}: {e}")
            continue
        seconds.append(time.perf_counter() - t0)
    return {"total": stats_ms(seconds), "errors": len(errors), "error_examples": errors[:3]}


def time_browser(url: str, strokes: int, seed: int = 0) -> dict:
    """Strokes drawn with the mouse on the sketchpad (default map: digits_ae + digits_vae), each timed in the
    page from its pointerup to both maps' marks redrawn from an answer that includes it (sketchpad.js's
    state.strokeMs). Every stroke's pointer moves (20 per stroke) send too while no request is out."""
    from playwright.sync_api import sync_playwright

    chromium = "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else shutil.which("chromium")
    rng = random.Random(seed)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(120_000)
        page.goto(url)
        page.wait_for_function("() => { const gd = document.querySelector('#map_right .js-plotly-plot');"
                               " return gd && gd._fullLayout && window.vaeSketch && window.vaeSketch.state; }")
        pad = page.locator("#draw_pad canvas.vae-pad")
        pad.scroll_into_view_if_needed()
        box = pad.bounding_box()
        for k in range(strokes + 3):  # 3 untimed first (decoders and pages warm up)
            if k % 4 == 0:
                page.locator("#draw_pad .vae-clear").click()
            x0, y0 = box["x"] + rng.uniform(30, 250), box["y"] + rng.uniform(30, 250)
            x1, y1 = box["x"] + rng.uniform(30, 250), box["y"] + rng.uniform(30, 250)
            page.mouse.move(x0, y0)
            page.mouse.down()
            for i in range(1, 21):
                page.mouse.move(x0 + (x1 - x0) * i / 20, y0 + (y1 - y0) * i / 20)
            page.mouse.up()
            page.wait_for_function(f"() => window.vaeSketch.state.strokeMs.length >= {k + 1}")
            page.wait_for_timeout(rng.uniform(150, 400))  # a person lifts the pen and starts the next stroke
        ms = page.evaluate("() => window.vaeSketch.state.strokeMs")[3:]
        requests_ms = page.evaluate("() => window.vaeSketch.state.msHistory")
        browser.close()
    return {"stroke_end_to_both_maps": stats_ms([m / 1000 for m in ms]),
            "each_request": stats_ms([m / 1000 for m in requests_ms])}


def start_training(client: Client, model: str, dataset: str, epochs: int, name: str, timeout: float = 180.0) -> str:
    """app_latency's training start with the Train tab's three table inputs added (file, label column, ignored
    columns: none for an image dataset), then waiting until it takes steps."""
    client.call("train_start", [*train_args(model, dataset, epochs, name), None, None, None])
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = train_state(client)
        if "status **running**" in status and "epoch " in status:
            return status
        if any(f"status **{s}**" in status for s in ("failed", "finished", "cancelled")):
            raise RuntimeError(f"the training did not run: {status}")
        time.sleep(0.5)
    raise RuntimeError(f"the training did not start within {timeout:.0f} s")


def markdown(result: dict) -> str:
    s = result["settings"]
    lines = [f"# Draw to encode: a stroke -> both maps updated ({cpu_name()})", "",
             f"`python benchmarks/draw_encode.py --calls {s['calls']}"
             + (f" --browser {s['browser']}" if s["browser"] else "") + "`: "
             f"{s['calls']} drawings (280×280 PNG, random strokes) per pair of map models and condition. "
             "**page call**: the sketchpad's server function (one POST, no queue), the page's own path; its "
             "answer is both maps' points, ellipses and pictures (the page then draws a small SVG overlay). "
             "**API**: the queued /draw_encode endpoint (POST + SSE), for comparison. Training: a "
             f"{result.get('training', {}).get('model', '?')} on {result.get('training', {}).get('dataset', '?')} "
             "runs in the server meanwhile.", "",
             f"Goal: p95 ≤ {GOAL_P95_MS:.0f} ms. Load average (1/5/15 min) at start {result['machine']['loadavg_1_5_15']}, "
             f"idle runs {result.get('load_during_idle')}, training runs {result.get('load_during_training')}, "
             f"{result['machine']['cpus']} CPUs: the machine is shared, so these are indications.", "",
             "| condition | map models | path | n | p50 ms | p95 ms | max ms | errors | goal |", "|---|---|---|---|---|---|---|---|---|"]
    for key, r in result["runs"].items():
        cond, pair, path = key.split("/")
        t = r["total"]
        met = t.get("n") and t["p95"] <= GOAL_P95_MS and not r["errors"]
        lines.append(f"| {cond} | {pair.replace('+', ' + ')} | {path} | {t.get('n', 0)} | {t.get('p50', '-')} | "
                     f"{t.get('p95', '-')} | {t.get('max', '-')} | {r['errors']} | {'met' if met else 'missed'} |")
    for cond, b in result.get("browser", {}).items():
        t = b["stroke_end_to_both_maps"]
        lines.append(f"| {cond} | digits_ae + digits_vae | Chromium: stroke end → both maps redrawn | {t.get('n', 0)} | "
                     f"{t.get('p50', '-')} | {t.get('p95', '-')} | {t.get('max', '-')} | 0 | "
                     f"{'met' if t.get('n') and t['p95'] <= GOAL_P95_MS else 'missed'} |")
    lines += ["", f"Goal met everywhere: **{'yes' if result.get('goal_met') else 'no'}**.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=200, help="timed drawings per pair of models and condition")
    p.add_argument("--api-calls", type=int, default=50, help="timed drawings through the queued API endpoint")
    p.add_argument("--browser", type=int, default=0, help="also draw this many strokes in Chromium per condition")
    p.add_argument("--pairs", default=",".join(PAIRS), help="map model pairs, left+right, comma-separated")
    p.add_argument("--checkpoints", default=str(ROOT / "checkpoints"), help="checkpoints to copy (never written to)")
    p.add_argument("--train-model", default="vae")
    p.add_argument("--train-dataset", default="digits")
    p.add_argument("--train-epochs", type=int, default=1000, help="enough to outlast the measurement")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "draw_encode.md"))
    args = p.parse_args(argv)
    install_signal_handlers()
    tmp = Path(tempfile.mkdtemp(prefix="vae-explorer-draw-"))
    _CLEANUPS.insert(0, lambda: shutil.rmtree(tmp, ignore_errors=True))
    pairs = [x for x in args.pairs.split(",") if x]
    rng = random.Random(0)
    drawings = [drawing(rng) for _ in range(args.calls)]
    result = {"benchmark": "draw_encode", "started": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine_info(),
              "settings": {"calls": args.calls, "api_calls": args.api_calls, "browser": args.browser, "pairs": pairs},
              "goal_p95_ms": GOAL_P95_MS, "runs": {}}
    try:
        ckpt = tmp / "checkpoints"
        shutil.copytree(args.checkpoints, ckpt)
        with running_app(ckpt, None, log_path=tmp / "app.log") as server:
            caller, client = PadCaller(server.url), Client(server.url)

            def measure(cond: str) -> None:
                for pair in pairs:
                    print(f"{cond}: {args.calls} drawings, {pair}, page call...", flush=True)
                    result["runs"][f"{cond}/{pair}/page call"] = time_pad(caller, pair, drawings)
                    if args.api_calls:
                        print(f"{cond}: {args.api_calls} drawings, {pair}, API...", flush=True)
                        result["runs"][f"{cond}/{pair}/API"] = time_api(client, pair, drawings[:args.api_calls])
                if args.browser:
                    print(f"{cond}: {args.browser} strokes in Chromium...", flush=True)
                    result.setdefault("browser", {})[cond] = time_browser(server.url, args.browser)

            measure("idle")
            result["load_during_idle"] = load_average()
            print(f"starting a training ({args.train_model} on {args.train_dataset})...", flush=True)
            status = start_training(client, args.train_model, args.train_dataset, args.train_epochs, "bench_draw_run")
            result["training"] = {"model": args.train_model, "dataset": args.train_dataset, "status_at_start": status}
            measure("training")
            result["load_during_training"] = load_average()
            result["training"]["still_running_at_end"] = "status **running**" in train_state(client)
            client.call("train_cancel", [])
        runs = [r["total"] for key, r in result["runs"].items() if key.endswith("page call")]
        runs += [b["stroke_end_to_both_maps"] for b in result.get("browser", {}).values()]
        result["goal_met"] = all(t.get("n") and t["p95"] <= GOAL_P95_MS for t in runs) and \
            not any(r["errors"] for r in result["runs"].values())
        result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        write_report(markdown(result), result, Path(args.out))
    finally:
        _run_cleanups()
    return 0 if result.get("goal_met") else 1


if __name__ == "__main__":
    sys.exit(main())
