"""Background training: a real CLI process (`train --events`) trains, reports progress, saves a
checkpoint every epoch, stops within a second on cancel, and its result is at
once usable by every view."""
from __future__ import annotations

import time

import pytest

from vae_explorer.checkpoints import load_checkpoint
from vae_explorer.server import Explorer, ViewError

from .conftest import wait_for

pytestmark = pytest.mark.subprocess  # every test here starts the CLI or a training process



@pytest.fixture
def explorer(tmp_path):
    ex = Explorer(tmp_path / "checkpoints", projection_cache=tmp_path / "projections")
    yield ex
    ex.close()


def test_a_finished_run_reports_progress_and_appears_in_the_pickers(explorer):
    assert explorer.train_status()[3] is False
    message = explorer.train_start(model="vq_vae", dataset="digits", latent_dim=8, epochs=3, batch_size=64,
                                   name="fresh_vq")
    assert "fresh_vq" in message
    assert wait_for(lambda: not explorer.train_status()[3], timeout=90)
    text, fig, history, running = explorer.train_status()
    job = explorer.jobs.current
    assert job.status == "finished", job.message
    assert "finished" in text and "on **cpu**" in text and "in every model picker" in text
    assert [e.epoch for e in job.epochs] == [1, 2, 3]
    assert {"recon", "codebook", "commitment", "perplexity"} <= set(job.epochs[-1].test)
    assert {tr.name for tr in fig.data} >= {"train loss", "test loss", "train recon"}
    assert history is not None and history.size[1] > history.size[0] / 8 * 3  # inputs + 3 epochs of rows
    assert "fresh_vq" in explorer.checkpoint_names()
    model, meta = load_checkpoint(explorer.catalog.path("fresh_vq"))
    assert meta["epoch"] == 3 and meta["model"] == "vq_vae"
    # Every view works with it right away.
    assert explorer.latent_map("fresh_vq").figure.data
    assert explorer.sample("fresh_vq", 1.0, 0)[0].size[0] > 0
    assert explorer.slider_setup("fresh_vq", 0)[0]


def test_cancel_stops_within_a_second_and_keeps_the_last_epoch(explorer):
    explorer.train_start(model="vae", dataset="digits", latent_dim=2, epochs=500, batch_size=32, name="long")
    assert wait_for(lambda: len(explorer.jobs.current.epochs) >= 2, timeout=60)
    with pytest.raises(ViewError, match="already running"):
        explorer.train_start(model="ae", dataset="digits", epochs=1)
    t0 = time.perf_counter()
    message = explorer.train_cancel()
    took = time.perf_counter() - t0
    job = explorer.jobs.current
    assert took < 1.5 and job.status == "cancelled" and not job.running
    saved = len(job.epochs)
    assert f"keeps epoch {saved}" in message
    model, meta = load_checkpoint(explorer.catalog.path("long"))
    assert meta["epoch"] == saved
    # The server is free again.
    explorer.train_start(model="ae", dataset="digits", latent_dim=2, epochs=1, name="after")
    assert wait_for(lambda: not explorer.jobs.current.running, timeout=60)
    assert explorer.jobs.current.status == "finished"


def test_cancel_during_start_up_saves_nothing_and_says_so(explorer):
    explorer.train_start(model="ae", dataset="digits", latent_dim=2, epochs=5, name="early")
    message = explorer.train_cancel()  # the worker is still importing torch
    assert explorer.jobs.current.status == "cancelled"
    assert "nothing was saved" in message
    assert "early" not in explorer.checkpoint_names()


def test_a_diverging_run_fails_with_a_message(explorer):
    explorer.train_start(model="ae", dataset="digits", latent_dim=2, epochs=3, lr=1e10, name="boom")
    assert wait_for(lambda: not explorer.jobs.current.running, timeout=90)
    job = explorer.jobs.current
    assert job.status == "failed" and "diverged" in job.message and "lower learning rate" in job.message
    assert "diverged" in explorer.train_status()[0]


def test_the_job_runs_the_public_cli_with_the_spec_it_was_given(explorer):
    """The background job is `python -m vae_explorer train <flags> --events`, built from the run's spec:
    a setting only the page's extra box names (commitment) reaches the checkpoint."""
    explorer.train_start(model="vq_vae", dataset="digits", name="via_cli", extra="commitment=0.5\nrestart_every=0",
                         latent_dim=8, epochs=1, batch_size=64)
    job = explorer.jobs.current
    command = job._process.args
    assert command[1:4] == ["-m", "vae_explorer", "train"] and command[-1] == "--events"
    assert "--commitment" in command and command[command.index("--commitment") + 1] == "0.5"
    assert wait_for(lambda: not job.running, timeout=90)
    assert job.status == "finished", job.message
    _, meta = load_checkpoint(explorer.catalog.path("via_cli"))
    assert meta["config"]["commitment"] == 0.5 and meta["config"]["restart_every"] == 0
    assert job.first is not None and job.first.items.shape == (8, 1, 8, 8)
