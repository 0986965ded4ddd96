"""vae-explorer in the browser: `python app.py`, then open http://127.0.0.1:7860.

This file only lays out widgets and wires each event to one method of
`vae_explorer.views.Explorer`, which takes and returns plain values. It serves
on 127.0.0.1 unless --host says otherwise, never makes a share link unless
--share is given, and makes no outside requests (no analytics, no CDN).
"""
from __future__ import annotations

import argparse
import functools
import logging
import os
import random
import sys
import threading
import traceback

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ.setdefault("no_proxy", "127.0.0.1,localhost")

import gradio as gr  # noqa: E402
import torch  # noqa: E402

from vae_explorer.images import MAX_UPLOAD_BYTES  # noqa: E402
from vae_explorer.models import LIKELIHOODS, MODELS, VQVAE  # noqa: E402
from vae_explorer.noise import NOISE_KINDS  # noqa: E402
from vae_explorer.projections import PROJECTIONS  # noqa: E402
from vae_explorer.views import MAX_SLIDERS, Explorer, ViewError  # noqa: E402

log = logging.getLogger("vae_explorer.app")

# Plotly has no click event in Gradio 6: this bridge listens to plotly_click on the two
# maps and hands the clicked point's index (its customdata) to a hidden button's event.
CLICK_BRIDGE = """
<script>
(() => {
  const handlers = {};
  function bind() {
    for (const side of ["left", "right"]) {
      const plot = document.querySelector(`#map_${side} .js-plotly-plot`);
      if (!plot || typeof plot.on !== "function") continue;
      handlers[side] = handlers[side] || ((ev) => {
        const p = ev && ev.points && ev.points[0];
        if (!p || p.customdata === undefined) return;
        window.__vaePick = Array.isArray(p.customdata) ? p.customdata[0] : p.customdata;
        document.querySelector("#pick_button").click();
      });
      plot.removeListener("plotly_click", handlers[side]);
      plot.on("plotly_click", handlers[side]);
    }
  }
  new MutationObserver(bind).observe(document.documentElement, {childList: true, subtree: true});
})();
</script>
"""

CSS = """
.caption p { font-size: 0.9em; }
#pick_button { display: none; }
"""

INTRO = """# vae-explorer
See what autoencoders learn. **Latent map**: how an autoencoder (left) and a VAE (right) arrange the same
images (click a point). **Reconstruct**, **Latent sliders**, **Interpolate**, **Sample** and **Denoise** decode
from those codes; **Train** fits a new model in the background; **Models** describes each checkpoint.
"""


def _defaults(names: list[str], *wanted: str) -> list[str]:
    """The first of `wanted` present for each slot, else any checkpoint."""
    out = []
    for w in wanted:
        out.append(w if w in names else (names[0] if names else None))
    return out


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


def build_app(explorer: Explorer) -> gr.Blocks:
    ex = explorer
    names = ex.checkpoint_names()
    ae, vae, vq, dae = _defaults(names, "digits_ae", "digits_vae", "digits_vq_vae", "digits_denoising_ae")

    def picker(label, value, multiselect=False, elem_id=None):
        # Custom values pass Gradio's own check so API clients can name checkpoints saved after the page
        # was built; every name is still confined to the checkpoints folder by the catalog.
        return gr.Dropdown(choices=names, value=value, label=label, multiselect=multiselect, elem_id=elem_id,
                           allow_custom_value=True)

    @user_errors
    def cards(*chosen) -> str:
        picked = [n for c in chosen for n in (c if isinstance(c, list) else [c]) if n]
        return "\n\n---\n\n".join(ex.card(n) for n in dict.fromkeys(picked)) or "No model chosen."

    def model_cards(shown, *dropdowns: gr.Dropdown) -> None:
        """A closed accordion with the cards of the models chosen in `dropdowns`, filled when `shown` fires."""
        with gr.Accordion("Model cards" if len(dropdowns) > 1 or dropdowns[0].multiselect else "Model card",
                          open=False):
            box = gr.Markdown()
        gr.on([shown, *[d.change for d in dropdowns]], cards, list(dropdowns), box, api_visibility="private",
              show_progress="hidden")

    # ---- handlers: plain values <-> widgets --------------------------------------------------

    @user_errors
    def show_maps(left, right, projection, index):
        sel = None if index is None else int(index)
        a = ex.latent_map(left, projection, sel)
        b = ex.latent_map(right, projection, sel)
        note = a.note if a.note == b.note else f"**Left:** {a.note}  \n**Right:** {b.note}"
        return a.figure, b.figure, note, gr.Timer(active=a.pending or b.pending)

    @user_errors
    def select_point(left, right, index):
        x, ra, rb, caption = ex.compare_point(left, right, index)
        return int(index), x, ra, rb, caption

    @user_errors
    def pick_point(left, right, index, projection):
        picked = select_point(left, right, index)
        maps = show_maps(left, right, projection, index)
        return (*picked, *maps)

    @user_errors
    def random_point(left, right, projection):
        n = len(ex.load(left).data.test_x)
        return pick_point(left, right, random.randrange(n), projection)

    @user_errors
    def manifolds(left, right, n):
        a, ta = ex.manifold(left, n)
        b, tb = ex.manifold(right, n)
        return a, b, f"{ta}  \n{tb}"

    @user_errors
    def reconstruct(chosen, indices, upload, seed):
        return ex.reconstruct(chosen, indices, upload, int(seed or 0))

    @user_errors
    def anomalies(name, percentile):
        return ex.anomalies(name, percentile)

    @user_errors
    def setup_sliders(name, index):
        sliders, image, text = ex.slider_setup(name, index)
        updates = [gr.Slider(visible=True, interactive=True, step=0.001, **s) for s in sliders]
        updates += [gr.Slider(visible=False, value=0)] * (MAX_SLIDERS - len(sliders))
        return (*updates, image, text)

    @user_errors
    def decode(name, index, *values):
        return ex.decode_sliders(name, index, list(values))

    @user_errors
    def interpolate_strip(a, b, ia, ib, ua, ub, mode, steps):
        return ex.interpolation_strip([a, b], ia, ib, ua, ub, mode, steps)

    @user_errors
    def interpolate_at(a, b, ia, ib, ua, ub, mode, t):
        return (ex.interpolate_at(a, ia, ib, t, mode, ua, ub), ex.interpolate_at(b, ia, ib, t, mode, ua, ub))

    @user_errors
    def sample(name, temperature, seed):
        return ex.sample(name, temperature, seed)

    @user_errors
    def sample_labels(name):
        if isinstance(ex.load(name).model, VQVAE):
            labels = ("Codes drawn by how often training images use them", "Codes drawn uniformly")
        else:
            labels = ("z ~ N(0, T²·I), the prior", "z ~ a Gaussian fitted to the model's codes")
        return gr.Image(label=labels[0]), gr.Image(label=labels[1])

    @user_errors
    def denoise(chosen, index, upload, kind, level, seed):
        clean, noisy, outputs, text = ex.denoise(chosen, index, upload, kind, level, int(seed or 0))
        return clean, noisy, outputs, text

    @user_errors
    def train_start(model, dataset, latent_dim, beta, likelihood, noise, epochs, lr, batch_size, device, name):
        message = ex.train_start(model=model, dataset=dataset, latent_dim=latent_dim, beta=beta,
                                 likelihood=likelihood, noise_std=noise, epochs=epochs, lr=lr,
                                 batch_size=batch_size, device=device, name=name or "")
        gr.Info(message.replace("**", ""))  # toasts show plain text
        return (*train_status(), gr.Timer(active=True))

    def train_status():
        text, fig, history, _ = ex.train_status()
        return text, fig, history

    def train_poll(seen):
        # Every open page polls twice a second: answer "nothing new" without redrawing when nothing is.
        version = ex.train_version()
        if version == seen:
            return gr.skip(), gr.skip(), gr.skip(), seen, gr.Timer(active=ex.jobs.current is not None
                                                                   and ex.jobs.current.running)
        text, fig, history, running = ex.train_status()
        return text, fig, history, version, gr.Timer(active=running)

    @user_errors
    def train_cancel():
        ex.train_cancel()  # its message is part of the status below
        return (*train_status(), gr.Timer(active=False))

    def refresh_pickers(seen):
        version = ex.catalog.version()
        if version == seen:
            return (gr.skip(),) * (len(pickers) + 1)
        choices = ex.checkpoint_names()
        return (version, *[gr.Dropdown(choices=choices) for _ in pickers])

    # ---- layout -------------------------------------------------------------------------------

    with gr.Blocks(title="vae-explorer", analytics_enabled=False, delete_cache=(600, 3600)) as demo:
        gr.Markdown(INTRO)
        pickers: list[gr.Dropdown] = []
        with gr.Tabs():
            with gr.Tab("Latent map", id="map"):
                with gr.Row():
                    map_left = picker("Left model (e.g. an autoencoder)", ae, elem_id="map_left_model")
                    map_right = picker("Right model (e.g. a VAE)", vae, elem_id="map_right_model")
                    projection = gr.Radio(list(PROJECTIONS), value="auto", label="Projection",
                                          info="auto: raw plane for 2-D codes, else PCA. UMAP is computed in the background.")
                with gr.Row():
                    plot_left = gr.Plot(elem_id="map_left", show_label=False)
                    plot_right = gr.Plot(elem_id="map_right", show_label=False)
                map_note = gr.Markdown(elem_classes="caption")
                with gr.Row():
                    index = gr.Number(value=0, precision=0, minimum=0, label="Selected test image (index)",
                                      info="Click a point on either map, or type an index and press Enter.",
                                      elem_id="map_index")
                    random_btn = gr.Button("Random image", scale=0)
                with gr.Row():
                    sel_input = gr.Image(label="Input", format="png", elem_id="sel_input", height=160)
                    sel_left = gr.Image(label="Left model's reconstruction", format="png", elem_id="sel_left", height=160)
                    sel_right = gr.Image(label="Right model's reconstruction", format="png", elem_id="sel_right", height=160)
                sel_caption = gr.Markdown(elem_classes="caption", elem_id="sel_caption")
                with gr.Accordion("Decoded latent plane (the 'manifold'): where the AE has gaps, the VAE is continuous", open=True):
                    grid_n = gr.Slider(5, 25, value=15, step=1, label="Grid size")
                    with gr.Row():
                        manifold_left = gr.Image(label="Left model", format="png", elem_id="manifold_left", height=440)
                        manifold_right = gr.Image(label="Right model", format="png", elem_id="manifold_right",
                                                  height=440)
                    manifold_note = gr.Markdown(elem_classes="caption")
                model_cards(demo.load, map_left, map_right)
                pick_btn = gr.Button("pick", elem_id="pick_button", visible="hidden")
                umap_timer = gr.Timer(2.0, active=False)
                pickers += [map_left, map_right]

            with gr.Tab("Reconstruct", id="reconstruct") as tab_rec:
                gr.Markdown("Inputs on top, each model's reconstruction below, with the per-image error.")
                with gr.Row():
                    rec_models = picker("Models", [n for n in (ae, vae, vq) if n], multiselect=True, elem_id="rec_models")
                    rec_indices = gr.Textbox(label="Test images", placeholder="e.g. 0, 5, 10-13 (empty: 8 at random)",
                                             elem_id="rec_indices")
                    rec_seed = gr.Number(value=0, precision=0, label="Random seed")
                    rec_upload = gr.File(label="…or upload an image", file_types=["image"], type="filepath",
                                         elem_id="rec_upload")
                rec_btn = gr.Button("Reconstruct", variant="primary", elem_id="rec_button")
                rec_grid = gr.Image(label="Reconstructions", format="png", elem_id="rec_grid")
                rec_table = gr.Markdown(elem_classes="caption")
                gr.Markdown("### Anomaly detection by reconstruction error\nImages a model reconstructs badly are "
                            "unlike its training data. Move the threshold to see how many would be flagged.")
                with gr.Row():
                    ano_model = picker("Model", ae, elem_id="ano_model")
                    ano_pct = gr.Slider(50, 99.9, value=95, step=0.1, label="Threshold (percentile of test errors)")
                ano_hist = gr.Plot(show_label=False, elem_id="ano_hist")
                gr.Markdown("The worst-reconstructed test images: inputs on top, reconstructions below.",
                            elem_classes="caption")
                ano_grid = gr.Image(show_label=False, format="png", elem_id="ano_grid")
                ano_text = gr.Markdown(elem_classes="caption")
                model_cards(tab_rec.select, rec_models, ano_model)
                pickers += [rec_models, ano_model]

            with gr.Tab("Latent sliders", id="sliders") as tab_sl:
                gr.Markdown("Start from a test image's code, then move through latent space: the decoded image "
                            "follows while you drag.")
                with gr.Row():
                    sl_model = picker("Model", vae, elem_id="sl_model")
                    sl_index = gr.Number(value=0, precision=0, minimum=0, label="Start from test image", elem_id="sl_index")
                with gr.Row():
                    with gr.Column(scale=2):
                        # Wide bounds until the model's ranges arrive, so API calls without a session
                        # (which keep these bounds) are not refused for a code beyond ±3.
                        sliders = [gr.Slider(-1000, 1000, value=0, step=0.001, label=f"z[{i}]", visible=i < 2,
                                             elem_id=f"slider_{i}") for i in range(MAX_SLIDERS)]
                    with gr.Column(scale=1):
                        sl_image = gr.Image(label="Decoded", format="png", elem_id="sl_image", height=220)
                        sl_text = gr.Markdown(elem_classes="caption")
                model_cards(tab_sl.select, sl_model)
                pickers.append(sl_model)

            with gr.Tab("Interpolate", id="interpolate") as tab_in:
                gr.Markdown("Walk from image A to image B through each model's latent space.")
                with gr.Row():
                    in_a_model = picker("Model 1", ae, elem_id="in_model_a")
                    in_b_model = picker("Model 2", vae, elem_id="in_model_b")
                    in_mode = gr.Radio(["linear", "spherical"], value="linear", label="Path",
                                       info="spherical (slerp) keeps the code's norm, suited to Gaussian priors")
                with gr.Row():
                    in_ia = gr.Number(value=0, precision=0, minimum=0, label="Image A (test index)", elem_id="in_ia")
                    in_ua = gr.File(label="…or upload A", file_types=["image"], type="filepath")
                    in_ib = gr.Number(value=1, precision=0, minimum=0, label="Image B (test index)", elem_id="in_ib")
                    in_ub = gr.File(label="…or upload B", file_types=["image"], type="filepath")
                in_t = gr.Slider(0, 1, value=0.5, step=0.01, label="t (0 = A, 1 = B)", elem_id="in_t")
                with gr.Row():
                    in_img_a = gr.Image(label="Model 1 at t", format="png", elem_id="in_img_a", height=180)
                    in_img_b = gr.Image(label="Model 2 at t", format="png", elem_id="in_img_b", height=180)
                in_steps = gr.Slider(2, 30, value=10, step=1, label="Steps in the strip")
                in_strip = gr.Image(label="Strips: one row per model", format="png", elem_id="in_strip")
                in_text = gr.Markdown(elem_classes="caption")
                model_cards(tab_in.select, in_a_model, in_b_model)
                pickers += [in_a_model, in_b_model]

            with gr.Tab("Sample", id="sample") as tab_sa:
                with gr.Row():
                    sa_model = picker("Model", vae, elem_id="sa_model")
                    sa_temp = gr.Slider(0.1, 3.0, value=1.0, step=0.05, label="Temperature",
                                        info="scales the spread of z (VQ: flattens code frequencies)")
                    sa_seed = gr.Number(value=0, precision=0, label="Seed")
                    sa_btn = gr.Button("Sample 7×7", variant="primary", elem_id="sa_button")
                with gr.Row():
                    sa_a = gr.Image(label="Samples", format="png", elem_id="sa_a")
                    sa_b = gr.Image(label="For comparison", format="png", elem_id="sa_b")
                sa_text = gr.Markdown(elem_classes="caption")
                model_cards(tab_sa.select, sa_model)
                pickers.append(sa_model)

            with gr.Tab("Denoise", id="denoise") as tab_de:
                gr.Markdown("Corrupt an image, then let each model clean it. PSNR against the clean image: higher is better.")
                with gr.Row():
                    de_models = picker("Models (the first sets the image size)", [n for n in (dae, vae, ae) if n],
                                       multiselect=True, elem_id="de_models")
                    de_index = gr.Number(value=0, precision=0, minimum=0, label="Test image", elem_id="de_index")
                    de_upload = gr.File(label="…or upload any image (PNG, JPEG, WebP; any size)",
                                        file_types=["image"], type="filepath", elem_id="de_upload")
                with gr.Row():
                    de_kind = gr.Radio(list(NOISE_KINDS), value="gaussian", label="Noise")
                    de_level = gr.Slider(0, 1, value=0.5, step=0.01, label="Noise level",
                                         info="gaussian: std; masking, salt-and-pepper: fraction of pixels")
                    de_seed = gr.Number(value=0, precision=0, label="Noise seed")
                with gr.Row():
                    de_clean = gr.Image(label="Clean (at the model's input size)", format="png", elem_id="de_clean", height=160)
                    de_noisy = gr.Image(label="Noisy", format="png", elem_id="de_noisy", height=160)
                de_out = gr.Gallery(label="Denoised", columns=4, height="auto", format="png", elem_id="de_out",
                                    object_fit="contain")
                de_text = gr.Markdown(elem_classes="caption", elem_id="de_text")
                model_cards(tab_de.select, de_models)
                pickers.append(de_models)

            with gr.Tab("Train", id="train"):
                gr.Markdown("Train a model in the background; the other tabs stay usable. One run at a time on "
                            "this server, visible to every open page. The result appears in every model picker.")
                with gr.Row():
                    tr_model = gr.Dropdown(list(MODELS), value="vae", label="Model", elem_id="tr_model")
                    tr_dataset = gr.Dropdown(["digits", "mnist", "fashion_mnist", "cifar10"], value="digits",
                                             label="Dataset", info="digits ship with scikit-learn; others load from --data-root")
                    tr_latent = gr.Number(value=2, precision=0, minimum=1, label="Latent dims", elem_id="tr_latent")
                    tr_beta = gr.Number(value=1.0, minimum=0, label="β (VAEs)")
                    tr_like = gr.Dropdown(list(LIKELIHOODS), value="bernoulli", label="Likelihood")
                    tr_noise = gr.Number(value=0.0, minimum=0, label="Input noise std (AEs)")
                with gr.Row():
                    tr_epochs = gr.Number(value=20, precision=0, minimum=1, label="Epochs", elem_id="tr_epochs")
                    tr_lr = gr.Number(value=1e-3, label="Learning rate", elem_id="tr_lr")
                    tr_batch = gr.Number(value=128, precision=0, minimum=1, label="Batch size")
                    tr_device = gr.Dropdown(_device_choices(), value="auto", label="Device",
                                            info="auto takes the GPU when there is one")
                    tr_name = gr.Textbox(label="Checkpoint name", placeholder="empty: model_dataset_time", elem_id="tr_name")
                with gr.Row():
                    tr_start = gr.Button("Start training", variant="primary", elem_id="tr_start")
                    tr_cancel = gr.Button("Cancel", variant="stop", elem_id="tr_cancel")
                tr_status = gr.Markdown(elem_id="tr_status")
                with gr.Row():
                    tr_curves = gr.Plot(show_label=False, elem_id="tr_curves")
                    with gr.Column():
                        gr.Markdown("Fixed test images (top row) and their reconstructions after each of the "
                                    "last epochs (one row per epoch, newest at the bottom).", elem_classes="caption")
                        tr_history = gr.Image(show_label=False, format="png", elem_id="tr_history")
                tr_timer = gr.Timer(0.5, active=False)
                tr_seen = gr.State(None)  # the job version this page last drew

            with gr.Tab("Models", id="models") as tab_mo:
                mo_model = picker("Checkpoint", vae, elem_id="mo_model")
                mo_card = gr.Markdown(elem_id="mo_card")
                pickers.append(mo_model)

        catalog_version = gr.State(ex.catalog.version())
        picker_timer = gr.Timer(3.0)

        # ---- events ---------------------------------------------------------------------------
        # Only the first tab computes at page load (the first map must show fast); the others fill in
        # when opened, and refresh whenever their inputs change.
        map_outputs = [plot_left, plot_right, map_note, umap_timer]
        point_outputs = [index, sel_input, sel_left, sel_right, sel_caption]
        gr.on([demo.load, map_left.change, map_right.change, projection.change], show_maps,
              [map_left, map_right, projection, index], map_outputs, api_name="latent_map")
        umap_timer.tick(show_maps, [map_left, map_right, projection, index], map_outputs, api_visibility="private",
                        show_progress="hidden")
        gr.on([demo.load, map_left.change, map_right.change], select_point,
              [map_left, map_right, index], point_outputs, api_name="select_point")
        index.submit(pick_point, [map_left, map_right, index, projection], point_outputs + map_outputs,
                     api_visibility="private")
        pick_btn.click(pick_point, [map_left, map_right, index, projection], point_outputs + map_outputs,
                       js="(l, r, i, p) => [l, r, (window.__vaePick ?? i), p]", api_visibility="private")
        random_btn.click(random_point, [map_left, map_right, projection], point_outputs + map_outputs,
                         api_visibility="private")
        gr.on([demo.load, map_left.change, map_right.change, grid_n.release], manifolds,
              [map_left, map_right, grid_n], [manifold_left, manifold_right, manifold_note], api_name="manifold")

        rec_btn.click(reconstruct, [rec_models, rec_indices, rec_upload, rec_seed], [rec_grid, rec_table],
                      api_name="reconstruct")
        gr.on([tab_rec.select, ano_model.change, ano_pct.release], anomalies, [ano_model, ano_pct],
              [ano_hist, ano_grid, ano_text], api_name="anomalies")

        gr.on([tab_sl.select, sl_model.change, sl_index.submit], setup_sliders, [sl_model, sl_index],
              [*sliders, sl_image, sl_text], api_name="slider_setup")
        gr.on([s.input for s in sliders], decode, [sl_model, sl_index, *sliders], sl_image, api_name="decode",
              trigger_mode="always_last", show_progress="hidden", concurrency_limit=4)

        in_inputs = [in_a_model, in_b_model, in_ia, in_ib, in_ua, in_ub, in_mode]
        gr.on([tab_in.select, in_a_model.change, in_b_model.change, in_ia.submit, in_ib.submit, in_ua.change,
               in_ub.change, in_mode.change, in_steps.release], interpolate_strip, [*in_inputs, in_steps],
              [in_strip, in_text], api_name="interpolate")
        gr.on([tab_in.select, in_t.input, in_a_model.change, in_b_model.change, in_ia.submit, in_ib.submit,
               in_ua.change, in_ub.change, in_mode.change], interpolate_at, [*in_inputs, in_t], [in_img_a, in_img_b],
              api_name="interpolate_at", trigger_mode="always_last", show_progress="hidden", concurrency_limit=4)

        gr.on([tab_sa.select, sa_model.change], sample_labels, sa_model, [sa_a, sa_b], api_visibility="private",
              show_progress="hidden")
        gr.on([tab_sa.select, sa_btn.click, sa_model.change], sample, [sa_model, sa_temp, sa_seed], [sa_a, sa_b, sa_text],
              api_name="sample")

        de_inputs = [de_models, de_index, de_upload, de_kind, de_level, de_seed]
        gr.on([tab_de.select, de_models.change, de_index.submit, de_upload.change, de_kind.change, de_level.release,
               de_seed.submit], denoise, de_inputs, [de_clean, de_noisy, de_out, de_text], api_name="denoise")

        train_outputs = [tr_status, tr_curves, tr_history]
        tr_start.click(train_start, [tr_model, tr_dataset, tr_latent, tr_beta, tr_like, tr_noise, tr_epochs, tr_lr,
                                     tr_batch, tr_device, tr_name], [*train_outputs, tr_timer],
                       api_name="train_start", concurrency_limit=1, concurrency_id="train")
        tr_cancel.click(train_cancel, None, [*train_outputs, tr_timer], api_name="train_cancel",
                        concurrency_limit=1, concurrency_id="train")
        tr_timer.tick(train_poll, tr_seen, [*train_outputs, tr_seen, tr_timer], api_visibility="private",
                      show_progress="hidden")
        demo.load(train_poll, tr_seen, [*train_outputs, tr_seen, tr_timer], api_visibility="private")
        gr.Button(visible=False).click(train_status, None, train_outputs, api_name="train_status")

        gr.on([tab_mo.select, mo_model.change], user_errors(ex.card), mo_model, mo_card, api_name="model_card")
        picker_timer.tick(refresh_pickers, catalog_version, [catalog_version, *pickers], api_visibility="private",
                          show_progress="hidden")
        gr.Button(visible=False).click(ex.checkpoint_names, None, gr.JSON(visible=False), api_name="checkpoints")
    return demo


def _device_choices() -> list[str]:
    choices = ["auto", "cpu"]
    if torch.cuda.is_available():
        choices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        choices.append("mps")
    return choices


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int = 7860, share: bool = False, **kwargs):
    demo.queue(default_concurrency_limit=4)
    return demo.launch(server_name=host, server_port=port, share=share, head=CLICK_BRIDGE, css=CSS,
                       max_file_size=MAX_UPLOAD_BYTES, footer_links=["api"], ssr_mode=False,
                       show_error=True, **kwargs)


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
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)  # small decodes are fastest single-threaded; requests run in parallel threads
    explorer = Explorer(args.checkpoints, args.data_root)
    demo = build_app(explorer)
    try:
        auth = tuple(args.auth.split(":", 1)) if args.auth else None
        if auth is not None and len(auth) != 2:
            sys.exit("--auth must look like user:password")
        launch(demo, args.host, args.port, args.share, auth=auth, prevent_thread_lock=True)
        if not args.no_umap_warmup:
            # After the first page has had the CPU: compiling UMAP takes about a minute of it.
            threading.Timer(10.0, explorer.umap.warm_up).start()
        print(f"vae-explorer is serving on http://{args.host}:{args.port}", flush=True)
        demo.block_thread()
    finally:
        explorer.jobs.close()
        explorer.umap.close()


if __name__ == "__main__":
    sys.exit(main())
