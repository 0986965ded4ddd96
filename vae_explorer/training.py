"""The training loop: synchronous, model-agnostic (`out = model(x); out.loss.backward()`),
seeded, resumable, with a per-step callback and a stop flag. Running it in the
background is the caller's business (see jobs in the app).

Data lives on the training device as uint8 tensors; each step slices a shuffled
index batch, so there is no per-item DataLoader. Under torchrun the same entry
point runs DistributedDataParallel (NCCL on GPU, gloo on CPU); rank 0 evaluates,
reports and saves.
"""
from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Callable, Protocol

import torch
import torch.distributed as dist

from .checkpoints import checkpoint_path, load_checkpoint, load_train_state, read_metadata, save_checkpoint
from .data import ImageData, to_float
from .metrics import evaluate
from .models import Autoencoder
from .optim import FUSED_DEVICES, FusedAdam

Optimizer = FusedAdam | torch.optim.Optimizer

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


class TrainingError(RuntimeError):
    """Training cannot go on (diverged, bad resume file); the message says why."""


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    device: str = "auto"  # "auto" = cuda > mps > cpu, or an explicit torch device
    precision: str = "auto"  # "auto": bf16 autocast where it is faster (see choose_precision), else fp32
    iwae_k: int = 16  # importance samples for the per-epoch IWAE estimate (VAEs); 0 = off
    iwae_images: int = 500  # test images the per-epoch IWAE uses (the eval command uses them all)
    history_images: int = 8  # fixed test images reconstructed after every epoch
    compile: bool = False  # torch.compile the forward pass (first steps pay seconds of compilation)
    log_every: int = 25  # steps between "step" callbacks (each costs one host sync)
    checkpoint: str | None = None  # written atomically after every epoch

    def validate(self, data: ImageData | None = None) -> None:
        """Raise ValueError with a clear message for settings that cannot work."""
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"learning rate must be a positive number, got {self.lr}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.iwae_k < 0 or self.history_images < 0 or self.log_every < 1:
            raise ValueError("iwae_k and history_images must be >= 0 and log_every >= 1")
        if data is not None and self.batch_size > len(data.train_x):
            raise ValueError(f"batch size {self.batch_size} is larger than the {len(data.train_x)} training images")
        resolve_device(self.device)


@dataclass
class TrainEvent:
    kind: str  # "step" (every log_every steps) or "epoch" (after evaluation and checkpoint)
    epoch: int  # 1-based
    epochs: int
    step: int  # steps done in this epoch
    steps_per_epoch: int
    images_per_s: float  # this epoch so far
    elapsed: float  # seconds since fit started
    device: str
    train: dict[str, float]  # running means of the loss terms this epoch
    test: dict[str, float] = field(default_factory=dict)  # epoch events: evaluate() on the test set
    recon: torch.Tensor | None = None  # epoch events: (history_images, C, H, W) reconstructions


@dataclass
class FitResult:
    model: Autoencoder
    history: list[dict]  # one record per completed epoch: train/test metrics, time, images/s
    stopped: bool  # the stop flag ended training early
    device: str
    recon_history: list[torch.Tensor]  # per epoch, of the fixed test images
    fixed_images: torch.Tensor  # the fixed test images themselves, float (n, C, H, W)


class StopFlag(Protocol):
    def is_set(self) -> bool: ...


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda was asked for but no CUDA GPU is available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device mps was asked for but MPS is not available")
    return device


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)  # seeds CUDA too


# Forward FLOPs per image above which bf16 matmuls on a CPU save more than autocast's casts
# cost: measured here, the 8x8 digits models train 25% slower in bf16, the MNIST MLP VAE
# (1.3 MFLOP) 1.3x faster, conv VAEs on MNIST and CIFAR-10 1.7-1.8x faster.
CPU_BF16_MIN_FLOPS = 1e6


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls at twice the fp32 rate rather than emulated."""
    cpu = torch.cpu
    return any(getattr(cpu, f, lambda: False)() for f in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def _layer_flops(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> int:
    """2 x multiply-adds of one Linear / Conv2d / ConvTranspose2d call (what FlopCounterMode counts)."""
    if isinstance(module, torch.nn.Linear):
        return 2 * output.numel() * module.in_features
    if isinstance(module, torch.nn.Conv2d):  # each output element: C_in / groups x kh x kw products
        return 2 * output.numel() * module.weight[0].numel()
    if isinstance(module, torch.nn.ConvTranspose2d):  # each input element scatters into C_out / groups x kh x kw
        return 2 * inputs[0].numel() * module.weight[0].numel()
    return 0


@torch.no_grad()
def forward_flops_per_image(model: Autoencoder) -> int:
    """Matmul and convolution FLOPs of decode(encode(x)) for one image, counted by forward
    hooks on a zero image (no side effects, no RNG). torch.utils.flop_counter counts the
    same, but its first use imports sympy and dynamo: over a second of every run's start."""
    flops = []
    hooks = [m.register_forward_hook(lambda m, i, o: flops.append(_layer_flops(m, i, o))) for m in model.modules()]
    was_training = model.training
    model.eval()
    try:
        model.decode(model.encode(torch.zeros(1, *model.input_shape, device=next(model.parameters()).device)))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return sum(flops)


def choose_precision(requested: str, device: torch.device, model: Autoencoder) -> str:
    """"auto": bf16 autocast on a CUDA GPU that supports it, and on a CPU with native bf16 for
    models big enough to gain (CPU_BF16_MIN_FLOPS); fp32 elsewhere. Other values pass through."""
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu" and cpu_has_native_bf16() and forward_flops_per_image(model) >= CPU_BF16_MIN_FLOPS:
        return "bf16"
    return "fp32"


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def make_optimizer(model: torch.nn.Module, config: TrainConfig, device: torch.device) -> Optimizer:
    """Adam. On CPU and CUDA, FusedAdam: torch's fused kernel without torch.optim's start-up
    and per-step cost (see optim.py); elsewhere (MPS) torch.optim.Adam's foreach path."""
    if device.type in FUSED_DEVICES:
        return FusedAdam(model.parameters(), lr=config.lr)
    return torch.optim.Adam(model.parameters(), lr=config.lr, foreach=True)


def _train_state(optimizer: Optimizer, scaler: torch.amp.GradScaler | None) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer + RNG (+ fp16 loss scale) as flat tensors (safetensors) and JSON, for exact resume."""
    sd = optimizer.state_dict()
    tensors = {f"optim.{i}.{k}": v for i, s in sd["state"].items() for k, v in s.items() if torch.is_tensor(v)}
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    info = {"param_groups": sd["param_groups"]}
    if scaler is not None:
        info["grad_scaler"] = scaler.state_dict()
    return tensors, info


def _restore_train_state(optimizer: Optimizer, scaler: torch.amp.GradScaler | None, tensors: dict[str, torch.Tensor],
                         info: dict) -> None:
    state: dict[int, dict] = defaultdict(dict)
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, i, k = key.split(".", 2)
            state[int(i)][k] = v
    optimizer.load_state_dict({"state": dict(state), "param_groups": info["param_groups"]})
    if scaler is not None and "grad_scaler" in info:
        scaler.load_state_dict(info["grad_scaler"])
    torch.set_rng_state(tensors["rng.cpu"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])


def _keep_eager(net: torch.nn.Module) -> None:
    """Run each module's `eager_methods` outside compiled graphs (torch.compiler.disable)."""
    for module in net.modules():
        for name in getattr(module, "eager_methods", ()):
            if name not in vars(module):  # not wrapped yet (a second fit on the same model keeps the first wrap)
                setattr(module, name, torch.compiler.disable(getattr(module, name)))


def _loss_function(net: torch.nn.Module, autocast, compile: bool, batch_size: int = 0):
    """x -> (loss, term values stacked as [loss, *terms]) with names in `names`.

    compile: the forward pass goes through torch.compile (falling back to eager where
    compilation fails). Compiled code serves full batches of `batch_size` only: the
    epoch's last, smaller batch runs eagerly rather than paying seconds for a second
    compilation. The names are collected outside the compiled function, where a list
    that changes after the first call would force a recompilation at the second.
    """
    names: list[str] = []

    def forward(x):
        with autocast:
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
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).to(device)


def fit(model: Autoencoder, data: ImageData, config: TrainConfig,
        callback: Callable[[TrainEvent], None] | None = None, stop: StopFlag | None = None,
        resume: bool = False, dataset_info: dict | None = None) -> FitResult:
    """Train `model` on `data`; returns the trained model and per-epoch metrics.

    resume: continue from `config.checkpoint` (model, optimizer, RNG, epoch) when it exists.
    dataset_info: extra facts recorded in the checkpoint (e.g. the data root).
    """
    config.validate(data)
    device = resolve_device(config.device)
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model.to(device).train()
    train_x, test_x = data.train_x.to(device), data.test_x.to(device)
    optimizer = make_optimizer(model, config, device)
    precision = choose_precision(config.precision, device, model)
    autocast = _autocast(device, precision)
    # fp16 gradients underflow to zero without loss scaling; bf16 has fp32's range and needs none.
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    history: list[dict] = []
    recon_history: list[torch.Tensor] = []
    start_epoch = 0

    ckpt = checkpoint_path(config.checkpoint) if config.checkpoint else None
    if resume and ckpt is not None and ckpt.exists():
        meta = read_metadata(ckpt)
        if meta["model"] != model.name or type(model.config).from_dict(meta["config"]) != model.config:
            raise TrainingError(f"{ckpt}: cannot resume, it holds a {meta['model']} with another config")
        if "train_state" not in meta:
            raise TrainingError(f"{ckpt}: cannot resume, the file has no training state (a shipped, stripped checkpoint?)")
        saved, _ = load_checkpoint(ckpt, device)
        model.load_state_dict(saved.state_dict())
        _restore_train_state(optimizer, scaler, load_train_state(ckpt), meta["train_state"])
        history = list(meta.get("metrics", []))
        start_epoch = len(history)
    else:  # a fresh run (also --resume with no checkpoint yet)
        seed_everything(config.seed + rank)

    net = model
    if distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

    loss_function, term_names = _loss_function(net, autocast, config.compile, config.batch_size)
    fixed = to_float(test_x[: config.history_images])
    n_train = len(train_x)
    per_rank = n_train // world
    steps_per_epoch = math.ceil(per_rank / config.batch_size)
    t_start = time.perf_counter()
    stopped = False

    def report(kind, epoch, step, t_epoch, sums, seen, **extra):
        if callback is None or rank != 0:
            return
        train = dict(zip(term_names, (sums / max(seen, 1)).tolist()))  # the host sync, once per report
        if not all(math.isfinite(v) for v in train.values()):
            raise TrainingError(f"training diverged at epoch {epoch}, step {step}: loss is {train.get('loss')}; "
                                "try a lower learning rate (the last good checkpoint is kept)")
        dt = time.perf_counter() - t_epoch
        callback(TrainEvent(kind, epoch, config.epochs, step, steps_per_epoch, seen * world / max(dt, 1e-9),
                            time.perf_counter() - t_start, str(device), train, **extra))

    for epoch in range(start_epoch, config.epochs):
        perm = _epoch_permutation(n_train, config.seed, epoch, device)
        if distributed:
            perm = perm[rank * per_rank:(rank + 1) * per_rank]  # equal shards: every rank takes the same steps
        sums = None  # (1 + n_terms,) sums of [loss, *terms] * batch
        seen = 0
        t_epoch = time.perf_counter()
        for step in range(steps_per_epoch):
            if stop is not None and stop.is_set():
                stopped = True
                break
            # index_select copies whole rows: several times faster than advanced indexing.
            x = to_float(train_x.index_select(0, perm[step * config.batch_size:(step + 1) * config.batch_size]))
            loss, values = loss_function(x)
            optimizer.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                optimizer.step()
            else:  # skips the step (and lowers the scale) when a scaled gradient overflowed
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            b = len(x)
            seen += b
            sums = values * b if sums is None else sums.add_(values, alpha=b)
            if (step + 1) % config.log_every == 0:
                report("step", epoch + 1, step + 1, t_epoch, sums, seen)
        if stopped:
            break
        # tolist() waits for the device: on a GPU the epoch's time must include its queued kernels.
        train_metrics = dict(zip(term_names, (sums / max(seen, 1)).tolist()))
        train_time = time.perf_counter() - t_epoch
        if not all(math.isfinite(v) for v in train_metrics.values()):
            raise TrainingError(f"training diverged in epoch {epoch + 1}: loss is {train_metrics['loss']}; "
                                "try a lower learning rate (the last good checkpoint is kept)")
        if rank != 0:
            continue
        test_metrics = evaluate(model, test_x, iwae_k=config.iwae_k, iwae_images=config.iwae_images)
        model.eval()  # eval mode: no training-time side effects (VQ usage statistics, collectives)
        recon = model.reconstruct(fixed).float().cpu() if len(fixed) else torch.empty(0)
        model.train()
        recon_history.append(recon)
        history.append({"epoch": epoch + 1, "train": train_metrics, "test": test_metrics,
                        "train_seconds": round(train_time, 3),
                        "images_per_s": round(seen * world / max(train_time, 1e-9), 1)})
        if ckpt is not None:
            tensors, info = _train_state(optimizer, scaler)
            meta = {
                "dataset": {**data.describe(), **(dataset_info or {})},
                "training": {**asdict(config), "device": str(device), "precision": precision, "world_size": world},
                "metrics": history, "epoch": epoch + 1, "train_state": info,
            }
            save_checkpoint(ckpt, model, meta, tensors)
        report("epoch", epoch + 1, steps_per_epoch, t_epoch, sums, seen, test=test_metrics, recon=recon)
    model.eval()
    return FitResult(model, history, stopped, str(device), recon_history, fixed.cpu())
