"""Adam as one fused kernel call per step, for the training loop's hot path.

Why not torch.optim.Adam(fused=True)? It calls the same kernel (torch._fused_adam_),
but constructing any torch.optim optimizer imports torch._dynamo (1.1-1.4 s of every
training process on a 2-core CPU), and its per-step Python (step and zero_grad
wrappers, profiler records, hook checks, regrouping tensors) costs 0.3 ms of an MNIST
VAE step here, about 6% (benchmarks/optimizer_step.py). This class keeps the kernel call.

Numerics and the state dict are torch.optim.Adam's exactly (tests/test_optim.py
compares both step by step), so checkpoints written by either resume with either.
The kernel is private: `make_optimizer` probes one step once per device type and
falls back to torch.optim.Adam(fused=True), then its foreach path, when a torch
upgrade removed the kernel or changed its signature or its arithmetic.
"""
from __future__ import annotations

import functools
import warnings
from typing import Callable, Iterable

import torch

FUSED_DEVICES = ("cpu", "cuda")  # where torch._fused_adam_ exists for every torch this package supports


class FusedAdam:
    """Adam (Kingma & Ba 2015) over one group of parameters, all on one device of FUSED_DEVICES.

    Like torch.optim.Adam, a parameter whose .grad is None in a step is skipped: its
    weights, moments and step count stay as they are.
    """

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        self.params = list(params)  # all of them, frozen ones too: state indices match torch.optim's
        if not self.params:
            raise ValueError("FusedAdam got no parameters")
        kinds = {(p.device, p.dtype) for p in self.params}  # the kernel takes one device and dtype per call
        device, dtype = next(iter(kinds))
        if len(kinds) != 1 or device.type not in FUSED_DEVICES or not dtype.is_floating_point:
            raise ValueError(f"FusedAdam needs all parameters on one device of type {' or '.join(FUSED_DEVICES)}, "
                             f"with one floating-point dtype; got {', '.join(sorted(f'{d} {t}' for d, t in kinds))}")
        self.lr, self.betas, self.eps, self.weight_decay = float(lr), tuple(betas), float(eps), float(weight_decay)
        self.exp_avg = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        # float32 step counts on the parameters' device, as the fused kernel reads them.
        self.steps = [torch.zeros((), dtype=torch.float32, device=p.device) for p in self.params]

    @property
    def param_groups(self) -> list[dict]:
        # What torch.amp.GradScaler reads to unscale gradients before `step` (fp16 training).
        return [{"params": self.params, "lr": self.lr}]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        idx = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not idx:
            return
        if len(idx) == len(self.params):
            params, exp_avg, exp_avg_sq, steps = self.params, self.exp_avg, self.exp_avg_sq, self.steps
        else:
            params, exp_avg, exp_avg_sq, steps = ([seq[i] for i in idx] for seq in
                                                  (self.params, self.exp_avg, self.exp_avg_sq, self.steps))
        torch._foreach_add_(steps, 1)
        torch._fused_adam_(params, [p.grad for p in params], exp_avg, exp_avg_sq, [], steps, lr=self.lr,
                           beta1=self.betas[0], beta2=self.betas[1], weight_decay=self.weight_decay, eps=self.eps,
                           amsgrad=False, maximize=False)

    def state_dict(self) -> dict:
        """torch.optim.Adam's layout: state by parameter index (parameters that have stepped)."""
        state = {i: {"step": self.steps[i].clone(), "exp_avg": self.exp_avg[i].clone(),
                     "exp_avg_sq": self.exp_avg_sq[i].clone()}
                 for i in range(len(self.params)) if self.steps[i].item() > 0}
        group = {"lr": self.lr, "betas": self.betas, "eps": self.eps, "weight_decay": self.weight_decay,
                 "amsgrad": False, "maximize": False, "foreach": None, "capturable": False, "differentiable": False,
                 "fused": True, "decoupled_weight_decay": False, "params": list(range(len(self.params)))}
        return {"state": state, "param_groups": [group]}

    def load_state_dict(self, state_dict: dict) -> None:
        """Accepts this class's state dict and torch.optim.Adam's (one group, no amsgrad)."""
        groups = state_dict["param_groups"]
        if len(groups) != 1 or len(groups[0]["params"]) != len(self.params):
            raise ValueError(f"optimizer state is for {sum(len(g['params']) for g in groups)} parameters in "
                             f"{len(groups)} groups; this model has {len(self.params)} in one")
        group = groups[0]
        if group.get("amsgrad") or group.get("maximize"):
            raise ValueError("optimizer state uses amsgrad or maximize, which FusedAdam does not implement")
        self.lr, self.betas = float(group["lr"]), tuple(group["betas"])
        self.eps, self.weight_decay = float(group["eps"]), float(group["weight_decay"])
        position = {pid: i for i, pid in enumerate(group["params"])}
        for pid, saved in state_dict["state"].items():
            i = position[int(pid)]
            p = self.params[i]
            if saved["exp_avg"].shape != p.shape:
                raise ValueError(f"optimizer state for parameter {i} has shape {tuple(saved['exp_avg'].shape)}, "
                                 f"the parameter {tuple(p.shape)}")
            # Copies: the caller's tensors (a live optimizer's, say) must not move with this one's steps.
            self.steps[i] = torch.tensor(float(saved["step"]), dtype=torch.float32, device=p.device)
            self.exp_avg[i] = saved["exp_avg"].to(device=p.device, dtype=p.dtype, copy=True)
            self.exp_avg_sq[i] = saved["exp_avg_sq"].to(device=p.device, dtype=p.dtype, copy=True)


def _adam_step_is_right(make: Callable[[list[torch.nn.Parameter]], object], device_type: str) -> bool:
    """One step of the optimizer `make` builds, on a tiny parameter, checked against Adam's first-step
    rule (each weight moves by -lr * sign(grad), lr = 0.1); False when it raises or computes otherwise."""
    try:
        p = torch.nn.Parameter(torch.zeros(3, device=device_type))
        optimizer = make([p])
        p.grad = torch.tensor([1.0, -2.0, 0.5], device=device_type)
        optimizer.step()
        return bool(torch.allclose(p.detach().cpu(), torch.tensor([-0.1, 0.1, -0.1]), atol=1e-6))
    except (AttributeError, TypeError, RuntimeError, ValueError, NotImplementedError):
        return False


# Adam implementations by preference; the first whose probe passes on a device type is used there.
_ADAMS: dict[str, Callable] = {
    "FusedAdam": lambda params, lr: FusedAdam(params, lr=lr),
    "torch.optim.Adam(fused=True)": lambda params, lr: torch.optim.Adam(params, lr=lr, fused=True),
    "torch.optim.Adam(foreach=True)": lambda params, lr: torch.optim.Adam(params, lr=lr, foreach=True),
}


@functools.lru_cache(maxsize=None)
def adam_for(device_type: str) -> str:
    """The name of the Adam that works on `device_type` (probed once per process): FusedAdam while the
    private kernel works; torch.optim.Adam(fused=True) when a torch upgrade changed the kernel's
    signature (torch's own call site moves with it); the foreach Adam when no fused kernel works."""
    candidates = list(_ADAMS) if device_type in FUSED_DEVICES else ["torch.optim.Adam(foreach=True)"]
    for name in candidates[:-1]:
        if _adam_step_is_right(lambda params: _ADAMS[name](params, 0.1), device_type):
            return name
    return candidates[-1]


def make_optimizer(params: Iterable[torch.nn.Parameter], lr: float, device: torch.device, kind: str = "adam",
                   weight_decay: float | None = None, eps: float | None = None):
    """Adam, by the fastest implementation that works here (`adam_for`); or AdamW (torch's, fused on
    devices that have the kernel), with decoupled weight decay."""
    if kind == "adamw":
        return torch.optim.AdamW(list(params), lr=lr, weight_decay=1e-2 if weight_decay is None else weight_decay,
                                 eps=1e-8 if eps is None else eps,
                                 **({"fused": True} if device.type in FUSED_DEVICES else {"foreach": True}))
    if kind != "adam":
        raise ValueError(f"unknown optimizer {kind!r}; choose adam or adamw")
    name = adam_for(device.type)
    if device.type in FUSED_DEVICES and name != "FusedAdam":
        warnings.warn(f"torch._fused_adam_ is unusable from FusedAdam in this torch: training with {name}")
    return _ADAMS[name](list(params), lr)


def set_lr(optimizer, lr: float) -> None:
    """Set the learning rate of any optimizer made here (FusedAdam keeps one `lr`; torch's keep groups)."""
    if isinstance(optimizer, FusedAdam):
        optimizer.lr = float(lr)
    else:
        for group in optimizer.param_groups:
            group["lr"] = float(lr)
