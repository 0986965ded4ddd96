"""A long visit: one Chromium page driven through the app for --minutes, as a student would, to see
that the page stays light (issue 15, item 5).

Starts `python app.py` in its own process over a temporary copy of checkpoints/, opens one headless
Chromium page on it (every non-local request aborted) and repeats a round of actions until the time is up:

- Latent map: switch the left model among a few digits models, switch the projection (auto / pca),
  hover a point (the map's hover tile), click empty space (the marker, decoded by the server);
- Latent sliders: drag slider z[0] with the mouse end to end (decoded in the page);
- Reconstruct: upload a generated PNG, press Reconstruct;
- Sample: a new seed, press Sample;
- Interpolate: drag the t slider with the mouse (decoded in the page).

Event-to-paint latency is measured in the page: from the triggering input event's timeStamp (the option's
mousedown, the file input's change, the button's click, the slider's input, the map's mousemove or
mousedown) to the first animation frame after the output is on the page (a MutationObserver and the images'
load events test for it: the new map figure with its points, the tile for that point, the server's caption at
the marker, the new image loaded; for drags, decoder.js's frame for that event). Every minute it records per
action kind the median and p95, the page's localStorage and sessionStorage (characters of keys + values), the
JS heap after a forced garbage collection (CDP), the DOM's node count, and the server's resident memory.

    python benchmarks/long_visit.py                 # 30 minutes (run it on a quiet machine)
    python benchmarks/long_visit.py --minutes 2     # a short check

Goals: per action kind the last minute's median within 20% of the first minute's (not slower by more);
storage bounded (its maximum is reported, goal <= 64 KiB); the heap after GC grows by at most 20% from the
end of minute 2 to the end. Writes benchmarks/results/long_visit.json and .md and a plot (.png). The server
and the browser are stopped on exit, on failure and on Ctrl-C.
"""
from __future__ import annotations

import argparse
import math
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from app_latency import (  # noqa: E402
    _CLEANUPS,
    DEFAULT_DATA_ROOT,
    RESULTS,
    ROOT,
    install_signal_handlers,
    load_average,
    machine_info,
    prepare_checkpoints,
    running_app,
)
from reporting import cpu_name, write_report  # noqa: E402

# 2-D models: their auto map (the raw plane) and PCA map differ, so each projection switch draws a new figure
# (for wider codes auto is PCA: the same figure, which Gradio does not send again).
MAP_MODELS = ("digits_ae", "digits_vae", "digits_beta_vae")
HOVERS_PER_ROUND = 5
PROJECTIONS = ("auto", "pca")
KINDS = ("map_model", "map_projection", "hover", "marker_click", "slider_drag", "upload", "reconstruct", "sample",
         "t_drag")
KIND_TEXT = {"map_model": "map: left model switched (option press → new figure drawn)",
             "map_projection": "map: projection switched (radio press → new figure drawn)",
             "hover": "map: hover a point (mousemove → its tile shown)",
             "marker_click": "map: click empty space (mousedown → server's caption at the marker)",
             "slider_drag": "sliders: drag z[0] (each input → its canvas frame, in the page)",
             "upload": "reconstruct: upload a PNG (file chosen → shown in the box)",
             "reconstruct": "reconstruct: press the button (click → grid image loaded)",
             "sample": "sample: press the button (click → samples image loaded)",
             "t_drag": "interpolate: drag t (each input → its canvas frame, in the page)"}
LATENCY_TOLERANCE = 0.20  # last minute's median at most 20% above the first's
HEAP_GROWTH_GOAL = 0.20
STORAGE_BOUND_BYTES = 64 * 1024
ACTION_TIMEOUT_MS = 30_000
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}

# ---- in the page ---------------------------------------------------------------------------------------

# Arm a measurement: the first `trigger` event inside `scope` after this stamps t0 (its timeStamp, the same clock
# as performance.now()); from then on every DOM mutation and every load event (an <img> done) tests `check`; the
# first time it holds, the next animation frame stamps t1. `snapshot` runs now and gives `check` its `state`.
ARM = """([kind, trigger, scope, snapshot, check, args]) => {
    const state = new Function('args', snapshot)(args), ready = new Function('state', 'args', check);
    const m = {kind, t0: null, t1: null, done: false};
    window.__visit = m;
    const finish = () => { obs.disconnect(); document.removeEventListener('load', poll, true);
                           document.removeEventListener(trigger, onTrigger, true); };
    const poll = () => {
        if (m.done || m.t0 === null) return;
        let ok = false;
        try { ok = ready(state, args); } catch (e) { ok = false; }
        if (!ok) return;
        m.done = true;
        finish();
        requestAnimationFrame(() => { m.t1 = performance.now(); });
    };
    const onTrigger = (e) => {
        if (m.t0 !== null || (scope && !(e.target.closest && e.target.closest(scope)))) return;
        m.t0 = e.timeStamp;
        poll();
    };
    const obs = new MutationObserver(poll);
    m.cancel = () => { m.done = true; finish(); };  // a timed-out measurement leaves nothing listening
    obs.observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true});
    document.addEventListener('load', poll, true);  // load does not bubble: capture it
    document.addEventListener(trigger, onTrigger, true);
}"""
MEASURED = "() => window.__visit && window.__visit.t1 !== null"
LATENCY = "() => window.__visit.t1 - window.__visit.t0"

PLOT_SNAPSHOT = "return {old: document.querySelector(`#${args.id} .js-plotly-plot`)};"
PLOT_CHECK = """const gd = document.querySelector(`#${args.id} .js-plotly-plot`);
    const map = gd && gd._fullLayout && gd._fullLayout.meta && gd._fullLayout.meta.map;
    return !!(gd && gd !== state.old && map && map.model === args.model && gd.querySelector('.main-svg')
              && gd._fullData && gd._fullData.length && gd._fullData[0].x && gd._fullData[0].x.length);"""
TILE_CHECK = """const t = document.querySelector('#map_left_tile');
    if (!t || t.style.display !== 'block' || t.dataset.index !== String(args.index)) return false;
    const img = new Image(); img.src = t.dataset.url; return img.complete && img.naturalWidth > 0;"""
CAPTION_SNAPSHOT = "return {old: document.querySelector('#map_left_decoded_caption').innerText};"
CAPTION_CHECK = """const m = document.querySelector('#map_left_marker'), c = document.querySelector('#map_left_decoded_caption');
    if (!m || m.style.display !== 'block' || !c || c.innerText === state.old) return false;
    const g = c.innerText.match(/decoded at \\((-?[\\d.]+), (-?[\\d.]+)\\)/);
    return !!g && Math.abs(Number(g[1]) - Number(m.dataset.x)) < 1e-3 && Math.abs(Number(g[2]) - Number(m.dataset.y)) < 1e-3;"""
IMG_SNAPSHOT = "const i = document.querySelector(`#${args.id} img`); return {old: i ? i.src : null};"
IMG_CHECK = """const i = document.querySelector(`#${args.id} img`);
    return !!(i && i.src && i.src !== state.old && i.complete && i.naturalWidth > 0);"""
UPLOAD_CHECK = """const cell = document.querySelector(`#${args.id} td.filename[aria-label="${args.name}"]`);
    return !!(cell && cell.parentElement.querySelector('a[href*="gradio_api/file="]'));"""  # on the server

# The most isolated point of the left map (hover) and its emptiest spot (click), in viewport pixels.
POINTS = """() => { const gd = document.querySelector('#map_left .js-plotly-plot'), fl = gd._fullLayout;
    const xa = fl.xaxis, ya = fl.yaxis, box = gd.getBoundingClientRect(), pts = [];
    gd._fullData.forEach(tr => { if (tr.name === 'selected' || !tr.customdata) return;
        for (let k = 0; k < tr.x.length; k++) pts.push([xa._offset + xa.l2p(tr.x[k]), ya._offset + ya.l2p(tr.y[k]),
                                                        Number(tr.customdata[k])]); });
    const inside = p => p[0] > xa._offset + 10 && p[0] < xa._offset + xa._length - 10
                        && p[1] > ya._offset + 10 && p[1] < ya._offset + ya._length - 10;
    let point = null, gapP = -1, spot = null, gapS = -1;
    for (const p of pts) { if (!inside(p)) continue; let gap = Infinity;
        for (const q of pts) if (q !== p) gap = Math.min(gap, Math.hypot(p[0] - q[0], p[1] - q[1]));
        if (gap > gapP) { gapP = gap; point = p; } }
    for (let px = xa._offset + 30; px < xa._offset + xa._length - 30; px += 6)
        for (let py = ya._offset + 30; py < ya._offset + ya._length - 30; py += 6) { let gap = Infinity;
            for (const q of pts) gap = Math.min(gap, Math.hypot(px - q[0], py - q[1]));
            if (gap > gapS) { gapS = gap; spot = [px, py]; } }
    return {point: {x: box.left + point[0], y: box.top + point[1], index: point[2]},
            spot: {x: box.left + spot[0], y: box.top + spot[1], gap: gapS}}; }"""

RECORD_INPUTS = """sel => { const el = document.querySelector(sel); window.__inputs = [];
    if (!el.__visitRecorded) { el.addEventListener('input', e => window.__inputs.push(e.timeStamp), true);
                               el.__visitRecorded = true; } }"""
PAGE_VIEW = "key => { const v = window.vaePage && window.vaePage.views[key]; return !!(v && v.mode === 'page' && v.drawn > 0); }"
STORAGE = """() => { const size = s => { let n = 0; for (let i = 0; i < s.length; i++) { const k = s.key(i);
        n += k.length + (s.getItem(k) || '').length; } return n; };
    return {local: size(localStorage), session: size(sessionStorage), keys: Object.keys(localStorage),
            dom_nodes: document.getElementsByTagName('*').length}; }"""


class Page:
    """The visit's one page: the actions, each measured in the page, and the requests in flight (to wait until
    an action's calls are answered before the next, so each is measured alone)."""

    def __init__(self, page, upload_dir: Path):
        self.page, self.upload_dir = page, upload_dir
        self.in_flight: set = set()
        self.last_change = time.time()
        self.page_errors: list[str] = []
        self.external: list[str] = []
        page.on("request", self._started)
        page.on("requestfinished", self._ended)
        page.on("requestfailed", self._ended)
        page.on("pageerror", lambda e: self.page_errors.append(str(e)[:300]))

    def _started(self, r):
        if "/heartbeat/" not in r.url:  # the session's keep-alive stream stays open
            self.in_flight.add(r)
            self.last_change = time.time()

    def _ended(self, r):
        self.in_flight.discard(r)
        self.last_change = time.time()

    def route(self, r):
        if urlsplit(r.request.url).hostname in LOCAL_HOSTS:
            r.continue_()
        else:
            self.external.append(r.request.url)
            r.abort()

    def quiet(self, quiet_ms: int = 600, timeout_s: float = 60.0) -> None:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if not self.in_flight and time.time() - self.last_change > quiet_ms / 1000:
                return
            self.page.wait_for_timeout(50)
        raise TimeoutError(f"requests still in flight after {timeout_s:.0f} s")

    def measured(self, kind, trigger, scope, snapshot, check, args, act) -> float:
        """Arm, act (a function doing the input), wait for the output on screen; event -> paint in ms."""
        self.page.evaluate(ARM, [kind, trigger, scope, snapshot, check, args])
        act()
        try:
            self.page.wait_for_function(MEASURED, timeout=ACTION_TIMEOUT_MS)
        except Exception as e:
            seen = self.page.evaluate("() => { window.__visit.cancel(); return window.__visit.t0 !== null; }")
            raise TimeoutError(f"no output within {ACTION_TIMEOUT_MS / 1000:.0f} s (the {trigger} was "
                               f"{'seen' if seen else 'not seen'}): {type(e).__name__}") from None
        return float(self.page.evaluate(LATENCY))

    def open_tab(self, name: str) -> None:
        tab = self.page.get_by_role("tab", name=name, exact=True)
        if tab.get_attribute("aria-selected") != "true":
            tab.click()
            self.quiet()

    # -- the Latent map ---------------------------------------------------------------------------------

    def map_model(self, name: str) -> float | None:
        box = self.page.locator("#map_left_model input")
        if box.input_value() == name:
            return None
        box.click()
        option = self.page.get_by_role("option", name=name, exact=True)
        return self.measured("map_model", "mousedown", "[role=option]", PLOT_SNAPSHOT, PLOT_CHECK,
                             {"id": "map_left", "model": name}, option.click)

    def map_projection(self, projection: str, model: str) -> float | None:
        radio = self.page.get_by_role("radio", name=projection, exact=True).locator("visible=true").first
        if radio.is_checked():
            return None
        return self.measured("map_projection", "mousedown", "label, input[type=radio]", PLOT_SNAPSHOT, PLOT_CHECK,
                             {"id": "map_left", "model": model}, radio.click)

    def hover(self) -> list[float]:
        """HOVERS_PER_ROUND hovers of the map's most isolated point, the pointer moved off it (and its tile
        hidden) before each: one hover a round made a minute's median that of three maps' single hovers."""
        self.page.locator("#map_left").scroll_into_view_if_needed()
        target = self.page.evaluate(POINTS)["point"]
        out = []
        for _ in range(HOVERS_PER_ROUND):
            self.page.mouse.move(target["x"] + 40, target["y"] + 40)
            self.page.wait_for_function("() => { const t = document.querySelector('#map_left_tile'); "
                                        "return !t || t.style.display !== 'block'; }", timeout=ACTION_TIMEOUT_MS)
            out.append(self.measured("hover", "mousemove", "#map_left", "return {};", TILE_CHECK,
                                     {"index": target["index"]}, lambda: self.page.mouse.move(target["x"], target["y"])))
        return out

    def marker_click(self, jitter: int) -> float:
        spot = self.page.evaluate(POINTS)["spot"]
        x, y = spot["x"] + (jitter % 3 - 1) * 4, spot["y"]  # never the same pixel twice running
        self.page.mouse.move(x, y, steps=4)
        # Plotly's hover of the point hovered before ends first (a person's pointer takes that long too): a click
        # while it lasts is plotly's click on that point, which picks it instead of decoding empty space.
        self.page.wait_for_function("() => { const h = document.querySelector('#map_left .hoverlayer'); "
                                    "return !h || h.childElementCount === 0; }")
        try:
            ms = self.measured("marker_click", "mousedown", "#map_left", CAPTION_SNAPSHOT, CAPTION_CHECK, {},
                               lambda: self.page.mouse.click(x, y))
        except TimeoutError as e:
            shown = self.page.evaluate("p => [document.querySelector('#map_left_decoded_caption').innerText"
                                       ".slice(0, 60), (document.querySelector('#map_left_marker') || {}).outerHTML, "
                                       "document.elementFromPoint(p[0], p[1]).outerHTML.slice(0, 120)]", [x, y])
            raise TimeoutError(f"{e}; clicked {spot}; caption and marker {shown}") from None
        self.page.mouse.move(5, 5)  # off the map: the tile hides
        return ms

    # -- drags decoded in the page ------------------------------------------------------------------------

    def drag(self, elem_id: str, view: str, moves: int, forward: bool) -> list[float]:
        """Drag #elem_id's thumb end to end; per input event, ms to the next animation frame after decoder.js
        drew that event's frame in `view` (matched by time: its frame list is capped, indices move)."""
        self.page.wait_for_function(PAGE_VIEW, arg=view, timeout=ACTION_TIMEOUT_MS)
        track = self.page.locator(f"#{elem_id} input[type=range]")
        track.scroll_into_view_if_needed()
        box = track.bounding_box()
        self.page.evaluate(RECORD_INPUTS, f"#{elem_id} input[type=range]")
        y = box["y"] + box["height"] / 2
        ends = (box["x"] + 2, box["x"] + box["width"] - 2)
        start, end = ends if forward else ends[::-1]
        self.page.mouse.move(start, y)
        self.page.mouse.down()
        self.page.mouse.move(end, y, steps=moves)
        self.page.mouse.up()
        self.page.wait_for_function("key => window.vaePage.frames.filter(f => f.view === key).every(f => f.shown !== null)",
                                    arg=view)
        inputs = self.page.evaluate("() => window.__inputs")
        if not inputs:
            return []
        frames = self.page.evaluate("([key, t]) => window.vaePage.frames.filter(f => f.view === key && f.start >= t)",
                                    [view, inputs[0]])
        shown, k = [], 0
        for t in inputs:  # each event's frame: the first drawn after it
            while k < len(frames) and frames[k]["start"] < t:
                k += 1
            if k == len(frames):
                raise RuntimeError(f"an input event at {t:.1f} ms was never drawn in {view}")
            shown.append(frames[k]["shown"] - t)
            k += 1
        return shown

    # -- Reconstruct and Sample ----------------------------------------------------------------------------

    def upload(self, n: int) -> tuple[float, float]:
        """Upload a generated PNG (a stroke, different each time), then press Reconstruct: both latencies."""
        rng = np.random.default_rng(n)
        pixels = np.zeros((64, 64), np.uint8)
        t = np.linspace(0, 1, 200)
        cx, cy, r = rng.uniform(22, 42, 2).tolist() + [rng.uniform(8, 18)]
        xs = (cx + r * np.cos(2 * np.pi * t * rng.uniform(0.6, 1.0))).astype(int).clip(2, 61)
        ys = (cy + r * np.sin(2 * np.pi * t * rng.uniform(0.6, 1.0))).astype(int).clip(2, 61)
        for dx in (-2, -1, 0, 1, 2):
            for dy in (-2, -1, 0, 1, 2):
                pixels[ys + dy, xs + dx] = 255
        path = self.upload_dir / f"visit_{n}.png"
        Image.fromarray(pixels, "L").save(path)
        self.page.locator("#rec_upload").scroll_into_view_if_needed()
        clear = self.page.locator("#rec_upload button[aria-label=Clear]")
        if clear.count():  # the last round's file: the box takes a new one once cleared
            clear.click()
            self.quiet()
        up = self.measured("upload", "change", "#rec_upload", "return {};", UPLOAD_CHECK,
                           {"id": "rec_upload", "name": path.name},
                           lambda: self.page.locator("#rec_upload input[type=file]").set_input_files(str(path)))
        self.quiet()
        self.page.locator("#rec_grid").scroll_into_view_if_needed()
        rec = self.measured("reconstruct", "click", "#rec_button", IMG_SNAPSHOT, IMG_CHECK, {"id": "rec_grid"},
                            self.page.locator("#rec_button").click)
        path.unlink(missing_ok=True)
        return up, rec

    def sample(self, seed: int) -> float:
        box = self.page.get_by_label("Seed", exact=True).locator("visible=true").first
        box.fill(str(seed))  # a new seed: the same one would give the same image, nothing new to draw
        self.page.locator("#sa_a").scroll_into_view_if_needed()
        return self.measured("sample", "click", "#sa_button", IMG_SNAPSHOT, IMG_CHECK, {"id": "sa_a"},
                             self.page.locator("#sa_button").click)


# ---- the visit ---------------------------------------------------------------------------------------------

class Visit:
    def __init__(self, ui: Page, moves: int):
        self.ui, self.moves = ui, moves
        self.samples: list[dict] = []  # {t, kind, ms}
        self.errors: list[dict] = []
        self.rounds = 0

    def note(self, kind: str, values) -> None:
        now = time.time()
        for ms in values if isinstance(values, list) else [values]:
            if ms is not None:
                self.samples.append({"t": now, "kind": kind, "ms": round(ms, 2)})

    def step(self, kind: str, fn, record: bool):
        try:
            out = fn()
            self.ui.quiet()
        except Exception as e:  # noqa: BLE001 - a failed action is counted and the visit goes on
            self.errors.append({"t": time.time(), "kind": kind, "error": f"{type(e).__name__}: {e}"[:300]})
            print(f"  {kind} failed: {type(e).__name__}: {str(e)[:200]}", flush=True)
            try:
                self.ui.page.keyboard.press("Escape")
                self.ui.quiet()
            except Exception:  # noqa: BLE001
                pass
            return
        if record and out is not None:
            if kind == "upload":
                self.note("upload", out[0])
                self.note("reconstruct", out[1])
            else:
                self.note(kind, out)

    def round(self, record: bool = True) -> None:
        r, ui = self.rounds, self.ui
        model, projection = MAP_MODELS[r % len(MAP_MODELS)], PROJECTIONS[(r + 1) % len(PROJECTIONS)]
        ui.open_tab("Latent map")
        self.step("map_model", lambda: ui.map_model(model), record)
        self.step("map_projection", lambda: ui.map_projection(projection, model), record)
        self.step("hover", ui.hover, record)
        self.step("marker_click", lambda: ui.marker_click(r), record)
        ui.open_tab("Latent sliders")
        self.step("slider_drag", lambda: ui.drag("slider_0", "sl", self.moves, r % 2 == 0), record)
        ui.open_tab("Reconstruct")
        self.step("upload", lambda: ui.upload(r), record)
        ui.open_tab("Sample")
        self.step("sample", lambda: ui.sample(1000 + r), record)
        ui.open_tab("Interpolate")
        self.step("t_drag", lambda: ui.drag("in_t", "in-a", self.moves, r % 2 == 0), record)
        self.rounds += 1


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def page_state(page, cdp, server_pid: int) -> dict:
    """Storage, DOM nodes, the JS heap after a forced GC, the server's resident memory."""
    cdp.send("HeapProfiler.collectGarbage")
    heap = cdp.send("Runtime.getHeapUsage")
    s = page.evaluate(STORAGE)
    return {"t": time.time(), "local_storage_chars": s["local"], "session_storage_chars": s["session"],
            "storage_chars": s["local"] + s["session"], "local_storage_keys": s["keys"], "dom_nodes": s["dom_nodes"],
            "heap_used_mb": round(heap["usedSize"] / 2**20, 2), "heap_total_mb": round(heap["totalSize"] / 2**20, 2),
            "server_rss_mb": rss_mb(server_pid), "load_1min": load_average()[0] if load_average() else None}


def minute_stats(samples: list[dict], start: float, minute: int) -> dict:
    """Per action kind in minute `minute` (1-based): n, median and p95 (ms)."""
    lo, hi = start + (minute - 1) * 60, start + minute * 60
    by = defaultdict(list)
    for s in samples:
        if lo <= s["t"] < hi:
            by[s["kind"]].append(s["ms"])
    return {k: {"n": len(v), "median": round(statistics.median(v), 2), "p95": round(float(np.percentile(v, 95)), 2)}
            for k, v in by.items()}


def verdicts(result: dict) -> dict:
    minutes = result["minutes"]
    out = {"latency": {}, "storage": {}, "heap": {}}
    if not minutes:
        return out
    for kind in KINDS:
        # The first and last minutes that measured this kind (a slow kind may skip a minute).
        have = [m for m in minutes if kind in m["latency"]]
        if len(have) < 2:
            out["latency"][kind] = {"verdict": "not measured twice"}
            continue
        first, last = have[0]["latency"][kind]["median"], have[-1]["latency"][kind]["median"]
        ratio = last / first if first > 0 else float("inf")
        out["latency"][kind] = {"first_minute": have[0]["minute"], "last_minute": have[-1]["minute"],
                                "first_n": have[0]["latency"][kind]["n"], "last_n": have[-1]["latency"][kind]["n"],
                                "first_median_ms": first, "last_median_ms": last, "ratio": round(ratio, 3),
                                "met": ratio <= 1 + LATENCY_TOLERANCE,
                                "within_a_frame": abs(last - first) < 1000 / 60}
    judged = [v for v in out["latency"].values() if "met" in v]
    out["latency_met"] = bool(judged) and all(v["met"] for v in judged)
    storage = [m["state"]["storage_chars"] for m in minutes]
    out["storage"] = {"max_chars": max(storage), "first_chars": storage[0], "last_chars": storage[-1],
                      "bound_chars": STORAGE_BOUND_BYTES, "met": max(storage) <= STORAGE_BOUND_BYTES}
    heaps = [m["state"]["heap_used_mb"] for m in minutes]
    base = 1 if len(minutes) >= 3 else 0  # from the end of minute 2 (a short run: from the end of minute 1)
    slope = float(np.polyfit([m["minute"] for m in minutes], heaps, 1)[0]) if len(minutes) >= 2 else 0.0
    growth = heaps[-1] / heaps[base] - 1 if heaps[base] else 0.0
    out["heap"] = {"from_minute": minutes[base]["minute"], "from_mb": heaps[base], "first_mb": heaps[0],
                   "last_mb": heaps[-1], "growth": round(growth, 3), "slope_mb_per_min": round(slope, 3),
                   "met": growth <= HEAP_GROWTH_GOAL}
    out["met"] = out["latency_met"] and out["storage"]["met"] and out["heap"]["met"]
    return out


# ---- the report -------------------------------------------------------------------------------------------

def fmt(v, digits=1):
    return "–" if v is None else f"{v:.{digits}f}"


def markdown(result: dict) -> str:
    st, v = result["settings"], result.get("verdicts", {})
    minutes = result["minutes"]
    lines = [f"# A long visit: {st['minutes']:g} minutes of one scripted Chromium page",
             "", f"{result['machine']['cpu']}; `python benchmarks/long_visit.py {result['argv']}`".rstrip(), "",
             f"Load average (1, 5, 15 min) at the start {result['load_start']}, at the end {result.get('load_end')} "
             f"on {result['machine']['cpus']} CPUs: the machine is shared, so the latencies are indications.", "",
             f"{result.get('rounds', 0)} rounds after {st['warmup_rounds']} untimed warm-up round(s); "
             f"{len(result.get('errors', []))} failed actions; page errors {len(result.get('page_errors', []))}; "
             f"requests outside the app aborted: {len(result.get('external_requests', []))}."]
    if result.get("interrupted"):
        lines += ["", f"**Interrupted**: {result['interrupted']}"]
    lines += ["", "## Goals", "", "| goal | measured | met |", "| --- | --- | --- |"]
    for kind, x in v.get("latency", {}).items():
        if "met" not in x:
            lines.append(f"| {KIND_TEXT[kind]} | {x['verdict']} | – |")
            continue
        frame = " (less than one 60 Hz frame apart)" if x["within_a_frame"] and not x["met"] else ""
        lines.append(f"| {KIND_TEXT[kind]}: last minute's median ≤ 1.2 × the first's | minute {x['first_minute']} "
                     f"{x['first_median_ms']} ms (n {x['first_n']}) → minute {x['last_minute']} {x['last_median_ms']} ms "
                     f"(n {x['last_n']}) "
                     f"(× {x['ratio']}){frame} | {'met' if x['met'] else 'missed'} |")
    if v.get("storage"):
        s, h = v["storage"], v["heap"]
        lines += [f"| every action kind | | {'met' if v['latency_met'] else 'missed'} |",
                  f"| storage bounded (localStorage + sessionStorage ≤ {s['bound_chars']} characters) | max "
                  f"{s['max_chars']} (first {s['first_chars']}, last {s['last_chars']}) | {'met' if s['met'] else 'missed'} |",
                  f"| JS heap after GC grows ≤ {HEAP_GROWTH_GOAL:.0%} from the end of minute {h['from_minute']} | "
                  f"{h['from_mb']} → {h['last_mb']} MB ({h['growth']:+.1%}; slope {h['slope_mb_per_min']:+.3f} MB/min "
                  f"over all minutes; minute 1: {h['first_mb']} MB) | {'met' if h['met'] else 'missed'} |",
                  "", f"Overall: **{'met' if v['met'] else 'missed'}**. n: the events measured in that minute (a drag gives "
                  "one per mouse move, the other kinds one per round); where n is 1 or 2 the minutes compare single "
                  "actions, which the load of a shared machine moves by more than 20%."]
    lines += ["", "## Per minute", "", "Median / p95 event → paint (ms) per action kind, then the page and the server "
              "at the minute's end (heap after a forced GC).", "",
              "| minute | " + " | ".join(KINDS) + " | storage chars | heap MB | DOM nodes | server RSS MB | load |",
              "|" + " --- |" * (len(KINDS) + 6)]
    for m in minutes:
        cells = [f"{m['latency'][k]['median']:.1f} / {m['latency'][k]['p95']:.1f}" if k in m["latency"] else "–"
                 for k in KINDS]
        s = m["state"]
        lines.append(f"| {m['minute']} | " + " | ".join(cells) + f" | {s['storage_chars']} | {s['heap_used_mb']} | "
                     f"{s['dom_nodes']} | {fmt(s['server_rss_mb'])} | {fmt(s['load_1min'], 2)} |")
    lines += ["", "Action kinds: " + "; ".join(f"`{k}`: {KIND_TEXT[k]}" for k in KINDS) + "."]
    if result.get("errors"):
        lines += ["", "Failed actions:", *[f"- {e['kind']}: {e['error']}" for e in result["errors"][:10]]]
    lines += ["", f"Plot: `{result.get('png')}`.", ""]
    return "\n".join(lines)


def plot(result: dict, browser, html: Path, png: Path) -> str:
    """Latency, heap, server memory, storage and DOM over the minutes: a plotly page, screenshotted in Chromium."""
    from plotly.subplots import make_subplots

    minutes = result["minutes"]
    xs = [m["minute"] for m in minutes]
    fig = make_subplots(rows=5, cols=1, shared_xaxes=True, vertical_spacing=0.05,
                        subplot_titles=("event → paint, median per minute (ms, log)", "JS heap after GC (MB)",
                                        "server resident memory (MB)", "page storage: localStorage + sessionStorage "
                                        "(characters)", "DOM nodes"))
    for kind in KINDS:
        ys = [m["latency"].get(kind, {}).get("median") for m in minutes]
        if any(y is not None for y in ys):
            fig.add_scatter(x=xs, y=ys, name=kind, mode="lines+markers", row=1, col=1)
    fig.update_yaxes(type="log", row=1, col=1)
    for row, key in enumerate(("heap_used_mb", "server_rss_mb", "storage_chars", "dom_nodes"), start=2):
        fig.add_scatter(x=xs, y=[m["state"][key] for m in minutes], mode="lines+markers", showlegend=False,
                        line_color="black", row=row, col=1)
        fig.update_yaxes(rangemode="tozero", row=row, col=1)  # growth seen at its true size
    fig.update_xaxes(title_text="minute", row=5, col=1)
    fig.update_layout(height=1200, width=1000, title=f"vae-explorer: a {result['settings']['minutes']:g}-minute "
                                                     f"visit (load at start {result['load_start']})")
    fig.write_html(html, include_plotlyjs=True)
    try:
        page = browser.new_page(viewport={"width": 1000, "height": 1200})
        page.goto(html.resolve().as_uri())
        page.wait_for_selector(".js-plotly-plot")
        page.screenshot(path=str(png))
        page.close()
        return str(png)
    except Exception as e:  # noqa: BLE001 - the numbers are in the JSON and the Markdown
        return f"no PNG ({type(e).__name__}: {e})"[:200]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--warmup-rounds", type=int, default=1,
                   help="untimed rounds first (every map model and projection is also shown once before them)")
    p.add_argument("--moves", type=int, default=30, help="mouse moves per slider drag")
    p.add_argument("--data-root", default=DEFAULT_DATA_ROOT)
    p.add_argument("--out", default=str(RESULTS / "long_visit.md"))
    args = p.parse_args(argv)
    install_signal_handlers()
    from playwright.sync_api import sync_playwright

    chromium = "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else shutil.which("chromium")
    if chromium is None:
        sys.exit("needs Chromium (apt-get install chromium)")
    out = Path(args.out)
    tmp = Path(tempfile.mkdtemp(prefix="vae-explorer-visit-"))
    _CLEANUPS.insert(0, lambda: shutil.rmtree(tmp, ignore_errors=True))
    ckpt, uploads = tmp / "checkpoints", tmp / "uploads"
    uploads.mkdir()
    prepare_checkpoints(ROOT / "checkpoints", ckpt, args.data_root, None, 0)
    result = {"benchmark": "long_visit", "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "machine": {**machine_info(), "cpu": cpu_name()}, "load_start": load_average(),
              "argv": " ".join(sys.argv[1:] if argv is None else argv),
              "settings": {k: v for k, v in vars(args).items() if k != "out"}, "minutes": []}
    visit = None
    print("starting the app...", flush=True)
    with running_app(ckpt, args.data_root, log_path=tmp / "app.log") as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True)
        _CLEANUPS.append(browser.close)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(ACTION_TIMEOUT_MS)
            ui = Page(page, uploads)
            page.route("**/*", ui.route)
            cdp = page.context.new_cdp_session(page)
            page.goto(server.url)
            page.wait_for_function("() => { const gd = document.querySelector('#map_left .js-plotly-plot'); "
                                   "return !!(gd && gd._fullData && gd._fullData.length); }", timeout=120_000)
            ui.quiet()
            visit = Visit(ui, args.moves)
            print("warming up: every map model and projection once, then "
                  f"{args.warmup_rounds} untimed round(s)...", flush=True)
            for model in MAP_MODELS:
                visit.step("map_model", lambda: ui.map_model(model), False)
                for projection in PROJECTIONS:
                    visit.step("map_projection", lambda: ui.map_projection(projection, model), False)
            for _ in range(args.warmup_rounds):
                visit.round(record=False)
            visit.errors.clear()
            start = time.time()
            result["started_at"] = start
            minutes, minute = math.ceil(args.minutes), 1
            while minute <= minutes:  # whole rounds; a minute's numbers are taken after the round that ends it
                visit.round()
                while minute <= minutes and time.time() >= start + minute * 60:
                    state = page_state(page, cdp, server.proc.pid)
                    lat = minute_stats(visit.samples, start, minute)
                    result["minutes"].append({"minute": minute, "rounds_done": visit.rounds - args.warmup_rounds,
                                              "latency": lat, "state": state})
                    print(f"minute {minute}: " + ", ".join(f"{k} {v['median']:.0f}" for k, v in lat.items())
                          + f" ms; storage {state['storage_chars']}, heap {state['heap_used_mb']} MB, "
                          f"DOM {state['dom_nodes']}, server {state['server_rss_mb']} MB, load {state['load_1min']}",
                          flush=True)
                    minute += 1
        except BaseException as e:
            result["interrupted"] = f"{type(e).__name__}: {e}"[:300]
            raise
        finally:
            result["load_end"] = load_average()
            if visit:
                result.update({"rounds": visit.rounds - args.warmup_rounds if result.get("started_at") else 0,
                               "samples": visit.samples, "errors": visit.errors,
                               "page_errors": visit.ui.page_errors[:20], "external_requests": visit.ui.external[:20]})
            result["verdicts"] = verdicts(result)
            out.parent.mkdir(parents=True, exist_ok=True)
            png = out.with_suffix(".png")
            result["png"] = plot(result, browser, tmp / "long_visit.html", png) if result["minutes"] else \
                "no minute measured"
            if result["png"] == str(png) and png.resolve().is_relative_to(ROOT):
                result["png"] = str(png.resolve().relative_to(ROOT))
            write_report(markdown(result), result, out)
            if browser.close in _CLEANUPS:
                _CLEANUPS.remove(browser.close)
            try:
                browser.close()
            except Exception:  # noqa: BLE001 - already gone (Ctrl-C ends the driver too)
                pass
    return 0 if result["verdicts"].get("met") else 1


if __name__ == "__main__":
    sys.exit(main())
