"""Several people on one server: each `gradio_client.Client` is its own session (a
browser tab). What each chooses (models, points, uploads) arrives with each call as
component values, so sessions never see each other's results. The training job is
the exception, on purpose: one run per server, visible to and cancellable by every
session (see vae_explorer/server/jobs.py).
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from PIL import Image

from vae_explorer import load_checkpoint

from .conftest import shown

TRAIN_ARGS = ("ae", "digits", 2, None, "bernoulli", 0.0, 1000, 1e-3, 128, "cpu")  # then the name and extra settings


def _client(url):
    from gradio_client import Client

    return Client(url, analytics_enabled=False, verbose=False)


def _together(*calls):
    """Run the calls in threads released at the same moment; returns their results (or exceptions)."""
    barrier = threading.Barrier(len(calls))
    results = [None] * len(calls)

    def run(i, call):
        barrier.wait()
        try:
            results[i] = call()
        except Exception as e:  # noqa: BLE001 - returned for the test to inspect
            results[i] = e

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    return results


def _wait_for(predicate, timeout=120.0, every=0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s")


@pytest.fixture
def no_job_left(app_server):
    """Every test here leaves the server without a running job."""
    _, ex = app_server
    yield
    ex.jobs.cancel()
    assert ex.jobs.current is None or not ex.jobs.current.running


def test_two_clients_pressing_train_at_once_start_exactly_one_job(app_server, no_job_left):
    from gradio_client.exceptions import AppError

    url, ex = app_server
    a, b = _client(url), _client(url)
    results = _together(lambda: a.predict(*TRAIN_ARGS, "race_a", "", api_name="/train_start"),
                        lambda: b.predict(*TRAIN_ARGS, "race_b", "", api_name="/train_start"))
    started = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, Exception)]
    assert len(started) == 1 and len(refused) == 1, results
    assert isinstance(refused[0], AppError)
    winner = ex.jobs.current.name
    assert winner in ("race_a", "race_b") and winner in started[0][0]
    message = str(refused[0])
    assert "a training is already running" in message and f"checkpoint {winner}" in message
    assert "cancel it first" in message
    loser = ({"race_a", "race_b"} - {winner}).pop()
    time.sleep(1.0)  # had the loser started anything, its process would have begun writing by now
    assert ex.jobs.current.name == winner
    assert not (ex.catalog.root / f"{loser}.safetensors").exists()


def test_the_job_is_server_wide_another_session_sees_and_cancels_it(app_server, no_job_left):
    """Deliberate: one training run per server, shown in every session's Train tab, and any
    session may cancel it (closing the tab that started it does not stop it). A second
    session therefore sees the first session's job in `train_status` and can cancel it."""
    url, ex = app_server
    starter, other = _client(url), _client(url)
    starter.predict(*TRAIN_ARGS, "shared_run", "", api_name="/train_start")

    def seen_by_other():
        text = other.predict(api_name="/train_status")[0]
        return text if "**shared_run**" in text and "status **running**" in text and "epoch " in text else None

    text = _wait_for(seen_by_other)
    assert "ae on digits" in text
    _wait_for(lambda: len(ex.jobs.current.epochs) >= 1)  # let an epoch land, so the cancel keeps something

    message = other.predict(api_name="/train_cancel")[0]
    assert message.startswith("**shared_run**:") and "status **cancelled**" in message
    assert "cancelled; the checkpoint keeps epoch " in message
    job = ex.jobs.current
    assert job.status == "cancelled"
    _wait_for(lambda: job._process.poll() is not None, timeout=15)  # the worker exits after its last step
    status_for_starter = starter.predict(api_name="/train_status")[0]
    assert "**shared_run**" in status_for_starter and "status **cancelled**" in status_for_starter
    _, meta = load_checkpoint(ex.catalog.root / "shared_run.safetensors")
    assert meta["epoch"] >= 1 and meta["epoch"] == len(meta["metrics"])
    assert "shared_run" in starter.predict(api_name="/checkpoints")  # and everyone can open it


def test_bad_training_settings_through_the_server_start_nothing(app_server, no_job_left):
    from gradio_client.exceptions import AppError

    url, ex = app_server
    before = ex.jobs.current
    client = _client(url)
    for i, bad, message in ((7, 0.0, "learning rate must be a positive number"),
                            # The Number boxes' minimum refuses these first; either layer's message will do.
                            (2, 0, "latent_dim must be at least 1|Latent dims must be a whole number of at least 1"),
                            (6, 0, "epochs must be at least 1|Epochs must be a whole number of at least 1"),
                            (8, 100_000, "larger than the 1438 training images"),
                            (7, -1e-3, "learning rate must be a positive number"),
                            (3, 4.0, "beta does not apply to model ae")):
        args = list(TRAIN_ARGS)
        args[i] = bad
        with pytest.raises(AppError, match=message):
            client.predict(*args, f"bad_{i}", "", api_name="/train_start")
        assert ex.jobs.current is before


def _png(path, size, value):
    a = np.zeros((size, size), np.uint8)
    a[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = value
    Image.fromarray(a, "L").save(path)
    return str(path)


def _pixels(path_or_image) -> np.ndarray:
    path_or_image = shown(path_or_image)
    return np.asarray(path_or_image if isinstance(path_or_image, Image.Image) else Image.open(path_or_image))


def test_sessions_see_only_their_own_choices(app_server, tmp_path):
    """Two sessions call the same endpoints at the same moments with different models,
    points and uploads; each result is the one the handlers give for that session's
    own inputs, never the other's."""
    from gradio_client import handle_file

    url, ex = app_server
    choices = {
        "a": {"left": "digits_ae", "right": "digits_vae", "points": [3, 40, 111, 250],
              "upload": _png(tmp_path / "a_square.png", 20, 255), "slider_model": "digits_vae", "denoiser": "digits_ae"},
        "b": {"left": "digits_conv_ae", "right": "digits_beta_vae", "points": [5, 77, 180, 300],
              "upload": _png(tmp_path / "b_square.png", 30, 128), "slider_model": "digits_beta_vae",
              "denoiser": "digits_denoising_ae"},
    }
    clients = {k: _client(url) for k in choices}

    def session(key):
        c, mine, seen = clients[key], choices[key], []
        for i in mine["points"]:
            index, _, left, _, _, caption = c.predict(mine["left"], mine["right"], i, api_name="/select_point")
            seen.append(("point", i, index, _pixels(left), caption))
            clean, _, _, _, text = c.predict([mine["denoiser"]], 0, handle_file(mine["upload"]), "gaussian", 0.4, i,
                                          api_name="/denoise")
            seen.append(("denoise", i, _pixels(clean), text))
            sliders = c.predict(mine["slider_model"], i, api_name="/slider_setup")
            seen.append(("sliders", i, _pixels(sliders[-3]), sliders[-1]))
        return seen

    results = _together(lambda: session("a"), lambda: session("b"))
    for key, seen in zip(choices, results):
        assert not isinstance(seen, Exception), seen
        mine = choices[key]
        other = choices["b" if key == "a" else "a"]
        for record in seen:
            kind, i = record[:2]
            if kind == "point":
                _, _, index, left, caption = record
                assert index == i and f"Test image **{i}**" in caption
                assert mine["left"] in caption and other["left"] not in caption
                _, expected_left, _, _ = ex.compare_point(mine["left"], mine["right"], i)
                assert np.array_equal(left, _pixels(expected_left))
            elif kind == "denoise":
                _, _, clean, text = record
                size = 20 if key == "a" else 30
                assert f"PNG {size}×{size} L" in text and mine["denoiser"] in text
                expected, _, _, _ = ex.denoise([mine["denoiser"]], 0, mine["upload"], "gaussian", 0.4, i)
                assert np.array_equal(clean, _pixels(expected))
            else:
                _, _, image, text = record
                assert f"Starting from test image {i} " in text
                _, expected, _ = ex.slider_setup(mine["slider_model"], i)
                assert np.array_equal(image, _pixels(expected))


def test_a_new_session_starts_from_the_defaults_not_from_others_choices(app_server):
    # Choices live in each session's component values: nothing another session picked leaks in as a default.
    url, _ = app_server
    busy = _client(url)
    busy.predict("digits_conv_ae", "digits_beta_vae", 123, api_name="/select_point")
    index, _, _, _, _, caption = _client(url).predict(api_name="/select_point")
    assert index == 0 and "Test image **0**" in caption and "digits_ae" in caption and "digits_conv_ae" not in caption


def test_training_motion_follows_the_model_chosen_while_its_first_view_was_pending(explorer):
    """Gradio takes an event's trigger mode from its first trigger, and "once" (a tab's select) drops every
    trigger that arrives while the event is pending: a model chosen as the tab opened was never shown."""
    import app

    demo = app.build_app(explorer)
    motion = [fn for fn in demo.fns.values() if fn.api_name == "training_motion"][0]
    assert {event for _, event in motion.targets} == {"select", "change"} and motion.trigger_mode == "always_last"


def test_quick_views_share_one_queue_and_a_study_keeps_its_own(explorer):
    """Gradio gives each event a queue of its own; the app puts its quick views in one (app.VIEWS), served in
    arrival order, and leaves each study (seconds on a first computation) its own queue."""
    import app

    demo = app.build_app(explorer)
    group = {fn.api_name: (fn.concurrency_id, fn.concurrency_limit) for fn in demo.fns.values() if fn.api_name}
    for view in ("latent_map", "select_point", "reconstruct", "sample", "denoise", "model_card", "train_status",
                 "manifold", "anomalies", "draw_encode"):
        assert group[view] == (app.VIEWS, "default"), view  # the limit is the queue's default: --view-slots
    for study in ("prior_fit", "latent_usage", "disentanglement", "linear_pca", "codebook", "training_motion",
                  "export_figure", "export_bundle"):
        assert group[study][0] != app.VIEWS and group[study][1] == app.STUDY_SLOTS, study
    assert group["train_start"] == ("train", 1)


@pytest.mark.server
def test_a_view_waits_for_a_view_slot_and_a_study_never_takes_one(tmp_path):
    """With one view slot: while a model card is computed, a sample waits its turn; while a study is
    computed, a model card is answered."""
    from vae_explorer.server import Explorer
    from vae_explorer.server.launcher import serve

    from .conftest import copy_checkpoints

    ex = Explorer(copy_checkpoints(tmp_path / "checkpoints"))
    entered = {name: threading.Event() for name in ("card", "prior_fit")}
    release = {name: threading.Event() for name in entered}

    def held(name, method):
        def call(*args, **kwargs):
            entered[name].set()
            assert release[name].wait(60)
            return method(*args, **kwargs)
        return call

    card, prior_fit = ex.card, ex.prior_fit
    ex.card, ex.prior_fit = held("card", card), held("prior_fit", prior_fit)
    with serve(ex, view_slots=1) as url:
        first, second = _client(url), _client(url)
        held_card = first.submit("digits_vae", api_name="/model_card")
        assert entered["card"].wait(30)
        waiting = second.submit("digits_vae", 1.0, 0, api_name="/sample")
        time.sleep(3)
        assert not waiting.done(), "a sample was computed while the only view slot was taken"
        release["card"].set()
        assert "digits_vae" in held_card.result(timeout=60)
        assert shown(waiting.result(timeout=60)[0]) is not None

        ex.card = card
        study = first.submit("digits_ae", "digits_vae", api_name="/prior_fit")
        assert entered["prior_fit"].wait(30)
        assert "digits_vae" in second.predict("digits_vae", api_name="/model_card")  # answered meanwhile
        assert not study.done()
        release["prior_fit"].set()
        assert len(study.result(timeout=120)) == 6
