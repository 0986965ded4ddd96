"""Training that goes wrong: a diverging loss, a process killed with SIGKILL at random
moments, a resume after an interruption, settings that cannot work, a GPU out of
memory. Each ends with a clear message, a loadable last checkpoint (or none), and
a job manager that can start the next run.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vae_explorer import TrainConfig, TrainingError, build_model, cli, fit, load_checkpoint, load_dataset, read_metadata
from vae_explorer.server.catalog import Catalog
from vae_explorer.checkpoints import SUFFIX
from vae_explorer.runs import RunSpec, split_settings
from vae_explorer.server.jobs import JobError, TrainingJobs, validate_run
from vae_explorer.server import Explorer, ViewError

from .conftest import REPO

# One torch thread here and in the subprocesses: tiny models on a shared 2-core machine train ~100× slower
# when two OpenMP threads contend with another busy process, and the tests are about behaviour, not speed.
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _model(name="ae", seed=0):
    torch.manual_seed(seed)
    return build_model(name, input_shape=(1, 8, 8), latent_dim=2)


def _wait(job, timeout=120.0):
    deadline = time.time() + timeout
    while job.running and time.time() < deadline:
        time.sleep(0.05)
    assert not job.running, f"job still {job.status} after {timeout} s"
    return job


def _temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.endswith(".tmp")]


# ---- a diverging loss -------------------------------------------------------------------------

@pytest.mark.parametrize("poison", [float("nan"), float("inf")])
@pytest.mark.parametrize("log_every", [1, 25])  # caught at a step report, or at the end of the epoch
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(digits, tmp_path, poison, log_every):
    ckpt = tmp_path / "run"
    model = _model("vae")
    saved = {}

    def callback(event):
        if event.kind == "epoch" and event.epoch == 2:
            saved["bytes"] = (tmp_path / f"run{SUFFIX}").read_bytes()
            with torch.no_grad():  # the weights blow up after epoch 2 was saved
                next(model.parameters()).fill_(poison)

    with pytest.raises(TrainingError) as err:
        fit(model, digits, TrainConfig(epochs=5, device="cpu", iwae_k=0, log_every=log_every,
                                       checkpoint=str(ckpt)), callback=callback)
    message = str(err.value)
    assert "training diverged" in message and "epoch 3" in message and "lower learning rate" in message
    assert "last good checkpoint is kept" in message
    path = tmp_path / f"run{SUFFIX}"
    assert path.read_bytes() == saved["bytes"]  # epoch 3 wrote nothing
    reloaded, meta = load_checkpoint(path)
    assert meta["epoch"] == 2 and [m["epoch"] for m in meta["metrics"]] == [1, 2]
    assert all(torch.isfinite(p).all() for p in reloaded.parameters())
    assert not _temp_files(tmp_path)


def test_a_huge_learning_rate_is_reported_by_the_cli(tmp_path, capsys):
    # 1e30 is a valid number but the weights overflow within the first epoch: exit 1 with the reason, no file.
    code = cli.main(["train", "--model", "ae", "--epochs", "2", "--lr", "1e30", "--out", str(tmp_path / "diverged"),
                     "--quiet"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "training stopped: training diverged in epoch 1" in err and "lower learning rate" in err
    assert not list(tmp_path.iterdir())


@pytest.mark.subprocess
def test_a_huge_learning_rate_fails_the_job_with_a_message(tmp_path):
    ex = Explorer(tmp_path / "ck")
    try:
        ex.train_start(model="ae", dataset="digits", epochs=2, lr=1e30, batch_size=128, device="cpu",
                       name="diverges")
        job = _wait(ex.jobs.current)
        assert job.status == "failed" and "training diverged" in job.message, (job.status, job.message)
        text, _, _, running = ex.train_status()
        assert not running and "status **failed**" in text and "lower learning rate" in text
        assert not (tmp_path / "ck" / f"diverges{SUFFIX}").exists()
    finally:
        ex.close()


# ---- SIGKILL at random moments ------------------------------------------------------------------

SLOW_FSYNC_HOOK = """
import os, time
if os.environ.get("VAE_EXPLORER_TEST_SLOW_FSYNC"):
    _fsync, _delay = os.fsync, float(os.environ["VAE_EXPLORER_TEST_SLOW_FSYNC"])
    def fsync(fd):
        time.sleep(_delay)
        return _fsync(fd)
    os.fsync = fsync
"""


@pytest.mark.subprocess
@pytest.mark.slow
def test_kill_9_at_random_moments_never_breaks_the_checkpoint(tmp_path):
    """Nine training processes, each resuming the last, each killed with SIGKILL at a seeded
    random moment: a third at a random time in [0.5, 3] s after start (imports, data, resume,
    training), a third at a random moment after their first new epoch was saved (training,
    evaluating, saving), and a third while a checkpoint is being written (the temporary file
    exists; fsync is slowed to 0.2 s in the worker so the window can be hit). After every kill
    the checkpoint, when there is one, loads, and its metrics run 1..epoch without gaps; the
    temporary files a kill leaves behind are never listed as checkpoints. A final resume then
    trains exactly the missing epochs."""
    rng = random.Random(20240611)
    folder = tmp_path / "ck"
    out = folder / "run"
    path = folder / f"run{SUFFIX}"
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SLOW_FSYNC_HOOK)
    env = {**ONE_THREAD, "PYTHONPATH": str(hook), "VAE_EXPLORER_TEST_SLOW_FSYNC": "0.2"}
    command = [sys.executable, "-m", "vae_explorer", "train", "--model", "vae", "--dataset", "digits",
               "--epochs", "1000", "--batch-size", "64", "--iwae-k", "4", "--out", str(out), "--resume", "--quiet"]

    def wait_until(condition, proc):
        deadline = time.time() + 60
        while not condition():
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read().decode()[-2000:]
            time.sleep(0.005)

    last_epoch, mid_save_kills = 0, 0
    for round_ in range(9):
        before = path.stat().st_mtime_ns if path.exists() else None
        temps_before = set(_temp_files(folder)) if folder.exists() else set()
        proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        try:
            if round_ % 3 == 0:
                time.sleep(rng.uniform(0.5, 3.0))
            elif round_ % 3 == 1:
                wait_until(lambda b=before: (path.stat().st_mtime_ns if path.exists() else None) != b, proc)
                time.sleep(rng.uniform(0.0, 0.5))
            else:
                wait_until(lambda t=temps_before: folder.exists() and set(_temp_files(folder)) - t, proc)
                time.sleep(rng.uniform(0.0, 0.1))  # inside the slowed fsync: the rename has not happened
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]  # still training when killed
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
            proc.stderr.close()
        temps = set(_temp_files(folder)) if folder.exists() else set()
        if round_ % 3 == 2:
            assert temps - temps_before, "the kill was meant to land mid-save"
            mid_save_kills += 1
        assert all(t.name.startswith(".run.safetensors.") for t in temps), temps
        assert Catalog(folder).names() == (["run"] if path.exists() else [])  # temps are never listed
        if path.exists():
            _, meta = load_checkpoint(path)
            epochs = [m["epoch"] for m in meta["metrics"]]
            assert epochs == list(range(1, meta["epoch"] + 1)), epochs  # resumes continued, never restarted
            assert meta["epoch"] >= last_epoch  # a kill never loses a completed epoch
            last_epoch = meta["epoch"]
    assert mid_save_kills == 3 and last_epoch >= 3, (mid_save_kills, last_epoch)

    # Resume to two epochs past the last saved one: exactly those two are trained.
    final = subprocess.run([*command[:command.index("--epochs") + 1], str(last_epoch + 2),
                            *command[command.index("--epochs") + 2:]], cwd=REPO, capture_output=True, text=True,
                           timeout=300, env=ONE_THREAD)
    assert final.returncode == 0, final.stderr[-2000:]
    summary = json.loads(final.stdout)
    assert summary["epochs"] == last_epoch + 2
    assert [m["epoch"] for m in read_metadata(path)["metrics"]] == list(range(1, last_epoch + 3))
    load_checkpoint(path)


@pytest.mark.subprocess
@pytest.mark.parametrize("precision", ["auto", "fp16"])  # fp16: the loss scaler's state is saved and restored too
def test_resume_after_an_interruption_equals_an_uninterrupted_run(digits, tmp_path, precision):
    def run(stop=None, callback=None, resume=False):
        config = TrainConfig(epochs=4, batch_size=128, seed=3, device="cpu", iwae_k=0, log_every=1,
                             checkpoint=str(tmp_path / "run"), precision=precision)
        return fit(_model("vae", seed=1), digits, config, callback=callback, stop=stop, resume=resume)

    class StopMidEpoch3:
        steps = 0

        def is_set(self):
            return self.steps >= 5

    stop = StopMidEpoch3()

    def count(event):
        if event.kind == "step" and event.epoch == 3:
            stop.steps = event.step

    interrupted = run(stop=stop, callback=count)
    assert interrupted.stopped and len(interrupted.history) == 2  # epoch 3 was half done, not saved
    saved = read_metadata(tmp_path / f"run{SUFFIX}")
    assert saved["epoch"] == 2
    if precision == "fp16":  # one growth-tracker count per step without overflow
        assert saved["train_state"]["grad_scaler"]["_growth_tracker"] == 2 * math.ceil(len(digits.train_x) / 128)
    else:
        assert "grad_scaler" not in saved["train_state"]
    resumed = run(resume=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    if precision == "fp16":  # counted on from the saved state, not from zero
        tracker = read_metadata(tmp_path / f"run{SUFFIX}")["train_state"]["grad_scaler"]["_growth_tracker"]
        assert tracker == 4 * math.ceil(len(digits.train_x) / 128)
    (tmp_path / f"run{SUFFIX}").unlink()
    straight = run()
    for (k, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k  # exact: optimizer moments, RNG and data order were restored
    assert straight.history[-1]["test"] == resumed.history[-1]["test"]


# ---- settings that cannot work ----------------------------------------------------------------

# One table for the page and the CLI: the same settings get the same refusal, word for word.
BAD_SETTINGS = [
    ({"lr": 0.0}, "learning rate must be a positive number"),
    ({"lr": -1e-3}, "learning rate must be a positive number"),
    ({"lr": float("nan")}, "learning rate must be a positive number"),
    ({"lr": float("inf")}, "learning rate must be a positive number"),
    ({"latent_dim": 0}, "latent_dim must be at least 1"),
    ({"latent_dim": 2.5}, "latent_dim must be a whole number"),
    ({"latent_dim": 1e400}, "latent_dim must be a whole number"),
    # Memory: parameters, gradients and Adam's moments alone are over 100 GB; refused before anything is allocated.
    ({"latent_dim": 10_000_000}, "this run needs at least 123.2 GB (parameters 30.8 GB"),
    ({"latent_dim": 2**70}, f"vae cannot be built with these settings (latent_dim={2**70}): a size is too large"),
    ({"batch_size": 100_000}, "larger than the 1438 training images"),
    ({"epochs": 0}, "epochs must be at least 1"),
    ({"seed": 2**70}, "seed must be a whole number from 0 to 2^63 - 1"),
    ({"seed": -1}, "seed must be a whole number from 0 to 2^63 - 1"),
    ({"beta": -1.0}, "beta must be >= 0"),
    ({"beta": float("nan")}, "beta must be a finite number"),
    ({"noise_std": -0.1}, "noise_std does not apply to model vae"),
    ({"model": "gan"}, "unknown model 'gan'"),
    ({"dataset": "imagenet"}, "unknown dataset 'imagenet'"),
    ({"likelihood": "poisson"}, "unknown likelihood 'poisson'"),
    ({"device": "tpu"}, "unknown device 'tpu'"),
    ({"model": "ae", "beta": 4.0}, "beta does not apply to model ae"),
    ({"model": "vq_vae", "ema_decay": 0.9}, "ema_decay applies only with codebook_update ema"),
    ({"model": "vq_vae", "codebook_update": "ema", "ema_decay": 1.5}, "ema_decay must be between 0 and 1"),
    ({"hidden": "a,b"}, "hidden must be comma-separated whole numbers"),
]
# The server's own limits on top (a shared machine; the CLI's user owns theirs).
SERVER_ONLY = [
    ({"epochs": 10_000}, "epochs must be at most 1000"),
    ({"dataset": "folder"}, "dataset 'folder' cannot be trained from the page"),
]


def _page_call(settings: dict) -> dict:
    return {"model": "vae", "epochs": 1, **settings}


@pytest.mark.parametrize("settings,message", BAD_SETTINGS + SERVER_ONLY)
def test_the_server_refuses_before_anything_starts(tmp_path, settings, message):
    call = _page_call(settings)
    named = {k: v for k, v in call.items() if k not in ("model", "dataset")}
    model, data, train = split_settings(named)
    spec = RunSpec(call["model"], model)
    spec.data.dataset = call.get("dataset", "digits")
    spec.train = TrainConfig(**{**vars(spec.train), **train})
    with pytest.raises(JobError, match=re.escape(message)):
        validate_run(spec, "x", tmp_path)
    assert not list(tmp_path.iterdir())


def test_explorer_refuses_bad_settings_and_starts_nothing(tmp_path):
    ex = Explorer(tmp_path / "ck")
    for settings, message in BAD_SETTINGS + SERVER_ONLY:
        with pytest.raises(ViewError, match=re.escape(message)):
            ex.train_start(**_page_call(settings))
        assert ex.jobs.current is None
    with pytest.raises(ViewError, match="unknown setting 'learning_rate'"):
        ex.train_start(model="vae", learning_rate=1e-3)  # a setting that does not exist
    with pytest.raises(ViewError, match="unknown setting 'warmup'"):
        ex.train_start(model="vae", extra="warmup=3")  # nor in the extra settings box
    with pytest.raises(ViewError, match="is not a setting: write name=value"):
        ex.train_start(model="vae", extra="beta 4")
    assert ex.jobs.current is None and not (tmp_path / "ck").exists()
    text, _, _, running = ex.train_status()
    assert not running and "No training yet" in text


@pytest.mark.parametrize("settings,message", BAD_SETTINGS)
def test_cli_refuses_the_same_settings_with_the_same_words(tmp_path, capsys, settings, message):
    argv = []
    for name, value in _page_call(settings).items():
        argv += ["--" + name.replace("_", "-"), str(value)]
    code = cli.main(["train", *argv, "--out", str(tmp_path / "x"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not list(tmp_path.iterdir())


# ---- a GPU out of memory --------------------------------------------------------------------

def _oom(*args, **kwargs):
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 7.79 GiB total)")


@contextlib.contextmanager
def _cli_side_effects():
    """`train` is meant for its own process: keep its SIGTERM handler and thread count out of pytest's."""
    handler, threads = signal.getsignal(signal.SIGTERM), torch.get_num_threads()
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, handler)
        torch.set_num_threads(threads)


def test_the_cli_reports_out_of_memory_as_an_event(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(cli, "fit", _oom)
    with _cli_side_effects():
        code = cli.main(["train", "--model", "ae", "--epochs", "1", "--threads", "1", "--events",
                         "--out", str(tmp_path / "oom")])
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 1
    assert events[-1]["kind"] == "error"
    assert events[-1]["message"] == "the GPU ran out of memory: lower the batch size or pick the CPU"
    assert not list(tmp_path.iterdir())


@pytest.mark.subprocess
def test_job_reports_out_of_memory_and_the_next_job_runs(monkeypatch, tmp_path):
    # The worker is a subprocess: a sitecustomize on its PYTHONPATH makes its fit raise CUDA OOM.
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os\n"
        "if os.environ.get('VAE_EXPLORER_TEST_OOM'):\n"
        "    import torch\n"
        "    import vae_explorer.training as training\n"
        "    def fit(*args, **kwargs):\n"
        "        raise torch.cuda.OutOfMemoryError('CUDA out of memory. Tried to allocate 20.00 GiB')\n"
        "    training.fit = fit\n")
    monkeypatch.setenv("PYTHONPATH", str(hook))
    monkeypatch.setenv("VAE_EXPLORER_TEST_OOM", "1")
    folder = tmp_path / "ck"
    ex = Explorer(folder)
    try:
        ex.train_start(model="ae", dataset="digits", epochs=1, device="cpu", name="first")
        job = _wait(ex.jobs.current)
        assert job.status == "failed"
        assert job.message == "the GPU ran out of memory: lower the batch size or pick the CPU"
        text, _, _, running = ex.train_status()
        assert not running and "status **failed**" in text and "the GPU ran out of memory" in text

        monkeypatch.delenv("VAE_EXPLORER_TEST_OOM")  # the manager is free: the next run trains
        ex.train_start(model="ae", dataset="digits", epochs=1, device="cpu", name="second")
        job = _wait(ex.jobs.current)
        assert job.status == "finished", (job.status, job.message)
        assert ex.catalog.names() == ["second"]
        load_checkpoint(folder / f"second{SUFFIX}")
    finally:
        ex.close()


@pytest.mark.subprocess
def test_a_worker_that_dies_is_reported(tmp_path):
    # A crash the worker cannot report itself (killed from outside) still ends as a failed job with the exit code.
    jobs = TrainingJobs(tmp_path)
    try:
        job = jobs.start(RunSpec("ae", train=TrainConfig(epochs=1000, device="cpu")), "dies")
        deadline = time.time() + 60
        while job.status == "starting" and time.time() < deadline:
            time.sleep(0.05)
        assert job.status == "running", job.message
        job._process.send_signal(signal.SIGKILL)
        _wait(job)
        assert job.status == "failed" and f"exit code {-signal.SIGKILL}" in job.message
        again = jobs.start(RunSpec("ae", train=TrainConfig(epochs=1000, device="cpu")), "after")  # not stuck as busy
        assert jobs.current is again and again.running
        jobs.cancel()
        assert again.status == "cancelled"
    finally:
        jobs.close()
