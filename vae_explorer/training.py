"""The training loop: synchronous, model-agnostic (`out = model(x); out.loss.backward()`),
seeded, resumable, with a per-step callback and a stop flag. Running it in the
background is the caller's business (the server runs the CLI in a subprocess).

Data lives on the training device in its stored form (uint8 images); each step
slices a shuffled index batch and the data kind prepares it, so there is no
per-item DataLoader. Under torchrun the same entry point runs
DistributedDataParallel (NCCL on GPU, gloo on CPU); rank 0 evaluates, reports and saves.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from typing import Callable, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from .checkpoints import (checkpoint_path, load_checkpoint, load_motion, load_train_state, read_metadata,
                          restore_train_state, save_checkpoint, train_state)
from .data import Dataset
from .latent import ACTIVE_VARIANCE, encode_items, latent_usage
from .devices import PRECISIONS, autocast, choose_precision, describe_device, resolve_device
from .metrics import evaluate
from .models import Autoencoder, setting
from .motion import MotionRecord
from .optim import make_optimizer, set_lr


class TrainingError(RuntimeError):
    """Training cannot go on (diverged, bad resume file); the message says why."""


@dataclass
class TrainConfig:
    epochs: int = setting(10, "passes over the training set")
    batch_size: int = setting(128, "items per step")
    lr: float = setting(1e-3, "the learning rate")
    optimizer: str = setting("auto", "adam, adamw, or auto: the model's own choice (Adam; AdamW for table models)",
                             choices=("auto", "adam", "adamw"))
    weight_decay: float | None = setting(None, "AdamW's decoupled weight decay (default: the model's, or 0.01)")
    schedule: str = setting("auto", "learning-rate schedule: constant, cosine_restarts (cosine annealing with warm "
                            "restarts), or auto: the model's own", choices=("auto", "constant", "cosine_restarts"))
    restart_epochs: int = setting(0, "epochs between warm restarts of cosine_restarts; 0 = the model's (25)")
    seed: int = setting(0, "seeds the weights, the shuffling and the noise: the same seed, the same run")
    device: str = setting("auto", "auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps")
    precision: str = setting("auto", "auto: bf16 autocast where it is faster (a CUDA GPU; a CPU with native "
                             "bf16 for models of over 1 MFLOP per item), else fp32; fp16 scales the loss",
                             choices=PRECISIONS)
    iwae_k: int = setting(16, "importance samples for the per-epoch IWAE bound of models that have one; 0 = off")
    iwae_images: int = setting(500, "test items the per-epoch IWAE bound uses (the eval command uses them all)")
    history_images: int = setting(8, "fixed test items reconstructed after every epoch")
    motion_items: int = setting(500, "fixed test items (seeded) whose 2-D map is recorded after every epoch and kept "
                                "in the checkpoint, to play how the codes moved (Training in motion); 0 = off")
    motion_frames: int = setting(30, "most epochs' maps a checkpoint keeps: every epoch up to this many, then the "
                                 "first few and evenly spaced ones")
    eval_items: int = setting(10_000, "test items evaluated after every epoch: an evenly spaced, fixed subset when the "
                              "test split is larger (KDD's 247,010 rows cost more than an epoch's training); 0 = all")
    compile: bool = setting(False, "torch.compile the forward pass (the first steps pay seconds of compilation)")
    log_every: int = setting(0, "steps between progress reports (each costs one host sync); 0 = about 8 an epoch, "
                             "at most every 50 steps")
    threads: int = setting(0, "torch CPU threads; 0 = torch's default")
    checkpoint: str | None = setting(None, "checkpoint path, written atomically after every epoch", cli=False)

    def validate(self, data: Dataset | None = None) -> None:
        """Raise ValueError with a clear message for settings that cannot work."""
        whole = {f.name: getattr(self, f.name) for f in fields(self) if f.type == "int"}
        for name, value in whole.items():
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be a whole number, got {value!r}")
        if not 0 <= self.seed < 2**63:  # torch's generators take 64-bit seeds; the epoch order adds to it
            raise ValueError(f"seed must be a whole number from 0 to 2^63 - 1, got {self.seed}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {self.batch_size}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"learning rate must be a positive number, got {self.lr}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.weight_decay is not None and not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ValueError(f"weight decay must be a number >= 0, got {self.weight_decay}")
        if self.weight_decay is not None and self.optimizer == "adam":
            raise ValueError("weight decay applies to the adamw optimizer, not adam")
        for name in ("iwae_k", "iwae_images", "history_images", "motion_items", "eval_items", "log_every", "threads",
                     "restart_epochs"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.motion_frames < 2:
            raise ValueError(f"motion_frames must be at least 2 (the first and the latest epoch), got "
                             f"{self.motion_frames}")
        if data is not None and self.batch_size > len(data.train_x):
            raise ValueError(f"batch size {self.batch_size} is larger than the {len(data.train_x)} training "
                             f"{data.kind.item}s")
        resolve_device(self.device)


EVENT_KINDS = ("start", "step", "epoch", "done", "error")


@dataclass
class TrainEvent:
    """What a training run reports, in process (fit's callback) and as JSON lines (`train --events`)."""

    kind: str  # start | step (every log_every steps) | epoch (after evaluation and checkpoint) | done | error
    epoch: int = 0  # 1-based
    epochs: int = 0
    step: int = 0  # steps done in this epoch
    steps_per_epoch: int = 0
    images_per_s: float = 0.0  # this epoch so far
    elapsed: float = 0.0  # seconds since fit started
    device: str = ""
    train: dict[str, float] = field(default_factory=dict)  # running means of the loss terms this epoch
    test: dict[str, float] = field(default_factory=dict)  # epoch events: evaluate() on the test set
    items: object = None  # start: the fixed test items (stored form); epoch: their reconstructions
    message: str = ""  # done / error: what happened
    stopped: bool = False  # done: the stop flag ended the run early
    checkpoint: str = ""  # where the run saves
    # start: the recorded map's items ({"labels", "classes", "projection", "axes"}); epoch: its frame ({"epoch",
    # "points": [[x, y], ...]}). None when motion_items is 0.
    motion: dict | None = None
    latent: dict | None = None  # epoch events of models with a posterior: epoch_usage (kl_per_dim, variance...)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["items"] = None if self.items is None else self.items.tolist()  # images: nested lists; tables: a dict
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainEvent":
        if d.get("kind") not in EVENT_KINDS:
            raise ValueError(f"not a training event: {str(d)[:80]}")
        known = {f.name for f in fields(cls)}
        event = cls(**{k: v for k, v in d.items() if k in known})
        if isinstance(event.items, list):  # stored images; a table's rows stay a dict
            event.items = torch.tensor(event.items, dtype=torch.uint8)
        return event


@dataclass
class FitResult:
    model: Autoencoder
    history: list[dict]  # one record per completed epoch: train/test metrics, time, images/s
    stopped: bool  # the stop flag ended training early
    device: str
    recon_history: list[torch.Tensor]  # per epoch, of the fixed test items
    motion: MotionRecord | None = None  # the map of a fixed set of test codes after each epoch (thinned)


class StopFlag(Protocol):
    def is_set(self) -> bool: ...


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)  # seeds CUDA too


def _keep_eager(net: torch.nn.Module) -> None:
    """Run each module's `eager_methods` outside compiled graphs (torch.compiler.disable)."""
    for module in net.modules():
        for name in getattr(module, "eager_methods", ()):
            if name not in vars(module):  # not wrapped yet (a second fit on the same model keeps the first wrap)
                setattr(module, name, torch.compiler.disable(getattr(module, name)))


def _loss_function(net: torch.nn.Module, autocast_context, compile: bool, batch_size: int = 0):
    """x -> (loss, term values stacked as [loss, *terms]) with names in `names`.

    compile: the forward pass goes through torch.compile (falling back to eager where
    compilation fails). Compiled code serves full batches of `batch_size` only: the
    epoch's last, smaller batch runs eagerly rather than paying seconds for a second
    compilation. The names are collected outside the compiled function, where a list
    that changes after the first call would force a recompilation at the second.
    """
    names: list[str] = []

    def forward(x):
        with autocast_context:
            out = net(x)
        return out.loss, out.terms

    def stacked(loss, terms):
        if not names:
            names.extend(["loss", *terms])
        return loss, torch.stack([loss, *terms.values()]).detach().float()

    if not compile:
        return lambda x: stacked(*forward(x)), names
    _keep_eager(net)
    compiled = torch.compile(forward, dynamic=False)
    state = {"fn": compiled}

    def guarded(x):
        if len(x) != batch_size:
            return stacked(*forward(x))
        if state["fn"] is compiled:
            try:
                return stacked(*compiled(x))
            except Exception as e:  # no C compiler, unsupported op...: train on, uncompiled
                warnings.warn(f"torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                              "training on without it")
                state["fn"] = forward
        return stacked(*state["fn"](x))

    return guarded, names


def _epoch_permutation(n: int, seed: int, epoch: int, device) -> torch.Tensor:
    # Derived from (seed, epoch) alone, so a resumed run sees the same order, and so do all DDP ranks.
    # Taken modulo 2^64, the generator's seed range (unchanged for every seed below 2^44).
    g = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2**64)
    return torch.randperm(n, generator=g).to(device)


def _how_to_train(model: Autoencoder, config: TrainConfig) -> dict:
    """The optimizer and schedule of a run: the config's where it names them, else the model's defaults."""
    defaults = model.training_defaults()
    how = {"optimizer": config.optimizer if config.optimizer != "auto" else defaults.get("optimizer", "adam"),
           "schedule": config.schedule if config.schedule != "auto" else defaults.get("schedule", "constant"),
           "restart_epochs": config.restart_epochs or defaults.get("restart_epochs", 25)}
    if how["optimizer"] == "adamw":
        how["weight_decay"] = config.weight_decay if config.weight_decay is not None \
            else defaults.get("weight_decay", 1e-2)
        how["eps"] = defaults.get("eps", 1e-8)
    return how


def _cosine_restart_lr(lr: float, epoch: float, period: int) -> float:
    """Cosine annealing with warm restarts (Loshchilov & Hutter 2017, torch's CosineAnnealingWarmRestarts with
    T_0 = period, T_mult = 1, eta_min = 0) at a fractional epoch."""
    return lr * 0.5 * (1.0 + math.cos(math.pi * (epoch % period) / period))


def _check_finite(metrics: dict[str, float], where: str) -> None:
    if not all(math.isfinite(v) for v in metrics.values()):
        raise TrainingError(f"training diverged {where}: loss is {metrics.get('loss')}; "
                            "try a lower learning rate (the last good checkpoint is kept)")


def _resumed_motion(ckpt, fresh: MotionRecord) -> MotionRecord:
    """The frames a resumed run carries on from: the checkpoint's, where they are of the same items and projection
    (else the fresh record: a checkpoint from before frames were recorded, or another motion_items)."""
    saved = MotionRecord.from_tensors(load_motion(ckpt), read_metadata(ckpt).get("motion"))
    if saved is None or saved.projection != fresh.projection or not np.array_equal(saved.items, fresh.items):
        return fresh
    saved.max_frames = fresh.max_frames
    return saved


def _resume(ckpt, model, optimizer, scaler, device) -> list[dict]:
    """Load model, optimizer, loss scale and RNG from `ckpt`; returns its per-epoch history."""
    meta = read_metadata(ckpt)
    if meta["model"] != model.name or type(model.config).from_dict(meta["config"]) != model.config:
        raise TrainingError(f"{ckpt}: cannot resume, it holds a {meta['model']} with another config")
    if "train_state" not in meta:
        raise TrainingError(f"{ckpt}: cannot resume, the file has no training state (a shipped, stripped checkpoint?)")
    saved, _ = load_checkpoint(ckpt, device)
    model.load_state_dict(saved.state_dict())
    restore_train_state(optimizer, scaler, load_train_state(ckpt), meta["train_state"])
    return list(meta.get("metrics", []))


@torch.no_grad()
def epoch_usage(model: Autoencoder, items: torch.Tensor, kind) -> dict | None:
    """For a model with a posterior (asked of the model: `posterior` is None for the others), how it uses its
    latent dimensions over `items`: the count of active units (variance over the items of the posterior mean
    above ACTIVE_VARIANCE, Burda et al. 2016), and per dimension that variance and the mean KL to N(0, 1) in
    nats. Recorded after every epoch; None for models without a posterior."""
    if not len(items) or model.posterior(kind.prepare(items[:1])) is None:
        return None
    usage = latent_usage(model, items, kind, batch_size=500)
    return {"active_units": int(usage.active.sum()), "active_variance": ACTIVE_VARIANCE,
            "variance": [round(float(v), 6) for v in usage.variance],
            "kl_per_dim": [round(float(v), 6) for v in usage.kl]}


def fit(model: Autoencoder, data: Dataset, config: TrainConfig,
        callback: Callable[[TrainEvent], None] | None = None, stop: StopFlag | None = None,
        resume: bool = False, dataset_info: dict | None = None) -> FitResult:
    """Train `model` on `data`; returns the trained model and per-epoch metrics.

    resume: continue from `config.checkpoint` (model, optimizer, RNG, epoch) when it exists.
    dataset_info: extra facts recorded in the checkpoint (e.g. the data root).
    config.threads applies while it trains; the process's thread count is restored afterwards.
    """
    config.validate(data)
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _fit(model, data, config, callback, stop, resume, dataset_info)
    finally:
        torch.set_num_threads(threads)  # a caller (a benchmark, the page's process) keeps its own setting


def _fit(model: Autoencoder, data: Dataset, config: TrainConfig, callback, stop, resume: bool,
         dataset_info: dict | None) -> FitResult:
    device = resolve_device(config.device)
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    kind = data.kind
    model.to(device).train()
    train_x, test_x = data.train_x.to(device), data.test_x.to(device)
    how = _how_to_train(model, config)
    optimizer = make_optimizer(model.parameters(), config.lr, device, how["optimizer"], how.get("weight_decay"),
                               how.get("eps"))
    precision = choose_precision(config.precision, device, model)
    # fp16 gradients underflow to zero without loss scaling; bf16 has fp32's range and needs none.
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    history: list[dict] = []
    recon_history: list[torch.Tensor] = []

    # Rank 0 records the map of a fixed test subset after every epoch (Training in motion).
    motion = MotionRecord.start(model.latent_dim, data.test_y, config.motion_items, config.motion_frames) \
        if config.motion_items and rank == 0 else None
    ckpt = checkpoint_path(config.checkpoint) if config.checkpoint else None
    if resume and ckpt is not None and ckpt.exists():
        history = _resume(ckpt, model, optimizer, scaler, device)
        if motion is not None:
            motion = _resumed_motion(ckpt, motion)
    else:  # a fresh run (also --resume with no checkpoint yet)
        seed_everything(config.seed + rank)
    start_epoch = len(history)

    net = model
    if distributed:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    loss_function, term_names = _loss_function(net, autocast(device, precision), config.compile, config.batch_size)
    fixed = test_x[: config.history_images]
    eval_x = test_x
    if config.eval_items and len(test_x) > config.eval_items:
        eval_x = test_x.index_select(0, torch.linspace(0, len(test_x) - 1, config.eval_items, device=device).long())
    per_rank = len(train_x) // world
    # A last batch of one row is dropped (it moves with the shuffle): BatchNorm cannot train on a batch of one.
    steps_per_epoch = per_rank // config.batch_size + (per_rank % config.batch_size > 1)
    log_every = config.log_every or max(1, min(50, steps_per_epoch // 8))
    t_start = time.perf_counter()
    stopped = False

    device_label = describe_device(device)

    def emit(kind_, **fields_):
        if callback is not None and rank == 0:
            callback(TrainEvent(kind_, epochs=config.epochs, steps_per_epoch=steps_per_epoch, device=device_label,
                                elapsed=time.perf_counter() - t_start, checkpoint=str(ckpt or ""), **fields_))

    motion_x = test_x.index_select(0, torch.as_tensor(motion.items, device=device)) if motion is not None else None
    emit("start", epoch=start_epoch, items=fixed.cpu(),
         motion=None if motion is None else {"labels": motion.labels.tolist(), "classes": list(data.classes),
                                             "projection": motion.projection, "axes": list(motion.axis_names)})
    for epoch in range(start_epoch, config.epochs):
        perm = _epoch_permutation(len(train_x), config.seed, epoch, device)
        if distributed:
            perm = perm[rank * per_rank:(rank + 1) * per_rank]  # equal shards: every rank takes the same steps
        sums = None  # (1 + n_terms,) sums of [loss, *terms] * batch
        seen = 0
        t_epoch = time.perf_counter()

        def running_means() -> dict[str, float]:
            return dict(zip(term_names, (sums / max(seen, 1)).tolist()))  # the host sync, once per report

        for step in range(steps_per_epoch):
            if stop is not None and stop.is_set():
                stopped = True
                break
            if how["schedule"] == "cosine_restarts":  # from the position alone, so a resumed run continues exactly
                set_lr(optimizer, _cosine_restart_lr(config.lr, epoch + step / steps_per_epoch, how["restart_epochs"]))
            # index_select copies whole rows: several times faster than advanced indexing.
            x = kind.prepare(train_x.index_select(0, perm[step * config.batch_size:(step + 1) * config.batch_size]))
            loss, values = loss_function(x)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # identity unless fp16
            scaler.step(optimizer)  # fp16: skips the step (and lowers the scale) when a scaled gradient overflowed
            scaler.update()
            seen += len(x)
            sums = values * len(x) if sums is None else sums.add_(values, alpha=len(x))
            if (step + 1) % log_every == 0 and callback is not None and rank == 0:
                train = running_means()
                _check_finite(train, f"at epoch {epoch + 1}, step {step + 1}")
                emit("step", epoch=epoch + 1, step=step + 1, train=train,
                     images_per_s=seen * world / max(time.perf_counter() - t_epoch, 1e-9))
        if stopped:
            break
        # tolist() waits for the device: on a GPU the epoch's time must include its queued kernels.
        train_metrics = running_means()
        train_time = time.perf_counter() - t_epoch
        _check_finite(train_metrics, f"in epoch {epoch + 1}")
        if rank != 0:
            continue
        test_metrics = evaluate(model, eval_x, kind, iwae_k=config.iwae_k, iwae_images=config.iwae_images)
        model.eval()  # eval mode: no training-time side effects (VQ usage statistics, collectives)
        usage = epoch_usage(model, eval_x, kind)
        if usage is not None:
            test_metrics["active_units"] = float(usage["active_units"])
        recon = kind.store(model.reconstruct(kind.prepare(fixed))).cpu() if len(fixed) else fixed.cpu()
        frame = None
        if motion is not None and len(motion_x):
            frame = motion.add(epoch + 1, encode_items(model, motion_x, kind).numpy())
        model.train()
        recon_history.append(recon)
        images_per_s = seen * world / max(train_time, 1e-9)
        history.append({"epoch": epoch + 1, "train": train_metrics, "test": test_metrics, "test_items": len(eval_x),
                        "train_seconds": round(train_time, 3), "images_per_s": round(images_per_s, 1),
                        **({"latent": usage} if usage is not None else {})})
        if ckpt is not None:
            tensors, info = train_state(optimizer, scaler)
            meta = {
                "dataset": {**data.describe(), **(dataset_info or {})},
                "training": {**asdict(config), **how, "device": str(device), "precision": precision,
                             "world_size": world},
                "metrics": history, "epoch": epoch + 1, "train_state": info,
                **({"motion": motion.describe()} if motion is not None else {}),
            }
            save_checkpoint(ckpt, model, meta, tensors, None if motion is None else motion.tensors())
        emit("epoch", epoch=epoch + 1, step=steps_per_epoch, train=train_metrics, test=test_metrics,
             images_per_s=images_per_s, items=recon, latent=usage,
             motion=None if frame is None else {"epoch": epoch + 1,
                                                "points": np.round(frame.astype(np.float64), 4).tolist()})
    model.eval()
    return FitResult(model, history, stopped, str(device), recon_history, motion)
