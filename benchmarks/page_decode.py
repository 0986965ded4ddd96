"""Decoding in the page: frame times of a latent-slider drag in headless Chromium, and decode-only times
of bigger decoders than the shipped digits models.

Serves the real app over a temporary copy of checkpoints/ and, for each model, drags slider z[0] (or
PC 1) with the mouse from end to end in --moves moves, --rounds times; then drags the latent map's marker
(a raw 2-D map and a PCA map) from empty space to the plot's centre and back the same way. Per input event it takes the time
from the event (its timeStamp) to the end of the canvas draw that decoder.js stamps with
performance.now(); it also counts the requests the page sends meanwhile (the 3-s checkpoint-list poll
apart), and to the next animation frame after the draw (when the screen can show it). Then it writes MNIST- and CIFAR-shaped decoders (random weights: the time does not depend on
them) to the app's page-decoder folder and times `vaePage.forward` alone on them in the page.

    python benchmarks/page_decode.py                  # about 2 minutes here
    python benchmarks/page_decode.py --rounds 1 --moves 60

Goal: p95 of input event -> frame drawn <= 16 ms, zero requests during a drag. Writes
benchmarks/results/page_decode.md and .json.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from reporting import cpu_name, write_report  # noqa: E402
from tests.test_browser_map import JS_EMPTY_SPOT  # noqa: E402  (the browser tests' own search for empty space)

MODELS = ("digits_vae", "digits_conv_vae", "digits_vq_vae", "digits_sparse_ae")
MARKER_MODELS = ("digits_ae", "digits_conv_vae")  # the map's marker: a raw 2-D plane, a PCA plane of 8-D codes
BIGGER = {  # name -> registry model and its settings: the decoders of MNIST and CIFAR-10 runs
    "MNIST vae (20→400→784)": ("vae", {"input_shape": (1, 28, 28), "hidden": (400,), "latent_dim": 20}),
    "MNIST conv_vae (16-D, 32/64 channels)": ("conv_vae", {"input_shape": (1, 28, 28), "latent_dim": 16}),
    "CIFAR-10 conv_vae (64-D, 32/64 channels)": ("conv_vae", {"input_shape": (3, 32, 32), "latent_dim": 64}),
}

RECORD = """sel => { const el = document.querySelector(sel); window.__inputs = [];
    if (!el.__recorded) el.addEventListener('input', e => window.__inputs.push(e.timeStamp), true);
    el.__recorded = true; }"""
TIMER_FNS = """() => window.gradio_config.dependencies.filter(d => d.targets.length
    && d.targets.every(t => t[1] === 'tick')).map(d => d.id)"""
FORWARD = """async ([url, n]) => { const net = await window.vaePage.load(url), d = net.index.latent_dim, times = [];
    for (let i = 0; i < n + 5; i++) { const z = Array.from({length: d}, () => Math.random() * 4 - 2);
      const t = performance.now(); window.vaePage.forward(net, z); if (i >= 5) times.push(performance.now() - t); }
    return times; }"""


def pct(values, q) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def summary(values) -> dict:
    """What the JSON keeps of a list of times (ms): the count and its percentiles."""
    return {"n": len(values), "p50": round(pct(values, 50), 3), "p95": round(pct(values, 95), 3),
            "max": round(max(values), 3) if values else None}


def drag(page, moves: int) -> tuple[list[float], list[float], list[float], list[str]]:
    """One mouse drag of slider_0 end to end: (event -> drawn ms, event -> next animation frame ms,
    decode+draw ms, requests)."""
    timer_fns = set(page.evaluate(TIMER_FNS))
    requests = []

    def on_request(r):
        fn = json.loads(r.post_data).get("fn_index") if r.post_data and r.post_data.startswith("{") else None
        if fn not in timer_fns and "/queue/data" not in r.url:
            requests.append(f"{r.method} {r.url}")

    track = page.locator("#slider_0 input[type=range]")
    track.scroll_into_view_if_needed()
    box = track.bounding_box()
    page.evaluate(RECORD, "#slider_0 input[type=range]")
    first = page.evaluate("() => window.vaePage.frames.length")
    y = box["y"] + box["height"] / 2
    page.on("request", on_request)
    page.mouse.move(box["x"] + 2, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] - 2, y, steps=moves)
    page.mouse.up()
    page.wait_for_timeout(300)
    page.remove_listener("request", on_request)
    page.wait_for_function("() => window.vaePage.frames.every(f => f.shown !== null)")
    return (*frame_latencies(page.evaluate("() => window.__inputs"),
                             page.evaluate("() => window.vaePage.frames")[first:]), requests)


def frame_latencies(inputs: list[float], frames: list[dict]) -> tuple[list[float], list[float], list[float]]:
    """Per input event (its timeStamp), the first frame drawn after it: (event -> drawn ms, event -> next
    animation frame ms), and each frame's decode + draw ms."""
    latencies, shown, k = [], [], 0
    for t in inputs:
        while k < len(frames) and frames[k]["start"] < t:
            k += 1
        if k == len(frames):
            raise RuntimeError(f"an input event at {t:.1f} ms was never drawn")
        latencies.append(frames[k]["end"] - t)
        shown.append(frames[k]["shown"] - t)
        k += 1
    return latencies, shown, [f["end"] - f["start"] for f in frames]


PLOT_CENTRE = """id => { const gd = document.querySelector(`#${id} .js-plotly-plot`), fl = gd._fullLayout;
    const r = gd.getBoundingClientRect();
    return [r.left + fl.xaxis._offset + fl.xaxis._length / 2, r.top + fl.yaxis._offset + fl.yaxis._length / 2]; }"""
RECORD_MOVES = """() => { window.__inputs = []; if (window.__movesRecorded) return; window.__movesRecorded = true;
    document.addEventListener('mousemove', e => { if (e.buttons) window.__inputs.push([e.timeStamp, performance.now()]); },
                              true); }"""


def marker_drag(page, moves: int) -> tuple[list[float], list[float], list[float], list[str]]:
    """Put the left map's marker on empty space, then drag it to the plot's centre and back in `moves` moves:
    the same four lists as `drag`, for decoder.js's view map-left."""
    timer_fns = set(page.evaluate(TIMER_FNS))
    spot = page.evaluate(JS_EMPTY_SPOT, "map_left")
    centre = page.evaluate(PLOT_CENTRE, "map_left")
    page.mouse.click(spot["x"], spot["y"])
    page.wait_for_function("() => { const m = document.querySelector('#map_left_marker'); "
                           "return m && m.style.display === 'block' && window.vaePage.views['map-left'].drawn > 0; }")
    page.wait_for_timeout(500)  # the click's own call to the server is answered
    requests = []

    def on_request(r):
        fn = json.loads(r.post_data).get("fn_index") if r.post_data and r.post_data.startswith("{") else None
        if fn not in timer_fns and "/queue/data" not in r.url:
            requests.append(f"{r.method} {r.url}")

    page.evaluate(RECORD_MOVES)
    first = page.evaluate("() => window.vaePage.frames.length")
    page.on("request", on_request)
    page.mouse.move(spot["x"], spot["y"])
    page.mouse.down()
    page.mouse.move(*centre, steps=moves // 2)
    page.mouse.move(spot["x"], spot["y"], steps=moves - moves // 2)
    page.remove_listener("request", on_request)  # the release sends the final position to the server: not a frame's
    page.mouse.up()
    page.wait_for_function("() => window.vaePage.frames.every(f => f.shown !== null)")
    frames = [f for f in page.evaluate("() => window.vaePage.frames")[first:] if f["view"] == "map-left"]
    moves_at = page.evaluate("() => window.__inputs")
    # Chromium holds mouse moves back to the next animation frame before dispatching them (rAF-aligned input):
    # from a move's own time stamp that wait counts; from its dispatch only the page's work does.
    latencies, shown, work = frame_latencies([t for t, _ in moves_at], frames)
    dispatched, _, _ = frame_latencies([d for _, d in moves_at], frames)
    return latencies, shown, work, requests, dispatched


def choose(page, elem_id: str, name: str) -> None:
    if page.locator(f"#{elem_id} input").input_value() != name:
        page.locator(f"#{elem_id} input").click()
        page.get_by_role("option", name=name, exact=True).click()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="drags per model")
    p.add_argument("--moves", type=int, default=150, help="mouse moves per drag")
    p.add_argument("--calls", type=int, default=200, help="decodes per bigger decoder")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "page_decode.md")
    args = p.parse_args(argv)

    import torch
    from playwright.sync_api import sync_playwright

    from vae_explorer import build_model
    from vae_explorer.server import Explorer
    from vae_explorer.server.launcher import serve

    chromium = "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else shutil.which("chromium")
    if chromium is None:
        sys.exit("needs Chromium (apt-get install chromium)")
    torch.set_num_threads(1)
    rows, saved = [], {"cpu": cpu_name(), "rounds": args.rounds, "moves": args.moves, "models": {}, "bigger": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "checkpoints"
        shutil.copytree(ROOT / "checkpoints", folder)
        explorer = Explorer(folder)
        with serve(explorer) as url, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.route("**/*", lambda r: r.continue_() if "127.0.0.1" in r.request.url else r.abort())
            page.goto(url)
            page.get_by_role("tab", name="Latent sliders", exact=True).click()
            for name in MODELS:
                choose(page, "sl_model", name)
                page.wait_for_function("m => { const v = window.vaePage && window.vaePage.views.sl; return !!(v && "
                                       "v.mode === 'page' && v.spec.model === m && v.drawn > 0); }", arg=name,
                                       timeout=60_000)
                page.wait_for_timeout(500)  # the sliders' new ranges arrive with their own call
                latencies, shown, work, requests = [], [], [], []
                for _ in range(args.rounds):
                    a, b, c, d = drag(page, args.moves)
                    latencies += a
                    shown += b
                    work += c
                    requests += d
                saved["models"][name] = {"latency_ms": summary(latencies), "shown_ms": summary(shown),
                                         "decode_draw_ms": summary(work), "requests": requests}
                rows.append(f"| {name} | {len(latencies)} | {pct(latencies, 50):.1f} / {pct(latencies, 95):.1f} / "
                            f"{max(latencies):.1f} | {pct(shown, 50):.1f} / {pct(shown, 95):.1f} | "
                            f"{pct(work, 50):.2f} / {pct(work, 95):.2f} | {len(requests)} |")
                print(rows[-1], flush=True)
            page.get_by_role("tab", name="Latent map", exact=True).click()
            markers = []
            for name in MARKER_MODELS:
                choose(page, "map_left_model", name)
                page.wait_for_function("m => { const v = window.vaePage.views['map-left'], gd = document.querySelector("
                                       "'#map_left .js-plotly-plot'); return !!(v && v.mode === 'page' && "
                                       "v.spec.model === m && gd && gd._fullLayout && gd._fullLayout.meta.map.model "
                                       "=== m); }", arg=name, timeout=60_000)
                page.locator("#map_left").scroll_into_view_if_needed()
                page.wait_for_timeout(500)
                latencies, shown, work, requests, dispatched = [], [], [], [], []
                for _ in range(args.rounds):
                    a, b, c, d, e = marker_drag(page, args.moves)
                    latencies += a
                    shown += b
                    work += c
                    requests += d
                    dispatched += e
                projection = page.evaluate("() => document.querySelector('#map_left .js-plotly-plot')"
                                           "._fullLayout.meta.map.projection")
                saved.setdefault("marker", {})[name] = {"projection": projection, "latency_ms": summary(latencies),
                                                         "dispatch_to_drawn_ms": summary(dispatched),
                                                         "shown_ms": summary(shown), "decode_draw_ms": summary(work),
                                                         "requests": requests}
                markers.append(f"| {name} ({projection.upper()} map) | {len(latencies)} | {pct(latencies, 50):.1f} / "
                               f"{pct(latencies, 95):.1f} / {max(latencies):.1f} | {pct(dispatched, 50):.1f} / "
                               f"{pct(dispatched, 95):.1f} | {pct(shown, 50):.1f} / "
                               f"{pct(shown, 95):.1f} | {pct(work, 50):.2f} / {pct(work, 95):.2f} | {len(requests)} |")
                print(markers[-1], flush=True)
            bigger = []
            for label, (model_name, settings) in BIGGER.items():
                torch.manual_seed(0)
                export = explorer.pages.export(build_model(model_name, **settings), "bench-" + model_name)
                times = page.evaluate(FORWARD, [f"gradio_api/file={export.index_file}", args.calls])
                saved["bigger"][label] = {"decode_ms": summary(times), "summary": export.summary}
                bigger.append(f"| {label} | {export.summary} | {pct(times, 50):.2f} / {pct(times, 95):.2f} |")
                print(bigger[-1], flush=True)
            browser.close()
    text = "\n".join([
        f"# Decoding in the page ({cpu_name()}, headless Chromium)", "",
        f"`python benchmarks/page_decode.py --rounds {args.rounds} --moves {args.moves}`: {args.rounds} mouse drags "
        f"of slider z[0] (PC 1 for wider codes) per model, {args.moves} moves each.", "",
        "| model | frames | input event → canvas drawn, p50 / p95 / max (ms) | → next animation frame, p50 / p95 "
        "(ms) | decode + draw alone, p50 / p95 (ms) | requests during the drags |", "|---|---|---|---|---|---|",
        *rows, "",
        f"The latent map's marker: {args.rounds} mouse drags of the left map's marker per model, from empty space to "
        f"the plot's centre and back in {args.moves} moves (each mousemove → the map-left canvas drawn).", "",
        "| model | frames | mousemove → canvas drawn, p50 / p95 / max (ms) | its dispatch → drawn, p50 / p95 (ms) "
        "| → next animation frame, p50 / p95 (ms) | decode + draw alone, p50 / p95 (ms) | requests during the drags |",
        "|---|---|---|---|---|---|---|", *markers, "",
        "Chromium holds mouse moves back until the next animation frame before it dispatches them (rAF-aligned "
        "input), so a move's own time stamp is up to a frame before the page sees it; a slider's `input` event "
        "is stamped when it is dispatched.", "",
        "Bigger decoders (random weights), `vaePage.forward` alone in the page:", "",
        "| decoder | layers | decode p50 / p95 (ms) |", "|---|---|---|", *bigger, ""])
    return write_report(text, saved, args.out)


if __name__ == "__main__":
    sys.exit(main())
