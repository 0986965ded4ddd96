"""The page in a real, offline Chromium: every view driven as a person would, with mouse clicks,
slider drags, uploads and buttons. Every request that does not go to the app's own server is
aborted and recorded, so passing proves the page needs nothing from the internet.

    python -m pytest tests/test_browser.py -q       # screenshots land in artifacts/screenshots/

The tests share one page (loading it costs seconds on a small machine) and run in file order,
but each one opens its own tab first, so any one of them can also run alone.
"""
from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from .conftest import write_fault_table

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else shutil.which("chromium")
if CHROMIUM is None:
    pytest.skip("no Chromium at /usr/bin/chromium or on PATH (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
expect = sync_api.expect

REPO = Path(__file__).resolve().parent.parent
SCREENSHOTS = REPO / "artifacts" / "screenshots"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}
PAGE_TIMEOUT_MS = 30_000  # the first call of each view loads a checkpoint and encodes its test set

# Page-side helpers; `#<id> .js-plotly-plot` is the plotly graph div inside a gr.Plot.
JS_PLOT_READY = """id => { const gd = document.querySelector(`#${id} .js-plotly-plot`);
    return !!(gd && gd._fullLayout && gd._fullData && gd._fullData.length > 0 && gd._fullData[0].x
              && gd._fullData[0].x.length > 0); }"""

# The most isolated point of the left map (not the selected-point ring, not index `avoid`), in
# viewport pixels, computed from the plot's own axes: Scattergl draws in WebGL, so there is no
# svg element to click. Isolated, so that the click cannot land on a neighbour.
JS_ISOLATED_POINT = """([id, avoid]) => {
    const gd = document.querySelector(`#${id} .js-plotly-plot`);
    const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, box = gd.getBoundingClientRect();
    const pts = [];
    gd._fullData.forEach(tr => {
        if (tr.name === "selected") return;
        for (let k = 0; k < tr.x.length; k++) {
            const px = xa._offset + xa.l2p(tr.x[k]), py = ya._offset + ya.l2p(tr.y[k]);
            if (px < xa._offset + 10 || px > xa._offset + xa._length - 10) continue;
            if (py < ya._offset + 10 || py > ya._offset + ya._length - 10) continue;
            pts.push({px, py, index: Number(tr.customdata[k])});
        }
    });
    let best = null, bestGap = -1;
    for (const p of pts) {
        if (p.index === avoid) continue;
        let gap = Infinity;
        for (const q of pts) if (q !== p) gap = Math.min(gap, Math.hypot(p.px - q.px, p.py - q.py));
        if (gap > bestGap) { bestGap = gap; best = p; }
    }
    return {x: box.left + best.px, y: box.top + best.py, index: best.index, gap: bestGap, n: pts.length};
}"""

# The test-image index each map rings as selected (null: no ring).
JS_RINGS = """() => ['left', 'right'].map(s => {
    const gd = document.querySelector(`#map_${s} .js-plotly-plot`);
    const sel = gd && gd._fullData.find(t => t.name === 'selected');
    return sel ? Number(sel.customdata[0]) : null; })"""

JS_CURVE_POINTS = """() => { const gd = document.querySelector('#tr_curves .js-plotly-plot');
    if (!gd || !gd._fullData || !gd._fullData.length) return 0;
    return Math.max(...gd._fullData.map(tr => (tr.x ? tr.x.length : 0))); }"""


@dataclass
class UI:
    page: object  # playwright Page
    explorer: object  # the served app's Explorer (its training jobs)
    external_requests: list[str] = field(default_factory=list)  # aborted: not 127.0.0.1 / localhost
    page_errors: list[str] = field(default_factory=list)  # uncaught exceptions in the page's scripts
    in_flight: set = field(default_factory=set)  # requests sent and not yet answered (wait_quiet)
    last_request_change: float = 0.0  # time.time() of the last request sent or answered

    def track_requests(self) -> None:
        def started(r):
            if "/heartbeat/" in r.url:  # the session's keep-alive stream, open as long as the page is
                return
            self.in_flight.add(r)
            self.last_request_change = time.time()

        def ended(r):
            self.in_flight.discard(r)
            self.last_request_change = time.time()

        self.page.on("request", started)
        self.page.on("requestfinished", ended)
        self.page.on("requestfailed", ended)


@pytest.fixture(scope="module")
def ui(app_server):
    """One Chromium page on the app, with every non-local request aborted and recorded."""
    url, explorer = app_server
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        state = UI(page, explorer)

        def route(r):
            if urlsplit(r.request.url).hostname in LOCAL_HOSTS:
                r.continue_()
            else:
                state.external_requests.append(r.request.url)
                r.abort()

        page.set_default_timeout(PAGE_TIMEOUT_MS)
        page.route("**/*", route)
        page.on("pageerror", lambda e: state.page_errors.append(str(e)))
        state.track_requests()
        page.goto(url)
        page.wait_for_function(JS_PLOT_READY, arg="map_left", timeout=60_000)
        yield state
        browser.close()


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()
    expect(page.get_by_role("tab", name=name, exact=True)).to_have_attribute("aria-selected", "true")


def img_src(page, elem_id: str) -> str | None:
    return page.evaluate("id => { const i = document.querySelector(`#${id} img`); return i ? i.src : null; }", elem_id)


def wait_img(page, elem_id: str, other_than: str | None = None) -> str:
    """Wait until #elem_id shows a loaded image (a different one from `other_than`); its src."""
    page.wait_for_function(
        """([id, old]) => { const i = document.querySelector(`#${id} img`);
            return !!(i && i.src && i.src !== old && i.complete && i.naturalWidth > 0); }""",
        arg=[elem_id, other_than])
    return img_src(page, elem_id)


def set_range(page, elem_id: str, value: float) -> None:
    """Move a slider as a drag does: set the range input's value and fire `input`."""
    page.locator(f"#{elem_id} input[type=range]").evaluate(
        "(el, v) => { el.value = String(v); el.dispatchEvent(new Event('input', {bubbles: true})); }", value)


# A canvas's pixels as base64 RGB rows (the page-decoded views draw into one).
JS_CANVAS = """id => { const c = document.querySelector(`#${id} canvas`);
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let s = ''; for (let i = 0; i < d.length; i += 4) s += String.fromCharCode(d[i], d[i + 1], d[i + 2]);
    return [c.width, c.height, btoa(s)]; }"""


def canvas_pixels(page, elem_id: str):
    """The canvas in #elem_id as a (H, W, 3) uint8 array."""
    import base64

    import numpy as np

    w, h, data = page.evaluate(JS_CANVAS, elem_id)
    return np.frombuffer(base64.b64decode(data), np.uint8).reshape(h, w, 3)


def wait_canvas(page, elem_id: str, other_than) -> None:
    """Wait until the canvas in #elem_id shows something other than the pixels `other_than`."""
    import base64

    page.wait_for_function(f"([id, old]) => ({JS_CANVAS})(id)[2] !== old",
                           arg=[elem_id, base64.b64encode(other_than.tobytes()).decode()])


def wait_page_decoding(ui: UI, key: str, model: str) -> None:
    """Wait until view `key` decodes `model` in the page: its decoder fetched, a frame drawn, and what it drew
    is what the sliders show (the server's slider setup and the page's spec arrive by separate calls, so both
    are waited for: a view drawn before a tab's calls are answered can match the sliders until they land)."""
    wait_quiet(ui)
    ui.page.wait_for_function("""([key, model]) => { const v = window.vaePage && window.vaePage.views[key];
        if (!(v && v.mode === 'page' && v.spec && v.spec.model === model && v.drawn > 0)) return false;
        const dom = v.spec.inputs.map(id => { const el = document.querySelector(`#${id} input[type=range]`);
                                              return el ? Number(el.value) : 0; });
        return JSON.stringify(v.spec.directions ? dom.slice(0, v.spec.directions.length) : dom[0])
            === JSON.stringify(v.latest); }""", arg=[key, model])


def screenshot(page, view: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"{view}.png"), full_page=True)


def assert_clean(ui: UI) -> None:
    """No error toast on the page and no uncaught script error."""
    assert not ui.page_errors, ui.page_errors
    toasts = ui.page.locator(".toast-body.error")
    assert toasts.count() == 0, toasts.all_inner_texts()


# ---- the views ---------------------------------------------------------------------------------

def test_latent_maps_render(ui):
    page = ui.page
    open_tab(page, "Latent map")
    page.wait_for_function(JS_PLOT_READY, arg="map_right")
    for side in ("left", "right"):
        summary = page.evaluate("""id => { const gd = document.querySelector(`#${id} .js-plotly-plot`);
            return {points: gd._fullData.filter(t => t.name !== 'selected').reduce((n, t) => n + t.x.length, 0),
                    title: gd._fullLayout.title.text}; }""", f"map_{side}")
        assert summary["points"] > 100, summary  # the digits test set, one point per image
    # Titles name the model: digits_ae left, digits_vae right by default.
    assert "digits_ae" in page.evaluate("() => document.querySelector('#map_left .js-plotly-plot')._fullLayout.title.text")
    assert "digits_vae" in page.evaluate("() => document.querySelector('#map_right .js-plotly-plot')._fullLayout.title.text")
    wait_img(page, "sel_input")
    wait_img(page, "manifold_left")
    wait_img(page, "manifold_right")
    screenshot(page, "latent_map")
    assert_clean(ui)


def test_click_on_map_selects_the_point(ui):
    page = ui.page
    open_tab(page, "Latent map")
    page.wait_for_function(JS_PLOT_READY, arg="map_left")
    index_box = page.locator("#map_index input")
    before = {k: wait_img(page, k) for k in ("sel_input", "sel_left", "sel_right")}
    start_index = int(index_box.input_value())
    page.locator("#map_left").scroll_into_view_if_needed()
    target = page.evaluate(JS_ISOLATED_POINT, ["map_left", start_index])
    assert target["gap"] > 3, target  # a point with room around it exists
    page.mouse.move(target["x"], target["y"])  # plotly picks from the hover state
    page.mouse.click(target["x"], target["y"])
    expect(index_box).to_have_value(str(target["index"]))
    for k, old in before.items():
        wait_img(page, k, other_than=old)
    expect(page.locator("#sel_caption")).to_contain_text(f"Test image {target['index']}")
    # Both maps re-draw with a ring around the picked point.
    page.wait_for_function(f"i => ({JS_RINGS})().every(r => r === i)", arg=target["index"])
    screenshot(page, "latent_map_clicked")
    assert_clean(ui)


def test_typed_index_moves_the_ring_on_the_maps(ui):
    page = ui.page
    open_tab(page, "Latent map")
    box = page.locator("#map_index input")
    wanted = 42 if box.input_value() != "42" else 43
    box.fill(str(wanted))
    box.press("Enter")
    expect(page.locator("#sel_caption")).to_contain_text(f"Test image {wanted}")  # this part works
    page.wait_for_function(f"() => ({JS_RINGS})().every(i => i === {wanted})", timeout=5_000)


def test_reconstruct_chosen_images(ui):
    page = ui.page
    open_tab(page, "Reconstruct")
    page.wait_for_function(JS_PLOT_READY, arg="ano_hist")  # the anomaly histogram, drawn at load
    wait_img(page, "ano_grid")
    before = img_src(page, "rec_grid")
    page.locator("#rec_indices textarea").fill("0, 5, 10-13")
    page.locator("#rec_button").click()
    wait_img(page, "rec_grid", other_than=before)
    size = page.evaluate("() => { const i = document.querySelector('#rec_grid img'); return [i.naturalWidth, i.naturalHeight]; }")
    assert size[0] > size[1], size  # 6 images across; the inputs and 3 models' rows down
    expect(page.get_by_text("test images 0, 5, 10, 11, 12, 13")).to_be_visible()
    screenshot(page, "reconstruct")
    assert_clean(ui)


def test_latent_slider_redecodes(ui):
    page = ui.page
    open_tab(page, "Latent sliders")
    wait_page_decoding(ui, "sl", "digits_vae")
    before = canvas_pixels(page, "sl_view")
    slider = page.locator("#slider_0 input[type=range]")
    expect(slider).to_be_visible()
    high = float(slider.get_attribute("max"))
    set_range(page, "slider_0", high)
    wait_canvas(page, "sl_view", other_than=before)
    expect(page.locator("#slider_0 input[type=number]")).to_have_value(str(slider.input_value()))
    screenshot(page, "latent_sliders")
    assert_clean(ui)


def test_interpolation_slider_moves_both_models(ui):
    page = ui.page
    open_tab(page, "Interpolate")
    wait_img(page, "in_strip")
    for key, name in (("in-a", "digits_ae"), ("in-b", "digits_vae")):
        wait_page_decoding(ui, key, name)
    before = {v: canvas_pixels(page, v) for v in ("in_view_a", "in_view_b")}
    set_range(page, "in_t", 0.95)
    for v, old in before.items():
        wait_canvas(page, v, other_than=old)
    screenshot(page, "interpolate")
    assert_clean(ui)


# ---- decoding in the page: a drag makes no request, every frame is quick and matches the server ----------

FRAME_BUDGET_MS = 16.0  # one frame at 60 Hz, input event to canvas drawn (p95)

# Input events on a range input, stamped in the page's clock: the drag's start, for the frame times.
JS_RECORD_INPUTS = """sel => { const el = document.querySelector(sel); window.__vaeInputs = [];
    if (!el.__vaeRecorded) el.addEventListener('input', e => window.__vaeInputs.push({t: e.timeStamp}), true);
    el.__vaeRecorded = true; }"""

# The page's periodic polls (gr.Timer ticks: the checkpoint list every 3 s) run whether or not anyone drags.
JS_TIMER_FNS = """() => (window.gradio_config.dependencies || []).filter(d => d.targets.length > 0
    && d.targets.every(t => t[1] === 'tick')).map(d => d.id)"""


@dataclass
class Drag:
    latencies_ms: list[float]  # per input event: event -> its frame drawn on the canvas
    shown_ms: list[float]  # per input event: event -> the next animation frame after the draw (on screen)
    requests: list[str]  # to the server during the drag (the timers' polls excluded)
    polls: int  # the timers' polls that fell in the drag (each a queue/join and its result stream)

    def p95(self) -> float:
        import numpy as np

        return float(np.percentile(self.latencies_ms, 95))


def wait_quiet(ui: UI, quiet_ms: int = 800, timeout_s: float = 20.0) -> None:
    """Wait until the page has had no request in flight for `quiet_ms`: what opening a tab or choosing a
    model asked the server for is answered (a queued call's result stream stays open until its last event
    is in), so what follows sees its outcome and a drag that follows is measured alone."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if not ui.in_flight and time.time() - ui.last_request_change > quiet_ms / 1000:
            return
        ui.page.wait_for_timeout(100)
    raise AssertionError(f"the page still had requests in flight after {timeout_s:.0f} s: "
                         f"{sorted(r.url for r in ui.in_flight)}")


def drag(ui: UI, elem_id: str, key: str, steps: int = 120) -> Drag:
    """Drag the slider #elem_id's thumb with the mouse from its left to its right end in `steps` moves, as a
    person does, recording every request the page makes meanwhile and how long each input event took to
    reach the canvas of view `key` (performance.now() in the page: decoder.js stamps each frame)."""
    import json

    page = ui.page
    wait_quiet(ui)
    timer_fns = set(page.evaluate(JS_TIMER_FNS))
    requests, polls, streams = [], [], []

    def on_request(r):
        fn = None
        if r.post_data:
            try:
                fn = json.loads(r.post_data).get("fn_index")
            except ValueError:
                pass
        (polls if fn in timer_fns else requests).append(f"{r.method} {r.url} fn={fn}")
        if "/queue/data" in r.url and requests and requests[-1].endswith("fn=None"):
            streams.append(requests.pop())  # a queued call's result stream: whose call, see below

    track = page.locator(f"#{elem_id} input[type=range]")
    track.scroll_into_view_if_needed()
    box = track.bounding_box()
    page.evaluate(JS_RECORD_INPUTS, f"#{elem_id} input[type=range]")
    frames_before = page.evaluate("() => window.vaePage.frames.length")
    y = box["y"] + box["height"] / 2
    page.on("request", on_request)
    try:
        page.mouse.move(box["x"] + 2, y)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] - 2, y, steps=steps)
        page.mouse.up()
        page.wait_for_timeout(300)  # anything the drag would have sent is on its way by now
    finally:
        page.remove_listener("request", on_request)
    page.wait_for_function("() => window.vaePage.frames.every(f => f.shown !== null)")
    inputs = page.evaluate("() => window.__vaeInputs")
    frames = [f for f in page.evaluate("() => window.vaePage.frames")[frames_before:] if f["view"] == key]
    assert len(inputs) >= steps // 2, f"only {len(inputs)} input events from {steps} mouse moves"
    # Each input event's frame: the first drawn after it (frames in order; a frame no event asked for, as
    # Gradio re-sending a value, is skipped). Every event must have one.
    latencies, shown, k = [], [], 0
    for event in inputs:
        while k < len(frames) and frames[k]["start"] < event["t"]:
            k += 1
        assert k < len(frames), f"no frame after the input event at {event['t']:.1f} ms"
        latencies.append(frames[k]["end"] - event["t"])
        shown.append(frames[k]["shown"] - event["t"])
        k += 1
    # Each queued call reads its result over one queue/data stream: with no call of the drag's own
    # (`requests` empty), the streams are the polls'.
    if requests:
        requests += streams
    else:
        assert len(streams) <= len(polls), (streams, polls)
    return Drag(latencies, shown, requests, len(polls))


def assert_matches_server(pixels, server_image, what: str) -> None:
    """The canvas against the server's PNG of the same code: same size, every pixel within one grey level."""
    import numpy as np

    server = np.asarray(server_image.convert("RGB"))
    assert pixels.shape == server.shape, (what, pixels.shape, server.shape)
    diff = np.abs(pixels.astype(int) - server.astype(int))
    assert diff.max() <= 1, f"{what}: {int((diff > 1).sum())} channel values differ by up to {diff.max()}"


def slider_values(page) -> list[float]:
    return page.evaluate("""() => [...Array(8).keys()].map(i => {
        const el = document.querySelector(`#slider_${i} input[type=range]`); return el ? Number(el.value) : 0; })""")


@pytest.mark.parametrize("model", ["digits_vae", "digits_conv_vae", "digits_vq_vae"])
def test_a_slider_drag_decodes_in_the_page(ui, model):
    """MLP, conv and VQ decoders in the page: a mouse drag of a latent slider makes no request to the server,
    each frame is drawn within 16 ms of its input event (p95), and the canvas matches the server's decode of
    the same slider values within one grey level, at the end of the drag and at the sliders' ends."""
    import numpy as np

    page = ui.page
    open_tab(page, "Latent sliders")
    if page.locator("#sl_model input").input_value() != model:
        before = img_src(page, "sl_image")
        choose(page, "sl_model", model)
        wait_img(page, "sl_image", other_than=before)  # the sliders are set up for it
    wait_page_decoding(ui, "sl", model)
    expect(page.locator("#sl_view")).to_contain_text(f"{model}: decoded in your browser")
    expect(page.locator("#sl_image")).to_be_hidden()
    index = int(page.locator("#sl_index input").input_value())
    assert_matches_server(canvas_pixels(page, "sl_view"),
                          ui.explorer.decode_sliders(model, index, slider_values(page)), f"{model} at item {index}")

    result = drag(ui, "slider_0", "sl")
    print(f"{model}: {len(result.latencies_ms)} frames, input -> drawn p50 "
          f"{sorted(result.latencies_ms)[len(result.latencies_ms) // 2]:.2f} ms, p95 {result.p95():.2f} ms, "
          f"max {max(result.latencies_ms):.2f} ms; on screen p95 {np.percentile(result.shown_ms, 95):.2f} ms; "
          f"{len(result.requests)} requests ({result.polls} timer polls)")
    assert result.requests == []
    assert result.p95() <= FRAME_BUDGET_MS
    values = slider_values(page)
    assert_matches_server(canvas_pixels(page, "sl_view"), ui.explorer.decode_sliders(model, index, values),
                          f"{model} after the drag at {values}")
    screenshot(page, f"page_decode_{model}")
    for slider in ("slider_0", "slider_1"):  # the ends of the ranges, where a code is least like the data
        for end in ("min", "max"):
            old = canvas_pixels(page, "sl_view")
            set_range(page, slider, float(page.locator(f"#{slider} input[type=range]").get_attribute(end)))
            if slider_values(page) != values:
                wait_canvas(page, "sl_view", other_than=old)
            values = slider_values(page)
            assert_matches_server(canvas_pixels(page, "sl_view"), ui.explorer.decode_sliders(model, index, values),
                                  f"{model} at {values}")
    assert_clean(ui)


def test_the_interpolation_t_drag_decodes_in_the_page(ui):
    """The t slider decodes both models in the page: no request during a drag, frames within budget, and
    each canvas is the server's decode of z(t), linear and spherical."""
    import numpy as np

    page = ui.page
    open_tab(page, "Interpolate")
    for key, name in (("in-a", "digits_ae"), ("in-b", "digits_vae")):
        wait_page_decoding(ui, key, name)
    result = drag(ui, "in_t", "in-b")
    print(f"interpolation: {len(result.latencies_ms)} frames (two models each), p95 {result.p95():.2f} ms, on "
          f"screen p95 {np.percentile(result.shown_ms, 95):.2f} ms; "
          f"{len(result.requests)} requests ({result.polls} timer polls)")
    assert result.requests == []
    assert result.p95() <= FRAME_BUDGET_MS
    for path in ("linear", "spherical"):
        if path == "spherical":
            page.get_by_label("spherical").check()
            page.wait_for_function("() => window.vaePage.views['in-b'].spec.mode === 'spherical' "
                                   "&& window.vaePage.views['in-b'].drawn > 0")
        for t in (0.0, 0.37, 1.0):
            set_range(page, "in_t", t)
            # decoder.js draws within the input event's dispatch: once both views hold t, both are drawn.
            page.wait_for_function("t => ['in-a', 'in-b'].every(k => Number(window.vaePage.views[k].latest) === t)",
                                   arg=t)
            for view, name in (("in_view_a", "digits_ae"), ("in_view_b", "digits_vae")):
                assert_matches_server(canvas_pixels(page, view), ui.explorer.interpolate_at(name, 0, 1, t, path),
                                      f"{name} at t={t}, {path}")
    screenshot(page, "page_decode_interpolate")
    assert_clean(ui)


def test_the_page_runs_every_op_as_torch_does(ui):
    """decoder.js against torch on decoders bigger and odder than the shipped ones: an RGB conv decoder of an
    odd size (output padding on one axis only), a leaky-ReLU MLP, and one of every other layer the page knows
    (batch norm, upsampling, conv2d, tanh), each fetched as a page fetches it and run on random codes."""
    import numpy as np
    import torch

    from vae_explorer import build_model
    from vae_explorer.models import page as page_ops

    from .test_page_decoder import _Layers

    class Wrapped:  # _Layers as a model: what PageDecoders asks of one
        def __init__(self):
            torch.manual_seed(3)
            self.net = _Layers().eval()
            for bn in (self.net.net[1], self.net.net[6]):
                bn.running_mean.uniform_(-1, 1)
                bn.running_var.uniform_(0.5, 2)

        def page_decoder(self):
            return page_ops.describe(self.net, [], 3, (1, 2, 3))

        def decode(self, z):
            return self.net(z)

    torch.manual_seed(0)
    models = {"conv_rgb": build_model("conv_vae", input_shape=(3, 20, 13), latent_dim=6),
              "mlp_leaky": build_model("vae", activation="leaky_relu", hidden=(64, 32), latent_dim=5),
              "every_op": Wrapped()}
    for name, model in models.items():
        export = ui.explorer.pages.export(model, f"optest-{name}")
        assert export.index_file is not None, export.reason
        z = torch.randn(4, model.page_decoder().latent_dim) * 2
        got = ui.page.evaluate("""async ([url, codes]) => { const net = await window.vaePage.load(url);
            return codes.map(z => Array.from(window.vaePage.forward(net, z))); }""",
                               [f"gradio_api/file={export.index_file}", z.tolist()])
        with torch.no_grad():
            want = model.decode(z).reshape(len(z), -1).numpy()
        err = np.abs(np.asarray(got) - want).max()
        assert err < 1e-5, f"{name}: the page's decode differs from torch's by {err:.3g}"


def test_a_model_the_page_cannot_run_is_decoded_on_the_server(ui):
    """A table model's rows are drawn by the server: the page says so, and a slider move asks the server."""
    page = ui.page
    open_tab(page, "Latent sliders")
    choose(page, "sl_model", "breast_cancer_tabular_vae")
    page.wait_for_function("() => { const v = window.vaePage && window.vaePage.views.sl; return !!(v && v.spec "
                           "&& v.mode === 'server' && v.spec.model === 'breast_cancer_tabular_vae'); }")
    expect(page.locator("#sl_view")).to_contain_text("decoded on the server (its rows are shown as a table)")
    rows = page.locator("#sl_rows")
    expect(rows).to_be_visible()
    before = rows.inner_text()
    set_range(page, "slider_0", float(page.locator("#slider_0 input[type=range]").get_attribute("max")))
    expect(rows).not_to_have_text(before)  # the server decoded the moved code
    screenshot(page, "page_decode_server_fallback")
    choose(page, "sl_model", "digits_vae")  # leave the tab as the other tests expect it
    wait_page_decoding(ui, "sl", "digits_vae")
    assert_clean(ui)


def test_sample_button_draws_a_new_grid(ui):
    page = ui.page
    open_tab(page, "Sample")
    before = {k: wait_img(page, k) for k in ("sa_a", "sa_b")}
    seed = page.get_by_label("Seed", exact=True)
    seed.fill("7")  # the same seed would draw the same grid
    page.locator("#sa_button").click()
    for k, old in before.items():
        wait_img(page, k, other_than=old)
    size = page.evaluate("() => { const i = document.querySelector('#sa_a img'); return [i.naturalWidth, i.naturalHeight]; }")
    assert size[0] == size[1] and size[0] >= 7 * 8, size  # a square 7×7 grid of 8×8 digits, upscaled
    screenshot(page, "sample")
    assert_clean(ui)


def test_denoise_an_uploaded_image(ui, tmp_path):
    from PIL import Image, ImageDraw

    page = ui.page
    open_tab(page, "Denoise")
    text = page.locator("#de_text")
    expect(text).to_contain_text("dB")  # test image 0, drawn at load
    before = wait_img(page, "de_clean")
    path = tmp_path / "stroke.png"
    im = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(im).line([(20, 10), (44, 10), (26, 54)], fill="white", width=7)  # a "7"
    im.save(path)
    page.locator("#de_upload input[type=file]").set_input_files(str(path))
    expect(text).to_contain_text("PNG 64×64 RGB")  # the upload's own note, not test image 0's
    expect(text).to_contain_text(re.compile(r"\d+\.\d dB"))
    wait_img(page, "de_clean", other_than=before)
    gallery = page.locator("#de_out")
    expect(gallery).to_contain_text(re.compile(r"digits_denoising_ae: \d+\.\d dB"))
    expect(gallery.locator("img").first).to_be_visible()
    screenshot(page, "denoise")
    assert_clean(ui)


def test_denoise_captions_are_in_view(ui):
    page = ui.page
    open_tab(page, "Denoise")
    page.wait_for_function("() => document.querySelectorAll('#de_out .caption-label').length >= 2")
    clipped = page.evaluate("""() => { const g = document.querySelector('#de_out').getBoundingClientRect();
        return [...document.querySelectorAll('#de_out .caption-label')].filter(c => {
            const r = c.getBoundingClientRect(); return r.bottom > g.bottom || r.top < g.top; })
            .map(c => c.textContent); }""")
    assert clipped == [], f"captions outside the gallery's box: {clipped}"


def test_train_shows_progress_and_cancels(ui):
    page = ui.page
    jobs = ui.explorer.jobs
    open_tab(page, "Train")
    status = page.locator("#tr_status")
    expect(page.locator("#tr_model input")).to_have_value("vae")  # the default
    page.locator("#tr_latent input").fill("2")
    page.locator("#tr_epochs input").fill("1000")  # far more than the test waits for: still running
    page.locator("#tr_name textarea").fill(f"browser_test_{int(time.time())}")
    page.locator("#tr_start").click()
    try:
        # A fresh process imports torch and loads the data first: tens of seconds on a busy 2-core machine.
        expect(status).to_contain_text("status running", timeout=90_000)
        page.wait_for_function(f"() => ({JS_CURVE_POINTS})() >= 2", timeout=30_000)
        first = page.evaluate(JS_CURVE_POINTS)
        page.wait_for_function(f"n => ({JS_CURVE_POINTS})() > n", arg=first, timeout=10_000)
        grown = page.evaluate(JS_CURVE_POINTS)
        assert grown > first
        expect(status).to_contain_text("images/s")
        expect(status).to_contain_text("on cpu")
        assert jobs.current is not None and jobs.current.status == "running"
        screenshot(page, "train_running")

        page.locator("#tr_cancel").click()
        # How fast a cancel lands is a benchmark's question (it is about a second on an idle machine); here,
        # that it does, and that the run then stops.
        page.wait_for_function("() => document.querySelector('#tr_status').innerText.includes('cancelled')",
                               timeout=30_000)
        assert jobs.current.status == "cancelled"
        # The curve stops growing once cancelled.
        stopped = page.evaluate(JS_CURVE_POINTS)
        page.wait_for_timeout(1200)
        assert page.evaluate(JS_CURVE_POINTS) == stopped
        screenshot(page, "train_cancelled")
    finally:
        jobs.close()  # never leave a worker process behind a failed assertion
    assert_clean(ui)


def choose(page, elem_id: str, option: str, timeout: int = PAGE_TIMEOUT_MS) -> None:
    """Pick `option` in the dropdown #elem_id as a person does: open it, click the option."""
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).click(timeout=timeout)


def test_a_csv_uploaded_trains_and_its_anomalies_show_as_a_table(ui, tmp_path):
    """A table end to end: choose the csv dataset (the model follows: a table model), upload a CSV, name the
    label and the id column, train; then the Reconstruct tab's anomaly view lists the worst rows as a table
    with ROC-AUC and the curves."""
    page = ui.page
    jobs = ui.explorer.jobs
    name = f"browser_table_{int(time.time())}"
    open_tab(page, "Train")
    choose(page, "tr_dataset", "csv")
    expect(page.locator("#tr_model input")).to_have_value(re.compile(r"^tabular_"))
    expect(page.locator("#tr_table")).to_be_visible()
    page.locator("#tr_table input[type=file]").set_input_files(str(write_fault_table(tmp_path / "faults.csv")))
    page.locator("#tr_label textarea").fill("kind")
    page.locator("#tr_ignore textarea").fill("id")
    choose(page, "tr_model", "tabular_ae")
    page.locator("#tr_latent input").fill("2")
    page.locator("#tr_epochs input").fill("30")
    page.locator("#tr_lr input").fill("0.003")
    page.locator("#tr_name textarea").fill(name)
    expect(page.locator("#tr_table")).to_contain_text("45.3 KB")  # the upload arrived before starting
    page.locator("#tr_start").click()
    try:
        expect(page.locator("#tr_status")).to_contain_text("status finished", timeout=180_000)
        expect(page.locator("#tr_status")).to_contain_text("rows/s")
        screenshot(page, "train_table_finished")
    finally:
        jobs.close()

    open_tab(page, "Reconstruct")
    choose(page, "ano_model", name, timeout=10_000)  # the pickers refresh every 3 s
    text = page.locator("#ano_text")
    expect(text).to_contain_text("ROC-AUC", timeout=30_000)  # the digits models' texts have none
    auc = float(re.search(r"ROC-AUC ([\d.]+)", text.inner_text()).group(1))
    # Better than chance; how well a model finds these faults is the server test's check (batch 64, here 128).
    assert auc > 0.6, text.inner_text()
    rows = page.locator("#ano_rows")
    expect(rows).to_be_visible()
    expect(rows).to_contain_text("colour")
    expect(page.locator("#ano_grid")).to_be_hidden()
    expect(page.locator("#ano_curves .js-plotly-plot")).to_be_visible()
    rows.scroll_into_view_if_needed()
    screenshot(page, "anomalies_table")
    assert_clean(ui)


def test_diagnostics_show_active_units_and_hide_the_kl_for_an_ae(ui):
    page = ui.page
    open_tab(page, "Diagnostics")
    text = page.locator("#dg_text")
    expect(text).to_contain_text("dimensions active", timeout=20_000)
    expect(page.locator("#dg_kl .js-plotly-plot")).to_be_visible()
    expect(page.locator("#dg_traversals img")).to_be_visible()
    screenshot(page, "diagnostics")
    page.locator("#dg_model input").click()
    page.get_by_role("option", name="digits_ae", exact=True).click()
    expect(text).to_contain_text("2 of 2", timeout=20_000)
    expect(page.locator("#dg_kl")).to_be_hidden()
    assert_clean(ui)


def test_diagnostics_prior_scorecard_and_pca_views(ui):
    """Each newer Diagnostics view in its sub-tab: AE and VAE side by side against N(0, I); the sprites β-VAE's
    scorecard with labelled traversals, and the plain message for a model without known factors; the linear
    AE's principal angles with reconstructions."""
    page = ui.page
    open_tab(page, "Diagnostics")
    open_tab(page, "Prior vs codes")
    expect(page.locator("#pf_right_text")).to_contain_text("is this model's prior", timeout=30_000)
    expect(page.locator("#pf_left_text")).to_contain_text("is not this model's prior")
    for elem_id in ("pf_left_moments", "pf_left_gap", "pf_right_moments", "pf_right_gap"):
        page.wait_for_function(JS_PLOT_READY, arg=elem_id)
    screenshot(page, "diagnostics_prior")
    open_tab(page, "Disentanglement")
    expect(page.locator("#ds_text")).to_contain_text("DCI informativeness", timeout=60_000)
    page.wait_for_function(JS_PLOT_READY, arg="ds_importance")
    wait_img(page, "ds_traversals")
    screenshot(page, "diagnostics_disentanglement")
    page.locator("#ds_model input").click()
    page.get_by_role("option", name="digits_vae", exact=True).click()
    expect(page.locator("#ds_text")).to_contain_text("needs known factors")
    expect(page.locator("#ds_importance")).to_be_hidden()
    screenshot(page, "diagnostics_disentanglement_no_factors")
    open_tab(page, "Linear AE vs PCA")
    expect(page.locator("#lp_text")).to_contain_text("principal angles", timeout=30_000)
    page.wait_for_function(JS_PLOT_READY, arg="lp_angles")
    wait_img(page, "lp_recon")
    screenshot(page, "diagnostics_linear_pca")
    assert_clean(ui)


def test_diagnostics_codebook_view(ui):
    """The Codebook sub-tab: residual VQ's grid of codes sized by use, the chosen code's users and the levels
    side by side; typing a code shows it; a plain AE gets the message naming the VQ models."""
    page = ui.page
    open_tab(page, "Diagnostics")
    open_tab(page, "Codebook")
    text = page.locator("#cb_text")
    expect(text).to_contain_text("codes used / K", timeout=30_000)
    expect(text).to_contain_text("after each level")
    page.wait_for_function(JS_PLOT_READY, arg="cb_grid")
    most_used = ui.explorer.most_used_code("digits_rvq_vae", 1)
    expect(page.locator("#cb_code input")).to_have_value(str(most_used))  # it opens on the most used code
    expect(text).to_contain_text(f"Code {most_used} (level 1)")
    expect(page.locator("#cb_grid .layer-above image")).to_have_count(64)  # rvq level 1: no dead code
    users = wait_img(page, "cb_users")
    wait_img(page, "cb_levels")
    screenshot(page, "diagnostics_codebook")
    page.locator("#cb_level input").fill("2")
    page.locator("#cb_code input").fill("7")
    page.locator("#cb_show").click()
    expect(text).to_contain_text("Code 7 (level 2)", timeout=20_000)
    wait_img(page, "cb_users", other_than=users)
    screenshot(page, "diagnostics_codebook_level2_code7")
    # A click on a code in the grid chooses it (code 12: the 13th point of the grid's marker trace).
    page.locator("#cb_grid .scatterlayer .trace path.point").nth(12).click(force=True)
    expect(text).to_contain_text("Code 12 (level 2)", timeout=20_000)
    expect(page.locator("#cb_code input")).to_have_value("12")
    choose(page, "cb_model", "digits_ae")
    expect(text).to_contain_text("has no codebook", timeout=20_000)
    expect(page.locator("#cb_grid")).to_be_hidden()
    expect(page.locator("#cb_users")).to_be_hidden()
    screenshot(page, "diagnostics_codebook_not_vq")
    choose(page, "cb_model", "digits_vq_vae")
    expect(text).to_contain_text("digits_vq_vae over all 359 test images", timeout=20_000)
    expect(page.locator("#cb_levels")).to_be_hidden()
    expect(page.locator("#cb_level input")).to_have_value("1")
    assert_clean(ui)


def test_train_form_shows_the_settings_the_chosen_model_has(ui):
    """The Train tab asks the registry: β only for models with a KL weight, input noise only for AEs; a
    setting the model lacks is hidden, and the extra box takes any other flag."""
    page = ui.page
    open_tab(page, "Train")
    choose(page, "tr_dataset", "digits")  # an earlier test may have left a table chosen
    choose(page, "tr_model", "vae")
    expect(page.locator("#tr_beta")).to_be_visible()
    expect(page.locator("#tr_noise")).to_be_hidden()
    expect(page.locator("#tr_extra textarea")).to_be_visible()
    page.locator("#tr_model input").click()
    page.get_by_role("option", name="denoising_ae", exact=True).click()
    expect(page.locator("#tr_beta")).to_be_hidden()
    expect(page.locator("#tr_noise")).to_be_visible()
    expect(page.locator("#tr_noise input")).to_have_value("0.5")  # the preset's value
    screenshot(page, "train_form_denoising_ae")
    page.locator("#tr_model input").click()
    page.get_by_role("option", name="vae", exact=True).click()
    expect(page.locator("#tr_beta")).to_be_visible()
    # The dataset follows the model's data kind and back: a table model takes a table, an image model images.
    choose(page, "tr_model", "tabular_vae")
    expect(page.locator("#tr_dataset input")).to_have_value("breast_cancer")
    choose(page, "tr_dataset", "digits")
    expect(page.locator("#tr_model input")).to_have_value("ae")
    choose(page, "tr_model", "vae")
    expect(page.locator("#tr_beta")).to_be_visible()
    assert_clean(ui)


def test_choosing_mnist_on_the_train_tab_offline_says_where_the_files_go(ui):
    """Offline, choosing MNIST fetches nothing: the status line names the files and the folder for them."""
    page = ui.page
    open_tab(page, "Train")
    choose(page, "tr_dataset", "mnist")
    status = page.locator("#tr_data_status")
    expect(status).to_contain_text("offline", timeout=300_000)  # a check of its servers' reachability first
    for expected in ("MNIST/raw", "train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        expect(status).to_contain_text(expected)
    screenshot(page, "train_mnist_offline")
    choose(page, "tr_dataset", "digits")  # as the other tests expect it
    expect(status).to_be_hidden()
    assert_clean(ui)


def test_models_tab_shows_a_card(ui):
    page = ui.page
    open_tab(page, "Models")
    card = page.locator("#mo_card")
    expect(card.locator("h3").first).to_have_text("digits_vae")  # the default checkpoint
    expect(card).to_contain_text("Variational autoencoder")
    screenshot(page, "models")
    # The picker lists every checkpoint on the server (a run the Train test cancelled included: its
    # last epoch was saved, and the pickers refresh every 3 s), and choosing one shows its card.
    page.locator("#mo_model input").click()
    for name in ui.explorer.checkpoint_names():
        expect(page.get_by_role("option", name=name, exact=True)).to_be_attached(timeout=8_000)
    page.get_by_role("option", name="digits_vq_vae", exact=True).click()
    expect(card.locator("h3").first).to_have_text("digits_vq_vae")
    assert_clean(ui)


# ---- draw to encode (sketchpad.js) ---------------------------------------------------------------------

# Each map's "your drawing"/"your upload" mark as drawn (its data and pixel position, whether it has an
# ellipse), and where the map's own axes put the mark's data coordinates.
JS_MARKS = """kind => ['left', 'right'].map(side => {
    const gd = document.querySelector(`#map_${side} .js-plotly-plot`);
    const g = gd && gd.querySelector(`svg.vae-marks g.vae-mark-${kind}`);
    if (!g) return null;
    const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, x = Number(g.dataset.x), y = Number(g.dataset.y);
    return {x, y, px: Number(g.dataset.px), py: Number(g.dataset.py), axisPx: xa._offset + xa.l2p(x),
            axisPy: ya._offset + ya.l2p(y), ellipse: !!g.querySelector('path.vae-ellipse')}; })"""


def draw_stroke(page, points) -> None:
    """A stroke with the mouse through `points` (fractions of the sketchpad's side), as a person draws."""
    box = page.locator("#draw_pad canvas.vae-pad").bounding_box()
    xy = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in points]
    page.mouse.move(*xy[0])
    page.mouse.down()
    for (x0, y0), (x1, y1) in zip(xy[:-1], xy[1:]):
        for k in range(1, 9):
            page.mouse.move(x0 + (x1 - x0) * k / 8, y0 + (y1 - y0) * k / 8)
    page.mouse.up()


def encoded_drawing(ui: UI, strokes) -> dict:
    """Clear the sketchpad, draw `strokes`, and wait until the page has the answer to the finished drawing
    (no request left, the last one sent after the last stroke): the marks, the pictures, the canvas."""
    page = ui.page
    page.locator("#draw_pad .vae-clear").click()
    for s in strokes:
        draw_stroke(page, s)
    wait_quiet(ui, quiet_ms=400)
    page.wait_for_function("() => { const st = window.vaeSketch.state; return st.encodes > 0; }")
    return {"marks": page.evaluate(JS_MARKS, "drawing"),
            "pictures": page.evaluate("""() => Array.from(document.querySelectorAll('#draw_pad .vae-result'))
                .map(r => [r.querySelector('img.vae-input').src, r.querySelector('img.vae-output').src])"""),
            "canvas": page.evaluate("() => document.querySelector('#draw_pad canvas.vae-pad').toDataURL('image/png')")}


def test_a_drawn_stroke_moves_the_point_on_both_maps(ui):
    page = ui.page
    open_tab(page, "Latent map")
    page.wait_for_function(JS_PLOT_READY, arg="map_right")
    page.wait_for_function("() => window.vaeSketch && window.vaeSketch.state")
    page.locator("#draw_pad canvas.vae-pad").scroll_into_view_if_needed()
    expect(page.locator("#draw_pad .vae-result[data-side=right] .vae-name")).to_contain_text("digits_vae")
    one = encoded_drawing(ui, [[(0.5, 0.12), (0.5, 0.88)]])  # a "1"
    seven = encoded_drawing(ui, [[(0.2, 0.15), (0.8, 0.15), (0.4, 0.9)]])  # a "7"
    for drawn in (one, seven):
        assert all(drawn["marks"]), drawn["marks"]
        for side, mark in zip(("left", "right"), drawn["marks"]):
            # The mark is where the map's own axes put its coordinates ...
            assert abs(mark["px"] - mark["axisPx"]) < 1 and abs(mark["py"] - mark["axisPy"]) < 1, mark
        # ... and those are where the server's explorer puts this very drawing.
        placed = ui.explorer.encode_drawing(["digits_ae", "digits_vae"], "auto", drawing=drawn["canvas"])
        for mark, want in zip(drawn["marks"], placed):
            assert abs(mark["x"] - want["x"]) < 1e-4 and abs(mark["y"] - want["y"]) < 1e-4, (mark, want)
    assert [m["ellipse"] for m in seven["marks"]] == [False, True]  # the AE has no posterior; the VAE's q(z|x)
    for a, b in zip(one["marks"], seven["marks"]):  # the point moved on both maps
        assert (a["px"], a["py"]) != (b["px"], b["py"])
    assert all(src.startswith("data:image/png") for pair in seven["pictures"] for src in pair)
    assert one["pictures"] != seven["pictures"]  # the drawing and its reconstructions updated
    expect(page.locator("#draw_pad .vae-status")).to_contain_text("placed on both maps")

    # Another projection: the same drawing is read again and marked on the new maps (a UMAP map has no exact
    # place for a new code: the mark sits on its nearest test point, without an ellipse).
    page.get_by_role("radio", name="umap").check()
    page.wait_for_function(f"""() => {{ const m = ({JS_MARKS})('drawing');
        return m.every(v => v) && [0, 1].every(i => {{
            const gd = document.querySelector(`#map_${{['left', 'right'][i]}} .js-plotly-plot`);
            return gd._fullLayout.title.text.endsWith('UMAP') && !m[i].ellipse; }}); }}""", timeout=90_000)
    umap_marks = page.evaluate(JS_MARKS, "drawing")
    for name, mark in zip(("digits_ae", "digits_vae"), umap_marks):
        want = ui.explorer.encode_drawing([name], "umap", drawing=seven["canvas"])[0]
        assert want["method"] == "umap" and abs(mark["x"] - want["x"]) < 1e-4 and abs(mark["y"] - want["y"]) < 1e-4
    page.get_by_role("radio", name="auto").check()
    page.wait_for_function(f"() => ({JS_MARKS})('drawing')[1] && ({JS_MARKS})('drawing')[1].ellipse")

    page.locator("#draw_pad .vae-resample").click()
    expect(page.locator("#draw_pad .vae-result[data-side=left] .vae-samples-caption")).to_contain_text("no posterior")
    expect(page.locator("#draw_pad .vae-result[data-side=right] .vae-samples-caption")).to_contain_text("q(z|x)")
    page.wait_for_function("() => { const i = document.querySelector('#draw_pad .vae-result[data-side=right] "
                           "img.vae-samples'); return i.complete && i.naturalWidth > 0; }")
    page.locator("#draw_pad").screenshot(path=str(SCREENSHOTS / "draw_to_encode_pad.png"))
    screenshot(page, "draw_to_encode")
    assert_clean(ui)


def test_an_uploaded_image_is_marked_on_the_maps(ui, tmp_path):
    from PIL import Image, ImageDraw

    page = ui.page
    path = tmp_path / "upload_two.png"
    im = Image.new("RGB", (96, 96), "white")
    ImageDraw.Draw(im).line([(20, 30), (48, 12), (74, 30), (22, 84), (78, 84)], fill="black", width=12)  # a "2"
    im.save(path)
    open_tab(page, "Reconstruct")
    page.locator("#rec_upload input[type=file]").set_input_files(str(path))
    open_tab(page, "Latent map")
    page.wait_for_function(f"() => ({JS_MARKS})('upload').every(m => m)")
    expect(page.locator("#draw_pad .vae-upload-note")).to_contain_text("upload_two.png", timeout=PAGE_TIMEOUT_MS)
    marks = page.evaluate(JS_MARKS, "upload")
    placed = ui.explorer.encode_drawing(["digits_ae", "digits_vae"], "auto", upload=str(path))
    for mark, want in zip(marks, placed):
        assert abs(mark["x"] - want["x"]) < 1e-4 and abs(mark["y"] - want["y"]) < 1e-4, (mark, want)
        assert abs(mark["px"] - mark["axisPx"]) < 1 and abs(mark["py"] - mark["axisPy"]) < 1, mark
    # Keyboard fallback: the same file uploaded in the sketchpad's own section is put on the pad and encoded.
    page.locator("#draw_pad .vae-clear").click()
    page.locator("#draw_upload input[type=file]").set_input_files(str(path))
    expect(page.locator("#draw_pad .vae-status")).to_contain_text("from the uploaded file", timeout=PAGE_TIMEOUT_MS)
    drawn = page.evaluate(JS_MARKS, "drawing")
    for mark, want in zip(drawn, placed):
        assert abs(mark["x"] - want["x"]) < 1e-4 and abs(mark["y"] - want["y"]) < 1e-4, (mark, want)
    page.locator("#map_left").scroll_into_view_if_needed()
    page.screenshot(path=str(SCREENSHOTS / "draw_upload_marked.png"))
    page.locator("#draw_pad .vae-clear").click()  # leave the pad empty for the tests after
    assert_clean(ui)


def test_the_page_keeps_no_run_history(ui):
    """After every view has run: nothing recorded in the page's storage (Gradio's run history would keep each
    call's outputs, maps included, and rewrite them at every event)."""
    stored = ui.page.evaluate("() => Object.keys(localStorage).map(k => [k, localStorage.getItem(k).length])")
    assert not [k for k, _ in stored if "run-history" in k], stored
    assert sum(n for _, n in stored) < 100_000, stored


def test_page_made_no_outside_requests(ui):
    """Last: after every view has run, nothing was fetched from (or attempted to) the internet."""
    assert ui.external_requests == []


def test_a_shared_url_reopens_its_view_and_follows_changes(ui):
    """?left=...&right=...&projection=...&index=...&tab=... opens those models, that projection and that item
    on the Latent map; the page rewrites its address as they change (history.replaceState), so copying it
    shares the view. A second page of the same browser, so the shared page keeps its state."""
    page = ui.page.context.browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    page.route("**/*", lambda r: r.continue_() if urlsplit(r.request.url).hostname in LOCAL_HOSTS else r.abort())
    try:
        base = ui.page.url.split("?")[0]
        page.goto(f"{base}?left=digits_conv_ae&right=digits_beta_vae&projection=pca&index=17&tab=map")
        page.wait_for_function(JS_PLOT_READY, arg="map_left", timeout=60_000)
        expect(page.locator("#map_left_model input")).to_have_value("digits_conv_ae")
        expect(page.locator("#map_right_model input")).to_have_value("digits_beta_vae")
        # The whole page loads first (a minute or more on a busy 2-core machine), then the item is picked.
        expect(page.locator("#map_index input")).to_have_value("17", timeout=150_000)
        expect(page.locator("#sel_caption")).to_contain_text("Test image 17", timeout=60_000)
        page.wait_for_function("() => { const gd = document.querySelector('#map_left .js-plotly-plot');"
                               " return !!(gd && gd.layout.title && String(gd.layout.title.text || '')"
                               ".includes('digits_conv_ae') && String(gd.layout.title.text).includes('PCA')); }")
        page.wait_for_function(f"() => ({JS_RINGS})().every(i => i === 17)", timeout=90_000)
        screenshot(page, "url_state_opened")
        # Changes go into the address: another item, another tab.
        page.locator("#map_index input").fill("23")
        page.locator("#map_index input").press("Enter")
        page.wait_for_function("() => new URL(location.href).searchParams.get('index') === '23'")
        open_tab(page, "Diagnostics")
        page.wait_for_function("() => new URL(location.href).searchParams.get('tab') === 'diagnostics'")
        shared = page.url
        assert "left=digits_conv_ae" in shared and "right=digits_beta_vae" in shared, shared
        # The address opens the tab it names (its views fill in as after a click).
        page.goto(shared)
        expect(page.get_by_role("tab", name="Diagnostics", exact=True)).to_have_attribute("aria-selected", "true",
                                                                                           timeout=150_000)
        expect(page.locator("#dg_text")).to_contain_text("dimensions active", timeout=60_000)
        expect(page.locator("#map_index input")).to_have_value("23", timeout=60_000)
    finally:
        page.close()


def test_diagnostics_attribute_vectors_and_export(ui):
    """Attribute vectors: the strip, the histogram by group and the strength slider's decode; another pair of
    groups changes them. Export: the codes CSV and a figure arrive as downloads."""
    page = ui.page
    open_tab(page, "Diagnostics")
    open_tab(page, "Attribute vectors")
    text = page.locator("#av_text")
    expect(text).to_contain_text("1 → 7", timeout=60_000)
    expect(text).to_contain_text("Consistency")
    page.wait_for_function(JS_PLOT_READY, arg="av_hist")
    strip = wait_img(page, "av_strip")
    moved = wait_img(page, "av_moved")
    screenshot(page, "diagnostics_attribute_vectors")
    set_range(page, "av_strength", -2)
    page.locator("#av_strength input[type=range]").dispatch_event("change")
    page.locator("#av_strength input[type=range]").dispatch_event("pointerup")
    wait_img(page, "av_moved", other_than=moved)
    choose(page, "av_b", "0")
    expect(text).to_contain_text("1 → 0", timeout=30_000)
    wait_img(page, "av_strip", other_than=strip)
    open_tab(page, "Export")
    page.locator("#ex_codes").click()
    expect(page.locator("#ex_note")).to_contain_text("digits_vae_codes.csv", timeout=30_000)
    link = page.locator("#ex_files a[href$='digits_vae_codes.csv']")
    expect(link).to_have_count(1)
    downloaded = page.request.get(link.get_attribute("href")).text()  # what the link gives
    assert downloaded.splitlines()[0] == "z0,z1,label,label_name" and len(downloaded.splitlines()) == 360
    page.locator("#ex_bundle").click()
    expect(page.locator("#ex_note")).to_contain_text("python -m vae_explorer train --model vae", timeout=30_000)
    screenshot(page, "diagnostics_export")
    assert_clean(ui)
