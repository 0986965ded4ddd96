"""The touchable latent map: decode-at-point round trips over raw HTTP, and hover latency in the browser.

Starts `python app.py` over a temporary copy of the checkpoints plus an MNIST VAE with 2-D codes (trained here
for one epoch, or copied from --mnist-checkpoint), so the map has MNIST's 10,000 test points. Then:

- decode at a map point, as the page's click or marker drag asks for it: POST /gradio_api/call/decode_at with
  (model, projection, x, y) at random positions over the map, read the SSE stream to `complete`, GET the PNG;
  idle, and while a training started through `train_start` runs (app_latency's helpers). Models: the MNIST VAE
  (raw 2-D plane: exact) and digits_conv_vae (8-D: PCA back-projection).
- hover latency in headless Chromium: the pointer moves onto a point of the 10,000-point map and stops; the
  time from that last mousemove event to the first animation frame after the tooltip shows that point's tile
  (performance.now() in the page; map_touch.js stamps the tile when it sets it).

    python benchmarks/map_touch.py                                # ~5 min plus the MNIST training
    python benchmarks/map_touch.py --mnist-checkpoint /tmp/mnist_vae_2d.safetensors --calls 100

Goals: decode-at-point p95 <= 100 ms (idle and while training); hover image visible <= 100 ms after the
pointer stops. Writes benchmarks/results/map_touch.json and .md.
"""
from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.app_latency import (DEFAULT_DATA_ROOT, RESULTS, CallError, Client, _CLEANUPS,  # noqa: E402
                                    install_signal_handlers, load_average, machine_info, noop_overhead, png_size,
                                    prepare_checkpoints, running_app, start_training, stats_ms, train_state)
from benchmarks.reporting import cpu_name, write_report  # noqa: E402

MNIST_NAME = "mnist_vae_2d"
CHROMIUM = "/usr/bin/chromium"

# Map points in viewport pixels with their index, from the plot's own axes (Scattergl has no svg points).
JS_POINTS = """id => { const gd = document.querySelector(`#${id} .js-plotly-plot`), fl = gd._fullLayout;
    const xa = fl.xaxis, ya = fl.yaxis, box = gd.getBoundingClientRect(), out = [];
    gd._fullData.forEach(tr => { if (tr.name === 'selected') return;
        for (let k = 0; k < tr.x.length; k++) {
            const px = xa._offset + xa.l2p(tr.x[k]), py = ya._offset + ya.l2p(tr.y[k]);
            if (px > xa._offset + 5 && px < xa._offset + xa._length - 5 && py > ya._offset + 5 && py < ya._offset + ya._length - 5)
                out.push([box.left + px, box.top + py, Number(tr.customdata[k])]); } });
    return out; }"""

# Stamps: the last mousemove's time, and the first frame after the tile changed.
JS_WATCH = """() => { window.__hover = {move: 0, frames: []};
    document.addEventListener('mousemove', e => { window.__hover.move = performance.now(); }, true);
    const tip = document.querySelector('#map_left_tile');
    new MutationObserver(() => { const index = tip.dataset.index, set = performance.now();
        requestAnimationFrame(() => window.__hover.frames.push({index: Number(index), set, frame: performance.now(),
                                                                 shown: tip.style.display === 'block'})); })
        .observe(tip, {attributes: true}); }"""


def map_ranges(ex_checkpoints: Path, data_root: str, names: list[str]) -> dict:
    """Each model's map extent (x and y ranges of its test codes on its default map), in this process."""
    from vae_explorer.server import Explorer

    ex = Explorer(ex_checkpoints, data_root, projection_cache="")
    out = {}
    for name in names:
        fig = ex.latent_map(name, "auto").figure
        xs = [v for t in fig.data for v in t.x]
        ys = [v for t in fig.data for v in t.y]
        out[name] = {"projection": fig.layout.meta["map"]["projection"], "x": [float(min(xs)), float(max(xs))],
                     "y": [float(min(ys)), float(max(ys))]}
    ex.close()
    return out


def time_decode_at(client: Client, name: str, extent: dict, calls: int, seed: int, warmup: int = 10) -> dict:
    rng = random.Random(seed)

    def point():
        return [round(rng.uniform(*extent["x"]), 4), round(rng.uniform(*extent["y"]), 4)]

    for _ in range(warmup):
        client.fetch(client.call("decode_at", [name, extent["projection"], *point()])[0]["value"])
    total, errors = [], []
    for _ in range(calls):
        t0 = time.perf_counter()
        try:
            out = client.call("decode_at", [name, extent["projection"], *point()])
            png_size(client.fetch(out[0]["value"]))
        except (CallError, KeyError, TypeError) as e:
            errors.append(f"{type(e).__name__}: {e}")
            continue
        total.append(time.perf_counter() - t0)
    return {"total": stats_ms(total), "over_100ms": sum(t > 0.1 for t in total), "errors": len(errors),
            "error_examples": errors[:3]}


def hover_latency(url: str, model: str, hovers: int, seed: int) -> dict:
    from playwright.sync_api import sync_playwright

    rng = random.Random(seed)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.route("**/*", lambda r: r.continue_() if "127.0.0.1" in r.request.url else r.abort())
            page.set_default_timeout(120_000)
            page.goto(url)
            page.wait_for_selector("#map_left .js-plotly-plot .nsewdrag")
            page.locator("#map_left_model input").click()
            page.get_by_role("option", name=model, exact=True).click()
            page.wait_for_function("m => { const gd = document.querySelector('#map_left .js-plotly-plot');"
                                   " return gd && gd._fullLayout && gd._fullLayout.meta && gd._fullLayout.meta.map"
                                   " && gd._fullLayout.meta.map.model === m && gd._fullData[0].x.length > 0; }",
                                   arg=model)
            page.locator("#map_left").scroll_into_view_if_needed()
            page.wait_for_timeout(2000)  # the sheet's first fetch and the page settle (not measured)
            points = page.evaluate(JS_POINTS, "map_left")
            tiles = page.evaluate("() => document.querySelector('#map_left .js-plotly-plot')._fullLayout.meta.tiles")
            page.evaluate(JS_WATCH)
            latencies, matched, missed = [], 0, 0
            for k in range(hovers):
                x, y, index = rng.choice(points)
                page.mouse.move(x + 40, y + 40)  # away, then onto the point in 5 moves, and stop
                page.wait_for_timeout(120)
                page.evaluate("() => { window.__hover.frames = []; }")
                page.mouse.move(x, y, steps=5)
                try:
                    page.wait_for_function("""() => { const h = window.__hover, f = h.frames[h.frames.length - 1];
                        return !!f && f.shown && f.set >= h.move; }""", timeout=3000)
                except Exception:
                    missed += 1
                    continue
                h = page.evaluate("() => window.__hover")
                frame = [f for f in h["frames"] if f["shown"] and f["set"] >= h["move"]][0]
                latencies.append((frame["frame"] - h["move"]) / 1000.0)
                nearest = page.evaluate("([x, y]) => document.querySelector('#map_left_tile').dataset.index", [x, y])
                matched += int(int(nearest) == index)
            return {"points": len(points), "tiles": tiles, "hovers": hovers,
                    "to_visible_frame": stats_ms(latencies), "no_tile_within_3s": missed,
                    "tile_is_the_aimed_point": matched,
                    "note": "the tile shows the nearest point to the pointer; in dense areas a neighbour of the "
                            "aimed point is the nearest, so tile_is_the_aimed_point < hovers is expected"}
        finally:
            browser.close()


def report(result: dict) -> str:
    lines = ["# Touchable latent map: decode at a point, hover pictures", "",
             f"{result['started']}, {cpu_name()}; load average {result['machine']['loadavg_1_5_15']} at start, "
             f"{result.get('load_during_training')} during the training runs. The machine is shared with other "
             "work: numbers are indications (medians over many calls).", "",
             "## Decode at a map point (raw HTTP: POST decode_at, SSE to complete, GET the PNG)", "",
             "| condition | model | map | n | p50 ms | p95 ms | max ms | >100 ms | goal p95 ≤ 100 ms |",
             "|---|---|---|---|---|---|---|---|---|"]
    floor = [(c, result.get(f"noop_call_{c}")) for c in ("idle", "training")]
    for key, r in result.get("decode_at", {}).items():
        cond, name = key.split("/")
        t = r["total"]
        if not t.get("n"):
            lines.append(f"| {cond} | {name} | | 0 | | | | | errors: {r['error_examples']} |")
            continue
        lines.append(f"| {cond} | {name} | {result['maps'][name]['projection']} | {t['n']} | {t['p50']} | {t['p95']} "
                     f"| {t['max']} | {r['over_100ms']} | {'met' if t['p95'] <= 100 and not r['errors'] else 'MISSED'} |")
    lines += ["", "The server's floor at the same time, a queued call that does nothing (`checkpoints`): "
              + "; ".join(f"{c} p50 {f['p50']} ms, p95 {f['p95']} ms" for c, f in floor if f) + "."]
    h = result.get("hover")
    if h:
        t = h["to_visible_frame"]
        lines += ["", f"## Hover: pointer stops on a point of the {h['points']:,}-point MNIST map → its tile on screen",
                  "", "Time from the last mousemove event to the first animation frame after the tooltip shows the "
                  "hovered point's tile (headless Chromium, software rendering).", "",
                  "| n | p50 ms | p95 ms | max ms | no tile | goal ≤ 100 ms |", "|---|---|---|---|---|---|",
                  f"| {t.get('n', 0)} | {t.get('p50')} | {t.get('p95')} | {t.get('max')} | {h['no_tile_within_3s']} | "
                  f"{'met' if t.get('n') and t['p95'] <= 100 else 'MISSED'} (p95) |", "",
                  f"Sprite sheet: {h['tiles']['columns']} columns of {h['tiles']['width']}×{h['tiles']['height']} tiles "
                  f"({h.get('sheet_bytes', 0) / 1024:.0f} KB PNG). {h['tile_is_the_aimed_point']} of {h['hovers']} "
                  "tiles were the aimed point (else a nearer neighbour: the tile shows the nearest point to the pointer)."]
    lines += ["", "Command: `python benchmarks/map_touch.py " + " ".join(result.get("argv", [])) + "`", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=200, help="timed decode_at calls per model and condition")
    p.add_argument("--hovers", type=int, default=40, help="timed hovers in the browser")
    p.add_argument("--checkpoints", default=str(ROOT / "checkpoints"))
    p.add_argument("--data-root", default=DEFAULT_DATA_ROOT, help="where MNIST lives")
    p.add_argument("--mnist-checkpoint", default=None, help="an MNIST model with 2-D codes to use instead of training")
    p.add_argument("--models", default=f"{MNIST_NAME},digits_conv_vae")
    p.add_argument("--out", default=str(RESULTS / "map_touch.md"))
    args = p.parse_args(argv)
    install_signal_handlers()
    tmp = Path(tempfile.mkdtemp(prefix="vae-explorer-map-touch-"))
    _CLEANUPS.insert(0, lambda: shutil.rmtree(tmp, ignore_errors=True))
    result = {"benchmark": "map_touch", "started": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine_info(),
              "argv": list(argv if argv is not None else sys.argv[1:]), "goal_ms": {"decode_at_p95": 100, "hover": 100}}
    ckpt = tmp / "checkpoints"
    prepare_checkpoints(Path(args.checkpoints), ckpt, args.data_root, args.mnist_checkpoint, 0, MNIST_NAME)
    if not args.mnist_checkpoint:
        print(f"training {MNIST_NAME}: vae on mnist, 2-D codes, 1 epoch...", flush=True)
        subprocess.run([sys.executable, "-m", "vae_explorer", "train", "--model", "vae", "--dataset", "mnist",
                        "--data-root", args.data_root, "--epochs", "1", "--latent-dim", "2",
                        "--out", str(ckpt / MNIST_NAME), "--quiet"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    names = args.models.split(",")
    result["maps"] = map_ranges(ckpt, args.data_root, names)
    with running_app(ckpt, args.data_root, log_path=tmp / "app.log") as server:
        client = Client(server.url)
        runs = {}
        result["noop_call_idle"] = noop_overhead(client)  # the server's floor now: a call that does nothing
        for name in names:
            print(f"idle: {args.calls} decode_at calls on {name}...", flush=True)
            runs[f"idle/{name}"] = time_decode_at(client, name, result["maps"][name], args.calls, seed=0)
        result["load_during_idle"] = load_average()
        print("hover latency in the browser...", flush=True)
        result["hover"] = hover_latency(server.url, MNIST_NAME, args.hovers, seed=0)
        sheet = next((ckpt / "hover_tiles").glob("mnist-test-*.png"), None)
        result["hover"]["sheet_bytes"] = sheet.stat().st_size if sheet else None
        print("starting a training (vae on digits)...", flush=True)
        result["training"] = {"status_at_start": start_training(client, "vae", "digits", 1000, "bench_map_touch")}
        result["noop_call_training"] = noop_overhead(client)
        for name in names:
            print(f"training: {args.calls} decode_at calls on {name}...", flush=True)
            runs[f"training/{name}"] = time_decode_at(client, name, result["maps"][name], args.calls, seed=1)
        result["training"]["still_running_at_end"] = "status **running**" in train_state(client)
        result["load_during_training"] = load_average()
        client.call("train_cancel", [])
        result["decode_at"] = runs
    result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    return write_report(report(result), result, Path(args.out))


if __name__ == "__main__":
    sys.exit(main())
