"""Where and in what precision training runs: the device (`auto` = cuda > mps > cpu),
whether bf16 autocast pays off on it, and the autocast context itself."""
from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


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


def device_choices() -> list[str]:
    """The devices this machine has, as `resolve_device` names them."""
    choices = ["auto", "cpu"]
    if torch.cuda.is_available():
        choices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        choices.append("mps")
    return choices


def describe_device(device: torch.device) -> str:
    return str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")


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
def forward_flops_per_item(model) -> int:
    """Matmul and convolution FLOPs of decode(encode(x)) for one item, counted by forward
    hooks on a zero item (no side effects, no RNG). torch.utils.flop_counter counts the
    same, but its first use imports sympy and dynamo: over a second of every run's start."""
    flops = []
    hooks = [m.register_forward_hook(lambda m, i, o: flops.append(_layer_flops(m, i, o))) for m in model.modules()]
    was_training = model.training
    model.eval()
    try:
        model.decode(model.encode(model.example_input(1).to(next(model.parameters()).device)))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return sum(flops)


def choose_precision(requested: str, device: torch.device, model) -> str:
    """"auto": bf16 autocast on a CUDA GPU that supports it, and on a CPU with native bf16 for
    models big enough to gain (CPU_BF16_MIN_FLOPS); fp32 elsewhere. Other values pass through."""
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu" and cpu_has_native_bf16() and forward_flops_per_item(model) >= CPU_BF16_MIN_FLOPS:
        return "bf16"
    return "fp32"


def autocast(device: torch.device, precision: str):
    """The forward pass's context: nothing for fp32, torch.autocast for bf16 and fp16."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
