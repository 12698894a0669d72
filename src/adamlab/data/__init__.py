"""Data sets of the experiments of Kingma & Ba (2015): MNIST, CIFAR-10, IMDB, and their stand-ins.

Every loader looks for its files in ``root=`` → ``$ADAMLAB_DATA`` → ``$ADAMLAB_CACHE`` (default
``~/.cache/adamlab``), then downloads them from the data set's home site into the cache (checksum-verified),
else raises :class:`DataNotFoundError`; see :mod:`adamlab.data.locate` and ``docs/data.md``.

Importing this package needs only NumPy; :func:`bag_of_words` needs scikit-learn and download progress bars
use tqdm if it is installed.
"""

from adamlab.data.bow import bag_of_words
from adamlab.data.cifar10 import CIFAR10_CLASSES, ZCA_EPSILON, apply_zca, fit_zca, load_cifar10
from adamlab.data.locate import (
    ChecksumError,
    DataError,
    DataFormatError,
    DataNotFoundError,
    cache_dir,
)
from adamlab.data.mnist import load_fashion_mnist, load_mnist, read_idx
from adamlab.data.reviews import CORPORA, load_reviews

__all__ = [
    "CIFAR10_CLASSES",
    "CORPORA",
    "ZCA_EPSILON",
    "ChecksumError",
    "DataError",
    "DataFormatError",
    "DataNotFoundError",
    "apply_zca",
    "bag_of_words",
    "cache_dir",
    "fit_zca",
    "load_cifar10",
    "load_fashion_mnist",
    "load_mnist",
    "load_reviews",
    "read_idx",
]
