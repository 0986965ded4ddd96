"""Training in motion and KL per epoch as views: the Explorer's handlers as plain functions, over small
checkpoints trained here (the shipped ones predate the recording) and a shipped one without frames."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from vae_explorer import TrainConfig, build_model, fit, read_metadata
from vae_explorer.checkpoints import load_motion
from vae_explorer.figures import page_animation
from vae_explorer.server import Explorer, ViewError

from .conftest import wait_for

CPU = dict(device="cpu", iwae_k=0, history_images=0, batch_size=64, motion_items=120)


@pytest.fixture(scope="module")
def motion_explorer(tmp_path_factory, digits):
    folder = tmp_path_factory.mktemp("motion-checkpoints")
    torch.manual_seed(0)
    fit(build_model("ae", **digits.model_settings(), latent_dim=2), digits,
        TrainConfig(epochs=5, motion_frames=4, checkpoint=str(folder / "moving_ae"), **CPU))
    torch.manual_seed(0)
    fit(build_model("vae", **digits.model_settings(), latent_dim=6), digits,
        TrainConfig(epochs=4, checkpoint=str(folder / "moving_vae"), **CPU))
    torch.manual_seed(0)  # as a checkpoint from before frames were recorded
    fit(build_model("vae", **digits.model_settings(), latent_dim=2), digits,
        TrainConfig(epochs=1, checkpoint=str(folder / "old_vae"), **{**CPU, "motion_items": 0}))
    ex = Explorer(folder)
    yield ex
    ex.close()


def _points(trace) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(trace.customdata), np.stack([np.asarray(trace.x, float), np.asarray(trace.y, float)], 1)


@pytest.mark.parametrize("name, projection", [("moving_ae", "raw"), ("moving_vae", "pca")])
def test_the_animation_has_one_frame_per_kept_epoch_with_the_recorded_points(motion_explorer, name, projection):
    ex = motion_explorer
    fig, caption = ex.training_motion(name)
    path = ex.load(name).path
    saved = load_motion(path)
    epochs = saved["epochs"].tolist()
    frames = saved["frames"].float().numpy()
    items = saved["items"].numpy()
    labels = saved["labels"].numpy()
    assert [f.name for f in fig.frames] == [str(e) for e in epochs]
    assert [s.label for s in fig.layout.sliders[0].steps] == [str(e) for e in epochs]
    assert fig.layout.sliders[0].active == len(epochs) - 1  # opens at the last epoch
    assert [b.label for b in fig.layout.updatemenus[0].buttons] == ["▶ Play", "❚❚ Pause"]
    digits_classes = [str(i) for i in range(10)]
    assert sorted(t.name for t in fig.data) == sorted({digits_classes[y] for y in labels})
    span = np.ptp(frames, axis=(0, 1)).max()
    for frame, stored in zip([*fig.frames, fig], [*frames, frames[-1]]):  # every frame, and the figure as opened
        for trace, drawn in zip(fig.data, frame.data):
            index = np.asarray(trace.customdata)
            np.testing.assert_array_equal(labels[np.searchsorted(items, index)],
                                          int(trace.name))  # each trace holds one label's items
            _, xy = _points(drawn)
            np.testing.assert_allclose(xy, stored[np.searchsorted(items, index)], atol=2e-4 * span)
    # The axes are fixed over all frames and hold every point of every one of them.
    x_range, y_range = fig.layout.xaxis.range, fig.layout.yaxis.range
    assert fig.layout.xaxis.autorange is False and fig.layout.yaxis.autorange is False
    assert x_range[0] < frames[..., 0].min() and frames[..., 0].max() < x_range[1]
    assert y_range[0] < frames[..., 1].min() and frames[..., 1].max() < y_range[1]
    assert f"{len(items)} test images" in caption and ("Procrustes" in caption) == (projection == "pca")
    if name == "moving_ae":  # 5 epochs, 4 frames kept: the first, evenly spaced ones and the last
        assert epochs == [1, 2, 4, 5] and "4 of its 5 epochs" in caption


def test_the_page_gets_the_frames_in_the_layout(motion_explorer):
    fig, _ = motion_explorer.training_motion("moving_vae")
    page = page_animation(fig)
    assert not page.frames and len(page.layout.meta["frames"]) == len(fig.frames)
    assert page.layout.meta["frames"][0]["name"] == fig.frames[0].name
    assert page.layout.meta["frames"][-1]["data"][0]["x"] == list(fig.frames[-1].data[0].x)
    other = page_animation(motion_explorer.training_motion("moving_ae")[0])
    assert other.layout.meta["frames_key"] != page.layout.meta["frames_key"]
    assert page_animation(None) is None
    json.dumps(page.to_plotly_json()["layout"]["meta"])  # plain JSON: the page reads it as is


def test_a_checkpoint_without_frames_says_to_retrain(motion_explorer):
    with pytest.raises(ViewError, match="trained before the map of its codes was recorded.*retrain it"):
        motion_explorer.training_motion("old_vae")


def test_kl_per_epoch_is_the_recorded_history(motion_explorer):
    fig, caption = motion_explorer.kl_history("moving_vae")
    history = read_metadata(motion_explorer.load("moving_vae").path)["metrics"]
    recorded = np.array([h["latent"]["kl_per_dim"] for h in history])  # (epochs, D)
    heat = fig.data[0]
    assert list(heat.x) == [1, 2, 3, 4] and list(heat.y) == [f"z[{i}]" for i in range(6)]
    np.testing.assert_array_equal(np.asarray(heat.z), recorded.T)
    assert f"total {recorded[-1].sum():.3g} nats" in caption
    none, why = motion_explorer.kl_history("moving_ae")
    assert none is None and "no posterior" in why


def test_the_train_tab_shows_the_newest_frame_then_every_epoch(tmp_path):
    """A real background run: after it ends the Train tab's map is the checkpoint's animation and the KL heat
    map has every epoch; the newest frame it showed while running came from the epoch events."""
    ex = Explorer(tmp_path)
    try:
        assert ex.train_views() == (None, "", None, "") and ex.train_views_version() == ()
        ex.train_start(model="vae", dataset="digits", latent_dim=2, epochs=3, batch_size=64, name="live")
        assert wait_for(lambda: ex.train_running() is False, timeout=180), ex.train_status()[0]
        assert "finished" in ex.train_status()[0]
        assert ex.train_views_version()[1:] == (3, "finished")  # the page redraws the views when this changes
        events = ex.jobs.current.snapshot()["epochs"]
        assert [e.epoch for e in events] == [1, 2, 3] and all(len(e.motion["points"]) == 359 for e in events)
        figure, caption, kl_figure, kl_caption = ex.train_views()
        assert [f.name for f in figure.frames] == ["1", "2", "3"] and "Play" in caption
        saved = load_motion(tmp_path / "live.safetensors")["frames"].float().numpy()
        np.testing.assert_allclose(np.asarray(events[-1].motion["points"]), saved[-1], atol=2e-3)
        assert list(kl_figure.data[0].x) == [1, 2, 3]
        np.testing.assert_allclose(np.asarray(kl_figure.data[0].z)[:, -1], events[-1].latent["kl_per_dim"])
        assert "KL to N(0, 1)" in kl_caption
        # While a run is going (here: the job put back as running), the map is the newest epoch's frame alone.
        with ex.jobs.current._lock:
            ex.jobs.current.status = "running"
        live, live_caption, _, _ = ex.train_views()
        assert not live.frames and "epoch 3 of 3" in live.layout.title.text and "newest epoch" in live_caption
        xy = np.concatenate([_points(t)[1] for t in live.data])
        assert len(xy) == 359
    finally:
        ex.close()


def test_the_animation_exports_as_html_that_plays_offline(motion_explorer):
    paths, note = motion_explorer.export_figure("moving_vae", "training in motion (animation)")
    html = open(paths[0]).read()
    assert paths[0].endswith(".html") and "Plotly.addFrames" in html  # plotly's own page adds the frames
    assert re.search(r'"name":\s*"4"', html)  # the last epoch's frame is in the file
    with pytest.raises(ViewError, match="no KL per dimension per epoch figure"):
        motion_explorer.export_figure("moving_ae", "KL per dimension per epoch")
