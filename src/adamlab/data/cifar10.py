"""CIFAR-10 from its python pickle batches (``cifar-10-batches-py/``), with optional ZCA whitening.

ZCA whitening (the paper's "whitened inputs", §6.3): pixels are scaled to [0, 1]; the mean image ``mu``
and the pixel covariance ``C`` (3072 x 3072, divided by N) are computed on the 50,000 **training** images
only; with ``C = U diag(lam) U^T`` and ``W = U diag(1 / sqrt(lam + eps)) U^T``, every split is mapped to
``(x - mu) W``. ``eps`` (``zca_epsilon``, default :data:`ZCA_EPSILON` = 0.01, in units of squared [0, 1]
pixel values) keeps the many tiny eigenvalues of natural-image covariance from being blown up into noise:
directions with variance much larger than 0.01 (the coarse structure of the image) come out with variance
about 1, the finest-scale directions are damped. It is the usual choice for [0, 1] pixels and about the same
as the ``filter_bias=0.1`` pylearn2 used after global contrast normalisation in the maxout paper's CIFAR-10
set-up (per-pixel variance ~1 there, ~0.06 here).
"""

from __future__ import annotations

import functools
import io
import math
import os
import pickle
from pathlib import Path

import numpy as np

from adamlab.data import locate as _locate
from adamlab.data.locate import DataFormatError

__all__ = ["CIFAR10_CLASSES", "CIFAR10_URLS", "ZCA_EPSILON", "apply_zca", "fit_zca", "load_cifar10"]

#: The authors' download (Krizhevsky, https://www.cs.toronto.edu/~kriz/cifar.html).
CIFAR10_URLS = ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
ZCA_EPSILON = 1e-2

_FOLDER = "cifar-10-batches-py"
_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_TEST = ("test_batch",)
_WHITEN = ("zca", None)

# The batches are pickles: only the globals needed to rebuild numpy arrays are allowed, so that a tampered
# file cannot run code (the checksums catch it too, but only for the official files).
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR-10 batch")


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    content = _locate.read_verified(path, f"{_FOLDER}/{path.name}")
    try:
        batch = _BatchUnpickler(io.BytesIO(content), encoding="bytes").load()
    except Exception as exc:  # a corrupt pickle can raise almost anything
        raise DataFormatError(
            f"{path}: not a CIFAR-10 python batch ({type(exc).__name__}: {exc}); it is probably truncated or "
            "corrupt: delete it and supply it again"
        ) from None
    if not isinstance(batch, dict):
        raise DataFormatError(f"{path}: expected a pickled dict, got {type(batch).__name__}")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise DataFormatError(f"{path}: batch lacks 'data' or 'labels' (keys: {sorted(map(str, batch))})")
    data = np.asarray(batch["data"])
    try:
        labels = np.asarray(batch["labels"], dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise DataFormatError(f"{path}: labels are not integers ({exc})") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataFormatError(f"{path}: expected uint8 data of shape (N, 3072), got {data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],):
        raise DataFormatError(f"{path}: {data.shape[0]} images but labels of shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataFormatError(f"{path}: labels must lie in 0..9, found {labels.min()}..{labels.max()}")
    return data, labels


@functools.lru_cache(maxsize=4)
def _load_batches(paths: tuple[str, ...], _stats: tuple[tuple[int, int], ...]) -> tuple[np.ndarray, np.ndarray]:
    parts = [_read_batch(Path(p)) for p in paths]
    x = np.concatenate([d for d, _ in parts])
    y = np.concatenate([lab for _, lab in parts])
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def fit_zca(x: np.ndarray, epsilon: float = ZCA_EPSILON, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """ZCA whitening fitted on the rows of ``x`` (N, D): returns ``(mean (D,), W (D, D))``, float64.

    ``C = (x - mean)^T (x - mean) / N = U diag(lam) U^T`` (accumulated in float64 over chunks of rows, then
    ``eigh``; from the N x N Gram matrix when N <= D); ``W = U diag(1 / sqrt(lam + epsilon)) U^T``, a
    symmetric matrix; apply with :func:`apply_zca`. ``epsilon`` is in the units of the variance of ``x``; it
    must be > 0, or 0 for a full-rank ``C``.
    """
    if not (isinstance(epsilon, (int, float)) and math.isfinite(epsilon) and epsilon >= 0):
        raise ValueError(f"zca_epsilon must be a finite number >= 0, got {epsilon!r}")
    x = np.asarray(x)
    x2 = x.reshape(x.shape[0], -1)
    n, d = x2.shape
    if n == 0:
        raise ValueError("cannot fit ZCA whitening on zero samples")
    mean = x2.mean(axis=0, dtype=np.float64)
    if n <= d:
        # Fewer samples than dimensions (tests, small subsets): C has rank < N. With the eigenvectors V
        # (rows of ``vt``) and eigenvalues lam of C on the span of the data, found from the small N x N Gram
        # matrix, W = V^T diag(1/sqrt(lam + eps)) V + (I - V^T V) / sqrt(eps) (the other eigenvalues are 0).
        # Directions with lam below 1e-12 * max(lam) count as 0.
        if epsilon == 0:
            raise ValueError(f"zca_epsilon=0 needs more samples than dimensions (got N={n}, D={d})")
        xc = x2.astype(np.float64) - mean
        s2, u = np.linalg.eigh(xc @ xc.T)
        keep = s2 > 1e-12 * max(float(s2[-1]), np.finfo(np.float64).tiny)
        s2, u = s2[keep], u[:, keep]
        vt = (u / np.sqrt(s2)).T @ xc
        lam = s2 / n
        w = (vt.T * (1.0 / np.sqrt(lam + epsilon) - 1.0 / np.sqrt(epsilon))) @ vt
        w[np.diag_indices(d)] += 1.0 / np.sqrt(epsilon)
        return mean, w
    cov = np.zeros((d, d), dtype=np.float64)
    for i in range(0, n, chunk):
        block = x2[i : i + chunk].astype(np.float64) - mean
        cov += block.T @ block
    cov /= n
    lam, u = np.linalg.eigh(cov)
    lam = np.clip(lam, 0.0, None)
    if epsilon == 0 and lam[0] <= 0:
        raise ValueError("zca_epsilon=0 needs a full-rank covariance; use zca_epsilon > 0")
    w = (u * (1.0 / np.sqrt(lam + epsilon))) @ u.T
    return mean, w


def apply_zca(x: np.ndarray, mean: np.ndarray, w: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """``(x - mean) @ W`` row-wise, as float32, keeping the shape of ``x`` (rows flattened meanwhile)."""
    x = np.asarray(x)
    flat = x.reshape(x.shape[0], -1)
    out = np.empty(flat.shape, dtype=np.float32)
    w32 = np.asarray(w, dtype=np.float32)
    mean32 = np.asarray(mean, dtype=np.float32)
    for i in range(0, flat.shape[0], chunk):
        np.matmul(flat[i : i + chunk].astype(np.float32) - mean32, w32, out=out[i : i + chunk])
    return out.reshape(x.shape)


@functools.lru_cache(maxsize=2)
def _zca_params(paths: tuple[str, ...], stats: tuple[tuple[int, int], ...], epsilon: float):
    x, _ = _load_batches(paths, stats)
    mean, w = fit_zca(np.divide(x, np.float32(255.0), dtype=np.float32), epsilon)
    mean.flags.writeable = False
    w.flags.writeable = False
    return mean, w


def _stat(p: Path) -> tuple[int, int]:
    st = p.stat()
    return (st.st_size, st.st_mtime_ns)


def _want_member(name: str) -> str | None:
    parts = name.split("/")
    if len(parts) == 2 and parts[0] == _FOLDER and parts[1] in (*_TRAIN, *_TEST, "batches.meta"):
        return name
    return None


def load_cifar10(
    split: str = "train",
    root: str | os.PathLike[str] | None = None,
    whiten: str | None = "zca",
    *,
    zca_epsilon: float = ZCA_EPSILON,
    download: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10: ``X`` float32 (N, 3, 32, 32), ``y`` int64 (N,) in 0..9 (see :data:`CIFAR10_CLASSES`).

    ``split``: ``"train"`` (``data_batch_1`` .. ``data_batch_5``, 50,000 images) or ``"test"``
    (``test_batch``, 10,000). ``whiten=None``: pixels / 255 in [0, 1]. ``whiten="zca"``: ZCA whitening
    fitted on the training set (so the training batches are needed for the test split too) with
    ``zca_epsilon``, see the module docstring. The fit (~a few seconds) is cached in memory per process.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be one of ['test', 'train'], got {split!r}")
    if whiten not in _WHITEN:
        raise ValueError(f"whiten must be one of {list(_WHITEN)}, got {whiten!r}")
    if whiten == "zca" and not (
        isinstance(zca_epsilon, (int, float)) and math.isfinite(zca_epsilon) and zca_epsilon > 0
    ):
        raise ValueError(f"zca_epsilon must be a finite number > 0, got {zca_epsilon!r}")
    wanted = _TRAIN if split == "train" else _TEST
    needed = tuple(dict.fromkeys(wanted + (_TRAIN if whiten == "zca" else ())))

    def fetch(cache: Path) -> None:
        _locate.download_archive(CIFAR10_URLS, cache, "cifar-10-python.tar.gz", _want_member)

    found = _locate.locate(
        f"CIFAR-10 (split={split!r}, whiten={whiten!r})",
        _locate.file_probe([(f"{_FOLDER}/{n}",) for n in needed]),
        [f"{_FOLDER}/{n}" for n in needed],
        root,
        fetch=fetch,
        sources=CIFAR10_URLS,
        download=download,
        how_to_get="CIFAR-10 is the python version from https://www.cs.toronto.edu/~kriz/cifar.html "
        "(cifar-10-python.tar.gz, unpacked).",
    )
    paths = dict(zip(needed, found, strict=True))

    def key(names: tuple[str, ...]):
        ps = tuple(paths[n] for n in names)
        return tuple(str(p.resolve()) for p in ps), tuple(_stat(p) for p in ps)

    x, y = _load_batches(*key(wanted))
    if whiten == "zca":
        mean, w = _zca_params(*key(_TRAIN), float(zca_epsilon))
        # (x / 255 - mean) W == (x - 255 mean) (W / 255): no extra copy of the scaled pixels.
        xf = apply_zca(x, mean * 255.0, w / 255.0)
    else:
        xf = np.divide(x, np.float32(255.0), dtype=np.float32)
    return xf.reshape(-1, 3, 32, 32), y.copy()
