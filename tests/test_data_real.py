"""The one test on the real data: skipped unless $ADAMLAB_DATA names a folder holding MNIST."""

from __future__ import annotations

import os

import numpy as np
import pytest

from adamlab.data import load_mnist

REAL = os.environ.get("ADAMLAB_DATA")

# From the project's data README.
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.skipif(not REAL, reason="set ADAMLAB_DATA to a folder holding mnist/ to run")
def test_real_mnist_label_counts():
    for split, counts in (("train", TRAIN_COUNTS), ("test", TEST_COUNTS)):
        X, y = load_mnist(split, root=REAL, download=False)
        assert X.shape == (sum(counts), 784) and X.dtype == np.float32
        assert 0.0 == X.min() and X.max() == 1.0
        assert np.bincount(y, minlength=10).tolist() == counts
