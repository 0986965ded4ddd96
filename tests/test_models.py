"""The model contract, checked for every registry entry and every input kind."""
from __future__ import annotations

import pytest
import torch

from vae_explorer import MODELS, ModelOutput, build_model, load_checkpoint, save_checkpoint
from vae_explorer.models import LIKELIHOODS

# The image families; table models have their own contract tests (test_tables.py).
IMAGE_MODELS = [name for name, entry in MODELS.items() if entry.cls.data_kind == "image"]
INPUT_SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 20, 13)]  # digits, MNIST, CIFAR-10, a user's odd size


@pytest.mark.parametrize("shape", INPUT_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_contract_shapes_loss_and_gradients(name, shape):
    torch.manual_seed(0)
    model = build_model(name, input_shape=shape)
    x = torch.rand(5, *shape)
    out = model(x)
    assert isinstance(out, ModelOutput)
    assert out.recon.shape == x.shape
    assert out.recon is out.recon  # computed once, on first read
    assert torch.allclose(out.recon, model.decode(out.latent), atol=1e-5)  # the decoded code the model saw
    assert out.latent.shape == (5, model.latent_dim)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert set(out.terms) >= {"recon"}
    assert torch.allclose(out.loss, sum(out.terms.values()))
    assert 0 <= out.recon.min() and out.recon.max() <= 1 or not model.config.squash

    out.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient reaches {missing}"

    model.eval()
    z = model.encode(x)
    assert z.shape == (5, model.latent_dim)
    assert model.decode(z).shape == x.shape
    assert model.reconstruct(x).shape == x.shape


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_save_load_round_trip_gives_identical_outputs(name, tmp_path):
    torch.manual_seed(0)
    model = build_model(name, input_shape=(1, 8, 8))
    model.train()
    model(torch.rand(16, 1, 8, 8))  # one training forward: VQ codebooks initialise, usage buffers move
    model.eval()
    path = save_checkpoint(tmp_path / name, model, {"dataset": {"name": "digits"}})
    loaded, meta = load_checkpoint(path)
    assert meta["model"] == name and loaded.config == model.config
    x = torch.rand(7, 1, 8, 8)
    torch.testing.assert_close(loaded.encode(x), model.encode(x), rtol=0, atol=0)
    z = torch.randn(7, model.latent_dim)
    torch.testing.assert_close(loaded.decode(z), model.decode(z), rtol=0, atol=0)
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("name", ["vae", "ae"])
def test_every_likelihood_trains_a_step(name, likelihood):
    model = build_model(name, likelihood=likelihood)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(8, 1, 8, 8)
    first = model(x).loss
    first.backward()
    opt.step()
    assert torch.isfinite(first)
    assert torch.isfinite(model(x).loss)


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_every_sample_source_the_model_names_works(name):
    """The contract's questions: each named sample source decodes finite outputs; the answers are well formed."""
    g = torch.Generator().manual_seed(0)
    model = build_model(name).eval()
    codes = model.encode(torch.rand(50, 1, 8, 8)).detach().numpy()
    sources = model.sample_sources()
    assert len(sources) >= 2 and len({s.name for s in sources}) == len(sources)
    for source in sources:
        assert source.label and source.explanation
        images = model.sample(6, source.name, generator=g, codes=codes)
        assert images.shape == (6, 1, 8, 8) and torch.isfinite(images).all()
    assert model.sample(3, generator=g).shape == (3, 1, 8, 8)  # the model's own way by default
    with pytest.raises(ValueError, match=sources[0].name):
        model.sample(4, "nope")
    assert model.code_kind in ("continuous", "quantized")
    assert all(torch.is_tensor(t) for t in model.learned_state().values())
    assert model.extra_metrics(torch.rand(2, 1, 8, 8), iwae_k=0) == {}
    q = model.posterior(torch.rand(2, 1, 8, 8))  # q(z|x) or None; where there is one, its mean is the code
    assert q is None or (q.kl_per_dim().shape == (2, model.latent_dim) and (q.kl_per_dim() >= 0).all())


def test_presets_are_configs_not_copies():
    assert MODELS["beta_vae"].cls is MODELS["vae"].cls and MODELS["beta_vae"].preset.beta != 1
    assert MODELS["conv_vae"].preset.arch == "conv" and MODELS["conv_ae"].preset.arch == "conv"
    assert MODELS["rvq_vae"].preset.levels > 1


def test_conv_backbone_uses_strided_conv_and_transposed_conv():
    model = build_model("conv_ae", input_shape=(1, 28, 28))
    convs = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    deconvs = [m for m in model.decoder.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert convs and all(c.stride == (2, 2) for c in convs)
    assert deconvs and all(c.stride == (2, 2) for c in deconvs)


@pytest.mark.parametrize("bad", [dict(latent_dim=0), dict(sigma=0), dict(input_shape=(1, 0, 8)), dict(arch="rnn")])
def test_invalid_configs_are_refused(bad):
    with pytest.raises(ValueError):
        build_model("vae", **bad)


def test_unknown_model_is_refused():
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        build_model("nope")
