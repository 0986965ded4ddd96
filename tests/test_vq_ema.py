"""The EMA codebook update (van den Oord et al. 2017, appendix A.1): its arithmetic against a
plain re-implementation, gradients, training, checkpoints, eval mode, DDP and the command line."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from vae_explorer import TrainConfig, build_model, fit, load_checkpoint, read_metadata, save_checkpoint
from vae_explorer.cli import main
from vae_explorer.models.vq import VectorQuantizer

from .conftest import REPO

EPS = 1e-5  # Laplace smoothing constant of Sonnet's VectorQuantizerEMA


def reference_step(codebook, count, total, r, decay):
    """One EMA step in float64, with loops: returns (codebook, count, sum, assignments)."""
    k = len(codebook)
    assigned = [int(np.argmin([np.sum((x - e) ** 2) for e in codebook])) for x in r]
    n_k, s_k = np.zeros(k), np.zeros_like(codebook)
    for x, i in zip(r, assigned):
        n_k[i] += 1
        s_k[i] += x
    count = decay * count + (1 - decay) * n_k
    total = decay * total + (1 - decay) * s_k
    n = count.sum()
    smoothed = (count + EPS) / (n + k * EPS) * n
    return total / smoothed[:, None], count, total, assigned


def hand_made_quantizer(decay=0.9):
    vq = VectorQuantizer(4, 2, restart_every=0, update="ema", decay=decay)
    vq.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]))
    # Statistics that do not simply restate the codebook, and a code (3) with a near-zero count,
    # where the Laplace smoothing decides the result.
    vq.ema_count.copy_(torch.tensor([2.0, 1.0, 3.0, 1e-6]))
    vq.ema_sum.copy_(torch.tensor([[0.2, 0.0], [1.0, 0.2], [0.3, 2.5], [1e-6, 2e-6]]))
    vq.initialized.fill_(True)  # no data-dependent initialisation: the state above is the one updated
    return vq.train()


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
def test_one_step_matches_a_plain_reimplementation(autocast):
    vq = hand_made_quantizer()
    before = vq.codebook.clone()
    r = torch.tensor([[0.1, 0.0], [0.9, 0.1], [1.2, -0.1], [0.0, 0.8], [-0.1, 1.1], [0.2, 0.1]])
    if autocast:
        r = r.bfloat16()  # what an encoder under bf16 autocast hands over
    ref = reference_step(before.double().numpy(), vq.ema_count.double().numpy(), vq.ema_sum.double().numpy(),
                         r.double().numpy(), decay=0.9)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        q, idx = vq(r)
    assert idx.tolist() == ref[3] == [0, 1, 1, 2, 2, 0]
    torch.testing.assert_close(q, before[idx])  # the codes as assigned, before the update
    # fp32 arithmetic even under autocast: bf16 would be off by ~1e-2 here.
    for got, want in zip((vq.codebook, vq.ema_count, vq.ema_sum), ref[:3]):
        assert got.dtype == torch.float32
        np.testing.assert_allclose(got.double().numpy(), want, rtol=1e-6, atol=1e-9)
    # The smoothing mattered: an unsmoothed division would have left code 3 at sum / count = (1, 2).
    assert vq.codebook[3].abs().max() < 0.2


def test_reseeded_codes_restart_their_statistics():
    torch.manual_seed(0)
    vq = VectorQuantizer(4, 2, restart_every=1, update="ema", decay=0.99)
    vq.initialized.fill_(True)
    vq.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [-5.0, -5.0], [-6.0, -6.0]]))
    vq.ema_sum.copy_(vq.codebook * 100)  # long histories at far-away places
    vq.ema_count.fill_(100.0)
    vq.usage.copy_(torch.tensor([0.5, 0.5, 0.0, 0.0]))  # codes 2 and 3 are dead
    r = torch.tensor([10.0, 10.0]) + 0.1 * torch.randn(64, 2)
    vq.train()(r)  # step 1 of restart_every=1: re-seed, assign, update
    for k in (2, 3):  # re-seeded inside the data, and not pulled back to (-5, -5) by old statistics
        assert (vq.codebook[k] - 10).abs().max() < 0.5, vq.codebook
        assert vq.ema_count[k] < 2  # a fresh start (one observation, plus this step's share), not 100
    torch.testing.assert_close(vq.codebook[:2], torch.tensor([[0.0, 0.0], [1.0, 0.0]]), atol=0.2, rtol=0)


def test_no_gradient_reaches_the_codebook_and_the_encoder_still_learns():
    torch.manual_seed(0)
    for name in ("vq_vae", "rvq_vae"):
        model = build_model(name, codebook_update="ema")
        out = model(torch.rand(8, 1, 8, 8))
        assert list(out.terms) == ["recon", "commitment"]
        assert set(out.stats) == {"perplexity", "codebook_usage"}
        out.loss.backward()
        for q in model.quantizers:
            assert q.codebook.grad is None and not q.codebook.requires_grad
            assert all(p is not q.codebook for p in model.parameters())  # the optimizer never sees it
        missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
        assert not missing, f"no gradient reaches {missing}"

        model.zero_grad()
        model(torch.rand(8, 1, 8, 8)).terms["recon"].backward()  # straight-through alone reaches the encoder
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())


@pytest.mark.parametrize("name", ["vq_vae", "rvq_vae"])
def test_training_with_ema_lowers_the_loss_and_uses_many_codes(name, digits):
    torch.manual_seed(0)
    model = build_model(name, **digits.model_settings(), codebook_update="ema")
    result = fit(model, digits, TrainConfig(epochs=20, iwae_k=0, history_images=0, device="cpu"))
    first, last = result.history[0]["test"], result.history[-1]["test"]
    assert "codebook" not in last and "commitment" in last
    assert last["loss"] < 0.8 * first["loss"], (first["loss"], last["loss"])
    # 4 tokens per image: a perplexity of 4 is one code per token position; well above that means
    # the codes follow the images.
    assert last["perplexity"] > 12, last["perplexity"]
    for q in model.quantizers:  # after every training step the codes are the smoothed averages
        n = q.ema_count.sum()
        smoothed = (q.ema_count + EPS) / (n + len(q.ema_count) * EPS) * n
        torch.testing.assert_close(q.codebook, q.ema_sum / smoothed[:, None])


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = build_model("rvq_vae", codebook_update="ema", ema_decay=0.9, restart_every=0)
    for _ in range(3):  # initialise the codebooks, move the statistics
        model(torch.rand(32, 1, 8, 8))
    model.eval()
    path = save_checkpoint(tmp_path / "ema", model, {"dataset": {"name": "digits"}})
    assert read_metadata(path)["config"]["codebook_update"] == "ema"
    loaded, meta = load_checkpoint(path)
    assert meta["model"] == "rvq_vae"
    assert loaded.config == model.config and loaded.config.codebook_update == "ema" and loaded.config.ema_decay == 0.9
    x = torch.rand(7, 1, 8, 8)
    torch.testing.assert_close(loaded.encode(x), model.encode(x), rtol=0, atol=0)
    z = torch.randn(7, model.latent_dim)
    torch.testing.assert_close(loaded.decode(z), model.decode(z), rtol=0, atol=0)
    state = model.state_dict()
    assert {"quantizers.0.ema_count", "quantizers.0.ema_sum", "quantizers.0.codebook"} <= set(state)
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in state.items())
    # The EMA statistics travelled too: one more training step moves both codebooks alike.
    x = torch.rand(32, 1, 8, 8)
    model.train()(x)
    loaded.train()(x)
    for a, b in zip(model.quantizers, loaded.quantizers):
        torch.testing.assert_close(a.codebook, b.codebook, rtol=0, atol=0)


def test_eval_mode_changes_nothing():
    torch.manual_seed(0)
    model = build_model("rvq_vae", codebook_update="ema")
    model(torch.rand(32, 1, 8, 8))  # initialised, statistics moved once
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model(torch.rand(32, 1, 8, 8))
        model.encode(torch.rand(32, 1, 8, 8))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def _ddp_rank(rank: int, world: int, folder: str, batches: torch.Tensor):
    import torch.distributed as dist
    from safetensors.torch import save_file

    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world)
    try:
        vq = hand_made_quantizer(decay=0.5)
        for r in batches[:, rank]:  # each step, each rank sees its own half of the batch
            vq(r)
        save_file({k: v.contiguous() for k, v in vq.state_dict().items()}, f"{folder}/rank{rank}.safetensors")
    finally:
        dist.destroy_process_group()


@pytest.mark.subprocess
def test_ddp_ranks_update_from_the_global_batch(tmp_path):
    # Two gloo ranks with different data and no DDP wrapper (its buffer broadcast would hide a missing
    # all-reduce): each must end where one process ends on the whole batches.
    from safetensors.torch import load_file

    torch.manual_seed(0)
    batches = torch.randn(3, 2, 16, 2)  # (steps, ranks, N, d)
    torch.multiprocessing.start_processes(_ddp_rank, args=(2, str(tmp_path), batches), nprocs=2,
                                          start_method="spawn")
    single = hand_made_quantizer(decay=0.5)
    for b in batches:
        single(b.reshape(-1, 2))
    for rank in (0, 1):
        result = load_file(tmp_path / f"rank{rank}.safetensors")
        for k, v in single.state_dict().items():
            torch.testing.assert_close(result[k], v, msg=f"rank {rank}: {k}")
    assert not torch.equal(single.codebook, hand_made_quantizer().codebook)  # it moved


@pytest.mark.subprocess
def test_cli_trains_with_ema(tmp_path):
    out = tmp_path / "vq"
    proc = subprocess.run([sys.executable, "-m", "vae_explorer", "train", "--model", "vq_vae", "--codebook-update",
                           "ema", "--ema-decay", "0.9", "--epochs", "1", "--out", str(out), "--quiet"],
                          capture_output=True, text=True, cwd=REPO, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert "codebook" not in summary["test"] and "commitment" in summary["test"]
    config = read_metadata(out.with_suffix(".safetensors"))["config"]
    assert config["codebook_update"] == "ema" and config["ema_decay"] == 0.9


@pytest.mark.parametrize("args,message", [
    (["--model", "vq_vae", "--codebook-update", "bogus"], "unknown codebook_update 'bogus'; choose one of: loss, ema"),
    (["--model", "vq_vae", "--codebook-update", "ema", "--ema-decay", "1.5"], "ema_decay must be between 0 and 1"),
    (["--model", "vq_vae", "--codebook-update", "ema", "--ema-decay", "nan"], "ema_decay must be between 0 and 1"),
    (["--model", "vae", "--codebook-update", "ema"], "codebook_update does not apply to model vae"),
    (["--model", "ae", "--ema-decay", "0.9"], "ema_decay does not apply to model ae"),
    (["--model", "vq_vae", "--ema-decay", "0.9"], "ema_decay applies only with codebook_update ema"),
])
def test_bad_ema_flags_get_one_line_and_exit_2(args, message, tmp_path, capsys):
    # In-process (the parsing and checks python -m runs, without a fresh interpreter per case).
    assert main(["train", *args, "--out", str(tmp_path / "x")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert not list(tmp_path.iterdir())  # refused before any work: nothing written
