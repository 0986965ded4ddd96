"""The training loop: learning happens for every model, runs are reproducible and
resumable, checkpoints carry what they promise, DDP replicas agree."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
from dataclasses import replace

import pytest
import torch

from vae_explorer import TrainConfig, TrainEvent, build_model, evaluate, fit, load_checkpoint, read_metadata
from vae_explorer.devices import (CPU_BF16_MIN_FLOPS, choose_precision, cpu_has_native_bf16,
                                  forward_flops_per_item, resolve_device)

from .conftest import REPO
from .test_models import IMAGE_MODELS

CPU = dict(device="cpu", iwae_k=0)


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_training_lowers_test_loss(name, digits):
    torch.manual_seed(0)
    model = build_model(name, **digits.model_settings())
    before = evaluate(model, digits.test_x)["loss"]
    result = fit(model, digits, TrainConfig(epochs=4, batch_size=64, **CPU))
    after = result.history[-1]["test"]["loss"]
    assert after < before, f"{name}: test loss {before:.2f} -> {after:.2f}"
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    assert len(result.recon_history) == 4 and result.recon_history[0].shape == (8, 1, 8, 8)


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_same_seed_same_weights(digits):
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        model = build_model("vae", **digits.model_settings())
        fit(model, digits, TrainConfig(epochs=2, batch_size=100, seed=3, **CPU))
        runs.append(_weights(model))
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_resume_continues_exactly(digits, tmp_path):
    torch.manual_seed(0)
    straight = build_model("vae", **digits.model_settings())
    fit(straight, digits, TrainConfig(epochs=3, batch_size=100, checkpoint=str(tmp_path / "a"), **CPU))

    torch.manual_seed(0)
    first = build_model("vae", **digits.model_settings())
    fit(first, digits, TrainConfig(epochs=1, batch_size=100, checkpoint=str(tmp_path / "b"), **CPU))
    assert read_metadata(tmp_path / "b.safetensors")["epoch"] == 1
    torch.manual_seed(123)  # a fresh process: nothing carried over but the file
    resumed = build_model("vae", **digits.model_settings())
    result = fit(resumed, digits, TrainConfig(epochs=3, batch_size=100, checkpoint=str(tmp_path / "b"), **CPU),
                 resume=True)
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    a, b = _weights(straight), _weights(resumed)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_checkpoint_describes_itself(digits, tmp_path):
    torch.manual_seed(0)
    model = build_model("conv_vae", **digits.model_settings(), latent_dim=3)
    fit(model, digits, TrainConfig(epochs=2, batch_size=64, checkpoint=str(tmp_path / "m"), **CPU))
    meta = read_metadata(tmp_path / "m.safetensors")
    assert meta["model"] == "conv_vae" and meta["config"]["latent_dim"] == 3
    assert meta["dataset"]["name"] == "digits" and meta["dataset"]["input_shape"] == [1, 8, 8]
    assert meta["training"]["epochs"] == 2 and meta["training"]["lr"] == 1e-3
    assert len(meta["metrics"]) == 2 and "kl" in meta["metrics"][-1]["test"]
    assert meta["created"] and meta["version"]
    raw = (tmp_path / "m.safetensors").read_bytes()
    assert b"pickle" not in raw[:8] and raw[8:9] == b"{"  # safetensors: a JSON header, never a pickle
    loaded, _ = load_checkpoint(tmp_path / "m.safetensors")
    assert isinstance(loaded, type(model))
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # atomic write left no temporaries


def test_callback_and_stop_flag(digits):
    stop = threading.Event()
    events = []

    def callback(ev):
        events.append(ev)
        if ev.kind == "epoch" and ev.epoch == 2:
            stop.set()

    model = build_model("ae", **digits.model_settings())
    result = fit(model, digits, TrainConfig(epochs=10, batch_size=32, log_every=5, **CPU), callback, stop)
    assert result.stopped and len(result.history) == 2
    steps = [e for e in events if e.kind == "step"]
    assert steps and all(e.images_per_s > 0 and "loss" in e.train for e in steps)
    epochs = [e for e in events if e.kind == "epoch"]
    assert [e.epoch for e in epochs] == [1, 2] and epochs[0].items.shape == (8, 1, 8, 8)
    assert events[0].kind == "start" and torch.equal(events[0].items, digits.test_x[:8])
    assert epochs[0].items.dtype == torch.uint8  # the stored form: what the page shows and the events carry
    for event in events:  # every event survives its JSON line (`train --events`) unchanged
        again = TrainEvent.from_dict(json.loads(json.dumps(event.to_dict())))
        assert again.to_dict() == event.to_dict()


@pytest.mark.parametrize("bad,match", [
    (dict(lr=0), "learning rate"), (dict(lr=-1e-3), "learning rate"), (dict(epochs=0), "epochs"),
    (dict(batch_size=5000), "larger than"), (dict(precision="fp8"), "precision"), (dict(device="tpu"), "device"),
])
def test_invalid_training_settings_are_refused_before_work(bad, match, digits):
    model = build_model("ae")
    before = _weights(model)
    with pytest.raises(ValueError, match=match):
        fit(model, digits, TrainConfig(**{**CPU, **bad}))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_device_auto_picks_cpu_without_gpu():
    if torch.cuda.is_available():
        assert resolve_device("auto").type == "cuda"
    else:
        assert resolve_device("auto").type in ("cpu", "mps")
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_flop_count_matches_the_layer_sizes():
    # 784-400-(2x20) encoder and 20-400-784 decoder: 2 FLOPs per multiply-add of each Linear.
    model = build_model("vae", input_shape=(1, 28, 28), latent_dim=20, hidden=(400,))
    assert forward_flops_per_item(model) == 2 * (784 * 400 + 400 * 40 + 20 * 400 + 400 * 784)
    assert model.training  # counting leaves the mode as it was


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_flop_count_agrees_with_torch_flop_counter(name, shape):
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model(name, input_shape=shape)
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.decode(model.encode(torch.zeros(1, *shape)))
    reference = counter.get_total_flops()
    # The hooks count layers only; the VQ code search (a small matmul against the codebook) is left out.
    tolerance = 0.02 if name in ("vq_vae", "rvq_vae") else 0
    assert abs(forward_flops_per_item(model) - reference) <= tolerance * reference


def test_auto_precision_uses_bf16_on_a_cpu_only_where_it_pays():
    cpu = torch.device("cpu")
    tiny = build_model("vae")  # 8x8 digits: ~0.1 MFLOP per image, bf16's casts would cost more than they save
    mnist = build_model("vae", input_shape=(1, 28, 28), latent_dim=20, hidden=(400,))
    assert forward_flops_per_item(tiny) < CPU_BF16_MIN_FLOPS <= forward_flops_per_item(mnist)
    assert choose_precision("auto", cpu, tiny) == "fp32"
    assert choose_precision("auto", cpu, mnist) == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert choose_precision("fp32", cpu, mnist) == "fp32" and choose_precision("bf16", cpu, tiny) == "bf16"


def test_auto_precision_is_recorded_and_vq_codes_stay_exact_under_bf16(digits, tmp_path):
    # Under bf16 autocast the codebook search still runs in fp32: the codes equal an fp32 search.
    model = build_model("vq_vae")
    fit(model, digits, TrainConfig(epochs=1, precision="bf16", checkpoint=str(tmp_path / "vq"), **CPU))
    assert read_metadata(tmp_path / "vq.safetensors")["training"]["precision"] == "bf16"
    vq = model.quantizers[0]
    r = torch.randn(500, model.config.code_dim)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        codes = vq.nearest(r)
    exact = torch.cdist(r.double(), vq.codebook.detach().double()).argmin(1)
    assert torch.equal(codes, exact)


@pytest.mark.subprocess
def test_ddp_two_gloo_ranks_end_with_identical_weights(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(REPO / "tests" / "ddp_worker.py"), str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from safetensors.torch import load_file

    for suffix in ("", ".vq_vae"):
        w0, w1 = load_file(tmp_path / f"rank0{suffix}.safetensors"), load_file(tmp_path / f"rank1{suffix}.safetensors")
        assert w0.keys() == w1.keys()
        different = [k for k in w0 if not torch.equal(w0[k], w1[k])]
        assert not different, f"ranks disagree on {different}"
    w0 = load_file(tmp_path / "rank0.safetensors")
    init = load_file(tmp_path / "init.safetensors")
    assert any(not torch.equal(init[k], w0[k]) for k in w0)  # it trained
    info = json.loads((tmp_path / "rank0.json").read_text())
    assert info["world_size"] == 2 and info["epochs"] == 2
    meta = read_metadata(tmp_path / "ckpt.safetensors")  # only rank 0 saved
    assert meta["training"]["world_size"] == 2


@pytest.mark.slow
def test_compiled_training_compiles_once_and_keeps_the_vq_bookkeeping(digits):
    # --compile: one compilation serves every full batch (the last, smaller one runs eagerly), and the
    # VQ step counter and code re-seeding stay outside the graph, where they would force a recompile
    # at every step. Any recompilation raises here, which fit() would report as a fallback warning.
    import warnings

    import torch._dynamo

    torch._dynamo.reset()
    model = build_model("vq_vae", restart_every=3)
    config = TrainConfig(epochs=2, compile=True, history_images=0, **CPU)
    with warnings.catch_warnings(record=True) as caught, \
            torch._dynamo.config.patch(error_on_recompile=True):
        warnings.simplefilter("always")
        result = fit(model, digits, config)
    assert not [w for w in caught if "torch.compile failed" in str(w.message)]
    steps = 2 * -(-len(digits.train_x) // config.batch_size)
    assert model.quantizers[0].steps == steps  # the bookkeeping ran at every step, compiled or not
    assert all(math.isfinite(h["test"]["loss"]) for h in result.history)


def test_threads_apply_while_training_and_are_restored(digits):
    before = torch.get_num_threads()
    seen = []
    model = build_model("ae", **digits.model_settings())
    fit(model, digits, TrainConfig(epochs=1, batch_size=256, device="cpu", threads=before + 1, history_images=0),
        callback=lambda event: seen.append(torch.get_num_threads()))
    assert seen and set(seen) == {before + 1} and torch.get_num_threads() == before


def test_each_epoch_evaluates_a_fixed_evenly_spaced_subset_of_a_large_test_split(digits):
    torch.manual_seed(0)
    config = TrainConfig(epochs=1, batch_size=256, device="cpu", iwae_k=0, history_images=0, eval_items=100)
    result = fit(build_model("ae", **digits.model_settings()), digits, config)
    epoch = result.history[-1]
    subset = digits.test_x.index_select(0, torch.linspace(0, len(digits.test_x) - 1, 100).long())
    assert epoch["test_items"] == 100 < len(digits.test_x)
    assert epoch["test"]["loss"] == pytest.approx(evaluate(result.model, subset)["loss"], rel=1e-6)
    whole = fit(build_model("ae", **digits.model_settings()), digits, replace(config, eval_items=0)).history[-1]
    assert whole["test_items"] == len(digits.test_x)
    with pytest.raises(ValueError, match="eval_items must be >= 0"):
        replace(config, eval_items=-1).validate()
