"""The command line, run as users run it: python -m vae_explorer ..."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

from vae_explorer import MODELS, read_metadata

from .conftest import REPO

pytestmark = pytest.mark.subprocess  # every test here starts the CLI or a training process


def run(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "vae_explorer", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_models_lists_the_registry():
    assert run("models").stdout.split() == list(MODELS)


def test_the_cli_does_not_import_the_compiler_or_torchvision():
    # Each costs over a second of every command's start-up; only --compile and downloads need them.
    code = "import sys, vae_explorer.cli; print(sorted({'torch._dynamo', 'torchvision'} & set(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr[-2000:]


def test_the_app_starts_without_the_libraries_only_some_views_need():
    # scikit-learn, scipy.stats/linalg, umap-learn and kaleido serve a view or an export each, and cost seconds
    # of every `python app.py` before the first map (sklearn.ensemble with scipy.stats alone: 1.2 s).
    heavy = ["sklearn", "scipy.stats", "scipy.linalg", "umap", "kaleido", "torchvision", "torch._dynamo"]
    code = f"import sys, app; print(sorted(set({heavy!r}) & set(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr[-2000:]


def test_train_eval_sample(tmp_path):
    out = tmp_path / "vae"
    summary = json.loads(run("train", "--model", "vae", "--epochs", "2", "--latent-dim", "3", "--batch-size", "64",
                             "--out", str(out), "--quiet").stdout)
    assert summary["epochs"] == 2 and summary["device"] == "cpu" and summary["images_per_s_median"] > 0
    ckpt = out.with_suffix(".safetensors")
    assert read_metadata(ckpt)["config"]["latent_dim"] == 3

    metrics = json.loads(run("eval", "--checkpoint", str(ckpt), "--json", "--iwae-k", "20").stdout)
    for key in ("loss", "recon", "kl", "mse_per_pixel", "psnr", "nll_iwae"):
        assert isinstance(metrics[key], float), key
    assert metrics["iwae_k"] == 20 and metrics["test_images"] == 359
    assert 0 < metrics["mse_per_pixel"] < 1 and metrics["psnr"] > 0

    grid = tmp_path / "grid.png"
    run("sample", "--checkpoint", str(ckpt), "-n", "49", "--out", str(grid), "--scale", "2")
    im = Image.open(grid)
    assert im.size == (2 * (7 * 9 + 1), 2 * (7 * 9 + 1))  # 7x7 tiles of 8 px, 1 px padding, upscaled 2x


def test_train_resume_runs_the_remaining_epochs(tmp_path):
    out = tmp_path / "ae"
    run("train", "--model", "ae", "--epochs", "1", "--out", str(out), "--quiet")
    summary = json.loads(run("train", "--model", "ae", "--epochs", "3", "--out", str(out), "--resume",
                             "--quiet").stdout)
    assert summary["epochs"] == 3
    assert [m["epoch"] for m in read_metadata(out.with_suffix(".safetensors"))["metrics"]] == [1, 2, 3]


@pytest.mark.parametrize("args,message", [
    (["train", "--model", "nope"], "unknown model 'nope'"),
    (["train", "--latent-dim", "0"], "latent_dim must be at least 1"),
    (["train", "--lr", "-0.1"], "learning rate must be a positive number"),
    (["train", "--lr", "0"], "learning rate must be a positive number"),
    (["train", "--epochs", "0"], "epochs must be at least 1"),
    (["train", "--dataset", "nope"], "unknown dataset"),
    (["train", "--model", "ae", "--beta", "4"], "beta does not apply to model ae"),
    (["train", "--beta", "-1"], "beta must be >= 0"),
    (["train", "--batch-size", "100000"], "larger than the 1438 training images"),
    (["train", "--dataset", "folder", "--data-root", "/nonexistent-folder"], "not a directory"),
    (["train", "--hidden", "a,b"], "hidden must be comma-separated whole numbers"),
    (["train", "--latent-dim", "2.5"], "latent_dim must be a whole number"),
    (["train", "--squash", "--model", "vq_vae", "--codebook-size", "1e400"], "codebook_size must be a whole number"),
    (["eval", "--checkpoint", "no_such_name"], "no_such_name: no such checkpoint file"),
    (["eval", "--checkpoint", "/nonexistent.safetensors"], "no such checkpoint file"),
    (["sample", "--checkpoint", "/nonexistent.safetensors"], "no such checkpoint file"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_arguments_get_one_line_and_exit_2(args, message, tmp_path, capsys):
    # In this process (the CLI's own main, as `python -m vae_explorer` calls it): seventeen interpreters each
    # importing torch would cost a minute. The next test runs one refusal as a real process.
    from vae_explorer.cli import main

    argv = [*args, "--out", str(tmp_path / "x")] if args[0] == "train" else list(args)
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own refusals
        code = e.code
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert not list(tmp_path.iterdir())  # refused before any work: nothing written


def test_a_refusal_is_one_line_and_exit_2_as_a_process(tmp_path):
    proc = run("train", "--latent-dim", "0", "--out", str(tmp_path / "x"), check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "latent_dim must be at least 1" in lines[0], proc.stderr
    assert not list(tmp_path.iterdir())


def test_missing_mnist_is_a_clear_error(tmp_path):
    proc = run("train", "--dataset", "mnist", "--data-root", str(tmp_path / "empty"), "--out", str(tmp_path / "x"),
               check=False)
    assert proc.returncode == 2
    assert "mnist not found: expected train-images-idx3-ubyte" in proc.stderr


@pytest.mark.parametrize("argv", [["train", "--help"], ["eval", "--help"], ["sample", "--help"], ["export", "--help"],
                                  ["--help"], ["app.py", "--help"]])
def test_every_help_page_prints(argv, capsys):
    # argparse formats help texts with %: a bare "50% of" in one crashed `--help` with a TypeError. In this
    # process: the parsers are what `python -m vae_explorer` and `python app.py` build.
    if argv[0] == "app.py":
        import app

        parse = app.parse_args
    else:
        from vae_explorer.cli import main as parse
    with pytest.raises(SystemExit) as done:
        parse(argv[1:] if argv[0] == "app.py" else argv)
    assert done.value.code == 0 and "usage:" in capsys.readouterr().out
