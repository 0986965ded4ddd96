"""The decoders the page runs: every image model's `page_decoder()` description, interpreted by the numpy
reference (models/page.run), gives what the model's own `decode` gives; the files the server writes for
the page hold exactly those weights, and change when the checkpoint does."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from vae_explorer import MODELS, build_model
from vae_explorer.models import LIKELIHOODS, page

from .test_models import IMAGE_MODELS, INPUT_SHAPES

VARIANTS = [{}, {"activation": "leaky_relu"}, {"arch": "conv"}, {"arch": "mlp", "hidden": (32, 16)},
            {"arch": "conv", "channels": (8, 16, 8)}]


def codes(model, n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.zeros(1, model.latent_dim), 3 * torch.randn(n, model.latent_dim, generator=g)])


def assert_reproduces(model, tolerance=1e-5):
    model.eval()
    desc = model.page_decoder()
    assert desc is not None, f"{model.name} has no page decoder"
    z = codes(model)
    with torch.no_grad():
        want = model.decode(z).numpy()
    got = page.run(desc, z.numpy())
    assert got.shape == want.shape
    # Images in [0, 1]: 1e-5 absolute. An unsquashed mean (linear_ae) can be large: float32's own rounding
    # then grows with it, so the bound scales with the largest value.
    err = np.abs(got - want).max() / max(1.0, np.abs(want).max())
    assert err <= tolerance, f"{model.name}: {desc.describe()} differs by {err:.3g}"
    return desc


@pytest.mark.parametrize("shape", INPUT_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_every_image_model_runs_in_the_page(name, shape):
    torch.manual_seed(0)
    for variant in VARIANTS:
        model = build_model(name, input_shape=shape, **variant)
        # Random weights decode to about 0.5 everywhere: scale them up so the sigmoid's whole range is exercised.
        with torch.no_grad():
            for p in model.decoder.parameters():
                p.mul_(3)
        assert_reproduces(model)


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_every_likelihood_mean_is_described(likelihood):
    for squash in (True, False):
        model = build_model("vae", likelihood=likelihood, squash=squash)
        desc = assert_reproduces(model)
        # Bernoulli's mean is always the sigmoid of the logits; the others squash only when told.
        assert (desc.ops[-1]["op"] == "sigmoid") == (squash or likelihood == "bernoulli")


def test_the_shipped_checkpoints_run_in_the_page():
    from vae_explorer.checkpoints import load_checkpoint
    from tests.conftest import REPO

    for name in ("digits_vae", "digits_conv_vae", "digits_vq_vae", "digits_rvq_vae", "digits_linear_ae"):
        model, _ = load_checkpoint(REPO / "checkpoints" / f"{name}.safetensors", "cpu")
        assert_reproduces(model)


class _Layers(nn.Module):
    """A decoder of every layer the page knows beyond the registry's: batch norm, upsampling, conv2d, tanh."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(3, 4 * 3 * 2), nn.BatchNorm1d(24), nn.Tanh(), nn.Unflatten(1, (4, 3, 2)),
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(4, 5, 3, stride=1, padding=1),
            nn.BatchNorm2d(5), nn.LeakyReLU(0.1), nn.Dropout(0.5),
            nn.ConvTranspose2d(5, 2, 4, stride=2, padding=1, output_padding=0), nn.Identity(),
            nn.Conv2d(2, 2, 3, stride=2, padding=0), nn.Flatten(), nn.Linear(2 * 5 * 3, 6), nn.Sigmoid(),
            nn.Unflatten(1, (1, 2, 3)))

    def forward(self, z):
        return self.net(z)


def test_every_op_matches_torch():
    torch.manual_seed(1)
    decoder = _Layers()
    for bn in (decoder.net[1], decoder.net[6]):  # statistics that are not the identity
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 1.5)
    decoder.eval()
    desc = page.describe(decoder, [], 3, (1, 2, 3))
    assert [op["op"] for op in desc.ops] == [
        "linear", "affine", "tanh", "reshape", "upsample", "conv2d", "affine", "leaky_relu", "conv_transpose2d",
        "conv2d", "reshape", "linear", "sigmoid", "reshape"]
    z = torch.randn(5, 3)
    with torch.no_grad():
        want = decoder(z).numpy()
    assert np.abs(page.run(desc, z.numpy()) - want).max() < 1e-5
    page.check(desc, decoder)


def test_what_the_page_cannot_run_stays_on_the_server():
    # A layer the page does not know: no description, not a wrong one.
    model = build_model("vae")
    model.decoder.net.insert(1, nn.GELU())
    assert model.page_decoder() is None
    # A wrapper that does more than run its child: the description is caught by the check against decode.
    model = build_model("ae")
    forward = model.decoder.forward
    model.decoder.forward = lambda z: forward(z) * 2
    with pytest.raises(page.Unsupported, match="differs from decode"):
        page.check(model.page_decoder(), model.decode)
    # Table models decode to rows, which the page shows as a table drawn by the server.
    assert all(build_model(n, **_table_settings()).page_decoder() is None
               for n, e in MODELS.items() if e.cls.data_kind == "table")


def _table_settings():
    from vae_explorer import load_dataset

    return load_dataset("breast_cancer").model_settings()


def test_the_files_for_the_page_hold_the_weights(tmp_path):
    from vae_explorer.server.page_decoders import PageDecoders

    model = build_model("conv_vae")
    cache = PageDecoders(tmp_path)
    first = cache.export(model, "some_model")
    assert first.index_file is not None and first.reason is None
    index = json.loads(first.index_file.read_text())
    blob = np.fromfile(tmp_path / index["blob"], "<f4")
    desc = model.page_decoder()
    assert len(blob) == index["floats"] == sum(a.size for a in desc.tensors.values())
    for name, where in index["tensors"].items():
        got = blob[where["offset"]:where["offset"] + int(np.prod(where["shape"]))].reshape(where["shape"])
        assert np.array_equal(got, desc.tensors[name])
    assert cache.export(model, "some_model").index_file == first.index_file  # the same weights: the same files
    with torch.no_grad():  # a retrained checkpoint of the same name: new files, so no page keeps the old ones
        next(model.decoder.parameters()).add_(0.01)
    second = cache.export(model, "some_model")
    assert second.index_file != first.index_file and second.index_file.exists()
    assert not first.index_file.exists()  # the old decoder's files are removed
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".bin", ".json"]


def test_the_explorer_sends_the_code_the_server_decodes_and_a_new_decoder_for_a_new_checkpoint(tmp_path):
    """The page's slider code (offset + values · directions) is the server's, and a checkpoint rewritten
    under the same name (a retrained model) points pages at new files."""
    import shutil

    from vae_explorer.server import Explorer
    from tests.conftest import REPO

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for name in ("digits_vae", "digits_beta_vae", "breast_cancer_tabular_ae"):
        shutil.copy(REPO / "checkpoints" / f"{name}.safetensors", folder)
    ex = Explorer(folder, projection_cache=tmp_path / "projections")
    try:
        spec = ex.page_sliders("digits_vae", 3)
        entry = ex.load("digits_vae")
        axes = ex._slider_axes(entry)
        moved = np.asarray(spec["values"]) + 0.5
        page_code = np.asarray(spec["offset"]) + moved @ np.asarray(spec["directions"])
        assert np.allclose(page_code, axes.compose(entry.codes[3], moved), atol=1e-6)
        assert spec["shape"] == [1, 8, 8] and spec["scale"] == 24  # the server's 192-pixel image of 8×8 items
        first = spec["decoder"]
        assert first.startswith(str(ex.pages.folder)) and first.endswith(".json")
        assert ex.page_sliders("digits_vae", 5)["decoder"] == first  # written once per checkpoint version

        shutil.copy(folder / "digits_beta_vae.safetensors", folder / "digits_vae.safetensors")  # "retrained"
        assert ex.page_sliders("digits_vae", 3)["decoder"] != first
        ends = ex.page_interpolation("digits_vae", 0, 1, 0.25, "spherical")
        assert len(ends["za"]) == len(ends["zb"]) == 2 and ends["mode"] == "spherical" and ends["t"] == 0.25

        table = ex.page_sliders("breast_cancer_tabular_ae", 0)
        assert table["decoder"] is None and "table" in table["reason"]
    finally:
        ex.close()
