"""How answers travel (vae_explorer.server.answers): images inline as PNG data URLs, plotly figures as the
same JSON plotly's own `to_json` makes, checked on the figures of every view."""
from __future__ import annotations

import io
import json

import numpy as np
import plotly.graph_objects as go
import pytest
from PIL import Image

from vae_explorer import figures
from vae_explorer.server.answers import (
    INLINE_MAX_BYTES,
    InlineGallery,
    InlineImage,
    QuickPlot,
    image_bytes,
)


def _pixels(answer) -> np.ndarray:
    answer = answer.model_dump() if hasattr(answer, "model_dump") else answer
    return np.asarray(Image.open(io.BytesIO(image_bytes(answer))))


def test_an_image_answer_is_its_png_inline_with_the_same_pixels():
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (28, 28), dtype=np.uint8)
    colour = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    for picture, expected in ((grey, grey), (Image.fromarray(grey), grey), (colour, np.asarray(colour))):
        answer = InlineImage(format="png").postprocess(picture)
        assert answer.path is None and answer.url.startswith("data:image/png;base64,")
        np.testing.assert_array_equal(_pixels(answer), expected)
    assert InlineImage().postprocess(None) is None


def test_what_cannot_travel_inline_goes_as_gradios_file(tmp_path):
    noise = Image.fromarray(np.random.default_rng(1).integers(0, 256, (400, 400, 3), dtype=np.uint8))
    with io.BytesIO() as out:
        noise.save(out, format="PNG")
        assert len(out.getvalue()) > INLINE_MAX_BYTES  # random pixels do not compress
    large = InlineImage(format="png").postprocess(noise)
    assert large.path and not (large.url or "").startswith("data:")
    floats = InlineImage(format="png").postprocess(np.full((8, 8), 0.5))  # not uint8: Gradio's own conversion
    assert floats.path and np.asarray(Image.open(floats.path)).shape == (8, 8)


def test_a_gallery_answer_keeps_each_caption_with_its_picture():
    pictures = [np.full((8, 8), v, np.uint8) for v in (0, 100, 200)]
    answer = InlineGallery(format="png").postprocess([(p, f"level {i}") for i, p in enumerate(pictures)])
    assert [item.caption for item in answer.root] == ["level 0", "level 1", "level 2"]
    for item, picture in zip(answer.root, pictures):
        assert item.image.path is None
        np.testing.assert_array_equal(_pixels(item.image), picture)
    assert InlineGallery().postprocess([]).root == []


def test_an_inline_answer_passes_gradios_file_handling_untouched():
    """Gradio moves every file of an answer into its cache; an inline image has no path, so it is left as is."""
    from gradio import processing_utils

    block = InlineImage(format="png")
    answer = block.postprocess(np.zeros((4, 4), np.uint8)).model_dump()
    assert processing_utils.move_files_to_cache(answer, block, postprocess=True) == answer


def test_image_bytes_reads_a_file_through_fetch_and_refuses_without_one():
    assert image_bytes({"path": "/x.png", "url": "http://h/x.png"}, fetch=lambda a: b"PNG" + a["url"].encode()) \
        == b"PNGhttp://h/x.png"
    with pytest.raises(ValueError, match="a file"):
        image_bytes({"path": "/x.png", "url": "http://h/x.png"})


def _figures_of(value):
    if isinstance(value, go.Figure):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _figures_of(v)
    elif hasattr(value, "figure"):
        yield from _figures_of(value.figure)


def test_quick_figures_are_plotlys_own_json_for_every_views_figures(explorer):
    views = [
        lambda: explorer.latent_map("digits_vae", "pca", 5),
        lambda: explorer.latent_map("digits_ae", "raw", None, "anomaly score"),
        lambda: explorer.latent_map("breast_cancer_tabular_vae", "auto", 3),
        lambda: explorer.anomalies("digits_conv_vae", 90),
        lambda: explorer.latent_usage("digits_conv_vae"),
        lambda: explorer.prior_fit("digits_vae"),
        lambda: explorer.disentanglement("sprites_beta_vae"),
        lambda: explorer.linear_pca("digits_linear_ae"),
        lambda: explorer.codebook("digits_rvq_vae", 1, 0),
        lambda: explorer.sample("breast_cancer_tabular_vae", 1.0, 0),
    ]
    seen = 0
    for view in views:
        for fig in _figures_of(view()):
            assert json.loads(figures.figure_json(fig)) == json.loads(fig.to_json())
            assert QuickPlot().postprocess(fig).plot == figures.figure_json(fig)
            seen += 1
    assert seen >= 10


def test_quick_figures_keep_frames_typed_arrays_and_what_plotly_leaves_alone():
    rng = np.random.default_rng(2)
    frames = [rng.normal(size=(50, 2)).astype(np.float32) for _ in range(3)]
    motion = figures.page_animation(figures.training_motion(frames, [1, 2, 3], rng.integers(0, 3, 50),
                                                            ["a", "b", "c"], "motion"))
    odd = go.Figure(go.Heatmap(z=rng.normal(size=(4, 5)), x=np.arange(5, dtype=np.int64) * 10**10,
                               customdata=np.arange(5, dtype=np.uint64), text=np.array(["a", "b", "c", "d"])),
                    layout=dict(xaxis=dict(range=np.array([0.0, 1.0])), meta=[np.arange(3)]))
    odd.add_trace(go.Scatter(x=np.array([], np.float32), y=[np.float32(1.5)]))
    for fig in (motion, odd):
        assert json.loads(figures.figure_json(fig)) == json.loads(fig.to_json())
    assert "frames" in json.loads(figures.figure_json(figures.training_motion(frames, [1, 2, 3], rng.integers(0, 3, 50),
                                                                                ["a", "b", "c"], "motion")))
    assert QuickPlot().postprocess(None) is None
