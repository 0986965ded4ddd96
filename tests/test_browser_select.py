"""Attribute groups chosen on the map in a real, offline Chromium: a box drawn over the map's points (plotly's own
select tool) becomes group A, and the attribute vector is recomputed from those items. Shares test_browser's
page fixture and helpers.

    python -m pytest tests/test_browser_select.py -q       # screenshots land in artifacts/screenshots/
"""
from __future__ import annotations

import pytest

from . import test_browser
from .test_browser import JS_PLOT_READY, assert_clean, expect, open_tab, screenshot

ui = test_browser.ui  # the same page fixture (one page for this module)

pytestmark = pytest.mark.browser

# A box over the left part of the map's plot area: its corners in viewport pixels and the test indices of the
# label traces' points inside it, from the plot's own axes.
JS_BOX = """id => {
    const gd = document.querySelector(`#${id} .js-plotly-plot`), xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
    const r = gd.getBoundingClientRect();
    const px = [xa._offset + 4, xa._offset + 0.4 * xa._length], py = [ya._offset + 4, ya._offset + ya._length - 4];
    const x = px.map(p => xa.p2d(p - xa._offset)), y = py.map(p => ya.p2d(p - ya._offset));
    const inside = new Set();
    gd._fullData.forEach(t => { if (String(t.name).startsWith('group')) return;
        for (let k = 0; k < t.x.length; k++)
            if (t.x[k] > x[0] && t.x[k] < x[1] && t.y[k] < y[0] && t.y[k] > y[1]) inside.add(Number(t.customdata[k])); });
    return {from: [r.left + px[0], r.top + py[0]], to: [r.left + px[1], r.top + py[1]],
            inside: Array.from(inside).sort((a, b) => a - b)}; }"""


def test_a_box_selected_on_the_map_becomes_group_a(ui):
    page = ui.page
    open_tab(page, "Diagnostics")
    open_tab(page, "Attribute vectors")
    expect(page.locator("#av_text")).to_contain_text("1 → 7", timeout=60_000)
    page.get_by_text("Choose the groups on the map instead").click()
    page.wait_for_function(JS_PLOT_READY, arg="av_map", timeout=60_000)
    page.wait_for_function("() => document.querySelector('#av_map .js-plotly-plot').layout.meta.select === 'attribute'")
    page.locator("#av_map").scroll_into_view_if_needed()
    box = page.evaluate(JS_BOX, "av_map")
    assert len(box["inside"]) >= 5
    page.mouse.move(*box["from"])
    page.mouse.down()
    page.mouse.move(*box["to"], steps=10)
    page.mouse.up()
    page.wait_for_selector("#av_map .js-plotly-plot[data-vae-selected]")
    selected = page.evaluate("() => window.vaeSelection.text('av_map')")
    assert [int(i) for i in selected.split(", ")] == box["inside"]
    screenshot(page, "attribute_box_selected")

    page.locator("#av_to_a").click()
    expect(page.locator("#av_a_items textarea")).to_have_value(selected, timeout=30_000)
    n = len(box["inside"])
    expect(page.locator("#av_text")).to_contain_text(f"your {n} chosen images → 7", timeout=30_000)
    page.wait_for_function(f"""() => {{ const gd = document.querySelector('#av_map .js-plotly-plot');
        return gd && gd._fullData.some(t => t.name === 'group A ({n})'); }}""")
    page.wait_for_function("""() => { const gd = document.querySelector('#av_hist .js-plotly-plot');
        return gd && gd._fullData.some(t => String(t.name).startsWith('your')); }""")
    screenshot(page, "attribute_box_as_group_a")

    # Choosing a label for A again goes back to the label (and empties the items).
    page.locator("#av_a input").click()
    page.get_by_role("option", name="1", exact=True).click()
    expect(page.locator("#av_text")).to_contain_text("1 → 7", timeout=30_000)
    expect(page.locator("#av_a_items textarea")).to_have_value("")
    assert_clean(ui)
