"""Training in motion: the map of a fixed set of test codes recorded after every epoch (vae_explorer.motion,
fit), its bounded thinning, the Procrustes alignment of PCA frames, resume, and what checkpoints keep."""
from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest
import torch
from scipy.linalg import orthogonal_procrustes
from sklearn.decomposition import PCA

from vae_explorer import TrainConfig, build_model, fit, load_checkpoint, read_metadata, save_checkpoint
from vae_explorer.checkpoints import load_motion, load_train_state
from vae_explorer.latent import encode_items, pca_2d, principal_axes
from vae_explorer.motion import MotionRecord, align, kept_epochs, motion_items, project

from .conftest import REPO

CPU = dict(device="cpu", iwae_k=0, history_images=0, batch_size=64)


def _rotation(degrees: float) -> np.ndarray:
    t = np.radians(degrees)
    return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])


def _codes(model, data, items) -> np.ndarray:
    return encode_items(model, data.test_x[torch.as_tensor(items)], data.kind).numpy()


# ---- thinning ------------------------------------------------------------------------------------------

def test_every_epoch_is_kept_up_to_the_limit_then_early_and_evenly_spaced_ones():
    assert kept_epochs(30, 30) == list(range(1, 31))
    # 150 epochs, 30 frames: the first 7 (a quarter of 30), every 8th (the smallest power of two that fits), the last.
    assert kept_epochs(150, 30) == [*range(1, 8), *range(8, 150, 8), 150]
    assert kept_epochs(7, 4) == [1, 4, 7]


@pytest.mark.parametrize("max_frames", [2, 4, 10, 30])
def test_thinning_as_a_run_goes_keeps_what_the_latest_epoch_alone_decides(max_frames):
    kept: list[int] = []
    for epoch in range(1, 301):
        wanted = set(kept_epochs(epoch, max_frames))
        assert wanted <= set(kept) | {epoch}, f"epoch {epoch} wants a frame already dropped"
        kept = [e for e in [*kept, epoch] if e in wanted]
        assert kept == kept_epochs(epoch, max_frames)
        assert len(kept) <= max_frames and kept[0] == 1 and kept[-1] == epoch


# ---- alignment -----------------------------------------------------------------------------------------

def test_alignment_undoes_a_rotation_and_a_reflection():
    rng = np.random.default_rng(0)
    previous = rng.normal(size=(200, 2)) * [3.0, 1.0]
    previous -= previous.mean(0)
    for turned in (previous @ _rotation(40), previous @ np.diag([-1.0, 1.0]) @ _rotation(-115), -previous):
        np.testing.assert_allclose(align(turned, previous), previous, atol=1e-5)
    # A frame that really moved is turned as a whole, not bent onto the previous one: distances stay.
    moved = previous @ _rotation(70) + rng.normal(size=previous.shape) * 0.3
    aligned = align(moved, previous)
    np.testing.assert_allclose(np.linalg.norm(aligned, axis=1), np.linalg.norm(moved, axis=1), rtol=1e-5)
    assert np.linalg.norm(aligned - previous) < np.linalg.norm(moved - previous)


def test_a_pca_frame_is_the_latent_maps_pca():
    """project's eigenvectors of the scatter matrix give the Latent map's PCA coefficients, signs included."""
    codes = np.random.default_rng(2).normal(size=(300, 7)) * np.arange(1, 8)
    np.testing.assert_allclose(project(codes, "pca"), pca_2d(codes, principal_axes(codes)), atol=1e-4)


def test_record_turns_only_pca_frames():
    rng = np.random.default_rng(1)
    codes = rng.normal(size=(50, 2))
    raw = MotionRecord.start(2, torch.zeros(50, dtype=torch.long), 50, 10)
    raw.add(1, codes)
    np.testing.assert_array_equal(raw.add(2, -codes), (-codes).astype(np.float32))  # raw codes are shown as they are


# ---- recorded by fit ------------------------------------------------------------------------------------

def test_raw_frames_are_the_models_codes_of_the_fixed_items(digits, tmp_path):
    torch.manual_seed(0)
    model = build_model("ae", **digits.model_settings(), latent_dim=2)
    events = []
    result = fit(model, digits, TrainConfig(epochs=3, motion_items=100, checkpoint=str(tmp_path / "ae"), **CPU),
                 callback=events.append)
    record = result.motion
    items = motion_items(len(digits.test_x), 100)
    np.testing.assert_array_equal(record.items, items)
    assert len(set(items.tolist())) == 100 and record.projection == "raw" and record.epochs == [1, 2, 3]
    np.testing.assert_array_equal(record.labels, digits.test_y[torch.as_tensor(items)].numpy())
    np.testing.assert_allclose(record.frames[-1], _codes(result.model, digits, items), rtol=1e-6, atol=1e-6)

    saved = load_motion(tmp_path / "ae.safetensors")
    assert saved["frames"].dtype == torch.float16 and saved["frames"].shape == (3, 100, 2)
    np.testing.assert_allclose(saved["frames"][-1].float().numpy(), record.frames[-1], rtol=2e-3, atol=2e-3)
    assert saved["epochs"].tolist() == [1, 2, 3]
    assert read_metadata(tmp_path / "ae.safetensors")["motion"] == {"projection": "raw", "items": 100, "frames": 3,
                                                                  "max_frames": 30}
    # The page sees each frame as the epoch ends: the start event names the items' labels, each epoch its points.
    start = next(e for e in events if e.kind == "start")
    assert start.motion["labels"] == record.labels.tolist() and start.motion["classes"] == digits.classes
    points = [e.motion["points"] for e in events if e.kind == "epoch"]
    assert len(points) == 3
    np.testing.assert_allclose(points[-1], record.frames[-1], atol=1e-4)


def test_pca_frames_are_sklearn_pca_up_to_the_alignment_and_resume_keeps_them(digits, tmp_path):
    config = dict(motion_items=120, **CPU)
    torch.manual_seed(0)
    straight = build_model("vae", **digits.model_settings(), latent_dim=6)
    fit(straight, digits, TrainConfig(epochs=4, checkpoint=str(tmp_path / "straight"), **config))

    torch.manual_seed(0)
    first = build_model("vae", **digits.model_settings(), latent_dim=6)
    fit(first, digits, TrainConfig(epochs=2, checkpoint=str(tmp_path / "resumed"), **config))
    shutil.copy(tmp_path / "resumed.safetensors", tmp_path / "after2.safetensors")
    resumed = build_model("vae", **digits.model_settings(), latent_dim=6)
    result = fit(resumed, digits, TrainConfig(epochs=4, checkpoint=str(tmp_path / "resumed"), **config), resume=True)

    record = result.motion
    assert record.projection == "pca" and record.epochs == [1, 2, 3, 4]
    # The resumed run kept epochs 1-2's frames and recorded exactly what the straight run did.
    a, b = load_motion(tmp_path / "straight.safetensors"), load_motion(tmp_path / "resumed.safetensors")
    assert b["epochs"].tolist() == [1, 2, 3, 4]
    np.testing.assert_allclose(a["frames"].float().numpy(), b["frames"].float().numpy(), atol=2e-3)

    # Each frame is sklearn's 2-component PCA of that epoch's codes, turned by an orthogonal matrix.
    after2, _ = load_checkpoint(tmp_path / "after2.safetensors")
    for epoch, model in ((2, after2), (4, result.model)):
        frame = record.frames[record.epochs.index(epoch)]
        reference = PCA(2).fit_transform(_codes(model, digits, record.items))
        turn, _ = orthogonal_procrustes(reference, frame)
        np.testing.assert_allclose(turn.T @ turn, np.eye(2), atol=1e-6)
        np.testing.assert_allclose(reference @ turn, frame, atol=1e-3 * np.abs(frame).max())
    # ...and the orthogonal matrix is the one that moves it least from the frame before: turning it further
    # (the best turn from frame t to frame t - 1) is the identity.
    for before, after in zip(record.frames, record.frames[1:]):
        best, _ = orthogonal_procrustes(after, before)
        np.testing.assert_allclose(best, np.eye(2), atol=1e-4)


def test_a_run_keeps_at_most_motion_frames(digits, tmp_path):
    torch.manual_seed(0)
    model = build_model("ae", **digits.model_settings(), latent_dim=2)
    events = []
    result = fit(model, digits, TrainConfig(epochs=7, motion_items=50, motion_frames=4,
                                            checkpoint=str(tmp_path / "thin"), **CPU), callback=events.append)
    assert result.motion.epochs == kept_epochs(7, 4) == [1, 4, 7]
    saved = load_motion(tmp_path / "thin.safetensors")
    assert saved["epochs"].tolist() == [1, 4, 7] and saved["frames"].shape == (3, 50, 2)
    shown = {e.epoch: np.array(e.motion["points"]) for e in events if e.kind == "epoch"}
    assert sorted(shown) == list(range(1, 8))  # the page saw every epoch while it trained
    for i, epoch in enumerate([1, 4, 7]):
        np.testing.assert_allclose(saved["frames"][i].float().numpy(), shown[epoch], rtol=2e-3, atol=2e-3)


def test_motion_items_zero_records_nothing(digits, tmp_path):
    model = build_model("ae", **digits.model_settings(), latent_dim=2)
    result = fit(model, digits, TrainConfig(epochs=1, motion_items=0, checkpoint=str(tmp_path / "off"), **CPU))
    assert result.motion is None and load_motion(tmp_path / "off.safetensors") == {}
    assert "motion" not in read_metadata(tmp_path / "off.safetensors")


@pytest.mark.parametrize("settings, words", [(dict(motion_items=-1), "motion_items must be >= 0"),
                                             (dict(motion_frames=1), "motion_frames must be at least 2"),
                                             (dict(motion_items=2.5), "motion_items must be a whole number")])
def test_bad_motion_settings_are_refused(settings, words):
    with pytest.raises(ValueError, match=words):
        TrainConfig(**settings).validate()


# ---- what a checkpoint costs and keeps --------------------------------------------------------------------

def test_a_long_runs_frames_stay_tens_of_kb(digits, tmp_path):
    """150 epochs of 500 items' maps (the defaults), through the record a run uses: at most 30 frames of
    float16, about 60 KB in the file."""
    model = build_model("vae", **digits.model_settings(), latent_dim=8)
    defaults = TrainConfig()
    record = MotionRecord.start(8, torch.arange(2000) % 10, defaults.motion_items, defaults.motion_frames)
    rng = np.random.default_rng(0)
    for epoch in range(1, 151):
        record.add(epoch, rng.normal(size=(500, 8)) * (1 + epoch / 10))
    bare = save_checkpoint(tmp_path / "bare", model, {"dataset": digits.describe()})
    with_motion = save_checkpoint(tmp_path / "motion", model, {"dataset": digits.describe(), "motion":
                                                               record.describe()}, motion=record.tensors())
    extra = with_motion.stat().st_size - bare.stat().st_size
    assert len(record.frames) == 26 and record.epochs[-1] == 150
    assert 26 * 500 * 2 * 2 <= extra < 70_000, f"{extra} bytes of motion"
    back = MotionRecord.from_tensors(load_motion(with_motion), read_metadata(with_motion)["motion"])
    assert back.epochs == record.epochs and back.projection == "pca"
    np.testing.assert_allclose(back.frames[-1], record.frames[-1], rtol=1e-3, atol=2e-2)


def test_shipping_strips_the_optimizer_and_keeps_the_motion(digits, tmp_path):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from make_checkpoints import strip_train_state
    finally:
        sys.path.remove(str(REPO / "scripts"))
    model = build_model("ae", **digits.model_settings(), latent_dim=2)
    fit(model, digits, TrainConfig(epochs=2, motion_items=40, checkpoint=str(tmp_path / "ship"), **CPU))
    path = tmp_path / "ship.safetensors"
    before = load_motion(path)
    assert load_train_state(path)
    strip_train_state(path)
    assert load_train_state(path) == {} and "train_state" not in read_metadata(path)
    after = load_motion(path)
    assert sorted(after) == sorted(before) and all(torch.equal(after[k], before[k]) for k in before)
    assert read_metadata(path)["motion"]["frames"] == 2
