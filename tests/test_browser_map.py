"""The touchable latent map in a real, offline Chromium: hover a point to see its image, click empty space
to decode there, drag the marker, type coordinates. Shares test_browser's page fixture and helpers; each
test opens the Latent map tab and waits for the state it needs.

    python -m pytest tests/test_browser_map.py -q       # screenshots land in artifacts/screenshots/
"""
from __future__ import annotations

import io
import json
import re
import urllib.request

import numpy as np
import pytest
from PIL import Image

from . import test_browser
from .test_browser import (JS_ISOLATED_POINT, JS_PLOT_READY, JS_TIMER_FNS, SCREENSHOTS, assert_clean,
                           assert_matches_server, canvas_pixels, expect, img_src, open_tab, screenshot, wait_quiet)

ui = test_browser.ui  # the same page fixture (one page for this module)

pytestmark = pytest.mark.browser

# The emptiest place of a map's plot area (farthest from every point, away from the edges), in viewport pixels.
JS_EMPTY_SPOT = """id => {
    const gd = document.querySelector(`#${id} .js-plotly-plot`), fl = gd._fullLayout;
    const xa = fl.xaxis, ya = fl.yaxis, box = gd.getBoundingClientRect(), pts = [];
    gd._fullData.forEach(tr => { for (let k = 0; k < tr.x.length; k++)
        pts.push([xa._offset + xa.l2p(tr.x[k]), ya._offset + ya.l2p(tr.y[k])]); });
    let best = null, bestGap = -1;
    for (let px = xa._offset + 30; px < xa._offset + xa._length - 30; px += 6)
        for (let py = ya._offset + 30; py < ya._offset + ya._length - 30; py += 6) {
            let gap = Infinity;
            for (const [qx, qy] of pts) gap = Math.min(gap, Math.hypot(px - qx, py - qy));
            if (gap > bestGap) { bestGap = gap; best = [px, py]; }
        }
    return {x: box.left + best[0], y: box.top + best[1], gap: bestGap,
            data: [xa.p2d(best[0] - xa._offset), ya.p2d(best[1] - ya._offset)],
            per_px: [Math.abs(xa.p2d(1) - xa.p2d(0)), Math.abs(ya.p2d(1) - ya.p2d(0))],
            range: [xa.range.slice(), ya.range.slice()]}; }"""

JS_MARKER = """id => { const m = document.querySelector(`#${id}_marker`);
    if (!m || m.style.display !== 'block') return null;
    const r = m.getBoundingClientRect();
    return {x: Number(m.dataset.x), y: Number(m.dataset.y), cx: r.left + r.width / 2, cy: r.top + r.height / 2}; }"""

JS_RANGES = """id => { const fl = document.querySelector(`#${id} .js-plotly-plot`)._fullLayout;
    return [fl.xaxis.range.slice(), fl.yaxis.range.slice()]; }"""


def fetched(page, elem_id: str) -> np.ndarray:
    """The image #elem_id shows, fetched from the server as the page did."""
    with urllib.request.urlopen(img_src(page, elem_id), timeout=10) as r:
        return np.asarray(Image.open(io.BytesIO(r.read())).convert("L"), np.float32)


def wait_src(page, elem_id: str, other_than: str | None = None) -> str:
    """Wait until #elem_id's image has a source (another than `other_than`). Not that it loaded: while the page
    decodes a map's marker itself the server's image is hidden, and Chromium defers hidden lazy images."""
    page.wait_for_function("""([id, old]) => { const i = document.querySelector(`#${id} img`);
        return !!(i && i.src && i.src !== old); }""", arg=[elem_id, other_than])
    return img_src(page, elem_id)


def caption_position(page, side: str) -> tuple[float, float]:
    text = page.locator(f"#map_{side}_decoded_caption").inner_text()
    match = re.search(r"decoded at \((-?[\d.]+), (-?[\d.]+)\)", text)
    assert match, text
    return float(match.group(1)), float(match.group(2))


def ready_map(ui, side: str = "left") -> None:
    open_tab(ui.page, "Latent map")
    ui.page.wait_for_function(JS_PLOT_READY, arg=f"map_{side}")
    wait_quiet(ui)
    ui.page.locator(f"#map_{side}").scroll_into_view_if_needed()


def test_hovering_a_point_shows_its_image(ui):
    page = ui.page
    ready_map(ui)
    model = page.evaluate("() => document.querySelector('#map_left .js-plotly-plot')._fullLayout.meta.map.model")
    entry = ui.explorer.load(model)
    for avoid in (-1, 0):  # two different points: the tile follows the pointer
        target = page.evaluate(JS_ISOLATED_POINT, ["map_left", avoid])
        page.mouse.move(target["x"] + 30, target["y"] + 30)
        page.mouse.move(target["x"], target["y"])
        tile = page.locator("#map_left_tile")
        expect(tile).to_be_visible()
        expect(tile).to_have_attribute("data-index", str(target["index"]))
        page.wait_for_function("""() => { const t = document.querySelector('#map_left_tile');
            const u = t.dataset.url; const img = new Image(); img.src = u; return img.complete && img.naturalWidth > 0; }""")
        shot = np.asarray(Image.open(io.BytesIO(tile.screenshot())).convert("L"), np.float32)
        inner = shot[2:-2, 2:-2]  # inside the 2 px frame
        h, w = entry.input_shape[-2:]
        scale = inner.shape[0] // h
        assert inner.shape == (h * scale, w * scale), inner.shape
        shown = inner[scale // 2::scale, scale // 2::scale]  # one sample from the middle of each image pixel
        item = entry.data.test_x[target["index"], 0].numpy().astype(np.float32)
        np.testing.assert_allclose(shown, item, atol=2)
    # The viewport as it is (a full-page screenshot resizes the page, and plotly's relayout ends the hover).
    page.screenshot(path=str(SCREENSHOTS / "latent_map_hover.png"))
    page.mouse.move(5, 5)
    expect(page.locator("#map_left_tile")).to_be_hidden()
    assert_clean(ui)


JS_CAPTION_AT = """([side, x, y]) => { const m = document.querySelector(`#map_${side}_decoded_caption`).innerText
        .match(/decoded at \\((-?[\\d.]+), (-?[\\d.]+)\\)/);
    return !!m && Math.abs(Number(m[1]) - x) < 1e-3 && Math.abs(Number(m[2]) - y) < 1e-3; }"""


def click_empty(ui, side: str = "left") -> dict:
    """Click the emptiest spot of a map and wait until its decode at the marker is shown. (A marker already
    there, from an earlier test, turns the press into a drag without movement: the same decode, also fine.)"""
    page = ui.page
    spot = page.evaluate(JS_EMPTY_SPOT, f"map_{side}")
    assert spot["gap"] > 15, spot  # nothing to pick within plotly's 20 px... or the click picks a point
    page.mouse.move(spot["x"], spot["y"])
    page.mouse.click(spot["x"], spot["y"])
    page.wait_for_function(f"id => ({JS_MARKER})(id) !== null", arg=f"map_{side}")
    marker = page.evaluate(JS_MARKER, f"map_{side}")
    page.wait_for_function(JS_CAPTION_AT, arg=[side, marker["x"], marker["y"]])
    wait_quiet(ui)
    wait_src(page, f"map_{side}_decoded")
    return spot


def test_a_click_on_empty_space_decodes_there(ui):
    page = ui.page
    ready_map(ui)
    index_before = page.locator("#map_index input").input_value()
    spot = click_empty(ui)
    marker = page.evaluate(JS_MARKER, "map_left")
    # The marker is where the click was, in pixels and in the axes' coordinates.
    assert abs(marker["cx"] - spot["x"]) <= 2 and abs(marker["cy"] - spot["y"]) <= 2, (marker, spot)
    # The same 2 px in the axes' units (the page may settle by a fraction of a pixel between aim and click).
    assert np.all(np.abs(np.subtract([marker["x"], marker["y"]], spot["data"])) <= 2 * np.asarray(spot["per_px"])), \
        (marker, spot)
    expect(page.locator("#map_left_decoded_caption")).to_contain_text("decoded at")
    x, y = caption_position(page, "left")
    assert abs(x - marker["x"]) < 1e-3 and abs(y - marker["y"]) < 1e-3
    # What the page shows is the server's decode of that position (the explorer as a function).
    meta = page.evaluate("() => document.querySelector('#map_left .js-plotly-plot')._fullLayout.meta.map")
    expected, _ = ui.explorer.decode_at(meta["model"], meta["projection"], marker["x"], marker["y"])
    np.testing.assert_allclose(fetched(page, "map_left_decoded"), np.asarray(expected.convert("L"), np.float32),
                               atol=1)
    assert page.locator("#map_index input").input_value() == index_before  # empty space selects no point
    assert page.evaluate(JS_RANGES, "map_left") == spot["range"]  # and does not zoom
    screenshot(page, "latent_map_decode_click")
    assert_clean(ui)


JS_MAP_FRAMES = "key => window.vaePage.frames.filter(f => f.view === key).length"


def test_dragging_the_marker_decodes_its_latest_position(ui):
    """The page decodes the dragged marker itself (a raw 2-D map: decoder.js's view map-left), with no
    request while it moves; the server hears the final position and captions it."""
    page = ui.page
    ready_map(ui)
    click_empty(ui)
    page.wait_for_function("() => window.vaePage.views['map-left'].mode === 'page'")
    wait_quiet(ui)
    marker = page.evaluate(JS_MARKER, "map_left")
    ranges = page.evaluate(JS_RANGES, "map_left")
    before = img_src(page, "map_left_decoded")
    frames_before = page.evaluate(JS_MAP_FRAMES, "map-left")
    # Towards the middle of the plot, 40 moves of the mouse (the marker stays on the map).
    centre = page.evaluate("""() => { const gd = document.querySelector('#map_left .js-plotly-plot');
        const fl = gd._fullLayout, r = gd.getBoundingClientRect();
        return [r.left + fl.xaxis._offset + fl.xaxis._length / 2, r.top + fl.yaxis._offset + fl.yaxis._length / 2]; }""")
    steps = 40
    dx, dy = (centre[0] - marker["cx"]) / steps, (centre[1] - marker["cy"]) / steps
    timer_fns = set(page.evaluate(JS_TIMER_FNS))  # the page's timers poll on their own (e.g. for trainings)
    requests, polls, streams = [], [], []

    def on_request(r):
        fn = json.loads(r.post_data).get("fn_index") if r.post_data and r.post_data.startswith("{") else None
        if "/heartbeat/" in r.url:
            return
        (polls if fn in timer_fns else streams if "/queue/data" in r.url else requests).append(f"{r.url} fn={fn}")

    page.mouse.move(marker["cx"], marker["cy"])
    page.on("request", on_request)
    page.mouse.down()
    for k in range(1, steps + 1):
        page.mouse.move(marker["cx"] + dx * k, marker["cy"] + dy * k)
    during = list(requests)  # a queued call's result stream is counted when there are more than the polls'
    drawn = page.evaluate(JS_MAP_FRAMES, "map-left") - frames_before
    page.mouse.up()
    page.remove_listener("request", on_request)
    assert during == [] and len(streams) <= len(polls), f"requests while the marker moved: {during}, {streams}"
    assert drawn >= steps - 1, f"the page drew {drawn} frames for {steps} moves"
    end = page.evaluate(JS_MARKER, "map_left")
    assert end and abs(end["cx"] - centre[0]) <= 2 and abs(end["cy"] - centre[1]) <= 2, (end, centre)
    # The caption and the image end at the marker's last position, whatever the calls in between did.
    page.wait_for_function(JS_CAPTION_AT, arg=["left", end["x"], end["y"]])
    wait_quiet(ui)
    wait_src(page, "map_left_decoded", other_than=before)
    meta = page.evaluate("() => document.querySelector('#map_left .js-plotly-plot')._fullLayout.meta.map")
    expected, _ = ui.explorer.decode_at(meta["model"], meta["projection"], end["x"], end["y"])
    np.testing.assert_allclose(fetched(page, "map_left_decoded"), np.asarray(expected.convert("L"), np.float32),
                               atol=1)
    # What the page drew last is the server's decode of the same position, within one grey level.
    assert_matches_server(canvas_pixels(page, "map_left_view"), expected, "the marker decoded in the page")
    assert page.evaluate(JS_RANGES, "map_left") == ranges  # a drag of the marker is not a zoom box
    screenshot(page, "latent_map_marker_dragged")
    assert_clean(ui)


def test_typed_coordinates_decode_on_both_maps(ui):
    page = ui.page
    ready_map(ui)
    box = page.locator("#map_coordinates textarea")
    wanted = (0.25, -0.5) if box.input_value() != "0.25, -0.5" else (0.5, 0.25)
    box.fill(f"{wanted[0]}, {wanted[1]}")
    box.press("Enter")
    for side in ("left", "right"):
        expect(page.locator(f"#map_{side}_decoded_caption")).to_contain_text(
            f"decoded at ({wanted[0]:.3f}, {wanted[1]:.3f})")
        page.wait_for_function(f"([id, x, y]) => {{ const m = ({JS_MARKER})(id); return m && m.x === x && m.y === y; }}",
                               arg=[f"map_{side}", *wanted])
    box.fill("one, two")
    box.press("Enter")
    expect(page.locator(".toast-body.error")).to_contain_text("two numbers")
    page.locator(".toast-body.error").first.locator("xpath=..").locator("button").first.click()
    expect(page.locator(".toast-body.error")).to_have_count(0)
    box.fill("")
    assert_clean(ui)


def test_redrawn_maps_do_not_stay_in_the_pages_memory(ui):
    """Gradio drops each replaced figure's div without Plotly.purge, and plotly's own listeners kept every one
    alive (2.6 MB per 359-point map redraw); plot_cleanup.js purges them. Six projection switches redraw both
    maps six times: about 30 MB kept without it, about 1 MB with it (heap after a forced garbage collection)."""
    page = ui.page
    ready_map(ui)
    cdp = page.context.new_cdp_session(page)

    def heap_mb() -> float:
        cdp.send("HeapProfiler.collectGarbage")
        cdp.send("HeapProfiler.collectGarbage")
        return cdp.send("Runtime.getHeapUsage")["usedSize"] / 2**20

    projection = page.locator("#map_left").evaluate(
        "() => document.querySelector('#map_left .js-plotly-plot')._fullLayout.meta.map.projection")
    purged, before = page.evaluate("() => window.vaePlotCleanup.purged()"), heap_mb()
    for k in range(6):
        choice = ("pca", "auto")[k % 2]
        page.get_by_label(choice, exact=True).check()
        page.wait_for_function("p => document.querySelector('#map_left .js-plotly-plot')._fullLayout.meta.map"
                               ".projection === p && document.querySelector('#map_right .js-plotly-plot')",
                               arg="pca" if choice == "pca" else projection)
        wait_quiet(ui)
    page.wait_for_function("n => window.vaePlotCleanup.purged() >= n", arg=purged + 10)  # after they settle
    grown = heap_mb() - before
    assert grown < 8, f"the page kept {grown:.1f} MB after six redraws of both maps"
    page.get_by_label("auto", exact=True).check()
    wait_quiet(ui)
    assert_clean(ui)
