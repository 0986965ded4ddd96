"""Fetching MNIST, Fashion-MNIST and CIFAR-10 into the data folder with torchvision's own downloader.

Before torchvision is asked, each of the dataset's download servers (torchvision's `mirrors`, or `url`
for CIFAR-10) is tried with a short connection timeout: offline, the answer comes in seconds with the
files expected and the folder to put them in, instead of after urllib's long timeouts per file.
"""
from __future__ import annotations

import socket
import sys
from pathlib import Path
from urllib.parse import urlsplit

from .dataset import DataNotFound
from .image_sets import _TORCHVISION, DEFAULT_DATA_ROOT, _not_found, expected_files

DOWNLOADABLE = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}
# What torchvision fetches (its archives), for the progress line: MNIST's four .gz files, Fashion-MNIST's,
# CIFAR-10's one tarball.
DOWNLOAD_BYTES = {"mnist": 11_594_722, "fashion_mnist": 30_878_645, "cifar10": 170_498_071}
CONNECT_TIMEOUT = 3.0  # seconds per server: a reachable one answers in well under that


def _dataset_class(name: str):
    import torchvision.datasets as tvd  # only here: importing torchvision costs seconds

    return getattr(tvd, _TORCHVISION[name][0])


# torchvision's own download URLs (its `mirrors` / `url`), for the check that comes before torchvision is
# imported: offline, that import (seconds, over a minute on a busy machine) would be the slowest part of the
# answer. Once torchvision is loaded, its attributes are asked instead.
KNOWN_SOURCES = {
    "mnist": ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"],
    "fashion_mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
    "cifar10": ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"],
}


def sources(name: str) -> list[str]:
    """The URLs torchvision downloads `name` from, in the order it tries them."""
    if "torchvision.datasets" not in sys.modules:
        return list(KNOWN_SOURCES[name])
    cls = _dataset_class(name)
    mirrors = getattr(cls, "mirrors", None)
    return list(mirrors) if mirrors else [cls.url]


def is_present(name: str, root: str | None) -> bool:
    """Every file the dataset needs is in the data folder (MNIST's may be .gz)."""
    folder, files = expected_files(name, root)
    if name == "cifar10":
        files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    return all((folder / f).is_file() or (folder / f"{f}.gz").is_file() for f in files)


def unreachable(urls: list[str], timeout: float = CONNECT_TIMEOUT) -> str | None:
    """None when one of the servers accepts a connection, else why none did (one line)."""
    reasons = []
    for url in urls:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            socket.create_connection((parts.hostname, port), timeout=timeout).close()
            return None
        except OSError as e:
            reasons.append(f"{parts.hostname}: {e.strerror or e or type(e).__name__}")
    return "; ".join(reasons)


def downloaded_bytes(name: str, root: str | None) -> int:
    """Bytes of the dataset already in its folder (archives being written included): the progress line's."""
    folder, _ = expected_files(name, root)
    base = folder.parent if name == "cifar10" else folder  # CIFAR-10's tarball sits beside its folder
    if not base.is_dir():
        return 0
    pattern = "cifar-10-python.tar.gz" if name == "cifar10" else "*.gz"
    return sum(p.stat().st_size for p in base.glob(pattern) if p.is_file())


def download(name: str, root: str | None) -> Path:
    """Fetch `name` into `root` with torchvision (train and test parts); returns the folder holding it.
    DataNotFound when offline or the download fails, with the files expected and the folder for them."""
    if name not in DOWNLOADABLE:
        raise ValueError(f"{name} is not downloadable; choose one of: {', '.join(DOWNLOADABLE)}")
    folder, _ = expected_files(name, root)
    if is_present(name, root):
        return folder
    urls = sources(name)
    offline = unreachable(urls)
    if offline is not None:
        _, files = expected_files(name, root)
        gz = " (or the same names with .gz)" if name != "cifar10" else ""
        fetch = (f"fetch them on a machine that is online, from {urls[0]}" if name != "cifar10" else
                 f"unpack {urls[0]}, fetched on a machine that is online, into {folder.parent}")
        raise DataNotFound(f"This machine is offline: none of {DOWNLOADABLE[name]}'s download servers answers "
                           f"({offline}). Put {', '.join(files)}{gz} in {folder} ({fetch}), then choose the model "
                           "or the dataset again.", name, folder, files)
    data_root = str(Path(root or DEFAULT_DATA_ROOT).expanduser().resolve())
    cls = _dataset_class(name)
    try:
        Path(data_root).mkdir(parents=True, exist_ok=True)
        cls(data_root, train=True, download=True)
        cls(data_root, train=False, download=True)
    except DataNotFound:
        raise
    except Exception as failed:  # HTTP errors, a checksum that does not match, a read-only folder...
        raise _not_found(name, root, failed, tried_download=True) from None
    return folder
