"""FusedAdam against the reference it replaces: torch.optim.Adam(fused=True), step by step."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch

from vae_explorer import build_model
from vae_explorer.optim import FusedAdam

from .conftest import REPO

SETTINGS = [dict(lr=1e-3), dict(lr=3e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)]


def _pair(**settings):
    torch.manual_seed(0)
    ours = build_model("vae", input_shape=(1, 8, 8), latent_dim=3)
    ref = build_model("vae", input_shape=(1, 8, 8), latent_dim=3)
    ref.load_state_dict(ours.state_dict())
    return ours, FusedAdam(ours.parameters(), **settings), ref, torch.optim.Adam(ref.parameters(), fused=True, **settings)


def _set_grads(models, step: int, skip: int | None = None):
    g = torch.Generator().manual_seed(step)
    grads = [torch.randn(p.shape, generator=g) * 10.0 ** (i % 3 - 1) for i, p in enumerate(models[0].parameters())]
    for model in models:
        for i, (p, grad) in enumerate(zip(model.parameters(), grads)):
            p.grad = None if i == skip else grad.clone()


def _assert_same(ours, opt, ref, ref_opt):
    for a, b in zip(ours.parameters(), ref.parameters()):
        assert torch.equal(a, b)
    mine, theirs = opt.state_dict(), ref_opt.state_dict()
    assert mine["state"].keys() == theirs["state"].keys()
    for i, s in theirs["state"].items():
        for key, value in s.items():
            assert torch.equal(mine["state"][i][key], value), (i, key)
    assert {k: v for k, v in mine["param_groups"][0].items() if k in ("lr", "betas", "eps", "weight_decay", "params")} \
        == {k: v for k, v in theirs["param_groups"][0].items() if k in ("lr", "betas", "eps", "weight_decay", "params")}


@pytest.mark.parametrize("settings", SETTINGS)
def test_steps_are_bit_identical_to_torch_adam(settings):
    ours, opt, ref, ref_opt = _pair(**settings)
    for step in range(12):
        # Step 5 leaves parameter 2 without a gradient: both optimizers must skip it (its step count too).
        _set_grads([ours, ref], step, skip=2 if step == 5 else None)
        opt.step()
        ref_opt.step()
        _assert_same(ours, opt, ref, ref_opt)
    assert opt.state_dict()["state"][2]["step"].item() == 11 and opt.state_dict()["state"][0]["step"].item() == 12


def test_a_parameter_that_never_had_a_gradient_has_no_state_like_torch():
    ours, opt, ref, ref_opt = _pair()
    for step in range(3):
        _set_grads([ours, ref], step, skip=0)
        opt.step()
        ref_opt.step()
    assert 0 not in opt.state_dict()["state"] and 0 not in ref_opt.state_dict()["state"]
    _assert_same(ours, opt, ref, ref_opt)


@pytest.mark.parametrize("direction", ["torch_to_ours", "ours_to_torch"])
def test_state_dicts_interchange_with_torch_adam(direction):
    # Checkpoints written before FusedAdam hold torch.optim.Adam state; they must resume exactly.
    ours, opt, ref, ref_opt = _pair(lr=1e-2)
    for step in range(4):
        _set_grads([ours, ref], step)
        opt.step()
        ref_opt.step()
    torch.manual_seed(1)
    fresh = build_model("vae", input_shape=(1, 8, 8), latent_dim=3)
    if direction == "torch_to_ours":
        fresh.load_state_dict(ref.state_dict())
        resumed = FusedAdam(fresh.parameters(), lr=0.5)  # the saved lr wins, as in torch.optim
        resumed.load_state_dict(ref_opt.state_dict())
        model_a, opt_a, model_b, opt_b = fresh, resumed, ref, ref_opt
    else:
        fresh.load_state_dict(ours.state_dict())
        resumed = torch.optim.Adam(fresh.parameters(), lr=0.5, fused=True)
        resumed.load_state_dict(opt.state_dict())
        model_a, opt_a, model_b, opt_b = ours, opt, fresh, resumed
    for step in range(4, 8):
        _set_grads([model_a, model_b], step)
        opt_a.step()
        opt_b.step()
    for a, b in zip(model_a.parameters(), model_b.parameters()):
        assert torch.equal(a, b)


def test_zero_grad_and_clear_errors():
    ours, opt, _, _ = _pair()
    _set_grads([ours], 0)
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in ours.parameters())
    opt.zero_grad()
    assert all(p.grad is None for p in ours.parameters())
    with pytest.raises(ValueError, match="no parameters"):
        FusedAdam([])
    with pytest.raises(ValueError, match="one device"):
        FusedAdam([torch.nn.Parameter(torch.zeros(2, device="meta"))])
    with pytest.raises(ValueError, match="one floating-point dtype"):
        FusedAdam([torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))])
    _set_grads([ours], 0)
    opt.step()
    with pytest.raises(ValueError, match="8 parameters"):
        FusedAdam(torch.nn.Linear(2, 2).parameters()).load_state_dict(opt.state_dict())
    other = build_model("vae", input_shape=(1, 8, 8), latent_dim=5)  # as many tensors, other shapes
    with pytest.raises(ValueError, match="shape"):
        FusedAdam(other.parameters()).load_state_dict(opt.state_dict())


@pytest.mark.subprocess
def test_training_does_not_import_the_compiler():
    # torch.optim imports torch._dynamo (over a second) when an optimizer is built; fit must not.
    code = ("import sys; from vae_explorer import TrainConfig, build_model, fit, load_dataset; d = load_dataset('digits'); "
            "fit(build_model('vae', **d.model_settings()), d, TrainConfig(epochs=1, device='cpu', iwae_k=2)); "
            "print('torch._dynamo' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.stdout.strip() == "False", proc.stdout + proc.stderr[-2000:]


@pytest.mark.parametrize("breakage,expected", [
    ("new required argument", "torch.optim.Adam(fused=True)"),  # torch's own call site follows; ours does not
    ("missing", "torch.optim.Adam(foreach=True)"),
    ("wrong arithmetic", "torch.optim.Adam(foreach=True)"),
])
def test_a_broken_private_kernel_falls_back_to_torch_optim_adam(monkeypatch, digits, breakage, expected):
    """torch._fused_adam_ is private: when a torch upgrade removes it, changes its signature or its
    arithmetic, make_optimizer's one-step probe notices and training goes on with torch.optim.Adam."""
    from vae_explorer import TrainConfig, fit
    from vae_explorer.optim import adam_for, make_optimizer

    kernel = torch._fused_adam_
    if breakage == "missing":
        monkeypatch.delattr(torch, "_fused_adam_")
    elif breakage == "new required argument":
        def changed(*args, grad_scale, **kwargs):  # torch.optim passes grad_scale; FusedAdam never did
            return kernel(*args, grad_scale=grad_scale, **kwargs)
        monkeypatch.setattr(torch, "_fused_adam_", changed)
    else:
        monkeypatch.setattr(torch, "_fused_adam_", lambda params, grads, *a, **k: [p.sub_(g) for p, g in zip(params, grads)])
    adam_for.cache_clear()
    try:
        assert adam_for("cpu") == expected
        model = build_model("ae", **digits.model_settings())
        with pytest.warns(UserWarning, match="unusable"):
            assert isinstance(make_optimizer(model.parameters(), 1e-3, torch.device("cpu")), torch.optim.Adam)
        with pytest.warns(UserWarning, match=re.escape(expected)):
            result = fit(model, digits, TrainConfig(epochs=2, batch_size=64, iwae_k=0, device="cpu"))
        assert result.history[1]["train"]["loss"] < result.history[0]["train"]["loss"]
    finally:
        adam_for.cache_clear()
    monkeypatch.undo()
    assert adam_for("cpu") == "FusedAdam"  # the real kernel again
