"""MNIST and Fashion-MNIST from their IDX files (gzip-compressed ``.gz`` or raw)."""

from __future__ import annotations

import functools
import math
import os
import struct
from pathlib import Path

import numpy as np

from adamlab.data import locate as _locate
from adamlab.data.locate import DataFormatError

__all__ = ["FASHION_MNIST_URLS", "MNIST_URLS", "load_fashion_mnist", "load_mnist", "parse_idx", "read_idx"]

#: Download locations, tried in order. MNIST: the authors' page (LeCun, Cortes, Burges), then the mirror
#: PyTorch keeps because the authors' server often refuses downloads; both serve the same bytes, and the
#: checksum is checked whatever the source. Fashion-MNIST: the location given in Zalando's README.
MNIST_URLS = (
    "https://yann.lecun.com/exdb/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
)
FASHION_MNIST_URLS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)

_SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# IDX type codes (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT"): all big-endian.
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def parse_idx(buf: bytes, name: str | os.PathLike[str] = "<bytes>") -> np.ndarray:
    """Parse the (decompressed) content of an IDX file into an array of its shape, native byte order.

    Raises :class:`DataFormatError` naming ``name`` for a bad magic number, a truncated header or body, or
    trailing bytes. The result of a ``uint8`` file is a read-only view of ``buf`` (no copy).
    """
    if len(buf) < 4:
        raise DataFormatError(f"{name}: not an IDX file (only {len(buf)} bytes)")
    if buf[0] != 0 or buf[1] != 0 or buf[2] not in _IDX_DTYPES or buf[3] == 0:
        raise DataFormatError(
            f"{name}: not an IDX file (magic bytes {buf[:4].hex()}, expected 0000<type><ndim> with type one "
            f"of {sorted(hex(k) for k in _IDX_DTYPES)})"
        )
    dtype, ndim = _IDX_DTYPES[buf[2]], buf[3]
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise DataFormatError(f"{name}: truncated IDX header ({len(buf)} of {header} bytes)")
    shape = struct.unpack(f">{ndim}I", buf[4:header])
    count = math.prod(shape)
    body = len(buf) - header
    if body != count * dtype.itemsize:
        what = "truncated" if body < count * dtype.itemsize else "has trailing bytes"
        raise DataFormatError(
            f"{name}: IDX file {what}: header says shape {shape} ({count * dtype.itemsize} bytes of data), "
            f"found {body} bytes"
        )
    arr = np.frombuffer(buf, dtype=dtype, count=count, offset=header).reshape(shape)
    if dtype.byteorder == ">":
        arr = arr.astype(dtype.newbyteorder("="))
    return arr


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw), checking its checksum if :data:`~adamlab.data.locate.CHECKSUMS`
    knows it (keyed by its folder and file name, e.g. ``mnist/train-images-idx3-ubyte``)."""
    path = Path(path)
    return parse_idx(_locate.read_verified(path), path)


@functools.lru_cache(maxsize=8)
def _load_pair(
    images: str, labels: str, _stats: tuple[tuple[int, int], tuple[int, int]]
) -> tuple[np.ndarray, np.ndarray]:
    """Parsed (uint8 images (N, 784), uint8 labels (N,)), read-only; cached per path, size and mtime."""
    x = read_idx(images)
    y = read_idx(labels)
    if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (28, 28):
        raise DataFormatError(f"{images}: expected uint8 images of shape (N, 28, 28), got {x.dtype} {x.shape}")
    if y.dtype != np.uint8 or y.ndim != 1:
        raise DataFormatError(f"{labels}: expected uint8 labels of shape (N,), got {y.dtype} {y.shape}")
    if x.shape[0] != y.shape[0]:
        raise DataFormatError(f"{images} has {x.shape[0]} images but {labels} has {y.shape[0]} labels")
    if y.size and int(y.max()) > 9:
        raise DataFormatError(f"{labels}: labels must lie in 0..9, found {int(y.max())}")
    x = x.reshape(x.shape[0], 28 * 28)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def _stat(p: Path) -> tuple[int, int]:
    st = p.stat()
    return (st.st_size, st.st_mtime_ns)


def _load(
    folder: str, title: str, urls: tuple[str, ...], split: str, root, download: bool
) -> tuple[np.ndarray, np.ndarray]:
    if split not in _SPLIT_FILES:
        raise ValueError(f"split must be one of {sorted(_SPLIT_FILES)}, got {split!r}")
    names = _SPLIT_FILES[split]
    alternatives = [(f"{folder}/{n}.gz", f"{folder}/{n}") for n in names]

    def fetch(cache: Path) -> None:
        for n in names:
            gz, plain = cache / folder / f"{n}.gz", cache / folder / n
            if not gz.is_file() and not plain.is_file():
                _locate.download_file([base + f"{n}.gz" for base in urls], gz)

    images, labels = _locate.locate(
        f"{title} (split={split!r})",
        _locate.file_probe(alternatives),
        [f"{folder}/{n}.gz  (or uncompressed: {folder}/{n})" for n in names],
        root,
        fetch=fetch,
        sources=urls,
        download=download,
    )
    x, y = _load_pair(str(images.resolve()), str(labels.resolve()), (_stat(images), _stat(labels)))
    # Fresh arrays every call: the cached uint8 arrays stay untouched whatever the caller does.
    return np.divide(x, np.float32(255.0), dtype=np.float32), y.astype(np.int64)


def load_mnist(
    split: str = "train", root: str | os.PathLike[str] | None = None, *, download: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """MNIST digits: ``X`` float32 (N, 784), pixels / 255 in [0, 1] (28x28 row-major); ``y`` int64 (N,), 0..9.

    ``split``: ``"train"`` (60,000) or ``"test"`` (10,000). Files ``mnist/{train,t10k}-{images-idx3,
    labels-idx1}-ubyte[.gz]`` are searched as described in :mod:`adamlab.data.locate`.
    """
    return _load("mnist", "MNIST", MNIST_URLS, split, root, download)


def load_fashion_mnist(
    split: str = "train", root: str | os.PathLike[str] | None = None, *, download: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST (Zalando), same format and shapes as :func:`load_mnist`, under ``fashion-mnist/``.

    In this project it stands in for CIFAR-10 (Figure 3 of the paper) where CIFAR-10 is not available.
    """
    return _load("fashion-mnist", "Fashion-MNIST", FASHION_MNIST_URLS, split, root, download)
