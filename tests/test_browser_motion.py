"""Training in motion in a real, offline Chromium: the Train tab's map updates after each epoch while a run
goes and becomes an animation when it ends; the Diagnostics view plays a checkpoint's epochs with plotly's own
play button and epoch slider, in the page. Shares test_browser's page fixture and helpers.

    python -m pytest tests/test_browser_motion.py -q       # screenshots land in artifacts/screenshots/
"""
from __future__ import annotations

import json
import time

import pytest
import torch

from vae_explorer import TrainConfig, build_model, fit

from . import test_browser
from .test_browser import JS_TIMER_FNS, assert_clean, choose, expect, open_tab, screenshot, wait_quiet

ui = test_browser.ui  # the same page fixture (one page for this module)

pytestmark = pytest.mark.browser

# Every point of a plot as [[x, y], ...] over its traces, as plotly draws them now.
JS_POINTS = """id => { const gd = document.querySelector(`#${id} .js-plotly-plot`);
    if (!gd || !gd._fullData) return null;
    return gd._fullData.flatMap(t => Array.from(t.x || [], (x, k) => [x, t.y[k]])); }"""

JS_TITLE = """id => { const gd = document.querySelector(`#${id} .js-plotly-plot`);
    return gd && gd._fullLayout && gd._fullLayout.title ? gd._fullLayout.title.text : null; }"""

JS_ACTIVE = """id => { const gd = document.querySelector(`#${id} .js-plotly-plot`);
    return gd._fullLayout.sliders[0].active; }"""

# The frame named `name` of the animation, flattened as JS_POINTS flattens the plot.
JS_FRAME_POINTS = """([id, name]) => { const gd = document.querySelector(`#${id} .js-plotly-plot`);
    const f = gd._transitionData._frames.find(f => f.name === name);
    return f.data.flatMap(t => Array.from(t.x, (x, k) => [x, t.y[k]])); }"""


def points_moved(before, after) -> float:
    return max(abs(a - b) for p, q in zip(before, after) for a, b in zip(p, q))


def test_the_train_tab_map_moves_after_each_epoch_and_plays_when_done(ui):
    page = ui.page
    jobs = ui.explorer.jobs
    open_tab(page, "Train")
    page.locator("#tr_latent input").fill("2")
    # Long enough (30 epochs of 360 steps) that the live map, redrawn at most every 2 s, shows a running epoch
    # before the run ends: 10 epochs at the default batch could finish within one redraw on an idle machine.
    page.locator("#tr_epochs input").fill("30")
    page.get_by_label("Batch size").fill("4")
    name = f"browser_motion_{int(time.time())}"
    page.locator("#tr_name textarea").fill(name)
    page.locator("#tr_start").click()
    try:
        # While it runs: the newest epoch's map, redrawn as each epoch ends.
        page.wait_for_function(f"""() => /^{name}: epoch ([1-9]|[12][0-9]) of 30$/.test(({JS_TITLE})('tr_motion') || '')
            && document.querySelector('#tr_motion_text').innerText.includes('newest epoch')""", timeout=60_000)
        title = page.evaluate(JS_TITLE, "tr_motion")
        first = page.evaluate(JS_POINTS, "tr_motion")
        assert len(first) == 359
        screenshot(page, "train_motion_running")
        # The next epoch's frame (or, if the run ended meanwhile, the animation opened at the last epoch).
        page.wait_for_function(f"t => ({JS_TITLE})('tr_motion') !== t", arg=title, timeout=60_000)
        assert points_moved(first, page.evaluate(JS_POINTS, "tr_motion")) > 0
        # When it ends: every epoch, played in the page; the KL per dimension per epoch beside it.
        expect(page.locator("#tr_status")).to_contain_text("finished", timeout=120_000)
        page.wait_for_selector("#tr_motion .js-plotly-plot[data-vae-frames='30']", timeout=30_000)
        expect(page.locator("#tr_motion_text")).to_contain_text("Press ▶ Play")
        page.wait_for_function("() => { const gd = document.querySelector('#tr_kl .js-plotly-plot');"
                               " return gd && gd._fullData && gd._fullData[0].type === 'heatmap'"
                               " && gd._fullData[0].x.length === 30; }")
        page.locator("#tr_motion").scroll_into_view_if_needed()
        screenshot(page, "train_motion_done")
    finally:
        jobs.close()
    assert_clean(ui)


@pytest.fixture(scope="module")
def moving_checkpoint(ui, digits):
    """A VAE with 6-D codes (PCA frames) trained for 6 epochs into the served checkpoints folder."""
    name = "browser_moving_vae"
    torch.manual_seed(0)
    fit(build_model("vae", **digits.model_settings(), latent_dim=6), digits,
        TrainConfig(epochs=6, batch_size=64, iwae_k=0, history_images=0, device="cpu", motion_items=300,
                    checkpoint=str(ui.explorer.catalog.root / name)))
    return name


def test_diagnostics_plays_a_checkpoints_epochs_in_the_page(ui, moving_checkpoint):
    page = ui.page
    open_tab(page, "Diagnostics")
    open_tab(page, "Training in motion")
    choose(page, "tm_model", moving_checkpoint)  # listed once the pickers refresh (every 3 s)
    plot = "#tm_plot .js-plotly-plot[data-vae-frames='6']"
    page.wait_for_selector(plot, timeout=30_000)
    expect(page.locator("#tm_text")).to_contain_text("Procrustes")
    assert page.evaluate(JS_ACTIVE, "tm_plot") == 5  # opens at the last epoch
    last = page.evaluate(JS_POINTS, "tm_plot")
    assert len(last) == 300 and points_moved(last, page.evaluate(JS_FRAME_POINTS, ["tm_plot", "6"])) < 1e-9
    screenshot(page, "diagnostics_motion")
    # From here on the page animates by itself: every call it makes is recorded (the pickers' 3-s poll aside).
    wait_quiet(ui)
    timer_fns = set(page.evaluate(JS_TIMER_FNS))
    calls = []

    def on_request(r):
        if "/queue/join" in r.url and json.loads(r.post_data or "{}").get("fn_index") not in timer_fns:
            calls.append(r.post_data)

    page.on("request", on_request)

    # Drag the epoch slider's handle to its left end: the map shows epoch 1, with no call to the server.
    page.locator("#tm_plot .slider-rail-touch-rect").scroll_into_view_if_needed()
    grip = page.locator("#tm_plot .slider-grip-rect").bounding_box()
    rail = page.locator("#tm_plot .slider-rail-rect").bounding_box()
    page.mouse.move(grip["x"] + grip["width"] / 2, grip["y"] + grip["height"] / 2)
    page.mouse.down()
    page.mouse.move(rail["x"] + 2, grip["y"] + grip["height"] / 2, steps=8)
    page.mouse.up()
    page.wait_for_function(f"() => ({JS_ACTIVE})('tm_plot') === 0")
    epoch_1 = page.evaluate(JS_FRAME_POINTS, ["tm_plot", "1"])
    page.wait_for_function(f"""() => {{ const now = ({JS_POINTS})('tm_plot'), want = ({JS_FRAME_POINTS})(['tm_plot', '1']);
        return now.every((p, k) => Math.abs(p[0] - want[k][0]) < 1e-9 && Math.abs(p[1] - want[k][1]) < 1e-9); }}""")
    assert points_moved(last, epoch_1) > 0.05
    expect(page.locator("#tm_plot .slider-group > .slider-label")).to_contain_text("epoch 1")
    screenshot(page, "diagnostics_motion_epoch1")

    # Play: plotly runs through every epoch in the page and stops at the last one, where it started.
    page.locator("#tm_plot .updatemenu-button").filter(has_text="Play").click()
    page.wait_for_function(f"() => ({JS_ACTIVE})('tm_plot') >= 2")
    page.wait_for_function(f"() => ({JS_ACTIVE})('tm_plot') === 5", timeout=30_000)
    page.wait_for_function(f"""() => {{ const now = ({JS_POINTS})('tm_plot'), want = ({JS_FRAME_POINTS})(['tm_plot', '6']);
        return now.every((p, k) => Math.abs(p[0] - want[k][0]) < 1e-9 && Math.abs(p[1] - want[k][1]) < 1e-9); }}""")
    page.remove_listener("request", on_request)
    assert calls == []  # nothing asked of the server to animate
    assert_clean(ui)


def test_a_checkpoint_without_frames_says_so_on_the_page(ui, digits):
    page = ui.page
    name = "browser_unmoving_ae"  # as trained before frames were kept in checkpoints
    fit(build_model("ae", **digits.model_settings(), latent_dim=2), digits,
        TrainConfig(epochs=1, batch_size=64, iwae_k=0, history_images=0, device="cpu", motion_items=0,
                    checkpoint=str(ui.explorer.catalog.root / name)))
    open_tab(page, "Diagnostics")
    open_tab(page, "Training in motion")
    choose(page, "tm_model", name)
    expect(page.locator("#tm_text")).to_contain_text("retrain it", timeout=30_000)
    expect(page.locator("#tm_plot")).to_be_hidden()
    expect(page.locator("#tm_kl_text")).to_contain_text("no posterior")
    screenshot(page, "diagnostics_motion_none")
    assert_clean(ui)
