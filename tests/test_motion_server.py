"""Training in motion through the running server (gradio_client): the Diagnostics view's endpoint gives the
animation with its frames where the page's script finds them, and a checkpoint without frames gets the message."""
from __future__ import annotations

import json

import pytest
import torch

from vae_explorer import TrainConfig, build_model, fit

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client  # noqa: E402


@pytest.fixture(scope="module")
def client(app_server):
    url, _ = app_server
    return Client(url, analytics_enabled=False, verbose=False)


def plot_of(update) -> dict | None:
    """A gr.Plot update's plotly JSON (None when it carries none)."""
    value = update.get("value") if isinstance(update, dict) and "plot" not in update else update
    return json.loads(value["plot"]) if isinstance(value, dict) and value.get("plot") else None


def test_the_endpoints_are_named(client):
    names = {n.lstrip("/") for n in client.view_api(return_format="dict", print_info=False)["named_endpoints"]}
    assert {"training_motion", "train_views"} <= names


def test_training_motion_through_the_server(client, app_server, digits):
    _, explorer = app_server
    torch.manual_seed(0)
    fit(build_model("vae", **digits.model_settings(), latent_dim=2), digits,
        TrainConfig(epochs=3, batch_size=64, iwae_k=0, history_images=0, device="cpu", motion_items=80,
                    checkpoint=str(explorer.catalog.root / "served_motion")))
    motion, caption, kl, kl_caption = client.predict("served_motion", api_name="/training_motion")
    figure = plot_of(motion)
    assert motion["visible"] is True and "80 test images" in caption
    assert not figure.get("frames")  # Gradio would drop them: they travel in the layout for motion.js
    frames = figure["layout"]["meta"]["frames"]
    assert [f["name"] for f in frames] == ["1", "2", "3"] and figure["layout"]["sliders"][0]["active"] == 2
    assert sum(len(t["x"]) for t in frames[0]["data"]) == 80
    heat = plot_of(kl)["data"][0]
    assert heat["type"] == "heatmap" and list(heat["x"]) == [1, 2, 3] and "KL" in kl_caption

    fit(build_model("vae", **digits.model_settings(), latent_dim=2), digits,  # as trained before frames were kept
        TrainConfig(epochs=1, batch_size=64, iwae_k=0, history_images=0, device="cpu", motion_items=0,
                    checkpoint=str(explorer.catalog.root / "served_unmoving")))
    motion, caption, kl, _ = client.predict("served_unmoving", api_name="/training_motion")
    assert motion["visible"] is False and "retrain it" in caption
    assert "digits_ae" in client.predict(api_name="/checkpoints")  # the server keeps serving
