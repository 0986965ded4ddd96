"""The memory a run needs, worked out before it starts: the meta device counts every registry model's
parameters as the real model has them, activations extrapolated from a few items equal those measured at
the batch, a small run fits, a huge one is refused in milliseconds without allocating, a folder too big is
refused before a file is read, the operator's limit reaches the training process, and the estimate is
close to the peak memory a real training process reaches."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest
import torch

from vae_explorer import MODELS, RunError, RunSpec, TrainConfig, build_model, model_config
from vae_explorer.cli import build_parser
from vae_explorer.data import load_dataset
from vae_explorer.cli import main as cli_main
from vae_explorer.memory import (STEP_TENSORS, MemoryEstimate, _saved_per_call, activation_bytes,
                                 free_ram, human, parameter_bytes)
from vae_explorer.runs import DataSpec, spec_from_args
from vae_explorer.server import Explorer, ViewError
from vae_explorer.server.jobs import JobError, TrainingJobs

from .conftest import REPO


def _rss() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def _data_for(name: str):
    """A dataset of the kind the model takes: digits for image models, breast_cancer for table models."""
    return load_dataset("digits" if MODELS[name].cls.data_kind == "image" else "breast_cancer")


def _configs(name: str):
    if MODELS[name].cls.data_kind == "image":
        return [model_config(name, input_shape=shape) for shape in [(1, 8, 8), (3, 32, 32)]]
    settings = _data_for(name).model_settings()
    return [model_config(name, **settings), model_config(name, **settings, hidden=(512, 32), embedding_dim=3)]


@pytest.mark.parametrize("name", list(MODELS))
def test_the_meta_device_counts_every_registry_models_parameters(name):
    for config in _configs(name):
        trainable, weights = parameter_bytes(lambda: build_model(name, config))
        real = build_model(name, config)
        assert trainable == sum(p.numel() * p.element_size() for p in real.parameters() if p.requires_grad)
        assert weights == sum(t.numel() * t.element_size() for t in (*real.parameters(), *real.buffers()))


@pytest.mark.parametrize("name", list(MODELS))
def test_activations_from_a_few_items_extrapolate_to_the_batch(name):
    data = _data_for(name)
    model = build_model(name, **data.model_settings()).eval()

    def items(n):
        return data.kind.prepare(data.train_x[:n])

    batch = 96
    saved, largest = _saved_per_call(model, items(batch))  # measured at the batch itself
    # With an evaluation batch of one item the training step decides: extrapolated from 2 and 4 items, it is
    # what the batch itself saves (to a few KB: the residual VQ keeps a few tensors that do not grow with it).
    extrapolated = activation_bytes(model, items, batch=batch, eval_batch=1)
    # rel 5%: about one run in three, the residual VQ's count at the batch came out 4% below the extrapolation
    # (seen on a loaded machine; the cause is not found: the probe dedups saved tensors by address).
    assert extrapolated == pytest.approx(saved + STEP_TENSORS * largest, rel=0.05)
    assert not model.training  # the probe left the mode as it found it


def test_the_probe_leaves_the_model_and_the_random_state_alone(digits):
    torch.manual_seed(0)
    model = build_model("vq_vae", **digits.model_settings()).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.get_rng_state()
    activation_bytes(model, lambda n: digits.kind.prepare(digits.train_x[:n]), 128, 359, iwae_k=16)
    assert model.training and torch.equal(state, torch.get_rng_state())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_small_run_fits_and_says_what_it_needs():
    spec = RunSpec("vae", train=TrainConfig(device="cpu")).validate()
    estimate = spec.check_memory(spec.load_data())
    real = build_model("vae", spec.model_config(spec.load_data()))
    params = sum(p.numel() * 4 for p in real.parameters())
    assert estimate.parameters == params and estimate.optimizer == 3 * params
    assert 0 < estimate.activations < 50e6 and estimate.total < 100e6
    assert re.fullmatch(r"about [\d.]+ MB \(parameters [\d.]+ KB, gradients and Adam's moments [\d.]+ KB, "
                        r"activations [\d.]+ MB, data 115\.0 KB\)", estimate.describe()), estimate.describe()


def test_a_huge_latent_is_refused_in_milliseconds_without_allocating():
    spec = RunSpec("vae", {"latent_dim": 10_000_000}, train=TrainConfig(device="cpu")).validate()
    data = spec.load_data()
    RunSpec("vae", train=TrainConfig(device="cpu")).validate().check_memory(data)  # lazy imports out of the timing
    rss, t0 = _rss(), time.perf_counter()
    with pytest.raises(RunError) as refused:
        spec.check_memory(data)
    elapsed = time.perf_counter() - t0
    assert elapsed < 1.0 and _rss() - rss < 50e6, (elapsed, _rss() - rss)
    assert re.fullmatch(r"this run needs at least 123\.2 GB \(parameters 30\.8 GB, gradients and Adam's moments "
                        r"92\.4 GB, data 115\.0 KB\) of memory but [\d.]+ [KMGT]B is allowed \(50% of the [\d.]+ "
                        r"[KMGT]B free now\); choose smaller sizes \(latent_dim, hidden, channels, batch_size\) or a "
                        r"larger limit with --memory-limit", str(refused.value)), str(refused.value)


def test_a_limit_decides_where_one_is_set():
    spec = RunSpec("vae", train=TrainConfig(device="cpu"), memory_limit=0.001).validate()  # 1 MB
    with pytest.raises(RunError, match=r"this run needs about [\d.]+ MB \(.*\) of memory but 1\.0 MB is allowed "
                                       r"\(the limit set for this run\)"):
        spec.check_memory(spec.load_data())
    spec.memory_limit = 1.0
    assert spec.check_memory(spec.load_data()).total < 1e9
    for bad, message in [(-1, "memory_limit must be a positive number of GB, got -1.0"),
                         (float("nan"), "memory_limit must be a positive number of GB, got nan"),
                         ("lots", "memory_limit must be a number, got 'lots'")]:
        with pytest.raises(RunError, match=re.escape(message)):
            RunSpec("vae", memory_limit=bad).validate()


def test_the_limit_is_a_cli_flag_that_the_spec_passes_on(tmp_path, capsys):
    spec = spec_from_args(build_parser().parse_args(["train", "--memory-limit", "2.5"])).validate()
    assert spec.memory_limit == 2.5 and spec.to_argv()[-2:] == ["--memory-limit", "2.5"]
    again = spec_from_args(build_parser().parse_args(["train", *spec.to_argv()])).validate()
    assert again.memory_limit == 2.5
    code = cli_main(["train", "--memory-limit", "0.001", "--out", str(tmp_path / "x"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "but 1.0 MB is allowed (the limit set for this run)" in err[0], err
    assert not list(tmp_path.iterdir())


def test_the_servers_limit_is_the_operators_not_the_pages(tmp_path):
    jobs = TrainingJobs(tmp_path / "ck", memory_limit=0.001)
    with pytest.raises(JobError, match=r"but 1\.0 MB is allowed \(the limit set for this run\); .* with the server's "
                                       r"--train-memory-limit \(its operator sets it\)"):
        jobs.start(RunSpec("vae", train=TrainConfig(epochs=1, device="cpu"), memory_limit=100))  # a page's 100 GB
    assert jobs.current is None and not (tmp_path / "ck").exists()
    ex = Explorer(tmp_path / "ck2", train_memory_limit=0.001)
    try:
        with pytest.raises(ViewError, match="the limit set for this run"):
            ex.train_start(model="vae", epochs=1, device="cpu")
        with pytest.raises(ViewError, match="unknown setting 'memory_limit'"):
            ex.train_start(model="vae", epochs=1, extra="memory_limit=100")
        assert ex.jobs.current is None
    finally:
        ex.close()


def test_the_app_takes_a_training_memory_limit():
    import app

    assert app.parse_args([]).train_memory_limit is None
    assert app.parse_args(["--train-memory-limit", "4"]).train_memory_limit == 4.0
    for bad in ("0", "-2", "nan", "inf"):
        with pytest.raises(SystemExit):
            app.parse_args(["--train-memory-limit", bad])


def test_a_folder_too_big_is_refused_before_a_file_is_read(tmp_path):
    for i in range(40):
        (tmp_path / f"{i}.png").write_bytes(b"not an image")  # reading any of them would fail
    spec = RunSpec("vae", data=DataSpec(dataset="folder", data_root=str(tmp_path), image_size=64),
                   memory_limit=1e-4).validate()  # 100 KB
    with pytest.raises(RunError, match=re.escape("the folder dataset needs about 491.8 KB of memory (40 items) but "
                                                 "100.0 KB is allowed (the limit set for this run)")):
        spec.load_data()
    spec.memory_limit = 1.0  # with room, it goes on to read the files
    with pytest.raises(RunError, match="none of the 40 files .* could be read"):
        spec.load_data()


def test_free_ram_is_what_the_kernel_says_is_available():
    with open("/proc/meminfo") as f:
        total = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemTotal:"))
    assert 0 < free_ram() <= total


def test_sizes_read_plainly():
    assert [human(n) for n in (512, 2_048, 3.5e6, 31.2e9, 4e12)] == ["512 bytes", "2.0 KB", "3.5 MB", "31.2 GB",
                                                                      "4.0 TB"]
    partial = MemoryEstimate(7_500_000_000, 22_500_000_000, 1_000)
    assert partial.describe() == ("at least 30.0 GB (parameters 7.5 GB, gradients and Adam's moments 22.5 GB, "
                                  "data 1.0 KB)")
    assert partial.host_part().describe() == "about 7.5 GB (parameters 7.5 GB, data 1.0 KB)"


# ---- against real training processes ----------------------------------------------------------------

MEASURE = """
import json, sys, torch
from vae_explorer.runs import DataSpec, RunSpec
from vae_explorer.training import TrainConfig, fit
from vae_explorer.models import build_model
model, settings, batch, dataset = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.set_num_threads(1)
spec = RunSpec(model, settings, DataSpec(dataset=dataset), TrainConfig(epochs=1, batch_size=batch, device="cpu",
               precision="fp32"), memory_limit=8).validate()
data = spec.load_data()
estimate = spec.check_memory(data)  # as the CLI does, before building the model
def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))
# Reset the high-water mark, so the peak is the run's, not that of building the dataset (sprites are drawn
# at 4x the size and shrunk) or of anything else before it.
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = status("VmRSS")
fit(build_model(model, spec.model_config(data)), data, spec.train)
peak = status("VmHWM")
print(json.dumps({"estimate": estimate.total, "measured": peak - before}))
"""


@pytest.mark.subprocess
@pytest.mark.parametrize("model,settings,batch,dataset", [
    ("ae", {"hidden": "3000,3000"}, 256, "digits"),  # parameters and Adam's moments lead: ~320 MB
    ("conv_ae", {"channels": "64,128"}, 512, "sprites"),  # a training step's activations lead: ~200 MB
    ("conv_vae", {}, 128, "sprites"),  # evaluation's IWAE decodes lead: ~930 MB
])
def test_the_estimate_is_close_to_a_real_training_peak(model, settings, batch, dataset):
    # glibc's mmap threshold fixed: every large tensor gets its own mapping, returned when freed, so the peak
    # RSS follows the tensors alive rather than heap fragmentation (which moved it by ±50% between runs).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    proc = subprocess.run([sys.executable, "-c", MEASURE, model, json.dumps(settings), str(batch), dataset],
                          capture_output=True, text=True, cwd=REPO, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    ratio = result["estimate"] / result["measured"]
    # Peak RSS growth over one epoch (training steps and evaluation). Repeated runs of the same process
    # measured 0.90-1.13 of the estimate (allocator and thread-pool noise), hence the lower bound.
    assert 0.85 < ratio < 1.3, result


@pytest.mark.subprocess
def test_checking_every_registry_model_imports_no_compiler():
    # A meta-device op without a C++ kernel imports torch._dynamo: seconds of every training start.
    code = ("import sys\nfrom vae_explorer import MODELS, RunSpec, TrainConfig\nfrom vae_explorer.runs import DataSpec\n"
            "for name, entry in MODELS.items():\n"
            "    data = DataSpec(dataset='digits' if entry.cls.data_kind == 'image' else 'breast_cancer')\n"
            "    spec = RunSpec(name, data=data, train=TrainConfig(device='cpu')).validate()\n"
            "    spec.check_memory(spec.load_data())\n"
            "print('torch._dynamo' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.stdout.strip() == "False", proc.stdout + proc.stderr[-2000:]


def test_where_the_system_does_not_say_no_real_model_is_built(monkeypatch):
    import vae_explorer.runs as runs

    monkeypatch.setattr(runs, "free_memory", lambda device: None)
    monkeypatch.setattr(runs, "build_model", lambda *a, **k: pytest.fail("a real model was built"))
    monkeypatch.setattr(runs, "parameter_bytes", lambda build: (4_000, 4_000))
    spec = RunSpec("vae", train=TrainConfig(device="cpu")).validate()
    estimate = spec.check_memory(spec.load_data())
    assert estimate.activations is None and estimate.describe().startswith("at least")
