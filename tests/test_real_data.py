"""The shipped MNIST checkpoints with and without MNIST on the server, and datasets fetched from the page:
the views that need no dataset work without it, the others say which files go where; a download offline
fails with that message, and a download from a local mirror goes through torchvision's own downloader."""
from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import threading

import numpy as np
import pytest
import torch

from vae_explorer.checkpoints import load_checkpoint
from vae_explorer.data import IMAGES, load_dataset
from vae_explorer.data.downloads import is_present
from vae_explorer.server import SAMPLE_GRID, Explorer, ViewError

from .conftest import REPO, copy_checkpoints, wait_for

MNIST_CHECKPOINTS = ("mnist_ae_2d", "mnist_vae_2d", "mnist_conv_vae", "mnist_denoising_ae", "mnist_vq_vae")
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
DOWNLOAD_WAIT_S = 300  # torchvision's import alone took 95 s on this machine when it was loaded


@pytest.fixture(scope="module")
def no_mnist(tmp_path_factory):
    """The explorer over the shipped checkpoints with an empty data folder: MNIST is absent."""
    ex = Explorer(copy_checkpoints(tmp_path_factory.mktemp("checkpoints")), str(tmp_path_factory.mktemp("data")))
    yield ex
    ex.close()


def shipped(name: str):
    model, meta = load_checkpoint(REPO / "checkpoints" / f"{name}.safetensors", "cpu")
    return model.eval(), meta


def test_the_mnist_set_ships_small_and_lists_always(no_mnist):
    assert set(MNIST_CHECKPOINTS) <= set(no_mnist.checkpoint_names())
    total = sum((REPO / "checkpoints" / f"{n}.safetensors").stat().st_size for n in MNIST_CHECKPOINTS)
    assert total < 6 * 2**20, total  # a few MB in all
    for name in MNIST_CHECKPOINTS:
        model, meta = shipped(name)
        assert meta["dataset"]["name"] == "mnist" and meta["dataset"]["root"] is None  # no machine's folder
        assert model.input_shape == (1, 28, 28) and "train_state" not in meta
    assert shipped("mnist_ae_2d")[0].latent_dim == shipped("mnist_vae_2d")[0].latent_dim == 2
    assert "mnist_vae_2d" in no_mnist.card("mnist_vae_2d")  # the card needs only the file


def test_sample_works_without_the_dataset(no_mnist):
    model, _ = shipped("mnist_vae_2d")
    prior, fitted, caption, _ = no_mnist.sample("mnist_vae_2d", 1.0, 3)
    assert fitted is None and "MNIST" in caption and "not in this server's data folder" in caption
    # The prior grid is the decoder's mean at z ~ N(0, I) drawn with the seed, independently decoded here.
    z = torch.randn(SAMPLE_GRID ** 2, 2, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = IMAGES.grid(IMAGES.clean_output(model.decode(z)), SAMPLE_GRID, target=40)
    assert np.array_equal(np.asarray(prior), np.asarray(expected))
    a, b, caption, _ = no_mnist.sample("mnist_vq_vae", 1.0, 0)  # codebook sampling needs no dataset at all
    assert a is not None and b is not None


@pytest.mark.parametrize("name", ["mnist_vae_2d", "mnist_conv_vae"])
def test_sliders_start_from_the_zero_code_without_the_dataset(no_mnist, name):
    model, _ = shipped(name)
    d = model.latent_dim
    sliders, image, text = no_mnist.slider_setup(name, 0)
    assert len(sliders) == min(d, 8) and all((s["minimum"], s["maximum"], s["value"]) == (-3, 3, 0) for s in sliders)
    assert "MNIST is not in this server's data folder" in text
    values = [1.5, -0.5] + [0.25] * (len(sliders) - 2)
    z = np.zeros((1, d), np.float32)
    z[0, :len(values)] = values  # the first coordinates as set, the rest 0
    with torch.no_grad():
        expected = IMAGES.show(IMAGES.clean_output(model.decode(torch.from_numpy(z)))[0], 192)
    assert np.array_equal(np.asarray(no_mnist.decode_sliders(name, 0, values)), np.asarray(expected))
    spec = no_mnist.page_sliders(name, 0)  # the page decodes offset + values · directions: the same code
    code = np.asarray(spec["offset"]) + np.asarray(values) @ np.asarray(spec["directions"])
    assert np.allclose(code, z[0])


@pytest.mark.parametrize("view", [
    lambda ex: ex.latent_map("mnist_vae_2d"),
    lambda ex: ex.compare_point("mnist_ae_2d", "mnist_vae_2d", 0),
    lambda ex: ex.manifold("mnist_vae_2d"),
    lambda ex: ex.reconstruct(["mnist_conv_vae"], "1, 2"),
    lambda ex: ex.denoise(["mnist_denoising_ae"], 0),
    lambda ex: ex.map_colourings("mnist_vq_vae"),
    lambda ex: ex.sample("mnist_ae_2d") and ex.latent_usage("mnist_ae_2d"),
], ids=["map", "point", "manifold", "reconstruct", "denoise", "colourings", "usage"])
def test_views_that_need_mnist_say_which_files_go_where(no_mnist, view):
    with pytest.raises(ViewError) as raised:
        view(no_mnist)
    message = str(raised.value)
    folder = no_mnist.downloads.data_root + "/MNIST/raw"
    assert "MNIST" in message and folder in message and "Download" in message
    assert all(f in message for f in MNIST_FILES)


def test_the_same_checkpoints_open_when_mnist_is_there(tmp_path, mnist_root):
    ex = Explorer(copy_checkpoints(tmp_path / "checkpoints"), mnist_root)
    try:
        result = ex.latent_map("mnist_vae_2d", "auto")
        assert "10,000 test images of mnist" in result.note
        sliders, _, text = ex.slider_setup("mnist_ae_2d", 7)
        assert "Starting from test image 7" in text
        _, fitted, _, _ = ex.sample("mnist_vae_2d")
        assert fitted is not None
        assert "is in the data folder" in ex.dataset_status("mnist")[0]
    finally:
        ex.close()


def test_a_download_offline_fails_fast_with_the_files_and_the_folder(tmp_path):
    ex = Explorer(copy_checkpoints(tmp_path / "checkpoints"), str(tmp_path / "data"))
    try:
        text, running = ex.dataset_download("mnist")
        assert running or "could not" in text
        assert wait_for(lambda: not ex.dataset_status("mnist")[1], DOWNLOAD_WAIT_S, poll=0.2)
        text, _ = ex.dataset_status("mnist")
        assert "offline" in text and str(tmp_path / "data" / "MNIST" / "raw") in text
        assert all(f in text for f in MNIST_FILES)
        assert not (tmp_path / "data").exists()  # nothing half-written
        with pytest.raises(ViewError, match="not downloadable"):
            ex.dataset_download("digits")
    finally:
        ex.close()


def _idx(array: np.ndarray) -> bytes:
    """An IDX file (MNIST's format): zero, zero, 0x08 (unsigned bytes), the number of dimensions, each
    dimension as a big-endian int32, then the bytes."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture
def local_mirror(tmp_path, monkeypatch):
    """An HTTP server on 127.0.0.1 serving a small MNIST in torchvision's file layout, and torchvision's MNIST
    pointed at it (its `mirrors` and the checksums of these files): the arrays it serves."""
    import torchvision.datasets as tvd

    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (60, 28, 28)),
              "train-labels-idx1-ubyte": rng.integers(0, 10, 60),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (12, 28, 28)),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, 12)}
    served = tmp_path / "served"
    served.mkdir()
    resources = []
    for name, array in arrays.items():
        packed = gzip.compress(_idx(array))
        (served / f"{name}.gz").write_bytes(packed)
        resources.append((f"{name}.gz", hashlib.md5(packed).hexdigest()))

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(tvd.MNIST, "mirrors", [f"http://127.0.0.1:{server.server_address[1]}/"])
    monkeypatch.setattr(tvd.MNIST, "resources", resources)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    yield arrays
    server.shutdown()


def test_a_download_goes_through_torchvision_from_a_mirror(tmp_path, local_mirror):
    root = tmp_path / "data"
    ex = Explorer(copy_checkpoints(tmp_path / "checkpoints"), str(root))
    try:
        with pytest.raises(ViewError, match="not in this server's data folder"):
            ex.latent_map("mnist_vae_2d")
        ex.dataset_download("mnist")
        assert wait_for(lambda: not ex.dataset_status("mnist")[1], DOWNLOAD_WAIT_S, poll=0.2)
        text, _ = ex.dataset_status("mnist")
        assert "is ready" in text, text
        assert is_present("mnist", str(root))
        data = load_dataset("mnist", str(root), download=False)
        assert np.array_equal(data.train_x[:, 0].numpy(), local_mirror["train-images-idx3-ubyte"])
        assert np.array_equal(data.test_y.numpy(), local_mirror["t10k-labels-idx1-ubyte"])
        # The checkpoint that needed it opens now, on the downloaded test set.
        assert "12 test images of mnist" in ex.latent_map("mnist_vae_2d", "raw").note
    finally:
        ex.close()


def test_the_offline_check_asks_torchvisions_own_servers():
    """The reachability check runs before torchvision is imported, from a copy of its URLs: the same ones."""
    import torchvision.datasets as tvd

    from vae_explorer.data.downloads import KNOWN_SOURCES, sources

    assert KNOWN_SOURCES == {"mnist": tvd.MNIST.mirrors, "fashion_mnist": tvd.FashionMNIST.mirrors,
                             "cifar10": [tvd.CIFAR10.url]}
    assert sources("mnist") == tvd.MNIST.mirrors  # once torchvision is loaded, its own attributes
