"""Bag-of-words features for the logistic-regression experiment of Figure 1 (right) of the paper."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["DEFAULT_TOKEN_PATTERN", "bag_of_words"]

#: scikit-learn's default: runs of 2 or more word characters (punctuation and 1-letter words dropped).
DEFAULT_TOKEN_PATTERN = r"(?u)\b\w\w+\b"


def bag_of_words(
    train_texts: Iterable[str],
    max_features: int | None = 10000,
    *,
    binary: bool = True,
    lowercase: bool = True,
    token_pattern: str = DEFAULT_TOKEN_PATTERN,
    stop_words: str | list[str] | None = None,
) -> tuple[Any, Any]:
    """Fit a bag-of-words vocabulary on ``train_texts``; return ``(X_train, vectorizer)``.

    ``X_train`` is a ``scipy.sparse.csr_matrix`` of float32, one row per text, one column per word of the
    vocabulary (columns in alphabetical order of the words, ``vectorizer.get_feature_names_out()``).
    The vocabulary is the ``max_features`` words with the highest **total count** in ``train_texts`` (all
    words if ``None``), whether or not the features are binary. ``binary=True`` (default) gives 1.0 where a
    word occurs in a text, else 0; ``binary=False`` gives the counts. Texts are lowercased and split with
    ``token_pattern``; no stop words are removed unless ``stop_words`` says so.

    ``vectorizer`` is the fitted :class:`sklearn.feature_extraction.text.CountVectorizer`;
    ``vectorizer.transform(test_texts)`` gives the test features in the same columns and the same
    representation (binary or counts), float32. Needs scikit-learn (the ``lab`` extra).
    """
    if isinstance(train_texts, (str, bytes)):
        raise TypeError("train_texts must be a sequence of texts, not a single string")
    if max_features is not None and (
        isinstance(max_features, bool) or not isinstance(max_features, (int, np.integer)) or max_features < 1
    ):
        raise ValueError(f"max_features must be a positive integer or None, got {max_features!r}")
    try:
        from sklearn.feature_extraction.text import CountVectorizer
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("bag_of_words needs scikit-learn: pip install 'adamlab[lab]' (or scikit-learn)") from exc

    # Fit on counts so that "most frequent" means total occurrences (CountVectorizer ranks by document
    # frequency when binary=True), then switch to binary output for this matrix and all later transforms.
    vectorizer = CountVectorizer(
        max_features=None if max_features is None else int(max_features),
        binary=False,
        lowercase=lowercase,
        token_pattern=token_pattern,
        stop_words=stop_words,
        dtype=np.float32,
    )
    x = vectorizer.fit_transform(list(train_texts)).tocsr()
    if binary:
        vectorizer.set_params(binary=True)
        x.data[:] = 1.0
    x.sort_indices()
    return x.astype(np.float32, copy=False), vectorizer
