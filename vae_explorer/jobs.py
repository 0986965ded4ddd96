"""Training in the background: one worker subprocess per run, one run per server.

The server starts `python -m vae_explorer.jobs SPEC_JSON`; the worker calls `fit`
and prints one JSON line per event (progress, epoch metrics, reconstructions).
A reader thread in the server folds the lines into a `Job` that the UI polls.
A subprocess rather than a thread: training gets its own interpreter (no GIL
contention with the page), imports only torch, and a crash cannot take the
server down. Cancel = SIGTERM, which the worker turns into fit's stop flag; it
is killed if it has not stopped a second later. Checkpoints are written
atomically after each epoch, so any stop keeps the last completed epoch.

Jobs are deliberately server-wide: every browser tab sees the running job and
can cancel it; closing the tab that started it does not stop it.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path

import numpy as np

from .catalog import NAME_PATTERN
from .checkpoints import SUFFIX

MAX_EPOCHS = 1000
MAX_CURVE_POINTS = 600
STEP_EVENT_INTERVAL = 0.25  # seconds between progress lines from the worker (epoch lines always go)


class JobError(ValueError):
    """A training request refused before anything starts; the message says why."""


@dataclass
class TrainSpec:
    """What the Train tab asks for. Model fields the chosen model lacks (β for an AE) are ignored."""

    model: str = "vae"
    dataset: str = "digits"
    latent_dim: int = 2
    beta: float = 1.0  # VAEs
    likelihood: str = "bernoulli"
    noise_std: float = 0.0  # AEs: Gaussian input noise for denoising training
    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 128
    device: str = "auto"
    seed: int = 0
    name: str = ""  # checkpoint stem; empty = "{model}_{dataset}_{time}"
    data_root: str | None = None
    threads: int = 0  # torch CPU threads in the worker; 0 = all cores but one

    def model_overrides(self) -> dict:
        from .models import MODELS

        _, preset = MODELS[self.model]
        allowed = {f.name for f in fields(type(preset))}
        wanted = {"latent_dim": self.latent_dim, "beta": self.beta, "likelihood": self.likelihood,
                  "noise_std": self.noise_std}
        return {k: v for k, v in wanted.items() if k in allowed}


def validate_spec(spec: TrainSpec, checkpoint_dir: Path) -> TrainSpec:
    """Check everything that can be checked before a process starts; returns the spec with its name set."""
    from .data import DATASETS, DatasetError, load_dataset
    from .models import LIKELIHOODS, MODELS, model_config
    from .training import TrainConfig

    if spec.model not in MODELS:
        raise JobError(f"unknown model {spec.model!r}; choose one of: {', '.join(MODELS)}")
    if spec.dataset not in DATASETS or spec.dataset == "folder":
        raise JobError(f"unknown dataset {spec.dataset!r}; choose one of: digits, mnist, fashion_mnist, cifar10")
    if spec.likelihood not in LIKELIHOODS:
        raise JobError(f"unknown likelihood {spec.likelihood!r}; choose one of: {', '.join(LIKELIHOODS)}")
    for what, value in (("latent dim", spec.latent_dim), ("epochs", spec.epochs), ("batch size", spec.batch_size)):
        if not float(value).is_integer() or value < 1:
            raise JobError(f"{what} must be a whole number of at least 1, got {value}")
    if spec.epochs > MAX_EPOCHS:
        raise JobError(f"epochs must be at most {MAX_EPOCHS}, got {spec.epochs}")
    if not (spec.lr > 0 and math.isfinite(spec.lr)):
        raise JobError(f"learning rate must be a positive number, got {spec.lr}")
    if not (spec.beta >= 0 and math.isfinite(spec.beta)):
        raise JobError(f"β must be zero or positive, got {spec.beta}")
    if not (spec.noise_std >= 0 and math.isfinite(spec.noise_std)):
        raise JobError(f"noise must be zero or positive, got {spec.noise_std}")
    spec.latent_dim, spec.epochs, spec.batch_size = int(spec.latent_dim), int(spec.epochs), int(spec.batch_size)
    try:
        data = load_dataset(spec.dataset, spec.data_root)
        model_config(spec.model, input_shape=data.input_shape, **spec.model_overrides())
        TrainConfig(epochs=spec.epochs, batch_size=spec.batch_size, lr=spec.lr, device=spec.device).validate(data)
    except (DatasetError, ValueError, TypeError) as e:
        raise JobError(str(e)) from None
    name = spec.name.strip() or f"{spec.model}_{spec.dataset}_{datetime.now():%Y%m%d-%H%M%S}"
    if name.endswith(SUFFIX):
        name = name[: -len(SUFFIX)]
    if not NAME_PATTERN.fullmatch(name):
        raise JobError(f"{name!r} is not a usable checkpoint name: letters, digits, '_', '-', '.', no folders")
    if (checkpoint_dir / f"{name}{SUFFIX}").exists():
        raise JobError(f"a checkpoint named {name!r} exists already; choose another name (nothing is overwritten)")
    spec.name = name
    return spec


@dataclass
class Job:
    """A training run as the UI sees it; updated by the reader thread, read by polls."""

    spec: TrainSpec
    checkpoint: Path
    started: float = field(default_factory=time.time)
    status: str = "starting"  # starting | running | finished | cancelled | failed
    message: str = ""
    device: str = ""
    steps: list[dict] = field(default_factory=list)  # {"x": epochs done, "train": {...}}
    epochs: list[dict] = field(default_factory=list)  # {"epoch", "train", "test", "images_per_s"}
    fixed: np.ndarray | None = None  # (n, C, H, W) uint8 test images reconstructed each epoch
    recons: list[np.ndarray] = field(default_factory=list)  # per epoch, like `fixed`
    progress: dict = field(default_factory=dict)  # the latest event's epoch/step/images_per_s/elapsed
    finished: float | None = None
    version: int = 0  # bumped by every event: a poll that sees the same version has nothing new to draw
    _process: subprocess.Popen | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def running(self) -> bool:
        return self.status in ("starting", "running")

    def eta_seconds(self) -> float | None:
        p = self.progress
        if not p or not p.get("steps_per_epoch"):
            return None
        done = (p["epoch"] - 1) + p["step"] / p["steps_per_epoch"]  # epochs done, fractional
        return p["elapsed"] / done * (p["epochs"] - done) if done > 0 else None

    def handle(self, event: dict) -> None:
        with self._lock:
            kind = event.get("kind")
            if kind == "start":
                self.status, self.device = "running", event["device"]
                self.fixed = np.asarray(event["fixed"], dtype=np.uint8)
            elif kind in ("step", "epoch"):
                self.progress = {k: event[k] for k in ("epoch", "epochs", "step", "steps_per_epoch",
                                                       "images_per_s", "elapsed")}
                x = event["epoch"] - 1 + event["step"] / max(event["steps_per_epoch"], 1)
                self.steps.append({"x": x, "train": event["train"]})
                if len(self.steps) > MAX_CURVE_POINTS:  # thin out: every poll redraws all points
                    self.steps = self.steps[::2]
                if kind == "epoch":
                    self.epochs.append({"epoch": event["epoch"], "train": event["train"], "test": event["test"],
                                        "images_per_s": event["images_per_s"]})
                    self.recons.append(np.asarray(event["recon"], dtype=np.uint8))
            self.version += 1
            if kind == "done":
                self.status = "cancelled" if event.get("stopped") else "finished"
                self.message = event.get("message", "")
            elif kind == "error":
                self.status, self.message = "failed", event["message"]

    def snapshot(self) -> dict:
        """A consistent copy for one poll."""
        with self._lock:
            return {"status": self.status, "message": self.message, "device": self.device,
                    "steps": list(self.steps), "epochs": list(self.epochs), "fixed": self.fixed,
                    "recons": list(self.recons), "progress": dict(self.progress), "name": self.spec.name,
                    "spec": asdict(self.spec), "eta": self.eta_seconds()}


class JobBusy(JobError):
    """Another run is in progress."""


class TrainingJobs:
    """At most one training run per server."""

    def __init__(self, checkpoint_dir: str | Path, data_root: str | None = None, cancel_grace: float = 1.0):
        self.checkpoint_dir = Path(checkpoint_dir).resolve()
        self.data_root = data_root
        self.cancel_grace = cancel_grace
        self._lock = threading.Lock()
        self.current: Job | None = None

    def start(self, spec: TrainSpec) -> Job:
        spec.data_root = self.data_root
        with self._lock:
            if self.current is not None and self.current.running:
                c = self.current
                raise JobBusy(f"a training is already running ({c.spec.model} on {c.spec.dataset}, "
                              f"checkpoint {c.spec.name}); wait for it to finish or cancel it first")
            spec = validate_spec(spec, self.checkpoint_dir)
            if spec.threads <= 0:
                spec.threads = max(1, (os.cpu_count() or 2) - 1)  # leave a core to the page
            job = Job(spec, self.checkpoint_dir / f"{spec.name}{SUFFIX}")
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            log = tempfile.TemporaryFile(mode="w+b")
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            root = str(Path(__file__).resolve().parent.parent)
            env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
            job._process = subprocess.Popen(
                [sys.executable, "-m", "vae_explorer.jobs", json.dumps({**asdict(spec), "out": str(job.checkpoint)})],
                stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, env=env, cwd=root)
            threading.Thread(target=self._read, args=(job, log), daemon=True, name="training-reader").start()
            self.current = job
            return job

    @staticmethod
    def _read(job: Job, log) -> None:
        proc = job._process
        for line in proc.stdout:
            try:
                job.handle(json.loads(line))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # a stray print from a library: not an event
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


# ---- the worker process ---------------------------------------------------------------

def _emit(event: dict) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def _worker(args: dict) -> int:
    import torch

    from .data import load_dataset
    from .models import build_model, model_config
    from .training import TrainConfig, TrainingError, fit, resolve_device

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    out = args.pop("out")
    spec = TrainSpec(**{k: v for k, v in args.items() if k in {f.name for f in fields(TrainSpec)}})
    torch.set_num_threads(spec.threads)
    try:
        os.nice(10)  # the page's requests come first: a slider must not wait for a training step
    except OSError:
        pass
    try:
        data = load_dataset(spec.dataset, spec.data_root)
        model = build_model(spec.model, model_config(spec.model, input_shape=data.input_shape, **spec.model_overrides()))
        device = resolve_device(spec.device)
        steps_per_epoch = math.ceil(len(data.train_x) / spec.batch_size)
        config = TrainConfig(epochs=spec.epochs, batch_size=spec.batch_size, lr=spec.lr, seed=spec.seed,
                             device=str(device), checkpoint=out, log_every=max(1, min(50, steps_per_epoch // 8)),
                             iwae_images=200)
        label = str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
        _emit({"kind": "start", "device": label, "fixed": data.test_x[: config.history_images].tolist()})

        last = [0.0]

        def callback(e):
            now = time.perf_counter()
            if e.kind == "step" and now - last[0] < STEP_EVENT_INTERVAL:
                return  # small datasets report many steps a second: the page needs a few
            last[0] = now
            event = {k: getattr(e, k) for k in ("kind", "epoch", "epochs", "step", "steps_per_epoch",
                                                 "images_per_s", "elapsed", "train", "test")}
            if e.recon is not None:
                event["recon"] = (e.recon.clamp(0, 1) * 255 + 0.5).to(torch.uint8).tolist()
            _emit(event)

        result = fit(model, data, config, callback=callback, stop=stop,
                     dataset_info={"root": spec.data_root, "image_size": None, "channels": None})
        _emit({"kind": "done", "stopped": result.stopped, "epochs": len(result.history)})
        return 0
    except torch.cuda.OutOfMemoryError:
        _emit({"kind": "error", "message": "the GPU ran out of memory: lower the batch size or pick the CPU"})
    except (TrainingError, ValueError) as e:
        _emit({"kind": "error", "message": str(e)})
    except Exception as e:  # anything else still reaches the page as a message
        _emit({"kind": "error", "message": f"{type(e).__name__}: {e}"})
    return 1


if __name__ == "__main__":
    sys.exit(_worker(json.loads(sys.argv[1])))
