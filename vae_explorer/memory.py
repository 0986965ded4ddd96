"""How much memory a training run needs, worked out before anything big is allocated, and how much
this machine lets it have.

Parameters are counted on the model built on torch's meta device (shapes, no storage); gradients and
Adam's two moments are three more copies of them. Activations are measured on the real model, built
only once its parameters are known to fit, in forward passes of a few items, and extrapolated to the
batch. The data counts as stored. All of it is compared with what is free now (RAM from
/proc/meminfo, GPU memory from CUDA), of which a run may take MEMORY_SHARE unless given a limit.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

MEMORY_SHARE = 0.5  # of what is free: a shared machine keeps the rest for the page, other users and the OS
GB = 10**9  # the unit of limits and messages (decimal, as `free` and disk sizes print)
EVAL_BATCH = 500  # metrics.evaluate's batch
PROBE_ITEMS = (2, 4)  # activation probes: two sizes, so a part that does not grow with the batch shows up
# Peaks in units of the largest tensor, from the peak RSS of CPU training processes (tests/test_memory.py):
# a training step's backward pass holds gradients and the convolutions' im2col buffers beyond what the
# forward pass saved (a conv AE: about 2.5 more); evaluation holds about 3.5 at once (an MLP VAE with a wide
# code, a conv VAE: both led by the IWAE bound's decodes). Rounded up: a run refused wrongly can be given a
# limit, one accepted wrongly dies mid-epoch.
STEP_TENSORS = 3
EVAL_TENSORS = 4


def human(n: float) -> str:
    for unit, size in (("PB", 10**15), ("TB", 10**12), ("GB", GB), ("MB", 10**6), ("KB", 10**3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} bytes"


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a training run holds at its peak, by part."""

    parameters: int  # weights and buffers
    optimizer: int  # gradients and Adam's two moments: three times the parameters' weights
    data: int  # the dataset as stored
    activations: int | None = None  # None: not measured yet (the parts above already decided)

    @property
    def total(self) -> int:
        return self.parameters + self.optimizer + self.data + (self.activations or 0)

    def host_part(self) -> "MemoryEstimate":
        """What stays in RAM while the run trains on a GPU: the model is built on the CPU and the data
        read there before both move over."""
        return MemoryEstimate(self.parameters, 0, self.data, 0)

    def describe(self) -> str:
        """E.g. "about 31.2 GB (parameters 7.5 GB, gradients and Adam's moments 22.4 GB, ...)"."""
        parts = [("parameters", self.parameters), ("gradients and Adam's moments", self.optimizer),
                 ("activations", self.activations or 0), ("data", self.data)]
        shown = ", ".join(f"{name} {human(n)}" for name, n in parts if n or name in ("parameters", "data"))
        return f"{'about' if self.activations is not None else 'at least'} {human(self.total)} ({shown})"


class _NoInitOnMeta(TorchFunctionMode):
    """In-place random initialization of a meta tensor (torch.nn.init's functions, Tensor.normal_ and its
    kin) is a no-op here: there is nothing to fill, and some of those ops (normal_, which nn.Embedding
    uses) have no meta kernel, so torch decomposes them through
    its compiler stack, importing torch._dynamo (seconds) at every run's start."""

    INIT_OPS = {torch.Tensor.normal_, torch.Tensor.uniform_, torch.Tensor.bernoulli_, torch.Tensor.random_,
                torch.Tensor.exponential_, torch.Tensor.log_normal_, torch.Tensor.cauchy_,
                torch.Tensor.geometric_}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        initializes = func in self.INIT_OPS or getattr(func, "__module__", None) == "torch.nn.init"
        target = args[0] if args else kwargs.get("tensor")  # torch.nn.init passes its tensor by name
        if initializes and isinstance(target, torch.Tensor) and target.is_meta:
            return target
        return func(*args, **kwargs)


def parameter_bytes(build: Callable[[], nn.Module]) -> tuple[int, int]:
    """(bytes of the trainable parameters, bytes of parameters and buffers together) of the model `build`
    makes, built on the meta device: every tensor has its shape and dtype but no storage, so a model of
    30 GB costs nothing to ask. Raises what the model's construction raises (RuntimeError for sizes torch
    cannot represent)."""
    with torch.device("meta"), _NoInitOnMeta():
        model = build()
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    weights = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    return trainable, weights


def _saved_per_call(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """(all, largest) bytes the forward pass on x keeps for the backward pass, parameters aside."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()  # a tensor saved twice (or a view of it) counts once
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    del out  # the graph held every saved tensor alive until now, so no address was reused while counting
    return sum(saved.values()), max(saved.values(), default=0)


def _largest_in_evaluation(model: nn.Module, x: torch.Tensor, iwae_k: int) -> int:
    """The largest tensor any layer takes or gives while `evaluate` scores x (the loss, then the model's
    extra metrics: a VAE's importance samples go through the decoder as k × items)."""
    largest = [0]

    def hook(module, inputs, output):
        for t in (*inputs, output):
            if isinstance(t, torch.Tensor):
                largest[0] = max(largest[0], t.numel() * t.element_size())

    hooks = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad():
            model(x)
            if iwae_k:
                model.extra_metrics(x, iwae_k)
    finally:
        for h in hooks:
            h.remove()
    return largest[0]


def activation_bytes(model: nn.Module, items: Callable[[int], torch.Tensor], batch: int, eval_batch: int,
                     iwae_k: int = 0) -> int:
    """Activations at the peak of training: a step of `batch` items holds what its forward pass saved
    for the backward pass plus, during the backward pass, STEP_TENSORS the size of its largest saved
    tensor; evaluation (no gradients) holds the batch of `eval_batch` items and EVAL_TENSORS tensors the
    size of the largest a layer takes or gives. Each is measured at PROBE_ITEMS items of `items(n)` (model
    inputs) and extrapolated linearly, counted in fp32 (autocast would halve much of it); the larger is
    returned. The model runs in eval mode under its own random state, so nothing about it or the run changes."""
    was_training = model.training
    model.eval()  # no training-time side effects: a VQ layer re-seeding its codebook, usage statistics
    try:
        with torch.random.fork_rng(devices=[]):
            (a, a_top), (b, b_top) = (_saved_per_call(model, items(n)) for n in PROBE_ITEMS)
            e_a, e_b = (_largest_in_evaluation(model, items(n), iwae_k) for n in PROBE_ITEMS)
    finally:
        model.train(was_training)
    lo, hi = PROBE_ITEMS

    def at(n: int, small: int, big: int) -> int:  # the line through (lo, small) and (hi, big), at n
        per_item = max(0, big - small) / (hi - lo)
        return int(max(small, small + (n - lo) * per_item))

    item_bytes = items(1).nbytes  # a tensor's, or a batch of table rows'
    step = at(batch, a, b) + STEP_TENSORS * at(batch, a_top, b_top)
    evaluation = eval_batch * item_bytes + EVAL_TENSORS * at(eval_batch, e_a, e_b)
    return max(step, evaluation)


def free_memory(device: torch.device) -> int | None:
    """Bytes free for a new run on `device` now: GPU memory for CUDA (this makes the process's CUDA
    context), else RAM; None where this system does not say."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    return free_ram()


def free_ram() -> int | None:
    """RAM available to a new process without swapping: MemAvailable on Linux, else the machine's total
    (an upper bound: a run larger than all the RAM cannot fit), else None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
