"""Every view's handler as a plain function, over the shipped checkpoints: an AE, a VAE,
a VQ-VAE (and the conv and sparse models where shapes differ)."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from vae_explorer.data.images import add_noise, psnr, to_float
from vae_explorer.latent import latent_usage
from vae_explorer.server import SAMPLE_GRID, ViewError

from .test_models import IMAGE_MODELS

MODELS = ["digits_ae", "digits_vae", "digits_vq_vae", "digits_conv_vae", "digits_sparse_ae"]


def pixels(im: Image.Image) -> np.ndarray:
    return np.asarray(im, dtype=np.float32)


@pytest.mark.parametrize("name", MODELS)
def test_latent_map_plots_every_test_code_with_its_index(explorer, name):
    result = explorer.latent_map(name, "auto", selected=5)
    entry = explorer.load(name)
    traces = [t for t in result.figure.data if t.name != "selected"]
    assert all(t.type == "scattergl" for t in result.figure.data)  # WebGL: large maps stay responsive
    indices = np.sort(np.concatenate([np.asarray(t.customdata) for t in traces]))
    np.testing.assert_array_equal(indices, np.arange(len(entry.codes)))
    selected = [t for t in result.figure.data if t.name == "selected"][0]
    assert list(selected.customdata) == [5]
    if entry.model.latent_dim == 2:  # raw plane: the points are the codes themselves
        t = traces[0]
        np.testing.assert_allclose(np.stack([t.x, t.y], 1), entry.codes[np.asarray(t.customdata)], rtol=1e-5)
    assert not result.pending


@pytest.mark.parametrize("colour", ["label", "anomaly score"])
def test_the_maps_unvalidated_figure_is_what_plotly_validates(explorer, colour):
    """The latent map is built without plotly's per-property validation (figures.unvalidated_figure, for
    speed): the same figure built with validation, which raises on any property plotly does not know or a
    value of the wrong type, must serialise to the same JSON."""
    import json

    import plotly.graph_objects as go

    fast = explorer.latent_map("digits_vae", "auto", selected=7, colour=colour).figure
    spec = fast.to_plotly_json()
    validated = go.Figure(data=spec["data"], layout=spec["layout"])
    assert json.loads(validated.to_json()) == json.loads(fast.to_json())
    assert validated.layout.template.layout.plot_bgcolor == "white"  # plotly_white's look is kept


def test_latent_map_pca_and_raw_fallback(explorer):
    raw_wide = explorer.latent_map("digits_vq_vae", "raw")
    assert "PCA shown" in raw_wide.note and "PC 1" in raw_wide.figure.layout.xaxis.title.text


@pytest.mark.parametrize("name", MODELS)
def test_compare_point_reconstructs_the_chosen_image(explorer, name):
    x, ra, rb, caption = explorer.compare_point("digits_ae", name, 7)
    entry = explorer.load(name)
    img = to_float(entry.data.test_x[7:8])
    expected = entry.reconstruct(img)[0, 0].numpy() * 255
    scale = rb.size[0] // 8
    np.testing.assert_allclose(pixels(rb)[::scale, ::scale], expected, atol=1.0)
    np.testing.assert_allclose(pixels(x)[::scale, ::scale], img[0, 0].numpy() * 255, atol=1.0)
    assert "Test image **7**" in caption and re.search(r"\d\.\d{4}", caption)


def test_bad_indices_and_names_get_messages(explorer):
    with pytest.raises(ViewError, match="out of range"):
        explorer.compare_point("digits_ae", "digits_vae", 10_000)
    with pytest.raises(ViewError, match="whole number"):
        explorer.compare_point("digits_ae", "digits_vae", "seven")
    with pytest.raises(ViewError, match="no checkpoint named"):
        explorer.latent_map("does_not_exist")
    with pytest.raises(ViewError, match="not a checkpoint name"):
        explorer.card("../checkpoints/digits_vae")
    with pytest.raises(ViewError, match="choose a model"):
        explorer.sample("")


@pytest.mark.parametrize("name", ["digits_ae", "digits_vae", "digits_vq_vae"])
def test_manifold_decodes_a_grid_that_varies(explorer, name):
    grid, caption = explorer.manifold(name, 9)
    a = pixels(grid)
    assert a.shape[0] == a.shape[1] > 9 * 8
    assert a.std() > 10  # not one repeated image
    assert "9×9" in caption


def test_reconstruct_table_matches_an_independent_computation(explorer):
    grid, text = explorer.reconstruct(["digits_ae", "digits_vae", "digits_vq_vae"], "0, 3-5")
    rows = [line for line in text.splitlines() if line.startswith("| digits_")]
    assert len(rows) == 3
    entry = explorer.load("digits_vae")
    x = to_float(entry.data.test_x[[0, 3, 4, 5]])
    errors = (entry.reconstruct(x) - x).square().flatten(1).mean(1)
    assert rows[1].startswith("| digits_vae | " + " | ".join(f"{v:.4f}" for v in errors.tolist()))
    assert grid.size[0] == grid.size[1]  # 4 images across; 4 rows: the inputs + 3 models
    with pytest.raises(ViewError, match="not an index"):
        explorer.reconstruct(["digits_ae"], "1, x")


def test_anomalies_threshold_and_worst_images(explorer):
    fig, grid, text, curves = explorer.anomalies("digits_ae", 90)
    entry = explorer.load("digits_ae")
    x = to_float(entry.data.test_x)
    errors = (entry.reconstruct(x) - x).square().flatten(1).mean(1).numpy()
    threshold = np.percentile(errors, 90)
    assert f"**{threshold:.4g}**" in text and curves is None  # digits labels mark no anomalies: no ROC
    assert f"**{int((errors > threshold).sum())}** of {len(errors):,} images are above" in text
    worst = [int(i) for i in re.findall(r"#(\d+) \(", text)]
    assert worst == list(np.argsort(-errors)[:16])
    assert fig.data[0].type == "histogram" and len(fig.data[0].x) == len(errors)


@pytest.mark.parametrize("name", ["digits_ae", "digits_vae", "digits_vq_vae", "digits_sparse_ae"])
def test_sliders_start_at_the_image_and_move_the_decode(explorer, name):
    sliders, image, text = explorer.slider_setup(name, 4)
    entry = explorer.load(name)
    assert len(sliders) == min(entry.model.latent_dim, 8)
    assert all(s["minimum"] <= s["value"] <= s["maximum"] for s in sliders)
    values = [s["value"] for s in sliders]
    # Unmoved sliders decode the image's own code (up to slider rounding).
    code_decode = entry.decode(entry.codes[4][None])[0, 0].numpy() * 255
    scale = image.size[0] // 8
    np.testing.assert_allclose(pixels(image)[::scale, ::scale], code_decode, atol=12)
    moved = list(values)
    moved[0] = sliders[0]["maximum"]
    assert np.abs(pixels(explorer.decode_sliders(name, 4, moved)) - pixels(image)).max() > 20
    with pytest.raises(ViewError, match="finite slider values"):
        explorer.decode_sliders(name, 4, [float("nan")] * 8)


@pytest.mark.parametrize("mode", ["linear", "spherical"])
def test_interpolation_endpoints_are_the_two_images_codes(explorer, mode):
    entry = explorer.load("digits_vae")
    for t, idx in ((0.0, 2), (1.0, 9)):
        im = explorer.interpolate_at("digits_vae", 2, 9, t, mode)
        expected = entry.decode(entry.codes[idx][None])[0, 0].numpy() * 255
        scale = im.size[0] // 8
        np.testing.assert_allclose(pixels(im)[::scale, ::scale], expected, atol=1.0)
    strip, text = explorer.interpolation_strip(["digits_ae", "digits_vae"], 2, 9, mode=mode, steps=6)
    assert strip.size[0] > strip.size[1] * 2  # two rows of 8 images
    assert mode.capitalize() in text
    with pytest.raises(ViewError, match="between 2 and 30"):
        explorer.interpolation_strip(["digits_vae"], 2, 9, steps=1)


@pytest.mark.parametrize("name", ["digits_ae", "digits_vae", "digits_vq_vae"])
def test_sample_grids_are_seeded_and_explained(explorer, name):
    a, b, text, distributions = explorer.sample(name, 1.0, 3)
    a2, _, _, _ = explorer.sample(name, 1.0, 3)
    a3, _, _, _ = explorer.sample(name, 1.0, 4)
    assert np.array_equal(pixels(a), pixels(a2)) and not np.array_equal(pixels(a), pixels(a3))
    assert a.size == b.size and a.size[0] >= SAMPLE_GRID * 8
    expected = {"digits_ae": "AE sampling fails", "digits_vae": "prior", "digits_vq_vae": "codebook"}[name]
    assert expected in text
    with pytest.raises(ViewError, match="temperature"):
        explorer.sample(name, 0, 3)


def test_denoising_ae_beats_the_noisy_input_and_reports_psnr(explorer):
    models = ["digits_denoising_ae", "digits_vae", "digits_ae"]
    gains = []
    for index in range(10):
        clean, noisy, outputs, text = explorer.denoise(models, index, None, "gaussian", 0.5, seed=index)
        assert [caption.split(":")[0] for _, caption in outputs] == [*models, "PCA, 16 components"]
        db = [float(re.search(r"(-?\d+\.\d) dB", caption).group(1)) for _, caption in outputs]
        noisy_db = float(re.search(r"\*\*(-?\d+\.\d) dB\*\*", text).group(1))
        gains.append(db[0] - noisy_db)
    assert np.mean(gains) > 3  # the denoising AE cleans up, on average by several dB


def test_denoise_psnr_matches_an_independent_computation(explorer):
    clean, noisy, outputs, text = explorer.denoise(["digits_denoising_ae"], 3, None, "masking", 0.3, seed=1)
    entry = explorer.load("digits_denoising_ae")
    x = to_float(entry.data.test_x[3:4])
    n = add_noise(x, "masking", 0.3, torch.Generator().manual_seed(1))
    expected = float(psnr(entry.reconstruct(n), x))
    assert f"{expected:.1f} dB" in outputs[0][1]
    with pytest.raises(ViewError, match="noise level"):
        explorer.denoise(["digits_denoising_ae"], 3, None, "masking", 1.5)


def test_denoise_takes_an_upload_and_says_what_it_became(explorer, tmp_path):
    im = Image.new("RGB", (120, 90), "white")  # dark ink on white paper, unlike the training digits
    for x in range(40, 80):
        for y in range(20, 70):
            if abs(x - 60) < 6:
                im.putpixel((x, y), (10, 10, 10))
    path = tmp_path / "my digit.png"
    im.save(path)
    clean, noisy, outputs, text = explorer.denoise(["digits_denoising_ae", "digits_vae"], 0, str(path), "gaussian", 0.3)
    assert "PNG 120×90 RGB" in text and "grey 8×8" in text and "inverted" in text
    assert pixels(clean)[0, 0] < 20  # the paper became the black background
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(ViewError, match="not an image"):
        explorer.denoise(["digits_denoising_ae"], 0, str(bad), "gaussian", 0.3)


@pytest.mark.parametrize("name", MODELS)
def test_model_card_describes_the_checkpoint(explorer, name):
    card = explorer.card(name)
    entry = explorer.load(name)
    total = sum(p.numel() for p in entry.model.parameters())
    assert f"{total:,} parameters" in card
    assert "| layer | type | parameters |" in card and "| test metric | value |" in card
    assert f"**{entry.meta['model']}**" in card and "digits" in card


def test_every_view_works_with_every_shipped_model(explorer):
    """Each registry model has a shipped checkpoint; every view takes each of them."""
    from vae_explorer.models import MODELS, shipped_checkpoint

    names = explorer.checkpoint_names()
    assert {shipped_checkpoint(m) for m in MODELS} <= set(names)
    for name in (f"digits_{m}" for m in IMAGE_MODELS):
        assert explorer.latent_map(name, "pca").figure.data
        assert explorer.compare_point(name, "digits_vae", 1)[1].size[0] > 0
        assert explorer.manifold(name, 5)[0].size[0] > 0
        assert explorer.reconstruct([name], "0, 1")[0].size[0] > 0
        assert explorer.anomalies(name, 90)[1].size[0] > 0
        sliders, image, _ = explorer.slider_setup(name, 2)
        assert explorer.decode_sliders(name, 2, [s["maximum"] for s in sliders]).size == image.size
        assert explorer.interpolate_at(name, 0, 1, 0.5, "spherical").size[0] > 0
        assert explorer.sample(name, 0.8, 1)[0].size[0] > 0
        assert "dB" in explorer.denoise([name], 0, None, "masking", 0.2)[2][0][1]
        assert "parameters" in explorer.card(name)


def test_diagnostics_count_active_units_and_warn_on_collapse(explorer):
    kl, variance, grid, text = explorer.latent_usage("digits_conv_vae")
    entry = explorer.load("digits_conv_vae")
    usage = latent_usage(entry.model, entry.data.test_x, entry.kind)
    assert f"**{int(usage.active.sum())} of 8** dimensions active" in text and "collapsed" not in text
    assert list(kl.data[0].y) == pytest.approx(list(usage.kl)) and len(variance.data[0].y) == 8
    assert grid.size[1] > grid.size[0] * 8 / 9 * 0.9  # 8 rows of 9 traversal steps
    # The shipped β-VAE (β = 4, 2-D) has collapsed: its KL is near zero, and the page says so.
    _, _, _, text = explorer.latent_usage("digits_beta_vae")
    assert "posterior has collapsed" in text and "No dimension is used" in text
    kl, _, _, text = explorer.latent_usage("digits_ae")  # no posterior: no KL chart, variance only
    assert kl is None and "**2 of 2** dimensions active" in text and "Total KL" not in text
