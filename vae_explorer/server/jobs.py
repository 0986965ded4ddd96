"""Training in the background: one CLI process per run, one run per server.

The server starts `python -m vae_explorer train <the RunSpec's flags> --events`
and a reader thread folds the JSON `TrainEvent` lines it prints into a `Job`
that the page polls. A subprocess rather than a thread: training gets its own
interpreter (no GIL contention with the page), imports only torch, and a crash
cannot take the server down. Cancel = SIGTERM, which the CLI turns into fit's
stop flag; it is killed if it has not stopped a second later. Checkpoints are
written atomically after each epoch, so any stop keeps the last completed epoch.

Jobs are deliberately server-wide: every browser tab sees the running job and
can cancel it; closing the tab that started it does not stop it. Across servers
(replicas of the app over one checkpoints folder) a lock file limits training
to one run per lock: the training process holds an flock on it for as long as
it lives, so another server's page is told who is training instead of starting
a second run on the same CPUs.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: no lock across servers; one run per server still holds
    fcntl = None

from ..checkpoints import SUFFIX
from ..cli import LOCK_FD_ENV
from ..data import DATASETS
from ..runs import RunError, RunSpec
from ..training import TrainEvent
from .catalog import NAME_PATTERN

MAX_EPOCHS = 1000
TABLES_FOLDER = "tables"  # under the checkpoints folder: tables uploaded from the page, kept for their checkpoints
MAX_CURVE_POINTS = 600
LOCK_NAME = ".training.lock"  # under the checkpoints folder unless the server is given another lock file


class JobError(ValueError):
    """A training request refused before anything starts; the message says why."""


# How the refusal of a run too big for the memory tells a page's user who can change the limit.
MEMORY_HINT = "the server's --train-memory-limit (its operator sets it)"


def validate_run(spec: RunSpec, name: str, checkpoint_dir: Path) -> tuple[RunSpec, str]:
    """The run's own checks (RunSpec.validate, the same as the CLI's, and the memory it needs within
    spec.memory_limit) plus the server's: page datasets only, at most MAX_EPOCHS, a fresh checkpoint name
    inside the folder. Returns the spec and its name."""
    try:
        spec.validate()
        if not DATASETS[spec.data.dataset].trainable_from_page:
            pickable = [n for n, d in DATASETS.items() if d.trainable_from_page]
            raise RunError(f"dataset {spec.data.dataset!r} cannot be trained from the page; choose one of: "
                           f"{', '.join(pickable)}")
        if spec.data.data_file is not None and \
                Path(spec.data.data_file).resolve().parent != (checkpoint_dir / TABLES_FOLDER).resolve():
            raise RunError("the page trains on tables uploaded through it only: upload the file on the Train tab")
        if spec.train.epochs > MAX_EPOCHS:
            raise RunError(f"epochs must be at most {MAX_EPOCHS} on this server, got {spec.train.epochs}")
        data = spec.load_data(MEMORY_HINT)
        # The model can be built for the data and fits in RAM; the training process checks the GPU's memory
        # itself, where CUDA lives anyway.
        spec.check_memory(data, gpu=False, hint=MEMORY_HINT)
    except RunError as e:
        raise JobError(str(e)) from None
    name = str(name or "").strip() or spec.default_name()
    if name.endswith(SUFFIX):
        name = name[: -len(SUFFIX)]
    if not NAME_PATTERN.fullmatch(name):
        raise JobError(f"{name!r} is not a usable checkpoint name: letters, digits, '_', '-', '.', no folders")
    if (checkpoint_dir / f"{name}{SUFFIX}").exists():
        raise JobError(f"a checkpoint named {name!r} exists already; choose another name (nothing is overwritten)")
    spec.out = str(checkpoint_dir / name)
    return spec, name


@dataclass
class Job:
    """A training run as the UI sees it; updated by the reader thread, read by polls."""

    spec: RunSpec
    name: str
    checkpoint: Path
    started: float = field(default_factory=time.time)
    status: str = "starting"  # starting | running | finished | cancelled | failed
    message: str = ""
    device: str = ""
    steps: list[TrainEvent] = field(default_factory=list)  # step and epoch events: the curves
    epochs: list[TrainEvent] = field(default_factory=list)  # epoch events (with reconstructions)
    first: TrainEvent | None = None  # the start event (with the fixed test items)
    latest: TrainEvent | None = None  # the last step or epoch event: progress
    finished: float | None = None
    version: int = 0  # bumped by every event: a poll that sees the same version has nothing new to draw
    _process: subprocess.Popen | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def running(self) -> bool:
        return self.status in ("starting", "running")

    def eta_seconds(self) -> float | None:
        p = self.latest
        if p is None or not p.steps_per_epoch:
            return None
        done = (p.epoch - 1) + p.step / p.steps_per_epoch  # epochs done, fractional
        return p.elapsed / done * (p.epochs - done) if done > 0 else None

    def handle(self, event: TrainEvent) -> None:
        with self._lock:
            if event.kind == "start":
                self.status, self.device, self.first = "running", event.device, event
            elif event.kind in ("step", "epoch"):
                self.latest = event
                self.steps.append(event)
                if len(self.steps) > MAX_CURVE_POINTS:  # thin out: every poll redraws all points
                    self.steps = self.steps[::2]
                if event.kind == "epoch":
                    self.epochs.append(event)
            elif event.kind == "done":
                self.status = "cancelled" if event.stopped else "finished"
                self.message = event.message
            elif event.kind == "error":
                self.status, self.message = "failed", event.message
            self.version += 1

    def epochs_done(self) -> int:
        """Epochs finished so far (cheap: no copy)."""
        with self._lock:
            return len(self.epochs)

    def snapshot(self) -> dict:
        """A consistent copy for one poll."""
        with self._lock:
            return {"status": self.status, "message": self.message, "device": self.device, "name": self.name,
                    "steps": list(self.steps), "epochs": list(self.epochs), "first": self.first,
                    "latest": self.latest, "spec": self.spec, "eta": self.eta_seconds()}


class JobBusy(JobError):
    """Another run is in progress."""


def take_lock(path: Path) -> int | None:
    """An open descriptor of `path` holding an exclusive flock, or JobBusy naming the run that holds it.
    None where flock does not exist. The lock belongs to the open file, so a child given the descriptor keeps
    it after this process closes its copy, and the kernel drops it when the last holder exits, however it ends
    (no stale lock after a crash or a kill)."""
    if fcntl is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
        except (OSError, ValueError):
            holder = {}
        os.close(fd)
        what = (f" ({holder.get('model')} on {holder.get('dataset')}, checkpoint {holder.get('name')}, started "
                f"{time.strftime('%H:%M:%S', time.localtime(holder.get('started', 0)))} by the page server with "
                f"pid {holder.get('server_pid')} on {holder.get('host')})" if holder.get("name") else "")
        raise JobBusy(f"a training is already running on this machine, started from another page server{what}; "
                      "wait for it to finish or cancel it from that server's page") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


class TrainingJobs:
    """At most one training run per server, and per lock file across the servers that share it."""

    def __init__(self, checkpoint_dir: str | Path, data_root: str | None = None, cancel_grace: float = 1.0,
                 memory_limit: float | None = None, lock_file: str | Path | None = None):
        self.checkpoint_dir = Path(checkpoint_dir).resolve()
        # Default: replicas over one checkpoints folder share one limit. Replicas on several machines over a
        # network folder each give a file on their own machine (app.py --train-lock), one limit per machine.
        self.lock_file = Path(lock_file).resolve() if lock_file else self.checkpoint_dir / LOCK_NAME
        self.data_root = data_root
        self.memory_limit = memory_limit  # GB a run may use; None: the run's default share of what is free
        self.cancel_grace = cancel_grace
        self._lock = threading.Lock()
        self.current: Job | None = None

    def start(self, spec: RunSpec, name: str = "") -> Job:
        spec.data.data_root = self.data_root
        spec.memory_limit = self.memory_limit  # the operator's, whatever a page sent
        with self._lock:
            if self.current is not None and self.current.running:
                c = self.current
                raise JobBusy(f"a training is already running ({c.spec.model} on {c.spec.data.dataset}, "
                              f"checkpoint {c.name}); wait for it to finish or cancel it first")
            spec, name = validate_run(spec, name, self.checkpoint_dir)
            if not spec.train.threads:
                spec.train.threads = max(1, (os.cpu_count() or 2) - 1)  # leave a core to the page
            job = Job(spec, name, self.checkpoint_dir / f"{name}{SUFFIX}")
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            log = tempfile.TemporaryFile(mode="w+b")
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            root = str(Path(__file__).resolve().parents[2])
            env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
            lock = None
            try:
                lock = take_lock(self.lock_file)
                if lock is not None:  # who trains, for the message another server shows
                    os.ftruncate(lock, 0)
                    os.pwrite(lock, json.dumps({"model": spec.model, "dataset": spec.data.dataset, "name": name,
                                                "started": job.started, "server_pid": os.getpid(),
                                                "host": socket.gethostname()}).encode(), 0)
                # The training process inherits the locked descriptor: the lock lives as long as it, or until it
                # closes it as the run ends (LOCK_FD_ENV).
                if lock is not None:
                    env[LOCK_FD_ENV] = str(lock)
                job._process = subprocess.Popen(
                    [sys.executable, "-m", "vae_explorer", "train", *spec.to_argv(), "--events"],
                    stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, env=env, cwd=root,
                    pass_fds=() if lock is None else (lock,))
            except BaseException:
                log.close()
                raise
            finally:
                if lock is not None:
                    os.close(lock)
            try:  # the page's requests come first: a slider must not wait for a training step
                os.setpriority(os.PRIO_PROCESS, job._process.pid, 10)
            except OSError:
                pass
            threading.Thread(target=self._read, args=(job, log), daemon=True, name="training-reader").start()
            self.current = job
            return job

    @staticmethod
    def _read(job: Job, log) -> None:
        proc = job._process
        for line in proc.stdout:
            try:
                event = TrainEvent.from_dict(json.loads(line))
            except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
                continue  # a stray print from a library: not an event
            job.handle(event)
        code = proc.wait()
        with job._lock:
            job.finished = time.time()
            job.version += 1
            if job.status in ("starting", "running"):
                if job.status == "starting" and code in (-signal.SIGTERM, -signal.SIGKILL):
                    job.status, job.message = "cancelled", "cancelled before the first step"
                else:
                    log.seek(0)
                    tail = log.read().decode(errors="replace").strip().splitlines()[-3:]
                    job.status = "failed"
                    job.message = f"the training process ended unexpectedly (exit code {code}): {' '.join(tail)[-400:]}"
        log.close()

    def cancel(self) -> Job | None:
        """Stop the running job: SIGTERM (the worker stops after its current step), SIGKILL after the grace time."""
        job = self.current
        if job is None or not job.running or job._process is None:
            return job
        proc = job._process
        try:
            proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        # The worker reports "done" as soon as fit sees the flag (one step); its exit can take longer.
        deadline = time.time() + self.cancel_grace
        while job.running and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        if job.running and proc.poll() is None:
            proc.kill()  # safe: checkpoints are replaced atomically, the last complete one stays
        deadline = time.time() + 0.5
        while job.running and time.time() < deadline:  # let the reader fold in the last lines
            time.sleep(0.01)
        with job._lock:
            job.version += 1
            if job.running:
                job.status = "cancelled"
            if job.status == "cancelled":
                saved = len(job.epochs)
                job.message = (f"cancelled; the checkpoint keeps epoch {saved}" if saved and job.checkpoint.is_file()
                               else "cancelled before the first epoch ended: nothing was saved")
        return job

    def close(self) -> None:
        if self.current is not None and self.current.running:
            self.cancel()
