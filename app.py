"""vae-explorer in the browser: `python app.py`, then open http://127.0.0.1:7860.

One function per tab builds its widgets and wires their events in place, each
event to one method of `vae_explorer.server.Explorer`, which takes and returns
plain values; `wire` maps the explorer's errors to messages on the page. It
serves on 127.0.0.1 unless --host says otherwise, never makes a share link
unless --share is given, and makes no outside requests (no analytics, no CDN).
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import os
import random
import sys
import threading
import time
import traceback
from dataclasses import dataclass

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ.setdefault("no_proxy", "127.0.0.1,localhost")
# Gradio's queue keeps the last 10,000 calls' records for its monitoring page (which this app does not serve)
# and, after every call, builds a pandas DataFrame of all of them for its summary: O(records) per call, 9% of
# the server's time under a class's load and growing for the first 10,000 calls. One record, never summarised.
os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", "1")
os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", str(2**62))

import gradio as gr  # noqa: E402
import torch  # noqa: E402

from vae_explorer.anomaly import DEFAULT_LEVELS as THRESHOLD_LEVELS  # noqa: E402
from vae_explorer.data import DATASETS, IMAGES  # noqa: E402
from vae_explorer.data.downloads import DOWNLOADABLE  # noqa: E402
from vae_explorer.data.images import MAX_UPLOAD_BYTES, png_data_url  # noqa: E402
from vae_explorer.devices import device_choices  # noqa: E402
from vae_explorer.figures import page_animation  # noqa: E402
from vae_explorer.latent import PROJECTIONS  # noqa: E402
from vae_explorer.memory import MEMORY_SHARE  # noqa: E402
from vae_explorer.models import LIKELIHOODS, MODELS, load_plugins  # noqa: E402
from vae_explorer.server import MAX_SLIDERS, Explorer, ViewError, number_input  # noqa: E402
from vae_explorer.server.allocator import tune_allocator  # noqa: E402
from vae_explorer.server.answers import InlineGallery, InlineImage, QuickPlot, without_stub_files  # noqa: E402
from vae_explorer.server.cache import CacheJanitor, install_answer_image_writer  # noqa: E402
from vae_explorer.server.catalog import DEFAULT_LOADED_MODELS  # noqa: E402
from vae_explorer.server.page_decoders import PAGE_SCRIPT  # noqa: E402

MAP_SCRIPT = PAGE_SCRIPT.parent / "map_touch.js"  # the maps' hover pictures, click-to-decode and marker drag
MOTION_SCRIPT = PAGE_SCRIPT.parent / "motion.js"  # plays plotly animations in gr.Plot (Training in motion)
SELECT_SCRIPT = PAGE_SCRIPT.parent / "select_points.js"  # a map's box / lasso selection, for attribute groups
CLEANUP_SCRIPT = PAGE_SCRIPT.parent / "plot_cleanup.js"  # releases every plotly figure Gradio drops (page memory)
MOTION_HEAD = (f'<script src="gradio_api/file={MOTION_SCRIPT}"></script>'
               f'<script src="gradio_api/file={SELECT_SCRIPT}"></script>')

log = logging.getLogger("vae_explorer.app")

# Plotly has no click event in Gradio 6: this bridge listens to plotly_click on the two
# maps (and the codebook grid) and hands the clicked point's index (its customdata) to a
# hidden button's event, through a window variable that the button's js reads.
CLICK_BRIDGE = """
<script>
(() => {
  const handlers = {};
  const targets = {left: ["#map_left", "__vaePick", "#pick_button"], right: ["#map_right", "__vaePick", "#pick_button"],
                   codebook: ["#cb_grid", "__vaeCode", "#cb_pick_button"]};
  function bind() {
    for (const [key, [plotId, store, button]] of Object.entries(targets)) {
      const plot = document.querySelector(`${plotId} .js-plotly-plot`);
      if (!plot || typeof plot.on !== "function") continue;
      handlers[key] = handlers[key] || ((ev) => {
        const p = ev && ev.points && ev.points[0];
        if (!p || p.customdata === undefined) return;
        window[store] = Array.isArray(p.customdata) ? p.customdata[0] : p.customdata;
        document.querySelector(button).click();
      });
      plot.removeListener("plotly_click", handlers[key]);
      plot.on("plotly_click", handlers[key]);
    }
  }
  new MutationObserver(bind).observe(document.documentElement, {childList: true, subtree: true});
})();
</script>
"""

# Views decoded in the page while a slider moves (decoder.js): key -> (its canvas view, the server's image).
# decoder.js sets <html data-vae-KEY="page|loading|server">: the canvas shows only while the page decodes,
# the server's image otherwise (a model the page cannot run, a decoder still loading).
PAGE_VIEWS = {"sl": ("sl_view", "sl_image"), "in-a": ("in_view_a", "in_img_a"), "in-b": ("in_view_b", "in_img_b"),
              "map-left": ("map_left_view", "map_left_decoded"), "map-right": ("map_right_view", "map_right_decoded")}
PAGE_VIEW = ('<div class="vae-view"><p class="vae-label">{label}</p><canvas width="1" height="1"></canvas>'
             '<p class="vae-caption"><span class="vae-how"></span><span class="vae-ms"></span></p></div>')

CSS = """
.caption p { font-size: 0.9em; }
#pick_button, #cb_pick_button { display: none; }
.vae-view canvas { display: none; image-rendering: pixelated; max-width: 100%; height: auto; margin: 0 auto; }
.vae-caption { font-size: 0.85em; opacity: 0.8; margin: 0.2em 0; }
.vae-label { font-size: 0.9em; margin: 0 0 0.3em 0; display: none; }
.vae-marker { position: absolute; display: none; box-sizing: border-box; width: 16px; height: 16px; margin: -8px 0 0 -8px; z-index: 10;
  border: 2px solid #d62728; border-radius: 50%; background: rgba(255, 255, 255, 0.35); pointer-events: none;
  box-shadow: 0 0 0 1px white; }
.vae-tile { position: fixed; display: none; z-index: 1000; pointer-events: none; background-repeat: no-repeat;
  background-color: black; image-rendering: pixelated; border: 2px solid white; box-shadow: 0 1px 6px rgba(0,0,0,.5); }
""" + "".join(f'html[data-vae-{key}="page"] #{image} {{ display: none !important; }}\n'
              f'html[data-vae-{key}="page"] #{view} canvas, html[data-vae-{key}="page"] #{view} .vae-label '
              f'{{ display: block; }}\n'
              for key, (view, image) in PAGE_VIEWS.items())

INTRO = """# vae-explorer
See what autoencoders learn. **Latent map**: how an autoencoder (left) and a VAE (right) arrange the same
images (click a point). **Reconstruct**, **Latent sliders**, **Interpolate**, **Sample** and **Denoise** decode
from those codes; **Diagnostics** shows which latent dimensions are used, how the codes sit against N(0, I),
how disentangled a model of known factors is, a linear AE against PCA, a VQ model's codebook, attribute vectors
between two groups (by label or selected on a map), how the codes moved while it trained, and exports (codes,
figures, run bundles); **Train**
fits a new model in the background; **Models** describes each checkpoint.
"""




def user_errors(fn):
    """ViewError -> a message on the page; anything else is logged and reported, and the server keeps serving."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ViewError as e:
            raise gr.Error(str(e), print_exception=False) from None
        except gr.Error:
            raise
        except Exception as e:
            log.error("handler %s failed:\n%s", fn.__name__, traceback.format_exc())
            raise gr.Error(f"Something went wrong ({type(e).__name__}: {e}). The server is still running.",
                           print_exception=False) from None
    return wrapper


# The queues of the server's calls. Gradio gives each event a queue of its own, so under a class the clients
# piled up in the queues of the dearer views (30 clients: a denoise took 0.90 s at the median, a model card
# 0.22 s), and the p95 was the dearest view's. The quick views (milliseconds once their model is loaded) now
# share one queue served in arrival order, `--view-slots` at a time, so every view waits about as long: the
# classroom load test's p95 went from 1.18 to 0.72 s at the same throughput (benchmarks/load_test.py). The
# studies, which can take seconds (a diagnostic's first computation, an export), keep a queue each, so a few
# of them cannot hold every slot.
VIEWS = "views"
DEFAULT_VIEW_SLOTS = 16
STUDY_SLOTS = 4  # per study: as many as before the shared queue


def wire(triggers, fn, inputs, outputs, *, study: bool = False, **kwargs):
    """gr.on with the explorer's errors shown on the page: every event of the app goes through here. A quick
    view joins the shared queue (VIEWS); a `study` keeps a queue of its own; an event given its own
    concurrency settings keeps them."""
    if "concurrency_limit" not in kwargs and "concurrency_id" not in kwargs:
        kwargs.update({"concurrency_limit": STUDY_SLOTS} if study else {"concurrency_id": VIEWS})
    return gr.on(triggers if isinstance(triggers, list) else [triggers], user_errors(fn), inputs, outputs, **kwargs)


def table_twin(elem_id: str, label: str | None = None) -> gr.Dataframe:
    """The table that stands in for an image output when the model's items are table rows (hidden otherwise)."""
    return gr.Dataframe(visible=False, interactive=False, wrap=True, elem_id=elem_id, label=label,
                        show_label=label is not None, max_height=420)


def pair(value, tabular: bool) -> tuple:
    """An item view's value to its image (pictures) or its table twin (rows); the other gets None.

    Plain values, never visibility updates: which of the two shows is set once per model choice
    (`Page.item_views`). An update with `visible` makes Gradio build a new component for the session and its
    config, JSON schema included (about 3 ms each): in a class's load that was most of a small call's time."""
    return (None if tabular else value, value if tabular else None)


def page_view(key: str, label: str) -> gr.HTML:
    """A canvas that the page decodes into itself (decoder.js) while a slider moves, with a caption saying
    where the decoding happens. Its value is the server's JSON spec (page_spec); the template never shows it."""
    return gr.HTML("", html_template=PAGE_VIEW.format(label=label), elem_id=PAGE_VIEWS[key][0],
                   head=f'<script src="gradio_api/file={PAGE_SCRIPT}"></script>',
                   js_on_load=f"window.vaePage.attach({json.dumps(key)}, element, props, watch);")


def page_spec(make, fallback: str, inputs: list[str]) -> str:
    """An explorer's page spec as a view's value: the decoder's file as a URL of the app's static files, the
    sliders whose `input` events it decodes on (elem_ids, in the order of the values), and the hidden button
    the page clicks to have the server decode instead. A bad choice is the other
    listener's message to show: here it only sends the view to the server's image."""
    try:
        spec = make()
    except ViewError as e:
        spec = {"decoder": None, "reason": str(e)}
    if spec.get("decoder"):
        spec["decoder"] = f"gradio_api/file={spec['decoder']}"  # relative: works under a root path too
    return json.dumps({**spec, "fallback": fallback, "inputs": inputs})


def _checked(widget, payload):
    """A number widget's value, or its own message: a raw API client can send text, a list, null, NaN or
    ±Infinity where the page sends a number, and Gradio's preprocessing would answer those with Python's
    words ("Original error: TypeError: '<' not supported...") before any handler could explain."""
    try:
        return number_input(payload, widget.label, widget.minimum, widget.maximum,
                            whole=getattr(widget, "precision", None) == 0)
    except ViewError as e:
        raise gr.Error(str(e), print_exception=False) from None


with without_stub_files():
    class CheckedNumber(gr.Number):
        """gr.Number that refuses what is not a number with a message naming the box."""

        is_template = True  # the page draws it as a gr.Number: Gradio names the frontend after the parent class

        def preprocess(self, payload):
            if payload is None:  # an empty box: the handler decides (a default, or its own message)
                return None
            return super().preprocess(_checked(self, payload))

    class CheckedSlider(gr.Slider):
        """gr.Slider that refuses what is not a number within its range with a message naming the slider."""

        is_template = True  # drawn as a gr.Slider

        def preprocess(self, payload):
            return super().preprocess(_checked(self, payload))


class ExplorerBlocks(gr.Blocks):
    """gr.Blocks whose answer to a call with too few values names the inputs it wanted (Gradio's own
    lists them as Python reprs, `<gradio.components.slider.Slider object at 0x...>`), and whose files
    on disk are kept under a cap by a `CacheJanitor` while it serves (see `launch`)."""

    cache_janitor: CacheJanitor | None = None

    def close(self, verbose: bool = True) -> None:
        super().close(verbose)
        if self.cache_janitor is not None:
            self.cache_janitor.stop(delete_all=True)  # as Gradio's own sweep does at shutdown
            self.cache_janitor = None

    def validate_inputs(self, block_fn, inputs):
        if len(inputs) < len(block_fn.inputs):
            wanted = ", ".join(str(getattr(b, "label", None) or b.get_block_name()) for b in block_fn.inputs)
            raise gr.Error(f"this call needs {len(block_fn.inputs)} values, one per input in this order: {wanted}; "
                           f"it got {len(inputs)}", print_exception=False)
        super().validate_inputs(block_fn, inputs)


@dataclass
class Page:
    """What every tab needs: the explorer, the page's load event, the checkpoint names and default picks."""

    ex: Explorer
    load: object  # demo.load
    names: list[str]
    pickers: list  # every checkpoint dropdown, refreshed when checkpoints appear
    # Places a tab's uploaded image on the latent maps (set by the map tab's draw section): mark_upload(file).
    mark_upload: object = None

    def default(self, *wanted: str) -> str | None:
        """The first of `wanted` that exists, else any checkpoint."""
        return next((w for w in wanted if w in self.names), self.names[0] if self.names else None)

    def picker(self, label, value, multiselect=False, elem_id=None) -> gr.Dropdown:
        # Custom values pass Gradio's own check so API clients can name checkpoints saved after the page
        # was built; every name is still confined to the checkpoints folder by the catalog.
        dropdown = gr.Dropdown(choices=self.names, value=value, label=label, multiselect=multiselect,
                               elem_id=elem_id, allow_custom_value=True)
        self.pickers.append(dropdown)
        return dropdown

    def item_views(self, shown: list, picker: gr.Dropdown, pictures: list, tables: list) -> None:
        """Shows `pictures` (images, galleries) for a picture model and their `tables` twins for a table model,
        when `shown` fires or the model chosen in `picker` (its first, if several) changes; the views' own
        listeners fill both with `pair`."""
        def show(chosen):
            first = next((n for n in (chosen if isinstance(chosen, list) else [chosen]) if n), None)
            try:
                tabular = first is not None and self.ex.shown_as(first) == "table"
            except ViewError:  # the views' listeners say what is wrong with the choice
                return tuple(gr.skip() for _ in (*pictures, *tables))
            return (*(gr.update(visible=not tabular) for _ in pictures), *(gr.update(visible=tabular) for _ in tables))

        gr.on([*shown, picker.change], show, picker, [*pictures, *tables], api_visibility="private",
              show_progress="hidden")

    def model_cards(self, shown, *dropdowns: gr.Dropdown) -> None:
        """A closed accordion with the cards of the models chosen in `dropdowns`, filled when `shown` fires."""
        def cards(*chosen) -> str:
            picked = [n for c in chosen for n in (c if isinstance(c, list) else [c]) if n]
            return "\n\n---\n\n".join(self.ex.card(n) for n in dict.fromkeys(picked)) or "No model chosen."

        with gr.Accordion("Model cards" if len(dropdowns) > 1 or dropdowns[0].multiselect else "Model card",
                          open=False):
            box = gr.Markdown()
        wire([shown, *[d.change for d in dropdowns]], cards, list(dropdowns), box, api_visibility="private",
             show_progress="hidden")


def map_tab(page: Page) -> None:
    ex = page.ex
    with gr.Tab("Latent map", id="map"):
        with gr.Row():
            left = page.picker("Left model (e.g. an autoencoder)", page.default("digits_ae"), elem_id="map_left_model")
            right = page.picker("Right model (e.g. a VAE)", page.default("digits_vae"), elem_id="map_right_model")
            projection = gr.Radio(list(PROJECTIONS), value="auto", label="Projection",
                                  info="auto: raw plane for 2-D codes, else PCA. UMAP is computed in the background.")
            colour = gr.Dropdown(["label", "anomaly score"], value="label", label="Colour points by",
                                 info="the label, the anomaly score, or a known factor / a table's column",
                                 allow_custom_value=True, elem_id="map_colour")
        with gr.Row():
            plot_left = QuickPlot(elem_id="map_left", show_label=False)
            plot_right = QuickPlot(elem_id="map_right", show_label=False)
        note = gr.Markdown(elem_classes="caption")
        with gr.Row():
            decoded = {}
            for side, label in (("left", "Left map"), ("right", "Right map")):
                with gr.Column():
                    # The page decodes the marker's position itself while it moves (map_touch.js), in this view;
                    # the server's image stands in where it cannot (UMAP maps, tables).
                    page_view(f"map-{side}", f"{label}: decoded at the marker")
                    decoded[side] = (InlineImage(label=f"{label}: decoded at the marker", format="png",
                                              elem_id=f"map_{side}_decoded", height=160),
                                     table_twin(f"map_{side}_decoded_rows", f"{label}: decoded at the marker"),
                                     gr.Markdown(elem_classes="caption", elem_id=f"map_{side}_decoded_caption"))
        with gr.Row():
            index = CheckedNumber(value=0, precision=0, minimum=0, label="Selected test item (index)",
                                  info="Click a point on either map, or type an index and press Enter.",
                                  elem_id="map_index")
            coordinates = gr.Textbox(label="Decode at map coordinates (x, y)", placeholder="e.g. 0.5, -1.2",
                                     info="Click empty space on a map, or type a position and press Enter: "
                                          "each map decodes it in its own coordinates.", elem_id="map_coordinates")
            random_btn = gr.Button("Random item", scale=0)
        with gr.Row():
            sel_input = InlineImage(label="Input", format="png", elem_id="sel_input", height=160)
            sel_left = InlineImage(label="Left model's reconstruction", format="png", elem_id="sel_left", height=160)
            sel_right = InlineImage(label="Right model's reconstruction", format="png", elem_id="sel_right", height=160)
        sel_table = table_twin("sel_table", "The row, then each model's reconstruction (values in the columns' units)")
        caption = gr.Markdown(elem_classes="caption", elem_id="sel_caption")
        draw_section(page, left, right, projection)
        with gr.Accordion("Decoded latent plane (the 'manifold'): where the AE has gaps, the VAE is continuous",
                          open=True):
            grid_n = CheckedSlider(5, 25, value=15, step=1, label="Grid size")
            with gr.Row():
                manifold_left = InlineImage(label="Left model", format="png", elem_id="manifold_left", height=440)
                manifold_right = InlineImage(label="Right model", format="png", elem_id="manifold_right", height=440)
            with gr.Row():
                manifold_left_rows = table_twin("manifold_left_rows", "Left model")
                manifold_right_rows = table_twin("manifold_right_rows", "Right model")
            manifold_note = gr.Markdown(elem_classes="caption")
        page.model_cards(page.load, left, right)
        pick_btn = gr.Button("pick", elem_id="pick_button", visible="hidden")
        umap_timer = gr.Timer(2.0, active=False)
        # The page's touch script writes a click's (or the dragged marker's) position into a bridge's value and
        # fires its mapclick event: the listener then reads the newest position (see map_touch.js).
        bridges = {side: gr.HTML("", visible="hidden", elem_id=f"map_{side}_bridge", label="Map position as JSON: model, projection, x, y",
                                 head=f'<script src="gradio_api/file={MAP_SCRIPT}"></script>'
                                      f'<script src="gradio_api/file={CLEANUP_SCRIPT}"></script>',
                                 js_on_load=f"window.vaeMapTouch.attach({json.dumps(side)}, element, props, "
                                            "(name) => trigger('mapclick'));")
                   for side in ("left", "right")}
        # decode_at for API clients: a model, a projection and a map position -> the decoded item.
        with gr.Row(visible=False):  # not on the page: its endpoint works all the same
            api_model = gr.Textbox(page.default("digits_ae"), label="Model", elem_id="map_api_model")
            api_x = CheckedNumber(0.0, label="x (map coordinate)", elem_id="map_api_x")
            api_y = CheckedNumber(0.0, label="y (map coordinate)", elem_id="map_api_y")
            api_button = gr.Button("decode at", elem_id="map_api_button")

    def show_maps(left, right, projection, index, colour_by="label"):
        sel = None if index is None else int(index)
        a, b = ex.latent_map(left, projection, sel, colour_by), ex.latent_map(right, projection, sel, colour_by)
        text = a.note if a.note == b.note else f"**Left:** {a.note}  \n**Right:** {b.note}"
        return a.figure, b.figure, text, gr.Timer(active=a.pending or b.pending)

    def select_point(left, right, index):
        x, ra, rb, text = ex.compare_point(left, right, index)
        if ex.shown_as(left) == "table":  # x is the one table: the row and each model's reconstruction
            return int(index), None, None, None, x, text
        return int(index), x, ra, rb, None, text

    def pick_point(left, right, index, projection, colour_by):
        return (*select_point(left, right, index), *show_maps(left, right, projection, index, colour_by))

    def random_point(left, right, projection, colour_by):
        return pick_point(left, right, random.randrange(ex.test_size(left)), projection, colour_by)

    def decoded_view(name, projection, x, y):
        item, text = ex.decode_at(name, projection, x, y)
        return (*pair(item, ex.shown_as(name) == "table"), text)

    def map_clicked(payload):
        # The bridge's value: {"model", "projection", "x", "y"} of the map the page clicked (its layout.meta).
        try:
            where = json.loads(payload or "")
        except (TypeError, ValueError):
            where = None
        if not isinstance(where, dict):
            raise ViewError('a map click is a JSON object {"model", "projection", "x", "y"}, got '
                            f"{str(payload)[:40]!r}")
        return decoded_view(where.get("model"), where.get("projection"), where.get("x"), where.get("y"))

    def decode_typed(left, right, projection, text):
        # Both maps decode the typed position in their own coordinates; one map's refusal (a UMAP map still
        # being computed) is its own caption, the other still decodes.
        parts = [p for p in str(text or "").replace(";", ",").replace(" ", ",").split(",") if p]
        try:
            x, y = (float(p) for p in parts)
        except ValueError:
            raise ViewError(f"type the map position as two numbers, x, y (e.g. 0.5, -1.2); got {str(text)[:40]!r}") \
                from None
        out = []
        for name in (left, right):
            try:
                out += decoded_view(name, projection, x, y)
            except ViewError as e:
                out += [None, None, f"**{name}**: {e}"]
        return tuple(out)

    def manifolds(left, right, n):
        (a, ta), (b, tb) = ex.manifold(left, n), ex.manifold(right, n)
        return (*pair(a, ex.shown_as(left) == "table"), *pair(b, ex.shown_as(right) == "table"), f"{ta}  \n{tb}")

    def colourings(left):
        choices = ex.map_colourings(left)
        return gr.Dropdown(choices=choices, value="label")

    map_inputs = [left, right, projection, index, colour]
    map_outputs = [plot_left, plot_right, note, umap_timer]
    point_outputs = [index, sel_input, sel_left, sel_right, sel_table, caption]
    # Only this tab computes at page load (the first map must show fast); the others fill in when opened.
    wire([page.load, left.change, right.change, projection.change, colour.input], show_maps, map_inputs,
         map_outputs, api_name="latent_map")
    wire([page.load, left.change], colourings, left, colour, api_visibility="private", show_progress="hidden")
    wire(umap_timer.tick, show_maps, map_inputs, map_outputs, api_visibility="private", show_progress="hidden")
    wire([page.load, left.change, right.change], select_point, [left, right, index], point_outputs,
         api_name="select_point")
    wire(index.submit, pick_point, [left, right, index, projection, colour], point_outputs + map_outputs,
         api_visibility="private")
    wire(pick_btn.click, pick_point, [left, right, index, projection, colour], point_outputs + map_outputs,
         js="(l, r, i, p, c) => [l, r, (window.__vaePick ?? i), p, c]", api_visibility="private")
    wire(random_btn.click, random_point, [left, right, projection, colour], point_outputs + map_outputs,
         api_visibility="private")
    for side, bridge in bridges.items():
        # A gr.HTML's own event is a method gr.on cannot take: user_errors as wire would wrap it.
        bridge.mapclick(user_errors(map_clicked), bridge, list(decoded[side]), api_name=f"map_click_{side}",
                        trigger_mode="always_last", show_progress="hidden")
    wire(coordinates.submit, decode_typed, [left, right, projection, coordinates],
         [*decoded["left"], *decoded["right"]], api_name="decode_coordinates",
         js="(l, r, p, c) => { window.vaeMapTouch && window.vaeMapTouch.mark(c); return [l, r, p, c]; }")
    wire(api_button.click, decoded_view, [api_model, projection, api_x, api_y], list(decoded["left"]),
         api_name="decode_at")
    wire([page.load, left.change, right.change, grid_n.release], manifolds, [left, right, grid_n],
         [manifold_left, manifold_left_rows, manifold_right, manifold_right_rows, manifold_note],
         api_name="manifold")
    page.item_views([page.load], left, [sel_input, sel_left, sel_right, decoded["left"][0], manifold_left],
                    [sel_table, decoded["left"][1], manifold_left_rows])
    page.item_views([page.load], right, [decoded["right"][0], manifold_right], [decoded["right"][1], manifold_right_rows])


# Draw to encode (sketchpad.js): a plain canvas, whose drawing goes to the server through `server_functions`
# (one POST per stroke, no queue), and an SVG overlay on both maps drawn from the coordinates the server returns.
SKETCH_SCRIPT = PAGE_SCRIPT.with_name("sketchpad.js")
SKETCH_SIDE = 280  # the canvas, in pixels
SKETCH_HTML = f"""<div class="vae-sketch">
  <div class="vae-pad-column">
    <canvas class="vae-pad" width="{SKETCH_SIDE}" height="{SKETCH_SIDE}" aria-label="sketchpad: draw here"></canvas>
    <div class="vae-buttons">
      <button type="button" class="vae-clear">Clear</button>
      <button type="button" class="vae-resample" title="decode samples z ~ q(z|x) of each VAE for this drawing">
        Resample z ~ q(z|x)</button>
    </div>
    <p class="vae-status"></p>
    <p class="vae-upload-note"></p>
  </div>
  {"".join(f'''<div class="vae-result" data-side="{side}">
    <p class="vae-name"></p>
    <div class="vae-pair">
      <figure><img class="vae-input" alt="the drawing as the model sees it"><figcaption>as the model sees it
        </figcaption></figure>
      <figure><img class="vae-output" alt="its reconstruction"><figcaption>its reconstruction</figcaption></figure>
    </div>
    <p class="vae-where"></p>
    <img class="vae-samples" alt="decodes of samples of q(z|x)">
    <p class="vae-samples-caption"></p>
  </div>''' for side in ("left", "right"))}
</div>"""
SKETCH_CSS = """
.vae-sketch { display: flex; gap: 1.2em; flex-wrap: wrap; align-items: flex-start; }
.vae-pad-column { width: 280px; }
.vae-pad { border: 1px solid #888; border-radius: 4px; touch-action: none; cursor: crosshair; background: white;
           width: 280px; height: 280px; }
.vae-disabled .vae-pad { opacity: 0.35; cursor: not-allowed; }
.vae-buttons { display: flex; gap: 0.5em; margin: 0.4em 0; }
.vae-buttons button { padding: 0.3em 0.8em; border: 1px solid #999; border-radius: 4px; background: #f3f3f3; }
.vae-buttons button:disabled { opacity: 0.5; }
.vae-status, .vae-upload-note, .vae-where, .vae-samples-caption { font-size: 0.85em; margin: 0.2em 0; }
.vae-result { flex: 1; min-width: 240px; }
.vae-name { font-weight: 600; margin: 0 0 0.3em 0; }
.vae-pair { display: flex; gap: 0.8em; }
.vae-pair figure { margin: 0; text-align: center; font-size: 0.8em; }
.vae-pair img { width: 112px; height: 112px; image-rendering: pixelated; background: #eee; display: block; }
.vae-pair img:not([src]) { visibility: hidden; }
.vae-samples { image-rendering: pixelated; max-width: 100%; margin-top: 0.4em; }
.vae-samples:not([src]) { display: none; }
"""


def drawn_on_maps(ex: Explorer, names, projection, drawing=None, upload=None, images: bool = True) -> list[dict]:
    """Each model's reading of the drawing (or an uploaded file), JSON for the page: its place on its map
    (x, y, the ellipse or None), a line saying where, and with `images` the drawing as it sees it and its
    reconstruction as data URLs; or {"model", "error"} where the model cannot read it."""
    out = []
    for name in names:
        try:
            r = ex.encode_drawing([name], projection, drawing, upload)[0]
        except ViewError as e:
            out.append({"model": name, "error": str(e)})
            continue
        code = ", ".join(f"{v:.2f}" for v in r["code"]) if len(r["code"]) <= 4 else f"a {len(r['code'])}-D code"
        spread = "" if r["std"] is None or len(r["std"]) > 4 else \
            f", σ = ({', '.join(f'{v:.2f}' for v in r['std'])})"
        where = (f"z = ({code}){spread}; on the {r['method'].upper()} map at ({r['x']:.2f}, {r['y']:.2f})"
                 + (f": {r['note']}" if r["note"] else "; no posterior, so no ellipse (one point per drawing)")
                 + ".")
        place = {k: r[k] for k in ("model", "method", "x", "y", "ellipse", "code", "std", "conversion", "note")}
        out.append({**place, "where": where, **({"input": png_data_url(r["input"]),
                                                 "reconstruction": png_data_url(r["reconstruction"])} if images else {})})
    return out


def resampled(ex: Explorer, names, drawing, seed=0) -> list[dict]:
    """Each model's decodes of samples z ~ q(z|x) for the drawing: {"model", "picture" (data URL, or None for a
    model without a posterior), "caption"} or {"model", "error"}."""
    out = []
    for name in names:
        try:
            r = ex.resample_drawing(name, drawing, seed=seed)
        except ViewError as e:
            out.append({"model": name, "error": str(e)})
            continue
        out.append({"model": name, "picture": None if r.picture is None else png_data_url(r.picture),
                    "caption": r.caption.replace("**", "")})
    return out


def page_call(fn):
    """A server function for the page: its one argument is the object the page sent; an explorer's message or
    a failure comes back as {"error": ...} (the page shows it) and the server keeps serving."""
    @functools.wraps(fn)
    def wrapper(args):
        try:
            if not isinstance(args, dict):
                raise ViewError("send one object with the call's values")
            return fn(args)
        except ViewError as e:
            return {"error": str(e)}
        except Exception as e:
            log.error("server function %s failed:\n%s", fn.__name__, traceback.format_exc())
            return {"error": f"Something went wrong ({type(e).__name__}: {e}). The server is still running."}
    return wrapper


def draw_section(page: Page, left, right, projection) -> None:
    """The sketchpad under the maps: a drawing (or an image file) is encoded by both map models, marked on both
    maps (with the 2-σ ellipse of a VAE's q(z|x)), reconstructed, and resampled from q(z|x) on request. Also
    sets `page.mark_upload`, which places an image uploaded in another tab on the maps as "your upload"."""
    ex = page.ex

    @page_call
    def draw_encode(args):
        return {"maps": drawn_on_maps(ex, [args.get("left"), args.get("right")], args.get("projection") or "auto",
                                      args.get("drawing"))}

    @page_call
    def draw_resample(args):
        return {"maps": resampled(ex, [args.get("left"), args.get("right")], args.get("drawing"),
                                  args.get("seed") or 0)}

    with gr.Accordion("Draw to encode: put your own drawing on both maps", open=True):
        gr.Markdown("Draw in the white box: as you draw, both models encode the drawing (resized and converted "
                    "as an uploaded image is), and it is marked ★ on both maps. For a VAE the ring around it is "
                    "the 2-σ ellipse of its posterior q(z|x), how unsure the encoder is; **Resample** decodes "
                    "samples from it. An image uploaded in Reconstruct, Denoise or Interpolate is marked ◆ "
                    "(your upload).", elem_classes="caption")
        sketch = gr.HTML("", html_template=SKETCH_HTML, css_template=SKETCH_CSS, elem_id="draw_pad",
                         head=f'<script src="gradio_api/file={SKETCH_SCRIPT}"></script>'
                              '<style>#draw_refresh { display: none; }</style>',
                         js_on_load="window.vaeSketch.attach(element, props, server, watch);",
                         server_functions=[draw_encode, draw_resample])
        picture = gr.File(label="…or upload an image instead of drawing (it is put on the sketchpad)",
                          file_types=["image"], type="filepath", elem_id="draw_upload")
        last_upload = gr.State(None)  # the last image uploaded in another tab: marked on the maps
        # Clicked by the page when a map changed projection under its marks (a UMAP replacing the PCA shown while
        # it was computed): the upload is placed again for the map now shown.
        refresh = gr.Button("place again", elem_id="draw_refresh", visible="hidden")

    def spec(left_name, right_name, projection_name, upload=None, shown_picture=None):
        names = [left_name, right_name]
        reasons, heights = [], []
        for name in names:
            try:
                why = ex.drawable(name)
                if why is None:
                    heights.append(ex.load(name).input_shape[-2])
            except ViewError as e:
                why = str(e)
            if why:
                reasons.append(why)
        value = {"models": names, "projection": projection_name or "auto",
                 "why": "; ".join(reasons) if len(reasons) == len(names) else None,
                 "input_height": min(heights) if heights else None}
        if upload:
            value["upload"] = drawn_on_maps(ex, names, projection_name or "auto", upload=upload, images=False)
            value["upload_note"] = f"◆ your upload ({os.path.basename(str(upload))}) is marked on both maps."
        if shown_picture:
            from vae_explorer.data.dataset import UploadError
            from vae_explorer.data.images import load_upload, to_float, to_pil

            try:
                canvas, _ = load_upload(shown_picture, (3, SKETCH_SIDE, SKETCH_SIDE))
            except UploadError as e:
                raise ViewError(str(e)) from None
            value["picture"] = png_data_url(to_pil(to_float(canvas)))
            value["picture_id"] = f"{shown_picture}:{random.random()}"
            value["result"] = {"maps": drawn_on_maps(ex, names, projection_name or "auto", upload=shown_picture)}
        return json.dumps(value)

    def uploaded(upload, left_name, right_name, projection_name):
        if not upload:  # a cleared file box: the last upload stays marked
            return gr.skip(), gr.skip()
        return upload, spec(left_name, right_name, projection_name, upload)

    wire([page.load, left.change, right.change, projection.change, refresh.click], spec,
         [left, right, projection, last_upload], sketch, api_visibility="private", show_progress="hidden")
    wire(picture.upload, spec, [left, right, projection, last_upload, picture], sketch, api_visibility="private",
         show_progress="hidden")

    def mark_upload(upload_box) -> None:
        wire(upload_box.upload, uploaded, [upload_box, left, right, projection], [last_upload, sketch],
             api_visibility="private", show_progress="hidden")

    page.mark_upload = mark_upload

    # The same for API clients: typed endpoints without widgets.
    def encode_drawing_api(left_model: str, right_model: str, projection_name: str, drawing: str) -> dict:
        """Encode a drawing (a data:image/png;base64 URL) with both models: per model its code, q(z|x)'s std, its
        place on the map (x, y, the 2-σ ellipse), the drawing at its input size and its reconstruction."""
        return {"maps": drawn_on_maps(ex, [left_model, right_model], projection_name or "auto", drawing)}

    def resample_drawing_api(left_model: str, right_model: str, drawing: str, seed: int = 0) -> dict:
        """Decode samples z ~ q(z|x) of each model for a drawing (a data:image/png;base64 URL)."""
        # The seed is the call's, not a model's: a bad one refuses the call rather than each model's answer.
        seed = number_input(seed, "the seed", 0, 2**32 - 1, whole=True)
        return {"maps": resampled(ex, [left_model, right_model], drawing, seed)}

    gr.api(user_errors(encode_drawing_api), api_name="draw_encode", concurrency_id=VIEWS)
    gr.api(user_errors(resample_drawing_api), api_name="draw_resample", concurrency_id=VIEWS)


def reconstruct_tab(page: Page) -> None:
    ex = page.ex
    ae, vae, vq = page.default("digits_ae"), page.default("digits_vae"), page.default("digits_vq_vae")
    with gr.Tab("Reconstruct", id="reconstruct") as tab:
        gr.Markdown("Inputs on top, each model's reconstruction below, with the per-item error.")
        with gr.Row():
            models = page.picker("Models", list(dict.fromkeys(n for n in (ae, vae, vq) if n)), multiselect=True,
                                 elem_id="rec_models")
            indices = gr.Textbox(label="Test items", placeholder="e.g. 0, 5, 10-13 (empty: 8 at random)",
                                 elem_id="rec_indices")
            seed = CheckedNumber(value=0, precision=0, label="Random seed")
            upload = gr.File(label="…or upload an image", file_types=["image"], type="filepath", elem_id="rec_upload")
        button = gr.Button("Reconstruct", variant="primary", elem_id="rec_button")
        grid = InlineImage(label="Reconstructions", format="png", elem_id="rec_grid")
        grid_rows = table_twin("rec_rows", "Inputs, then each model's reconstructions")
        table = gr.Markdown(elem_classes="caption")
        gr.Markdown("### Anomaly detection by reconstruction error\nItems a model reconstructs badly are "
                    "unlike its training data. Move the threshold to see how many would be flagged.")
        with gr.Row():
            ano_model = page.picker("Model", ae, elem_id="ano_model")
            rule = gr.Radio(list(THRESHOLD_LEVELS), value="percentile", label="Threshold rule",
                            info="percentile of the scores; fpr: a false-positive rate on rows labelled normal; "
                                 "iqr: Tukey's fence; mad: a robust z-score", elem_id="ano_rule")
            level = CheckedNumber(value=95, label="Level", info="95 (percentile), 0.05 (fpr), 1.5 (iqr), 3.5 (mad)",
                              elem_id="ano_level")
        ano_text = gr.Markdown(elem_classes="caption", elem_id="ano_text")
        with gr.Row():
            histogram = QuickPlot(show_label=False, elem_id="ano_hist")
            detection = QuickPlot(show_label=False, elem_id="ano_curves", visible=False)
        gr.Markdown("The highest-scoring test items with their reconstructions.", elem_classes="caption")
        worst = InlineImage(show_label=False, format="png", elem_id="ano_grid")
        worst_rows = table_twin("ano_rows")
        page.model_cards(tab.select, models, ano_model)

    def reconstruct(chosen, idx, up, s):
        shown, text = ex.reconstruct(chosen, idx, up, s)
        return (*pair(shown, ex.shown_as(chosen[0]) == "table"), text)

    def anomalies(name, level_value, rule_name="percentile"):
        fig, shown, text, curves = ex.anomalies(name, level_value, 16, rule_name)
        return (fig, *pair(shown, ex.shown_as(name) == "table"), text,
                gr.Plot(curves, visible=curves is not None))

    def rule_changed(rule_name):
        return gr.Number(value=THRESHOLD_LEVELS[rule_name])

    wire(button.click, reconstruct, [models, indices, upload, seed], [grid, grid_rows, table], api_name="reconstruct")
    page.item_views([tab.select], models, [grid], [grid_rows])
    page.item_views([tab.select], ano_model, [worst], [worst_rows])
    page.mark_upload(upload)
    wire([tab.select, ano_model.change, level.submit, rule.input], anomalies, [ano_model, level, rule],
         [histogram, worst, worst_rows, ano_text, detection], api_name="anomalies")
    wire(rule.input, rule_changed, rule, level, api_visibility="private", show_progress="hidden")


def sliders_tab(page: Page) -> None:
    ex = page.ex
    with gr.Tab("Latent sliders", id="sliders") as tab:
        gr.Markdown("Start from a test item's code, then move through latent space: the decoded output "
                    "follows while you drag.")
        with gr.Row():
            model = page.picker("Model", page.default("digits_vae"), elem_id="sl_model")
            index = CheckedNumber(value=0, precision=0, minimum=0, label="Start from test item", elem_id="sl_index")
        with gr.Row():
            with gr.Column(scale=2):
                # Wide bounds until the model's ranges arrive, so API calls without a session
                # (which keep these bounds) are not refused for a code beyond ±3.
                sliders = [CheckedSlider(-1000, 1000, value=0, step=0.001, label=f"z[{i}]", visible=i < 2,
                                         elem_id=f"slider_{i}") for i in range(MAX_SLIDERS)]
            with gr.Column(scale=1):
                view = page_view("sl", "Decoded")
                image = InlineImage(label="Decoded", format="png", elem_id="sl_image", height=220)
                rows = table_twin("sl_rows", "Decoded row (categories with their probability)")
                text = gr.Markdown(elem_classes="caption")
                fallback = gr.Button("Decode on the server", visible="hidden", elem_id="sl_fallback")
        page.model_cards(tab.select, model)

    def setup(name, start):
        specs, decoded, caption = ex.slider_setup(name, start)
        updates = [gr.Slider(visible=True, interactive=True, step=0.001, **s) for s in specs]
        updates += [gr.Slider(visible=False, value=0)] * (MAX_SLIDERS - len(specs))
        return (*updates, *pair(decoded, ex.shown_as(name) == "table"), caption)

    def decode(name, start, *values):
        decoded = ex.decode_sliders(name, start, list(values))
        # The hot path: a picture goes straight to its image; only table rows pay for the routing.
        return (decoded, gr.skip()) if ex.shown_as(name) == "image" else pair(decoded, True)

    wire([tab.select, model.change, index.submit], setup, [model, index], [*sliders, image, rows, text],
         api_name="slider_setup")
    page.item_views([tab.select], model, [image], [rows])
    def spec(name, start):
        return page_spec(lambda: ex.page_sliders(name, start), "sl_fallback", [s.elem_id for s in sliders])

    wire([tab.select, model.change, index.submit], spec, [model, index], view, api_visibility="private",
         show_progress="hidden")
    # The drag decodes in the page, no request per frame: decoder.js draws on the range inputs' own events,
    # and this js-only event covers the rest (a typed value); where the page cannot decode the model it
    # clicks the hidden button instead, whose listener is the server's decode (and the API's /decode).
    gr.on([s.input for s in sliders], None, sliders, None, js="(...v) => { window.vaePage.input(['sl'], v); }",
          api_visibility="private")
    # Values the server sets (the setup when the tab opens again) are drawn too; the server's image has them.
    gr.on([s.change for s in sliders], None, sliders, None,
          js="(...v) => { window.vaePage.input(['sl'], v, false); }", api_visibility="private")
    wire(fallback.click, decode, [model, index, *sliders], [image, rows], api_name="decode",
         trigger_mode="always_last", show_progress="hidden", concurrency_limit=4)


def interpolate_tab(page: Page) -> None:
    ex = page.ex
    with gr.Tab("Interpolate", id="interpolate") as tab:
        gr.Markdown("Walk from item A to item B through each model's latent space.")
        with gr.Row():
            model_a = page.picker("Model 1", page.default("digits_ae"), elem_id="in_model_a")
            model_b = page.picker("Model 2", page.default("digits_vae"), elem_id="in_model_b")
            mode = gr.Radio(["linear", "spherical"], value="linear", label="Path",
                            info="spherical (slerp) keeps the code's norm, suited to Gaussian priors")
        with gr.Row():
            index_a = CheckedNumber(value=0, precision=0, minimum=0, label="Item A (test index)", elem_id="in_ia")
            upload_a = gr.File(label="…or upload A", file_types=["image"], type="filepath")
            index_b = CheckedNumber(value=1, precision=0, minimum=0, label="Item B (test index)", elem_id="in_ib")
            upload_b = gr.File(label="…or upload B", file_types=["image"], type="filepath")
        t = CheckedSlider(0, 1, value=0.5, step=0.01, label="t (0 = A, 1 = B)", elem_id="in_t")
        with gr.Row():
            with gr.Column():
                view_a = page_view("in-a", "Model 1 at t")
                at_a = InlineImage(label="Model 1 at t", format="png", elem_id="in_img_a", height=180)
            with gr.Column():
                view_b = page_view("in-b", "Model 2 at t")
                at_b = InlineImage(label="Model 2 at t", format="png", elem_id="in_img_b", height=180)
        fallback = gr.Button("Decode on the server", visible="hidden", elem_id="in_fallback")
        with gr.Row():
            at_a_rows = table_twin("in_rows_a", "Model 1 at t")
            at_b_rows = table_twin("in_rows_b", "Model 2 at t")
        steps = CheckedSlider(2, 30, value=10, step=1, label="Steps in the strip")
        strip = InlineImage(label="Strips: one row per model", format="png", elem_id="in_strip")
        strip_rows = table_twin("in_strip_rows", "A, the decoded path, B: for each model")
        text = gr.Markdown(elem_classes="caption")
        page.model_cards(tab.select, model_a, model_b)

    def strips(a, b, ia, ib, ua, ub, path, n):
        shown, text = ex.interpolation_strip([a, b], ia, ib, ua, ub, path, n)
        return (*pair(shown, ex.shown_as(a) == "table"), text)

    def at(a, b, ia, ib, ua, ub, path, t_value):
        return (*pair(ex.interpolate_at(a, ia, ib, t_value, path, ua, ub), ex.shown_as(a) == "table"),
                *pair(ex.interpolate_at(b, ia, ib, t_value, path, ua, ub), ex.shown_as(b) == "table"))

    inputs = [model_a, model_b, index_a, index_b, upload_a, upload_b, mode]
    changes = [model_a.change, model_b.change, index_a.submit, index_b.submit, upload_a.change, upload_b.change,
               mode.change]
    wire([tab.select, *changes, steps.release], strips, [*inputs, steps], [strip, strip_rows, text],
         api_name="interpolate")
    def page_specs(a, b, ia, ib, ua, ub, path, t_value):
        return tuple(page_spec(lambda n=n: ex.page_interpolation(n, ia, ib, t_value, path, ua, ub), "in_fallback",
                               [t.elem_id]) for n in (a, b))

    wire([tab.select, *changes], page_specs, [*inputs, t], [view_a, view_b], api_visibility="private",
         show_progress="hidden")
    # As the sliders: t decodes in the page; a model the page cannot run has the hidden button clicked.
    gr.on(t.input, None, t, None, js="(t) => { window.vaePage.input(['in-a', 'in-b'], t); }",
          api_visibility="private")
    wire([tab.select, fallback.click, *changes], at, [*inputs, t], [at_a, at_a_rows, at_b, at_b_rows],
         api_name="interpolate_at", trigger_mode="always_last", show_progress="hidden", concurrency_limit=4)
    page.item_views([tab.select], model_a, [strip, at_a], [strip_rows, at_a_rows])
    page.item_views([tab.select], model_b, [at_b], [at_b_rows])
    page.mark_upload(upload_a)
    page.mark_upload(upload_b)


def sample_tab(page: Page) -> None:
    ex = page.ex
    with gr.Tab("Sample", id="sample") as tab:
        with gr.Row():
            model = page.picker("Model", page.default("digits_vae"), elem_id="sa_model")
            temperature = CheckedSlider(0.1, 3.0, value=1.0, step=0.05, label="Temperature",
                                        info="scales the spread of z (quantized codes: flattens their frequencies)")
            seed = CheckedNumber(value=0, precision=0, label="Seed")
            button = gr.Button("Sample 7×7", variant="primary", elem_id="sa_button")
        with gr.Row():
            grid_a = InlineImage(label="Samples", format="png", elem_id="sa_a")
            grid_b = InlineImage(label="For comparison", format="png", elem_id="sa_b")
        rows_a = table_twin("sa_rows_a", "Samples")
        rows_b = table_twin("sa_rows_b", "For comparison")
        text = gr.Markdown(elem_classes="caption")
        distributions = QuickPlot(show_label=False, visible=False, elem_id="sa_columns")
        page.model_cards(tab.select, model)

    def labels(name):
        a, b = ex.sample_labels(name)
        return gr.Image(label=a), gr.Image(label=b), gr.Dataframe(label=a), gr.Dataframe(label=b)

    def sample(name, temperature_value, seed_value):
        a, b, caption, columns = ex.sample(name, temperature_value, seed_value)
        tabular = ex.shown_as(name) == "table"
        (ia, ta), (ib, tb) = pair(a, tabular), pair(b, tabular)
        return ia, ib, ta, tb, caption, columns  # columns: the table models' figure (item_views shows it)

    wire([tab.select, model.change], labels, model, [grid_a, grid_b, rows_a, rows_b], api_visibility="private",
         show_progress="hidden")
    wire([tab.select, button.click, model.change], sample, [model, temperature, seed],
         [grid_a, grid_b, rows_a, rows_b, text, distributions], api_name="sample")
    page.item_views([tab.select], model, [grid_a, grid_b], [rows_a, rows_b, distributions])


def denoise_tab(page: Page) -> None:
    ex = page.ex
    with gr.Tab("Denoise", id="denoise") as tab:
        gr.Markdown("Corrupt an item, then let each model clean it, scored against the clean item.")
        with gr.Row():
            chosen = [page.default(n) for n in ("digits_denoising_ae", "digits_vae", "digits_ae")]
            models = page.picker("Models (the first sets the input size)", list(dict.fromkeys(n for n in chosen if n)),
                                 multiselect=True, elem_id="de_models")
            index = CheckedNumber(value=0, precision=0, minimum=0, label="Test item", elem_id="de_index")
            upload = gr.File(label="…or upload any image (PNG, JPEG, WebP; any size)", file_types=["image"],
                             type="filepath", elem_id="de_upload")
        with gr.Row():
            noise = gr.Radio(list(IMAGES.noise_kinds), value="gaussian", label="Noise", elem_id="de_noise",
                             info="tables: blank cells (missing) or replace them with random values")
            level = CheckedSlider(0, 1, value=0.5, step=0.01, label="Noise level",
                              info="gaussian: std; the others: fraction of pixels or cells")
            seed = CheckedNumber(value=0, precision=0, label="Noise seed")
            columns = gr.Dropdown([], value=[], multiselect=True, label="Columns to corrupt (tables; empty: any)",
                                  visible=False, elem_id="de_columns")
        with gr.Row():
            clean = InlineImage(label="Clean (at the model's input size)", format="png", elem_id="de_clean", height=160)
            noisy = InlineImage(label="Noisy", format="png", elem_id="de_noisy", height=160)
        imputed = table_twin("de_rows", "The row, its corrupted copy, and each model's reconstruction")
        outputs = InlineGallery(label="Denoised", columns=4, height="auto", format="png", elem_id="de_out",
                             object_fit="contain")
        text = gr.Markdown(elem_classes="caption", elem_id="de_text")
        page.model_cards(tab.select, models)

    def denoise(names, index_value, upload_path, noise_kind, level_value, seed_value, chosen_columns=None):
        first, picture, results, caption = ex.denoise(names, index_value, upload_path, noise_kind, level_value,
                                                      seed_value, chosen_columns or None)
        # Tables: one table (the row, its corrupted copy, each model's output) replaces the three picture views.
        if ex.shown_as(names[0]) == "table":
            return None, None, [], first, caption
        return first, picture, results, None, caption

    def kind_changed(names):
        # Images get noise; table rows get missing or random cells, optionally in chosen columns.
        first = next((n for n in names or [] if n), None)
        if first is None:
            return gr.skip(), gr.skip()
        kinds, cols = ex.noise_kinds(first), ex.columns(first)
        return gr.Radio(choices=kinds, value=kinds[0]), gr.Dropdown(choices=cols, value=[], visible=bool(cols))

    wire([tab.select, models.change], kind_changed, models, [noise, columns], api_visibility="private",
         show_progress="hidden")
    wire([tab.select, models.change, index.submit, upload.change, noise.input, level.release, seed.submit,
          columns.input], denoise, [models, index, upload, noise, level, seed, columns],
         [clean, noisy, outputs, imputed, text], api_name="denoise")
    page.item_views([tab.select], models, [clean, noisy, outputs], [imputed])
    page.mark_upload(upload)


def diagnostics_tab(page: Page) -> None:
    ex = page.ex
    with gr.Tab("Diagnostics", id="diagnostics") as tab:
        with gr.Tabs():
            with gr.Tab("Latent usage", id="dg_usage_tab") as usage_tab:
                gr.Markdown("Which latent dimensions does the model use? A VAE whose KL to the prior is zero has "
                            "collapsed: its code carries nothing. Traversals show what each used dimension does.")
                model = page.picker("Model", page.default("digits_conv_vae"), elem_id="dg_model")
                text = gr.Markdown(elem_classes="caption", elem_id="dg_text")
                with gr.Row():
                    kl = QuickPlot(show_label=False, elem_id="dg_kl")
                    variance = QuickPlot(show_label=False, elem_id="dg_variance")
                gr.Markdown("Latent traversals: one row per dimension, most used first; left to right t from -3 to 3.",
                            elem_classes="caption")
                traversal = InlineImage(show_label=False, format="png", elem_id="dg_traversals")
                traversal_rows = table_twin("dg_rows")
                page.model_cards(tab.select, model)
            with gr.Tab("Prior vs codes", id="dg_prior_tab") as prior_tab:
                gr.Markdown("A VAE is trained to put its codes where N(0, I) is, so decoding N(0, I) gives things like "
                            "its data; a plain autoencoder puts them anywhere. Per dimension, the codes' mean and "
                            "spread against N(0, 1); then how far samples of N(0, I) land from the nearest test code, "
                            "against how far test codes lie from each other.")
                with gr.Row():
                    prior_left = page.picker("Left model (e.g. an autoencoder)", page.default("digits_conv_ae"),
                                             elem_id="pf_left_model")
                    prior_right = page.picker("Right model (e.g. a VAE)", page.default("digits_conv_vae"),
                                              elem_id="pf_right_model")
                with gr.Row():
                    with gr.Column():
                        moments_left = QuickPlot(show_label=False, elem_id="pf_left_moments")
                        gap_left = QuickPlot(show_label=False, elem_id="pf_left_gap")
                        text_left = gr.Markdown(elem_classes="caption", elem_id="pf_left_text")
                    with gr.Column():
                        moments_right = QuickPlot(show_label=False, elem_id="pf_right_moments")
                        gap_right = QuickPlot(show_label=False, elem_id="pf_right_gap")
                        text_right = gr.Markdown(elem_classes="caption", elem_id="pf_right_text")
                page.model_cards(prior_tab.select, prior_left, prior_right)
            with gr.Tab("Disentanglement", id="dg_factors_tab") as factors_tab:
                gr.Markdown("On data whose factors of variation are known (the built-in sprites: shape, scale, "
                            "rotation, x, y), how well each latent dimension captures one factor: MIG, the FactorVAE "
                            "score and DCI, and traversals labelled by the factor each dimension explains best.")
                factors_model = page.picker("Model (trained on data with known factors)",
                                            page.default("sprites_beta_vae"), elem_id="ds_model")
                factors_text = gr.Markdown(elem_classes="caption", elem_id="ds_text")
                importance = QuickPlot(show_label=False, elem_id="ds_importance", visible=False)
                factor_traversals = InlineImage(show_label=False, format="png", elem_id="ds_traversals", visible=False)
                page.model_cards(factors_tab.select, factors_model)
            with gr.Tab("Linear AE vs PCA", id="dg_linear_tab") as linear_tab:
                gr.Markdown("A linear autoencoder trained on squared error learns the same subspace as PCA. The angles "
                            "between its decoder's plane and PCA's say how close it got (0°: the same direction); "
                            "below, its reconstructions beside PCA's.")
                linear_model = page.picker("Linear autoencoder", page.default("digits_linear_ae"),
                                           elem_id="lp_model")
                linear_text = gr.Markdown(elem_classes="caption", elem_id="lp_text")
                angles = QuickPlot(show_label=False, elem_id="lp_angles", visible=False)
                linear_recon = InlineImage(show_label=False, format="png", elem_id="lp_recon", visible=False)
                page.model_cards(linear_tab.select, linear_model)
            with gr.Tab("Codebook", id="dg_codebook_tab") as codebook_tab:
                gr.Markdown("A VQ model snaps each code token to one of K learned codebook vectors. Over the whole "
                            "test set: how many codes are used, which are dead, how evenly (perplexity); what each "
                            "code decodes to, sized by use; the test images that use a chosen code most; and for "
                            "residual VQ, the reconstruction after each level.")
                with gr.Row():
                    codebook_model = page.picker("VQ model", page.default("digits_rvq_vae", "digits_vq_vae"),
                                                 elem_id="cb_model")
                    codebook_level = CheckedNumber(value=1, precision=0, minimum=1, label="Level",
                                                   elem_id="cb_level", info="1 for a plain VQ-VAE")
                    codebook_code = CheckedNumber(value=None, precision=0, minimum=0, label="Code",
                                                  elem_id="cb_code", info="or click a code in the grid")
                    codebook_show = gr.Button("Show this code", elem_id="cb_show", scale=0)
                codebook_text = gr.Markdown(elem_classes="caption", elem_id="cb_text")
                with gr.Row():
                    codebook_grid = QuickPlot(show_label=False, elem_id="cb_grid", visible=False)
                    with gr.Column():
                        gr.Markdown("The chosen code decoded on its own; beside it, the test images whose tokens "
                                    "use it most.", elem_classes="caption")
                        codebook_users = InlineImage(show_label=False, format="png", elem_id="cb_users", visible=False)
                        gr.Markdown("Residual VQ, one test image per row: the input, then the reconstruction after "
                                    "level 1, 1+2, ...", elem_classes="caption")
                        codebook_levels = InlineImage(show_label=False, format="png", elem_id="cb_levels",
                                                   visible=False)
                codebook_pick = gr.Button("pick", elem_id="cb_pick_button", visible="hidden")
                page.model_cards(codebook_tab.select, codebook_model)
            attribute_view(page)
            motion_view(page)
            export_view(page)

    def usage(name):
        kl_fig, var_fig, grid, caption = ex.latent_usage(name)
        # A model without a posterior has no KL: its plot makes room for the variance.
        return gr.Plot(kl_fig, visible=kl_fig is not None), var_fig, *pair(grid, ex.shown_as(name) == "table"), caption

    def prior(left, right):
        return (*ex.prior_fit(left), *ex.prior_fit(right))

    def shown_if_any(figure, image, caption):
        # Models these views do not apply to get the caption alone, which says why and what to choose.
        return gr.Plot(figure, visible=figure is not None), gr.Image(image, visible=image is not None), caption

    def factors(name):
        return shown_if_any(*ex.disentanglement(name))

    def linear(name):
        return shown_if_any(*ex.linear_pca(name))

    def codebook(name, level, code):
        figure, users, levels, caption = ex.codebook(name, 1 if level is None else level, code)
        return (gr.Plot(figure, visible=figure is not None), gr.Image(users, visible=users is not None),
                gr.Image(levels, visible=levels is not None), caption)

    def codebook_fresh(name):
        # Opening the view or choosing a model starts at level 1 with its most used code, written into the
        # boxes (the page sends an empty number box as 0, and the old numbers may not exist in a new model).
        code = ex.most_used_code(name, 1)
        return (1, code, *codebook(name, 1, code))

    wire([tab.select, usage_tab.select, model.change], usage, model, [kl, variance, traversal, traversal_rows, text],
         api_name="latent_usage", study=True)
    page.item_views([tab.select, usage_tab.select], model, [traversal], [traversal_rows])
    wire([prior_tab.select, prior_left.change, prior_right.change], prior, [prior_left, prior_right],
         [moments_left, gap_left, text_left, moments_right, gap_right, text_right], api_name="prior_fit", study=True)
    wire([factors_tab.select, factors_model.change], factors, factors_model,
         [importance, factor_traversals, factors_text], api_name="disentanglement", study=True)
    wire([linear_tab.select, linear_model.change], linear, linear_model,
         [angles, linear_recon, linear_text], api_name="linear_pca", study=True)
    wire([codebook_level.submit, codebook_code.submit, codebook_show.click], codebook,
         [codebook_model, codebook_level, codebook_code],
         [codebook_grid, codebook_users, codebook_levels, codebook_text], api_name="codebook", study=True)
    def codebook_clicked(name, level, code):
        return (code, *codebook(name, level, code))

    # A click on a code in the grid: the bridge's code goes in the Code box and the view shows it.
    wire(codebook_pick.click, codebook_clicked, [codebook_model, codebook_level, codebook_code],
         [codebook_code, codebook_grid, codebook_users, codebook_levels, codebook_text],
         js="(m, l, c) => [m, l, (window.__vaeCode ?? c)]", api_visibility="private", study=True)
    wire([codebook_tab.select, codebook_model.input], codebook_fresh, codebook_model,
         [codebook_level, codebook_code, codebook_grid, codebook_users, codebook_levels, codebook_text],
         api_visibility="private", study=True)


def attribute_view(page: Page) -> None:
    """Diagnostics' Attribute vectors sub-tab: the direction between two groups' mean codes (groups chosen by label,
    or by selecting points on a map of the codes), how consistent it is, applied to a test item with a strength
    slider, and the codes projected onto it."""
    ex = page.ex
    with gr.Tab("Attribute vectors", id="dg_attribute_tab") as tab:
        gr.Markdown("Choose two groups by label, or by selecting points on the map: the direction from group A's "
                    "mean code to group B's is an 'attribute vector' (e.g. 1 → 7). Add it to any test item's code "
                    "and decode; below, every code's position along it, coloured by group.")
        with gr.Row():
            model = page.picker("Model", page.default("digits_vae"), elem_id="av_model")
            group_a = gr.Dropdown(["1"], value="1", label="Group A (label)", elem_id="av_a", allow_custom_value=True)
            group_b = gr.Dropdown(["7"], value="7", label="Group B (label)", elem_id="av_b", allow_custom_value=True)
            index = CheckedNumber(value=0, precision=0, minimum=0, label="Test item to move", elem_id="av_index")
        with gr.Accordion("Choose the groups on the map instead", open=False, elem_id="av_select"):
            with gr.Row():
                with gr.Column(scale=3):
                    select_map = QuickPlot(show_label=False, elem_id="av_map")
                with gr.Column(scale=1):
                    gr.Markdown("Drag a box around points on the map (or pick the lasso in its toolbar), then press "
                                "a button: the selected test items become that group. Or type test indices. A group "
                                "given by items replaces its label; choosing a label again goes back to it.",
                                elem_classes="caption")
                    items_a = gr.Textbox("", label="Group A: test items", elem_id="av_a_items", lines=2, max_lines=4,
                                         placeholder="e.g. 3, 17, 40-45 (empty: the label above)")
                    to_a = gr.Button("Selected points → group A", elem_id="av_to_a")
                    items_b = gr.Textbox("", label="Group B: test items", elem_id="av_b_items", lines=2, max_lines=4,
                                         placeholder="e.g. 3, 17, 40-45 (empty: the label above)")
                    to_b = gr.Button("Selected points → group B", elem_id="av_to_b")
        text = gr.Markdown(elem_classes="caption", elem_id="av_text")
        with gr.Row():
            with gr.Column(scale=3):
                strip = InlineImage(label="The item, then its code + s × direction", format="png", elem_id="av_strip")
                strip_rows = table_twin("av_strip_rows", "The row, then its code + s × direction, decoded")
            with gr.Column(scale=1):
                strength = CheckedSlider(-3, 3, value=1.0, step=0.05, label="Strength s", elem_id="av_strength")
                moved = InlineImage(label="Code + s × direction", format="png", elem_id="av_moved", height=180)
                moved_rows = table_twin("av_moved_rows", "Code + s × direction")
        histogram = QuickPlot(show_label=False, elem_id="av_hist")
        page.model_cards(tab.select, model)

    def groups(name):
        # The model's labels; two different ones to start (its first two, or 1 and 7 where they exist), no items.
        choices = ex.attribute_groups(name)
        a, b = ("1", "7") if {"1", "7"} <= set(choices) else (choices + choices)[:2]
        return gr.Dropdown(choices=choices, value=a), gr.Dropdown(choices=choices, value=b), "", ""

    def view(name, a, b, i, items_a="", items_b=""):
        shown, fig, caption = ex.attribute_view(name, a, b, i, items_a or None, items_b or None)
        return (*pair(shown, ex.shown_as(name) == "table"), fig, caption)

    def with_map(name, a, b, ia, ib):
        # The map is redrawn with the groups ringed; a group that cannot be told (the view says why) rings nothing.
        return ex.attribute_map(name, a, b, ia or None, ib or None)

    def label_a(name, a, b, i, ib):  # a label chosen for A: A is that label again, not the items
        return ("", *view(name, a, b, i, "", ib), with_map(name, a, b, "", ib))

    def label_b(name, a, b, i, ia):
        return ("", *view(name, a, b, i, ia, ""), with_map(name, a, b, ia, ""))

    def chosen(name, a, b, i, ia, ib):  # items typed, or selected on the map (the button's js put them in)
        return (ia, ib, *view(name, a, b, i, ia, ib), with_map(name, a, b, ia, ib))

    def at(name, a, b, i, s, items_a="", items_b=""):
        return pair(ex.attribute_at(name, a, b, i, s, items_a or None, items_b or None), ex.shown_as(name) == "table")

    shown = [strip, strip_rows, histogram, text]
    view_args = dict(fn=user_errors(view), inputs=[model, group_a, group_b, index, items_a, items_b], outputs=shown)
    map_args = dict(fn=user_errors(with_map), inputs=[model, group_a, group_b, items_a, items_b], outputs=select_map,
                    show_progress="hidden")
    at_args = dict(fn=user_errors(at), inputs=[model, group_a, group_b, index, strength, items_a, items_b],
                   outputs=[moved, moved_rows], show_progress="hidden")
    # The groups are the model's labels: set first, then the views computed with them.
    wire([tab.select, model.input], groups, model, [group_a, group_b, items_a, items_b], api_visibility="private",
         show_progress="hidden").then(**view_args, api_visibility="private").then(
        **at_args, api_visibility="private").then(**map_args, api_visibility="private")
    wire(group_a.input, label_a, [model, group_a, group_b, index, items_b], [items_a, *shown, select_map],
         api_visibility="private").then(**at_args, api_visibility="private")
    wire(group_b.input, label_b, [model, group_a, group_b, index, items_a], [items_b, *shown, select_map],
         api_visibility="private").then(**at_args, api_visibility="private")
    # select_points.js keeps the map's box / lasso selection; each button hands it to Python as that group's items.
    selection = "(window.vaeSelection && window.vaeSelection.text('av_map'))"
    for button, js in ((to_a, f"(m, a, b, i, ia, ib) => [m, a, b, i, {selection} || ia, ib]"),
                       (to_b, f"(m, a, b, i, ia, ib) => [m, a, b, i, ia, {selection} || ib]")):
        wire(button.click, chosen, [model, group_a, group_b, index, items_a, items_b],
             [items_a, items_b, *shown, select_map], js=js, api_visibility="private").then(
            **at_args, api_visibility="private")
    wire([items_a.submit, items_b.submit], chosen, [model, group_a, group_b, index, items_a, items_b],
         [items_a, items_b, *shown, select_map], api_visibility="private").then(**at_args, api_visibility="private")
    wire(index.submit, view, view_args["inputs"], shown, api_name="attribute_vector", study=True).then(
        **at_args, api_visibility="private")
    wire(strength.release, at, at_args["inputs"], at_args["outputs"], api_name="attribute_at",
         trigger_mode="always_last", show_progress="hidden")
    page.item_views([tab.select], model, [strip, moved], [strip_rows, moved_rows])


def motion_view(page: Page) -> None:
    """Diagnostics' Training in motion sub-tab: the map of a fixed set of test items after each epoch, played in
    the page (plotly's play button and epoch slider; motion.js), and the KL per dimension per epoch."""
    ex = page.ex
    with gr.Tab("Training in motion", id="dg_motion_tab") as tab:
        gr.Markdown("How the latent space formed while the model trained: the same test items' codes after each "
                    "epoch (recorded during training and kept in the checkpoint). Press ▶ Play or drag the epoch "
                    "slider. Below, for models with a posterior, the KL to the prior of each latent dimension "
                    "after each epoch.")
        model = page.picker("Model", page.default("digits_vae"), elem_id="tm_model")
        text = gr.Markdown(elem_classes="caption", elem_id="tm_text")
        motion = QuickPlot(show_label=False, elem_id="tm_plot", visible=False)
        kl_text = gr.Markdown(elem_classes="caption", elem_id="tm_kl_text")
        kl = QuickPlot(show_label=False, elem_id="tm_kl", visible=False)
        page.model_cards(tab.select, model)

    def view(name):
        # A checkpoint without recorded frames gets the explorer's message in place of the map: it stays on
        # the page, where a toast would vanish and leave the last model's animation.
        try:
            figure, caption = ex.training_motion(name)
        except ViewError as e:
            figure, caption = None, f"**{e}**"
        kl_figure, kl_caption = ex.kl_history(name)
        return (gr.Plot(page_animation(figure), visible=figure is not None), caption,
                gr.Plot(kl_figure, visible=kl_figure is not None), kl_caption)

    # "always_last": Gradio takes the trigger mode from the first trigger, and a tab's select gives "once", which
    # drops a model chosen while the tab's first view is still pending (the picker then names one model and
    # the plot shows another). Other views wired [tab.select, x.change] have the same flaw; made "always_last"
    # everywhere, the browser suite met a call that never settled (not a plain loop: no event's outputs
    # trigger itself or a second event that triggers it back; not yet found).
    wire([tab.select, model.change], view, model, [motion, text, kl, kl_text], api_name="training_motion",
         trigger_mode="always_last", study=True)


def export_view(page: Page) -> None:
    """Diagnostics' Export sub-tab: any model's codes (CSV, Embedding Projector), its figures, its run bundle."""
    ex = page.ex
    with gr.Tab("Export", id="dg_export_tab") as tab:
        gr.Markdown("Take a model's results elsewhere: its test codes with their labels as CSV or as TensorBoard's "
                    "Embedding Projector files, any of its figures as interactive HTML (opens offline) and PNG, and "
                    "a run bundle: the checkpoint, its description and metrics, and the command that trains it "
                    "again. The page's address keeps the Latent map's models, projection and selected point and "
                    "the open tab: copy it to share this view.")
        with gr.Row():
            model = page.picker("Model", page.default("digits_vae"), elem_id="ex_model")
            figure = gr.Dropdown(list(ex.EXPORT_FIGURES), value="latent map", label="Figure", elem_id="ex_figure")
        with gr.Row():
            codes = gr.Button("Codes as CSV", elem_id="ex_codes")
            projector = gr.Button("Embedding Projector files (zip)", elem_id="ex_projector")
            figure_button = gr.Button("Figure as HTML + PNG", elem_id="ex_figure_button")
            bundle = gr.Button("Run bundle (zip)", elem_id="ex_bundle")
        files = gr.File(label="Download", file_count="multiple", interactive=False, elem_id="ex_files")
        note = gr.Markdown(elem_classes="caption", elem_id="ex_note")
        page.model_cards(tab.select, model)

    def one(make):
        def handler(name):
            path, text = make(name)
            return [path], text
        return handler

    wire(codes.click, one(ex.export_codes), model, [files, note], api_name="export_codes", study=True)
    wire(projector.click, one(ex.export_projector), model, [files, note], api_name="export_projector", study=True)
    wire(bundle.click, one(ex.export_bundle), model, [files, note], api_name="export_bundle", study=True)
    wire(figure_button.click, ex.export_figure, [model, figure], [files, note], api_name="export_figure", study=True)


# The page's address holds what a shared link should reopen: the Latent map's models, projection and
# selected item, and the open tab (?left=...&right=...&projection=...&index=...&tab=...). Read once at
# page load; rewritten in place (history.replaceState, no reload) whenever one of them changes.
URL_STATE_SCRIPT = """
<script>
window.vaeUrl = (key, value) => {
  // Not before the address has been read and its view opened (vaeUrlReady): the page's own load-time
  // events would rewrite it first, and the server reads the address of each request.
  if (!window.vaeUrlReady) return;
  const url = new URL(window.location.href);
  if (value === null || value === undefined || value === "") url.searchParams.delete(key);
  else url.searchParams.set(key, String(value));
  history.replaceState(history.state, "", url);
};
</script>
"""
URL_KEYS = {"left": "map_left_model", "right": "map_right_model", "index": "map_index"}


def url_state(page: Page, blocks: gr.Blocks, tabs: gr.Tabs) -> None:
    """Open the view a URL names and keep the URL up to date (see URL_STATE_SCRIPT)."""
    by_id = {b.elem_id: b for b in blocks.blocks.values() if getattr(b, "elem_id", None)}
    widgets = {key: by_id[elem_id] for key, elem_id in URL_KEYS.items() if elem_id in by_id}
    projection = next((b for b in blocks.blocks.values()
                       if isinstance(b, gr.Radio) and b.label == "Projection"), None)  # a widget, not a model
    if projection is not None:
        widgets["projection"] = projection
    top_tabs = {t.id: t for t in tabs.children if isinstance(t, gr.Tab)}
    keys = list(widgets)

    def from_url(request: gr.Request):
        query = dict(request.query_params) if request is not None else {}
        names = page.ex.checkpoint_names()
        values = []
        for key in keys:
            wanted = query.get(key)
            if wanted is None or (key in ("left", "right") and wanted not in names):
                values.append(gr.skip())  # a model that is gone is not an error: the default stays
            elif key == "index":
                values.append(int(wanted) if wanted.isdigit() else gr.skip())
            elif key == "projection":
                values.append(wanted if wanted in PROJECTIONS else gr.skip())
            else:
                values.append(wanted)
        tab = query.get("tab")
        return (*values, json.dumps({"tab": tab if tab in top_tabs else "", "index": query.get("index", "")}))

    opened = gr.Textbox(visible=False)
    # After the values are in their widgets: a click on the tab opens it as a person's click would (its views
    # fill in), and the selected item is picked as a click on the map would pick it.
    # Once the page's own load calls have answered (no component pending; the map's load-time selection of its
    # default item would otherwise land after ours), the tab is clicked open and the item picked.
    # The page's other load-time events can land after the pick and redraw the maps around their default item:
    # once everything has settled the maps' rings are checked, and the item picked again if they do not show it.
    pick = ("(s) => { const v = JSON.parse(s || '{}');"
            " const settle = (then) => { let quiet = 0; const tick = () => {"
            "   quiet = document.querySelector('.pending') ? 0 : quiet + 100;"
            "   if (quiet >= 600) then(); else setTimeout(tick, 100); }; setTimeout(tick, 100); };"
            " const ringed = (i) => ['left', 'right'].every(side => {"
            "   const gd = document.querySelector(`#map_${side} .js-plotly-plot`);"
            "   const t = gd && gd._fullData && gd._fullData.find(t => t.name === 'selected');"
            "   return !!t && Number(t.customdata[0]) === i; });"
            " const pickItem = (i, tries) => { window.__vaePick = i;"
            "   const p = document.querySelector('#pick_button'); if (p) p.click();"
            "   settle(() => { if (!ringed(i) && tries > 1) pickItem(i, tries - 1); }); };"
            " settle(() => {"
            "   if (v.tab) { const bs = [...document.querySelectorAll(`button[role=tab][data-tab-id='${v.tab}']`)];"
            "     const b = bs.find(b => b.offsetParent !== null) || bs[0]; if (b) b.click(); }"
            "   if (/^\\d+$/.test(v.index || '')) pickItem(parseInt(v.index), 4);"
            "   window.vaeUrlReady = true; }); }")
    wire(page.load, from_url, None, [widgets[k] for k in keys] + [opened], api_visibility="private",
         show_progress="hidden").then(None, opened, None, js=pick)
    for key, widget in widgets.items():
        gr.on(widget.change, None, widget, None, js=f"(v) => {{ window.vaeUrl({json.dumps(key)}, v); }}",
              api_visibility="private")
    for tab_id, tab in top_tabs.items():
        tab.select(None, None, None, js=f"() => {{ window.vaeUrl('tab', {json.dumps(tab_id)}); }}",
                   api_visibility="private")


# The Train tab's model-specific widgets: shown, and sent, only for models that have the setting.
def download_status(ex: Explorer, name: str, start: bool) -> tuple:
    """A dataset download's status line and its poll timer (running while the download is), for both the
    Datasets panel and the Train tab; start=True fetches the dataset unless it is there or coming."""
    text, running = ex.dataset_download(name) if start else ex.dataset_status(name)
    return gr.update(value=text, visible=True), gr.Timer(active=running)


def datasets_panel(page: Page) -> None:
    """Above the tabs: fetch MNIST, Fashion-MNIST or CIFAR-10 into the data folder (views that need a dataset
    that is not there point here)."""
    ex = page.ex
    with gr.Accordion("Datasets: get MNIST, Fashion-MNIST or CIFAR-10", open=False, elem_id="ds_panel"):
        with gr.Row():
            name = gr.Dropdown(list(DOWNLOADABLE), value="mnist", label="Dataset", elem_id="ds_name",
                               info="fetched with torchvision into this server's data folder (--data-root)")
            button = gr.Button("Download", variant="primary", elem_id="ds_download")
        status = gr.Markdown(elem_id="ds_status")
        timer = gr.Timer(0.5, active=False)
        status_button = gr.Button(visible=False)  # for API clients: /dataset_status

    wire([page.load, name.change], lambda chosen: download_status(ex, chosen, False), name, [status, timer],
         api_visibility="private", show_progress="hidden")
    wire(button.click, lambda chosen: download_status(ex, chosen, True), name, [status, timer],
         api_name="dataset_download")
    wire(timer.tick, lambda chosen: download_status(ex, chosen, False), name, [status, timer],
         api_visibility="private", show_progress="hidden")
    wire(status_button.click, lambda chosen: ex.dataset_status(chosen)[0], name, status, api_name="dataset_status")


OPTIONAL_SETTINGS = ("beta", "noise_std", "likelihood")
VIEWS_EVERY_S = 2.0  # the Train tab's map and KL heat map are redrawn at most this often while a run goes


def train_tab(page: Page) -> None:
    ex = page.ex
    with gr.Tab("Train", id="train"):
        gr.Markdown("Train a model in the background; the other tabs stay usable. One run at a time on "
                    "this server, visible to every open page. The result appears in every model picker.")
        with gr.Row():
            model = gr.Dropdown(list(MODELS), value="vae", label="Model", elem_id="tr_model")
            dataset = gr.Dropdown([n for n, d in DATASETS.items() if d.trainable_from_page], value="digits",
                                  label="Dataset", elem_id="tr_dataset",
                                  info="digits, sprites and breast_cancer work offline; mnist, fashion_mnist "
                                       "and cifar10 are fetched when chosen; csv: your table, below")
            latent = CheckedNumber(value=2, precision=0, minimum=1, label="Latent dims", elem_id="tr_latent")
            beta = CheckedNumber(value=1.0, minimum=0, label="β (KL weight)", elem_id="tr_beta")
            likelihood = gr.Dropdown(list(LIKELIHOODS), value="bernoulli", label="Likelihood", elem_id="tr_likelihood")
            noise = CheckedNumber(value=None, minimum=0, label="Input noise std (denoising)", visible=False,
                              elem_id="tr_noise")
        with gr.Row():
            epochs = CheckedNumber(value=20, precision=0, minimum=1, label="Epochs", elem_id="tr_epochs")
            lr = CheckedNumber(value=1e-3, label="Learning rate", elem_id="tr_lr")
            batch = CheckedNumber(value=128, precision=0, minimum=1, label="Batch size")
            device = gr.Dropdown(device_choices(), value="auto", label="Device",
                                 info="auto takes the GPU when there is one")
            name = gr.Textbox(label="Checkpoint name", placeholder="empty: model_dataset_time", elem_id="tr_name")
        with gr.Row(visible=False) as table_row:
            table_file = gr.File(label=f"Your table: CSV (comma, semicolon or tab) or Parquet, at most "
                                       f"{MAX_UPLOAD_BYTES // 2**20} MB", file_types=[".csv", ".tsv", ".txt", ".parquet"],
                                 type="filepath", elem_id="tr_table")
            label_column = gr.Textbox(label="Label column (optional)", elem_id="tr_label",
                                      info="colours the map; with anomaly_label=VALUE below, gives ROC/PR")
            ignore_columns = gr.Textbox(label="Columns to ignore (ids), comma-separated", elem_id="tr_ignore",
                                        info="types are inferred; override with categorical=a,b or continuous=c")
        extra = gr.Textbox(label="More settings (name=value, one per line)", lines=2, elem_id="tr_extra",
                           placeholder="any flag of `python -m vae_explorer train`, e.g. commitment=0.5 or "
                                       "hidden=512,256; the same checks apply")
        with gr.Row():
            start = gr.Button("Start training", variant="primary", elem_id="tr_start")
            cancel = gr.Button("Cancel", variant="stop", elem_id="tr_cancel")
        data_status = gr.Markdown(visible=False, elem_id="tr_data_status")  # a dataset being fetched
        data_timer = gr.Timer(0.5, active=False)
        status = gr.Markdown(elem_id="tr_status")
        with gr.Row():
            curves = QuickPlot(show_label=False, elem_id="tr_curves")
            with gr.Column():
                gr.Markdown("Fixed test items (top row) and their reconstructions after each of the "
                            "last epochs (one row per epoch, newest at the bottom).", elem_classes="caption")
                history = InlineImage(show_label=False, format="png", elem_id="tr_history")
        with gr.Row():
            with gr.Column():
                motion_text = gr.Markdown(elem_classes="caption", elem_id="tr_motion_text")
                motion = QuickPlot(show_label=False, elem_id="tr_motion", visible=False)
            with gr.Column():
                kl_text = gr.Markdown(elem_classes="caption", elem_id="tr_kl_text")
                kl = QuickPlot(show_label=False, elem_id="tr_kl", visible=False)
        timer = gr.Timer(0.5, active=False)
        seen = gr.State(None)  # the job version this page last drew
        status_button = gr.Button(visible=False)  # for API clients: /train_status
        views_button = gr.Button(visible=False)  # for API clients: /train_views

    def model_changed(chosen, current_dataset):
        # A setting the model lacks is hidden and sent as None, so an API client that sends one is refused.
        preset = ex.model_settings(chosen)
        settings = [gr.update(visible=key in preset, value=preset.get(key)) for key in OPTIONAL_SETTINGS]
        # The dataset follows the model's data kind (a table model wants a table). Only values change, never
        # the choices: an event already on its way with the old value must still be a valid choice.
        kind = MODELS[chosen].cls.data_kind if chosen in MODELS else None
        dataset_value = current_dataset
        if kind and current_dataset in DATASETS and DATASETS[current_dataset].kind.name != kind:
            dataset_value = next(n for n, d in DATASETS.items() if d.trainable_from_page and d.kind.name == kind)
        return (*settings, gr.update(value=dataset_value), gr.Row(visible=dataset_value == "csv"))

    def dataset_changed(chosen, current_model):
        # A table wants a table model (and shows where to upload one); images want an image model.
        kind = DATASETS[chosen].kind.name
        fits = [n for n, entry in MODELS.items() if entry.cls.data_kind == kind]
        return gr.update(value=current_model if current_model in fits else fits[0]), gr.Row(visible=chosen == "csv")

    def fetch_dataset(chosen):
        # Choosing a downloadable dataset fetches it (when it is not there yet), its progress polled below.
        if chosen not in DOWNLOADABLE:
            return gr.update(visible=False), gr.Timer(active=False)
        return download_status(ex, chosen, True)

    def start_run(model_name, dataset_name, latent_dim, beta_value, likelihood_name, noise_std, n_epochs, rate,
                  batch_size, device_name, run_name, more="", table=None, label=None, ignore=None):
        message = ex.train_start(model_name, dataset_name, run_name or "", more or "", table_file=table,
                                 latent_dim=latent_dim, beta=beta_value, likelihood=likelihood_name,
                                 noise_std=noise_std, epochs=n_epochs, lr=rate, batch_size=batch_size,
                                 device=device_name, label_column=label or None, ignore_columns=ignore or None)
        gr.Info(message.replace("**", ""))  # toasts show plain text
        return (*show_status(), gr.Timer(active=True))

    def views():
        # The map of the fixed test items (the newest epoch while it runs, every epoch once it ends) and the KL
        # per dimension per epoch.
        figure, caption, kl_figure, kl_caption = ex.train_views()
        return (caption, gr.Plot(page_animation(figure), visible=figure is not None), kl_caption,
                gr.Plot(kl_figure, visible=kl_figure is not None))

    def show_status():
        text, fig, image, _ = ex.train_status()
        return text, fig, image

    def poll(last_seen):
        # Every open page polls twice a second: answer "nothing new" without redrawing when nothing is. The map and
        # the KL heat map change only when an epoch ends or the run does (not with every step's progress), and are
        # redrawn at most every VIEWS_EVERY_S while it runs: small datasets finish several epochs a second, and
        # redrawing two plots each time kept a loaded machine's page busy.
        version, views_version = ex.train_version(), ex.train_views_version()
        seen_version, seen_views, drawn_at = last_seen if isinstance(last_seen, (list, tuple)) and len(last_seen) == 3 \
            else (None, None, 0.0)
        if version == seen_version:
            return (*[gr.skip()] * (len(outputs) + len(view_outputs)), last_seen, gr.Timer(active=ex.train_running()))
        text, fig, image, running = ex.train_status()
        due = views_version != seen_views and (not running or time.monotonic() - drawn_at >= VIEWS_EVERY_S)
        shown = views() if due else [gr.skip()] * len(view_outputs)
        state = [version, views_version, time.monotonic()] if due else [version, seen_views, drawn_at]
        return text, fig, image, *shown, state, gr.Timer(active=running)

    def stop_run():
        ex.train_cancel()  # its message is part of the status below
        return (*show_status(), gr.Timer(active=False))

    outputs = [status, curves, history]
    view_outputs = [motion_text, motion, kl_text, kl]
    wire(model.change, model_changed, [model, dataset], [beta, noise, likelihood, dataset, table_row],
         api_visibility="private", show_progress="hidden")
    wire(dataset.input, dataset_changed, [dataset, model], [model, table_row], api_visibility="private",
         show_progress="hidden")
    wire(dataset.input, fetch_dataset, dataset, [data_status, data_timer], api_visibility="private",
         show_progress="hidden")
    wire(data_timer.tick, lambda chosen: download_status(ex, chosen, False) if chosen in DOWNLOADABLE else
         (gr.skip(), gr.Timer(active=False)), dataset, [data_status, data_timer], api_visibility="private",
         show_progress="hidden")
    wire(start.click, start_run, [model, dataset, latent, beta, likelihood, noise, epochs, lr, batch, device, name,
                                  extra, table_file, label_column, ignore_columns], [*outputs, timer],
         api_name="train_start", concurrency_limit=1, concurrency_id="train"
         ).then(user_errors(views), None, view_outputs, api_visibility="private", show_progress="hidden")
    wire(cancel.click, stop_run, None, [*outputs, timer], api_name="train_cancel", concurrency_limit=1,
         concurrency_id="train").then(user_errors(views), None, view_outputs, api_visibility="private",
                                      show_progress="hidden")
    wire(timer.tick, poll, seen, [*outputs, *view_outputs, seen, timer], api_visibility="private",
         show_progress="hidden")
    wire(page.load, poll, seen, [*outputs, *view_outputs, seen, timer], api_visibility="private")
    wire(status_button.click, show_status, None, outputs, api_name="train_status")
    wire(views_button.click, views, None, view_outputs, api_name="train_views")


def models_tab(page: Page) -> None:
    with gr.Tab("Models", id="models") as tab:
        model = page.picker("Checkpoint", page.default("digits_vae"), elem_id="mo_model")
        card = gr.Markdown(elem_id="mo_card")
    wire([tab.select, model.change], page.ex.card, model, card, api_name="model_card")


def build_app(explorer: Explorer) -> gr.Blocks:
    # The page's scripts (their folder), the decoders and the hover sprite sheets written for pages; nothing else
    # of the checkpoints folder. As few entries as that: Gradio resolves every one against each answer's files
    # and each file request (8 entries were a third of a denoise call's server time; 3 are left).
    explorer.pages.folder.mkdir(parents=True, exist_ok=True)
    explorer.tiles.folder.mkdir(parents=True, exist_ok=True)
    gr.set_static_paths([PAGE_SCRIPT.parent, explorer.pages.folder, explorer.tiles.folder])
    with ExplorerBlocks(title="vae-explorer", analytics_enabled=False, delete_cache=None) as demo:
        gr.Markdown(INTRO)
        page = Page(explorer, demo.load, explorer.checkpoint_names(), [])
        datasets_panel(page)
        with gr.Tabs() as tabs:
            for tab in (map_tab, reconstruct_tab, sliders_tab, interpolate_tab, sample_tab, denoise_tab,
                        diagnostics_tab, train_tab, models_tab):
                tab(page)
        url_state(page, demo, tabs)

        # New checkpoints (a finished training, a file copied in) appear in every picker.
        catalog_version = gr.State(explorer.catalog_version())

        def refresh_pickers(seen):
            version = explorer.catalog_version()
            if version == seen:
                return (gr.skip(),) * (len(page.pickers) + 1)
            choices = explorer.checkpoint_names()
            return (version, *[gr.Dropdown(choices=choices) for _ in page.pickers])

        wire(gr.Timer(3.0).tick, refresh_pickers, catalog_version, [catalog_version, *page.pickers],
             api_visibility="private", show_progress="hidden")
        wire(gr.Button(visible=False).click, explorer.checkpoint_names, None, gr.JSON(visible=False),
             api_name="checkpoints")
    return demo


DEFAULT_CACHE_CAP_MB = 500
DEFAULT_CACHE_MAX_AGE_MIN = 60


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int = 7860, share: bool = False,
           cache_cap_mb: float = DEFAULT_CACHE_CAP_MB, cache_max_age_min: float = DEFAULT_CACHE_MAX_AGE_MIN,
           view_slots: int = DEFAULT_VIEW_SLOTS, **kwargs):
    # run_history=False: Gradio 6 otherwise keeps every call's inputs and outputs in the page's localStorage
    # and rewrites that store at each event; after a few 10,000-point maps each event froze the page ~200 ms.
    # The shared VIEWS queue's limit (see `wire`); events outside it get a queue each with the same limit.
    demo.queue(default_concurrency_limit=view_slots)
    from gradio.utils import get_upload_folder

    install_answer_image_writer()
    demo.cache_janitor = CacheJanitor(demo, int(cache_cap_mb * 2**20), cache_max_age_min * 60,
                                      root=get_upload_folder()).start()
    return demo.launch(server_name=host, server_port=port, share=share, head=CLICK_BRIDGE + URL_STATE_SCRIPT + MOTION_HEAD, css=CSS,
                       max_file_size=MAX_UPLOAD_BYTES, footer_links=["api"], ssr_mode=False,
                       show_error=True, run_history=False, **kwargs)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="The vae-explorer browser app.")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on (default 127.0.0.1: this machine only; 0.0.0.0 exposes the app, "
                        "including training and uploads, to your network)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--checkpoints", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "checkpoints"),
                   help="folder of .safetensors checkpoints to explore; new training runs are saved here")
    p.add_argument("--data-root", default=None, help="where mnist / fashion_mnist / cifar10 live (default ./data)")
    p.add_argument("--share", action="store_true", help="also make a public gradio.live link (off by default)")
    p.add_argument("--auth", metavar="USER:PASSWORD", default=None,
                   help="require this login (use it with --host 0.0.0.0)")
    p.add_argument("--no-umap-warmup", action="store_true", help="do not compile UMAP in the background at start")
    p.add_argument("--train-memory-limit", metavar="GB", type=float, default=None,
                   help=f"memory one training run from the page may use, RAM or GPU memory (default: "
                        f"{MEMORY_SHARE * 100:.0f}%% of what is free when it starts); a run estimated to need more is refused "
                        "with the estimate")
    p.add_argument("--root-path", default=None,
                   help="the path the app is served under behind a reverse proxy, e.g. /vae (default: the root)")
    p.add_argument("--train-lock", metavar="FILE", default=None,
                   help="lock file that allows one training run at a time among every app process given the same "
                        "file (default: .training.lock in the checkpoints folder, shared by replicas over it); "
                        "replicas on several machines over a network folder give a file on their own machine")
    p.add_argument("--cache-cap-mb", type=float, default=DEFAULT_CACHE_CAP_MB,
                   help="disk the answers' images and the uploads may use (Gradio's file cache, GRADIO_TEMP_DIR); "
                        "above it the oldest files are deleted (default %(default)s)")
    p.add_argument("--cache-max-age-min", type=float, default=DEFAULT_CACHE_MAX_AGE_MIN,
                   help="minutes a cached file is kept at most (default %(default)s)")
    p.add_argument("--loaded-models", type=int, default=DEFAULT_LOADED_MODELS,
                   help="models kept loaded in memory, least recently used dropped first (default %(default)s); "
                        "keep it above the number of checkpoints a class uses, or each request reloads one")
    p.add_argument("--view-slots", type=int, default=DEFAULT_VIEW_SLOTS,
                   help="quick views (maps, reconstructions, samples...) computed at once; the others wait in one "
                        "queue, served in arrival order (default %(default)s)")
    args = p.parse_args(argv)
    if args.view_slots < 1:
        p.error(f"--view-slots must be at least 1, got {args.view_slots}")
    if args.loaded_models < 1:
        p.error(f"--loaded-models must be at least 1, got {args.loaded_models}")
    for name in ("cache_cap_mb", "cache_max_age_min"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value > 0):
            p.error(f"--{name.replace('_', '-')} must be a positive number, got {value}")
    if args.train_memory_limit is not None and not (math.isfinite(args.train_memory_limit)
                                                    and args.train_memory_limit > 0):
        p.error(f"--train-memory-limit must be a positive number of GB, got {args.train_memory_limit}")
    return args


def main(argv=None) -> None:
    tune_allocator()  # before the server's threads start: a server that runs for days must not keep growing
    load_plugins()  # before the pickers list the registry
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)  # small decodes are fastest single-threaded; requests run in parallel threads
    explorer = Explorer(args.checkpoints, args.data_root, train_memory_limit=args.train_memory_limit,
                        train_lock=args.train_lock, loaded_models=args.loaded_models)
    demo = build_app(explorer)
    try:
        auth = tuple(args.auth.split(":", 1)) if args.auth else None
        if auth is not None and len(auth) != 2:
            sys.exit("--auth must look like user:password")
        launch(demo, args.host, args.port, args.share, cache_cap_mb=args.cache_cap_mb,
               cache_max_age_min=args.cache_max_age_min, view_slots=args.view_slots, auth=auth,
               prevent_thread_lock=True,
               root_path=args.root_path)
        if not args.no_umap_warmup:
            # After the first page has had the CPU: compiling UMAP takes about a minute of it.
            threading.Timer(10.0, explorer.warm_up).start()
        print(f"vae-explorer is serving on http://{args.host}:{args.port}", flush=True)
        demo.block_thread()
    finally:
        demo.close()
        explorer.close()


if __name__ == "__main__":
    sys.exit(main())
