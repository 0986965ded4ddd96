"""Dataset loaders: built-in digits, MNIST from the shared copy, a folder of
images the test writes, and the clear error when files are missing offline."""
from __future__ import annotations

import socket

import numpy as np
import pytest
import torch
from PIL import Image

from vae_explorer import DatasetError, load_dataset


def test_digits_ship_with_scikit_learn_and_split_is_fixed(digits):
    assert digits.train_x.dtype == torch.uint8 and digits.item_shape == (1, 8, 8)
    assert len(digits.train_x) + len(digits.test_x) == 1797
    assert int(digits.train_x.max()) == 255 and int(digits.train_x.min()) == 0
    assert set(digits.test_y.tolist()) == set(range(10))
    load_dataset.cache_clear()
    again = load_dataset("digits")
    assert torch.equal(again.test_x, digits.test_x)  # the same split in every process


def test_mnist_loads_from_the_shared_copy(mnist_root):
    data = load_dataset("mnist", mnist_root, download=False)
    assert data.train_x.shape == (60000, 1, 28, 28) and data.test_x.shape == (10000, 1, 28, 28)
    assert data.train_x.dtype == torch.uint8
    assert data.train_y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert abs(data.train_x.float().mean().item() - 33.318) < 0.01


def test_resize_and_channel_conversion(digits):
    data = load_dataset("digits", image_size=16, channels=3)
    assert data.item_shape == (3, 16, 16)
    assert torch.equal(data.train_x[:, 0], data.train_x[:, 2])  # grey -> RGB copies the channel


def _write_images(root, n_per_class=6):
    rng = np.random.default_rng(0)
    for cls, (fmt, mode) in {"cats": ("png", "RGB"), "dogs": ("jpeg", "RGB"), "owls": ("webp", "L")}.items():
        (root / cls).mkdir(parents=True)
        for i in range(n_per_class):
            size = (int(rng.integers(10, 60)), int(rng.integers(10, 60)))
            arr = rng.integers(0, 255, (*size[::-1], 3) if mode == "RGB" else size[::-1], dtype=np.uint8)
            Image.fromarray(arr, mode).save(root / cls / f"{i}.{fmt}")
    (root / "notes.txt").write_text("not an image")
    (root / "cats" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")


def test_folder_of_images(tmp_path):
    _write_images(tmp_path)
    data = load_dataset("folder", str(tmp_path), image_size=24)
    assert data.item_shape == (3, 24, 24)  # colour images present -> RGB
    assert data.classes == ["cats", "dogs", "owls"]
    assert len(data.train_x) + len(data.test_x) == 18  # the broken file is skipped, the .txt ignored
    assert set(torch.cat([data.train_y, data.test_y]).tolist()) == {0, 1, 2}
    grey = load_dataset("folder", str(tmp_path), image_size=12, channels=1)
    assert grey.item_shape == (1, 12, 12)


def test_folder_errors_are_clear(tmp_path):
    with pytest.raises(DatasetError, match="no images"):
        load_dataset("folder", str(tmp_path))
    with pytest.raises(DatasetError, match="not a directory"):
        load_dataset("folder", str(tmp_path / "missing"))


@pytest.fixture
def offline(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.mark.parametrize("name,expected", [("mnist", "train-images-idx3-ubyte"), ("fashion_mnist", "FashionMNIST/raw"),
                                           ("cifar10", "cifar-10-batches-py")])
def test_offline_download_gives_one_clear_error(name, expected, tmp_path, offline):
    with pytest.raises(DatasetError) as err:
        load_dataset(name, str(tmp_path / "root"))
    message = str(err.value)
    assert "\n" not in message
    assert f"{name} not found" in message and expected in message and "downloading failed" in message
    assert str(tmp_path) in message


def test_unknown_dataset():
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_dataset("imagenet")


def test_digits_are_scikit_learns_digits(digits):
    from sklearn.datasets import load_digits

    ref = load_digits()
    ours = torch.cat([torch.cat([digits.train_x, digits.test_x]).flatten(1).long(),
                      torch.cat([digits.train_y, digits.test_y])[:, None]], 1)
    theirs = np.concatenate([np.round(ref.images.reshape(len(ref.images), -1) * 255.0 / 16.0),
                             ref.target[:, None]], 1).astype(np.int64)
    # The same images with the same labels (the split shuffles, so compare as sorted rows).
    assert sorted(map(tuple, ours.tolist())) == sorted(map(tuple, theirs.tolist()))


def test_mnist_idx_reader_equals_torchvision(mnist_root, tmp_path):
    # MNIST-format files are read directly (no torchvision import); the arrays and class names must be
    # exactly torchvision's, from raw files and from the .gz files alone.
    import gzip
    import shutil

    from torchvision.datasets import MNIST

    ours = load_dataset("mnist", mnist_root, download=False)
    train, test = MNIST(mnist_root, train=True), MNIST(mnist_root, train=False)
    assert torch.equal(ours.train_x[:, 0], train.data) and torch.equal(ours.train_y, train.targets)
    assert torch.equal(ours.test_x[:, 0], test.data) and torch.equal(ours.test_y, test.targets)
    assert ours.classes == train.classes

    raw = tmp_path / "gz" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with open(f"{mnist_root}/MNIST/raw/{f}", "rb") as src, gzip.open(raw / f"{f}.gz", "wb", compresslevel=1) as dst:
            shutil.copyfileobj(src, dst)
    load_dataset.cache_clear()
    from_gz = load_dataset("mnist", str(tmp_path / "gz"), download=False)
    assert torch.equal(from_gz.test_x, ours.test_x) and torch.equal(from_gz.train_y, ours.train_y)


def test_broken_idx_file_gives_a_clear_error(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    header = bytes([0, 0, 8, 3]) + (100).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    (raw / "train-images-idx3-ubyte").write_bytes(header + bytes(28 * 28 * 10))  # 10 of the promised 100 images
    for f in ("train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / f).write_bytes(b"not idx")
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte: truncated"):
        load_dataset("fashion_mnist", str(tmp_path), download=False)


def test_every_data_kind_has_the_whole_interface_the_views_ask():
    from vae_explorer.data import DATA_KINDS, DATASETS, DataKind

    wanted = {n for n in vars(DataKind) if not n.startswith("_")} | set(DataKind.__annotations__)
    for name, kind in DATA_KINDS.items():
        missing = sorted(n for n in wanted if not hasattr(kind, n))
        assert not missing and kind.name == name, (name, missing)
    assert all(entry.kind.name in DATA_KINDS for entry in DATASETS.values())


def test_the_image_kind_round_trips_and_scores(digits):
    kind = digits.kind
    x = kind.prepare(digits.test_x[:5])
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert torch.equal(kind.store(x), digits.test_x[:5])  # stored -> model input -> stored
    assert torch.allclose(kind.errors(x, x), torch.zeros(5))
    assert kind.quality(x, x)["psnr"].min() >= 99  # identical images: PSNR at the 1e-10 floor
    assert kind.model_settings(digits.train_x) == {"input_shape": (1, 8, 8)}
    assert kind.show(x[0], 64).size == (64, 64) and kind.grid(x, nrow=5, target=16).size[0] > 5 * 16
