"""Training sets for the lab, by name: the data layer's arrays turned into what the runner batches.

:data:`DATASETS` maps a :class:`~adamlab.lab.spec.DatasetSpec` name to a loader
``loader(options, data_dir) -> TrainingData``; :func:`register_dataset` adds one (tests register tiny
synthetic sets this way, and two are built in: ``"synthetic-dense"`` and ``"synthetic-sparse"``).

Built in:

* ``"mnist"`` — MNIST training digits, 784 raw pixels / 255 (Figure 1 left, Figure 2).
  Options: ``split`` (``"train"``), ``subsample`` (``None`` or a number of examples, drawn with
  ``data_seed``, default 0, the same for every run seed).
* ``"reviews"`` — movie reviews as a bag of words of the ``max_features`` (10,000) most frequent words,
  sparse (Figure 1 right). Option ``corpus``: ``"imdb"``, ``"rotten-tomatoes"``, ``"pang-lee"`` or ``"auto"``:
  IMDB when its files are found locally (never downloaded by ``"auto"``), else the Rotten Tomatoes snippets as
  a declared stand-in for IMDB. The corpus actually used is recorded in :attr:`TrainingData.info` and shown in
  every plot and report.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from adamlab.lab.spec import DatasetSpec

__all__ = ["DATASETS", "TrainingData", "load_dataset", "register_dataset"]

PathLike = str | os.PathLike[str] | None


@dataclass
class TrainingData:
    """Features (dense float32 array or scipy CSR matrix), integer labels, and how to describe them.

    ``info`` is recorded with the results: at least ``"description"`` (shown in plot titles and the report)
    and ``"stand_in_for"`` (the paper's data set this replaces, or ``None``).
    """

    X: np.ndarray | sp.csr_matrix
    y: np.ndarray
    n_classes: int
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.X.shape[0] != self.y.shape[0]:
            raise ValueError(f"X has {self.X.shape[0]} rows but y has {self.y.shape[0]} labels")
        if sp.issparse(self.X):
            self.X = sp.csr_matrix(self.X, dtype=np.float32)
        else:
            self.X = np.ascontiguousarray(self.X, dtype=np.float32)
        self.y = np.asarray(self.y, dtype=np.int64)
        self._y_t = torch.from_numpy(self.y)
        self._X_t = None if sp.issparse(self.X) else torch.from_numpy(self.X)
        self._chunks: tuple[int, list[tuple[torch.Tensor, torch.Tensor]]] | None = None
        self.device = torch.device("cpu")

    def to(self, device: str | torch.device) -> TrainingData:
        """Move the set to ``device`` once (in place; returns ``self``): dense features and the labels live
        there from now on; sparse features stay a CSR matrix on the host and each minibatch is sent as it is
        cut (the full-set chunks used by the evaluation are sent once and kept)."""
        self.device = torch.device(device)
        self._y_t = self._y_t.to(self.device)
        if self._X_t is not None:
            self._X_t = self._X_t.to(self.device)
        self._chunks = None
        return self

    @property
    def n_examples(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    @property
    def sparse(self) -> bool:
        return sp.issparse(self.X)

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows ``index`` as a torch tensor (sparse COO for sparse data) and their labels."""
        index = index.to(self.device)
        if self._X_t is not None:
            return self._X_t[index], self._y_t[index]
        return _to_torch_coo(self.X[index.cpu().numpy()]).to(self.device), self._y_t[index]

    def chunks(self, size: int = 16384) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The whole set in consecutive chunks ``(X, y)`` (for full-batch evaluation; views or cached)."""
        if self._chunks is None or self._chunks[0] != size:
            bounds = [(a, min(a + size, self.n_examples)) for a in range(0, self.n_examples, size)]
            if self._X_t is not None:
                chunks = [(self._X_t[a:b], self._y_t[a:b]) for a, b in bounds]
            else:
                chunks = [(_to_torch_coo(self.X[a:b]).to(self.device), self._y_t[a:b]) for a, b in bounds]
            self._chunks = (size, chunks)
        return self._chunks[1]


def _to_torch_coo(m: sp.csr_matrix) -> torch.Tensor:
    m.sum_duplicates()  # canonical CSR (sorted, unique column indices): its COO is already coalesced
    coo = m.tocoo()
    indices = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    values = torch.from_numpy(coo.data.astype(np.float32))
    return torch.sparse_coo_tensor(indices, values, coo.shape, is_coalesced=True, check_invariants=False)


def _subsample(X, y, options: dict[str, Any]):
    """Option ``subsample``: keep that many examples, drawn with option ``data_seed`` (default 0)."""
    n = options.get("subsample")
    if n is None or n >= X.shape[0]:
        return X, y
    rng = np.random.default_rng(int(options.get("data_seed", 0)))
    keep = np.sort(rng.choice(X.shape[0], size=n, replace=False))
    return X[keep], y[keep]


def _load_mnist(options: dict[str, Any], data_dir: PathLike) -> TrainingData:
    from adamlab.data import load_mnist

    split = options.get("split", "train")
    X, y = load_mnist(split=split, root=data_dir)
    X, y = _subsample(X, y, options)
    desc = f"MNIST {split} ({X.shape[0]:,} digits × {X.shape[1]} pixels)"
    return TrainingData(X, y, 10, {"description": desc, "corpus": "mnist", "stand_in_for": None})


_CORPUS_NAMES = {
    "imdb": "IMDB (Maas et al. 2011)",
    "rotten-tomatoes": "Rotten Tomatoes snippets",
    "pang-lee": "Pang & Lee polarity v2.0",
}


def _load_reviews(options: dict[str, Any], data_dir: PathLike) -> TrainingData:
    from adamlab.data import DataNotFoundError, bag_of_words, load_reviews

    corpus = options.get("corpus", "auto")
    split = options.get("split", "train")
    allowed = ("auto", *_CORPUS_NAMES)
    if corpus not in allowed:
        raise ValueError(f"reviews corpus must be one of {', '.join(allowed)}; got {corpus!r}")
    if corpus == "auto":
        try:
            texts, y = load_reviews("imdb", split=split, root=data_dir, download=False)
            corpus = "imdb"
        except DataNotFoundError:
            corpus = options.get("fallback", "rotten-tomatoes")
            texts, y = load_reviews(corpus, split=split, root=data_dir)
    else:
        texts, y = load_reviews(corpus, split=split, root=data_dir)
    max_features = int(options.get("max_features", 10000))
    X, _ = bag_of_words(texts, max_features=max_features)
    X, y = _subsample(sp.csr_matrix(X), np.asarray(y), options)
    stand_in = None if corpus == "imdb" else "IMDB"
    name = _CORPUS_NAMES[corpus] + (", stand-in for IMDB" if stand_in else "")
    density = X.nnz / (X.shape[0] * X.shape[1])
    desc = f"{name}: {X.shape[0]:,} reviews, bag of {X.shape[1]:,} words ({density:.2%} non-zero)"
    return TrainingData(X, y, 2, {"description": desc, "corpus": corpus, "stand_in_for": stand_in})


def _load_synthetic(options: dict[str, Any], data_dir: PathLike) -> TrainingData:
    """A linearly separable-ish problem from a fixed data seed (independent of the run seed)."""
    n = int(options.get("n", 512))
    d = int(options.get("d", 20))
    k = int(options.get("classes", 3))
    rng = np.random.default_rng(int(options.get("data_seed", 1234)))
    if options.get("sparse", False):
        X = sp.random(n, d, density=float(options.get("density", 0.1)), format="csr", random_state=rng)
        X.data[:] = 1.0
    else:
        X = rng.normal(size=(n, d)).astype(np.float32)
    w = rng.normal(size=(d, k))
    scores = np.asarray(X @ w) + rng.gumbel(size=(n, k))
    y = scores.argmax(axis=1)
    kind = "sparse" if sp.issparse(X) else "dense"
    desc = f"synthetic {kind} ({n} × {d}, {k} classes)"
    return TrainingData(X, y, k, {"description": desc, "corpus": "synthetic", "stand_in_for": None})


DATASETS: dict[str, Callable[[dict[str, Any], PathLike], TrainingData]] = {
    "mnist": _load_mnist,
    "reviews": _load_reviews,
    "synthetic-dense": _load_synthetic,
    "synthetic-sparse": lambda o, d: _load_synthetic({**o, "sparse": True}, d),
}


def register_dataset(name: str, loader: Callable[[dict[str, Any], PathLike], TrainingData]) -> None:
    """Make ``loader`` available to specs as ``DatasetSpec(name=name)``."""
    DATASETS[name] = loader


def load_dataset(spec: DatasetSpec, data_dir: PathLike = None) -> TrainingData:
    """Load the training set a spec names; ``data_dir`` is the data root (``None``: ``$ADAMLAB_DATA``)."""
    if spec.name not in DATASETS:
        raise ValueError(f"unknown dataset {spec.name!r}; known: {', '.join(sorted(DATASETS))}")
    return DATASETS[spec.name](dict(spec.options), data_dir)
