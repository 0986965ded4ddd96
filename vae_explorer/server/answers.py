"""How answers travel: images inside the answer, figures serialized quickly.

Images go as PNG data URLs instead of as files the page fetches after the answer.

Gradio answers an image by writing it to its file cache and sending its URL; the page then GETs it. For the
small pictures this app answers (a digit is about 1 KB of PNG, a grid of 64 MNIST samples about 19 KB), that GET
costs the server more than the decode that made the picture: under a class's load one denoise answer (five
pictures) was 1 ms of model work and about 29 ms of server work, most of it the file: the write, the path
checks of moving it into the cache, and five more HTTP requests. A data URL costs one PNG encoding.

Gradio passes an `ImageData` with a `url` and no `path` through untouched, on the server and in its clients
(it is how it answers SVGs), and the page's <img> shows it. An image whose PNG is larger than
`INLINE_MAX_BYTES` still goes as a file: a page answer should stay small enough to parse at once.

API clients get the same dicts: `{"path": None, "url": "data:image/png;base64,…"}` where they used to get a
file; `image_bytes` reads either.

Figures go as plotly JSON made by `figures.figure_json`, the same JSON as Gradio's `fig.to_json()` at a quarter
of its cost for a 10,000-point map.
"""
from __future__ import annotations

import base64
import contextlib

import gradio as gr
import numpy as np
import plotly.graph_objects as go
from gradio.components.gallery import GalleryData, GalleryImage
from gradio.components.plot import PlotData
from gradio.data_classes import ImageData
from PIL import Image

from vae_explorer.data.images import png_bytes, png_data_url
from vae_explorer.figures import figure_json

INLINE_MAX_BYTES = 256 * 1024  # PNG bytes; a larger image is sent as a file (a page's answer stays quick to parse)


def inline_url(picture) -> str | None:
    """A PIL image or a uint8 array as a PNG data URL; None for anything else (a path, another dtype) or for a
    PNG over `INLINE_MAX_BYTES`, which Gradio's own postprocessing then sends as a file."""
    if isinstance(picture, np.ndarray) and picture.dtype == np.uint8:
        picture = Image.fromarray(picture)
    if not isinstance(picture, Image.Image):
        return None
    data = png_bytes(picture)
    return png_data_url(data) if len(data) <= INLINE_MAX_BYTES else None


@contextlib.contextmanager
def without_stub_files():
    """Gradio writes a .pyi stub beside the source of every component class as it is defined (IDE hints for
    its own templates): for the app's component classes that would be a copy of their module, written into the
    checkout (or a read-only install) at every start after an edit. Define them inside this."""
    from gradio import component_meta

    write = component_meta.create_or_modify_pyi
    component_meta.create_or_modify_pyi = lambda *args, **kwargs: None
    try:
        yield
    finally:
        component_meta.create_or_modify_pyi = write


def _inline(url: str) -> ImageData:
    return ImageData(url=url, mime_type="image/png", orig_name="image.png")


with without_stub_files():
    class InlineImage(gr.Image):
        """gr.Image whose answers travel inline (see the module's docstring). Drawn by Gradio's own Image."""

        is_template = True  # the page uses the parent's component: "image"

        def postprocess(self, value):
            url = inline_url(value)
            return _inline(url) if url is not None else super().postprocess(value)

    class InlineGallery(gr.Gallery):
        """gr.Gallery whose pictures travel inline; a caption stays with its picture. Drawn by Gradio's Gallery.
        Gradio's own postprocessing also starts a thread pool on every answer, which this skips."""

        is_template = True  # the page uses the parent's component: "gallery"

        def postprocess(self, value):
            if not value:
                return super().postprocess(value)
            items = [item if isinstance(item, (tuple, list)) else (item, None) for item in value]
            urls = [inline_url(picture) for picture, _ in items]
            if any(url is None for url in urls):  # a path, a video or a large image: Gradio's way for the whole answer
                return super().postprocess(value)
            return GalleryData(root=[GalleryImage(image=_inline(url), caption=caption)
                                     for url, (_, caption) in zip(urls, items)])

    class QuickPlot(gr.Plot):
        """gr.Plot whose plotly figures are serialized by `figure_json`. Drawn by Gradio's Plot."""

        is_template = True  # the page uses the parent's component: "plot"

        def postprocess(self, value):
            if isinstance(value, go.Figure):
                return PlotData(type="plotly", plot=figure_json(value))
            return super().postprocess(value)


def image_bytes(answer: dict, fetch=None) -> bytes:
    """The image bytes of an answer's image dict: decoded from its data URL, or `fetch(answer)` for a file."""
    url = answer.get("url") or ""
    if url.startswith("data:"):
        header, _, payload = url.partition(",")
        return base64.b64decode(payload) if header.endswith(";base64") else payload.encode()
    if fetch is None:
        raise ValueError(f"the image is a file ({answer.get('path')}); give a fetch to download it")
    return fetch(answer)
