"""The explorer's server side: the checkpoints folder as loaded models (catalog),
training runs in the background (jobs), UMAP off the request path
(umap_worker), the actions the page calls (explorer), and starting the app for
tests, benchmarks and replicas (launcher). The pure package around it (models,
data, training, latent math, figures) knows nothing of it.

Names are imported on first use: `launcher` needs none of torch or plotly.
"""
from __future__ import annotations

import importlib

_FROM_EXPLORER = ("Explorer", "MAX_SLIDERS", "MapResult", "SAMPLE_GRID", "ViewError", "number_input")
__all__ = list(_FROM_EXPLORER)


def __getattr__(name: str):
    if name not in _FROM_EXPLORER:
        raise AttributeError(f"module 'vae_explorer.server' has no attribute {name!r}")
    return getattr(importlib.import_module(".explorer", __name__), name)
