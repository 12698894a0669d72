"""Tests of adamlab.data on tiny files written here in each real format; no network, no shared data.

The loaders' download path is exercised with a fake ``urlopen`` that serves bytes from a dict.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile
import time
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import adamlab.data as data
from adamlab.data import (
    ChecksumError,
    DataFormatError,
    DataNotFoundError,
    bag_of_words,
    load_cifar10,
    load_fashion_mnist,
    load_mnist,
    load_reviews,
    locate,
)
from adamlab.data import cifar10 as cifar_mod
from adamlab.data import mnist as mnist_mod
from adamlab.data import reviews as reviews_mod

REAL_CHECKSUMS = dict(locate.CHECKSUMS)  # taken before any fixture empties the table

MNIST_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No env data dir, a private cache, an empty checksum table, and a urlopen that fails the test."""
    monkeypatch.delenv("ADAMLAB_DATA", raising=False)
    monkeypatch.delenv("ADAMLAB_OFFLINE", raising=False)
    monkeypatch.setenv("ADAMLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(locate, "CHECKSUMS", {})
    locate.clear_verification_cache()

    def no_network(*args, **kwargs):
        raise AssertionError(f"the network was used: {args!r}")

    monkeypatch.setattr(locate, "urlopen", no_network)


def sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def idx_bytes(arr: np.ndarray) -> bytes:
    code = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D}[arr.dtype]
    return bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def write_mnist(base: Path, folder="mnist", n=7, seed=0, gz=True, splits=("train", "test")):
    """Write tiny IDX files; return {split: (images uint8 (n, 28, 28), labels uint8 (n,))}."""
    rng = np.random.default_rng(seed)
    out = {}
    (base / folder).mkdir(parents=True, exist_ok=True)
    for split in splits:
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, size=n, dtype=np.uint8)
        for name, arr in zip(MNIST_NAMES[split], (x, y), strict=True):
            raw = idx_bytes(arr)
            if gz:
                (base / folder / f"{name}.gz").write_bytes(gzip.compress(raw))
            else:
                (base / folder / name).write_bytes(raw)
        out[split] = (x, y)
    return out


def cifar_batch(n, seed, *, label_offset=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    y = [(i + label_offset) % 10 for i in range(n)]
    return x, y


def cifar_pickle(x, y, name=b"batch") -> bytes:
    return pickle.dumps(
        {b"batch_label": name, b"labels": list(y), b"data": x, b"filenames": [b"f.png"] * len(y)}, protocol=2
    )


def write_cifar(base: Path, n=6):
    folder = base / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for i in range(1, 6):
        batches[f"data_batch_{i}"] = cifar_batch(n, seed=i, label_offset=i)
        (folder / f"data_batch_{i}").write_bytes(cifar_pickle(*batches[f"data_batch_{i}"]))
    batches["test_batch"] = cifar_batch(n, seed=99)
    (folder / "test_batch").write_bytes(cifar_pickle(*batches["test_batch"]))
    return batches


RT_ROWS = [
    ("plot", "A man walks into a bank. (plot, not a review)", "m1", "True"),
    ("fresh", "A joy, from start to finish.", "m1", "True"),
    ("rotten", 'Dull, "clever" and, worst of all,\nlong.', "m2", "False"),
    ("fresh", "Über-stylish — a triumph ☺", "m3", "False"),
    ("rotten", "Plodding.", "m4", "False"),
]


def rt_bytes(rows) -> bytes:
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["category", "text", "movie_name", "has_plot_and_reviews"])
    w.writerows(rows)
    return buf.getvalue().encode("utf-8")


def write_rt(base: Path, rows=RT_ROWS, compress=True):
    folder = base / "rotten-tomatoes"
    folder.mkdir(parents=True, exist_ok=True)
    raw = rt_bytes(rows)
    if compress:
        (folder / "rotten_tomatoes_corpus_full.csv.bz2").write_bytes(bz2.compress(raw))
    else:
        (folder / "rotten_tomatoes_corpus_full.csv").write_bytes(raw)
    return raw


LONG_REVIEW = "word " * 40000  # 200,000 characters: beyond the csv module's default field limit


def pl_rows():
    return [("1", "a fine film , truly .\nsecond line"), ("-1", 'awful , "just" awful .'), ("1", LONG_REVIEW)]


def pl_bytes(rows) -> bytes:
    buf = io.StringIO(newline="")
    csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows(rows)
    return b"\xef\xbb\xbf" + buf.getvalue().encode("utf-8")


def write_pl(base: Path, rows=None):
    folder = base / "pang-lee-polarity"
    folder.mkdir(parents=True, exist_ok=True)
    raw = pl_bytes(pl_rows() if rows is None else rows)
    (folder / "polarity-v2-1500-reviews.csv.gz").write_bytes(gzip.compress(raw))
    return raw


IMDB_FILES = {
    ("train", "pos"): {"10_9.txt": "Great.<br /><br />Loved it.", "2_8.txt": "Good fun."},
    ("train", "neg"): {"3_1.txt": "Terrible.", "11_2.txt": "Bad <br/>acting."},
    ("test", "pos"): {"0_10.txt": "Masterpiece ☺"},
    ("test", "neg"): {"5_4.txt": "Meh."},
}


def write_imdb(base: Path):
    for (split, cls), files in IMDB_FILES.items():
        d = base / "aclImdb" / split / cls
        d.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (d / name).write_text(text, encoding="utf-8")


class FakeResponse(io.BytesIO):
    def __init__(self, body: bytes, *, fail_after: int | None = None, length: int | None = None, exc=None):
        super().__init__(body)
        self.fail_after = fail_after
        self.exc = exc or ConnectionResetError("connection reset by peer (fake)")
        self.headers = {"Content-Length": str(len(body) if length is None else length)}

    def read(self, n=-1):
        if self.fail_after is not None and self.tell() >= self.fail_after:
            raise self.exc
        if self.fail_after is not None:
            n = min(n if n >= 0 else self.fail_after, self.fail_after - self.tell())
        return super().read(n)


class FakeServer:
    """Serves ``files`` (url -> bytes, or url -> callable returning a FakeResponse); records every call."""

    def __init__(self, files):
        self.files = dict(files)
        self.calls: list[str] = []

    def __call__(self, request, timeout=None):
        url = getattr(request, "full_url", request)
        self.calls.append(url)
        if url not in self.files:
            raise urllib.error.HTTPError(url, 404, "Not Found", {}, None)
        item = self.files[url]
        return item() if callable(item) else FakeResponse(item)


def leftovers(folder: Path) -> list[str]:
    """Temporary or partial files under ``folder``."""
    if not folder.exists():
        return []
    return [str(p) for p in folder.rglob("*") if p.name.startswith(".") or p.suffix == ".part"]


# -------------------------------------------------------------------------------------------------- MNIST
@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("split", ["train", "test"])
def test_mnist_values_equal_written(tmp_path, gz, split):
    written = write_mnist(tmp_path, gz=gz)
    X, y = load_mnist(split=split, root=tmp_path)
    x0, y0 = written[split]
    assert X.dtype == np.float32 and X.shape == (7, 784)
    assert y.dtype == np.int64 and y.shape == (7,)
    np.testing.assert_array_equal(X, x0.reshape(7, 784).astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(y, y0)
    assert 0.0 <= X.min() and X.max() <= 1.0


def test_fashion_mnist_reads_its_own_folder(tmp_path):
    write_mnist(tmp_path, seed=1)
    fashion = write_mnist(tmp_path, folder="fashion-mnist", seed=2)
    X, y = load_fashion_mnist("test", root=tmp_path)
    np.testing.assert_array_equal(y, fashion["test"][1])
    np.testing.assert_array_equal(X, fashion["test"][0].reshape(-1, 784) / np.float32(255))


def test_mnist_returns_fresh_arrays_cache_cannot_be_corrupted(tmp_path):
    write_mnist(tmp_path)
    X, y = load_mnist(root=tmp_path)
    X += 5.0
    y[:] = -1
    X2, y2 = load_mnist(root=tmp_path)
    assert X2.max() <= 1.0 and y2.min() >= 0
    assert X2.flags.writeable and not np.shares_memory(X, X2)


def test_mnist_file_replaced_is_reread(tmp_path):
    write_mnist(tmp_path, seed=0)
    load_mnist("test", root=tmp_path)
    written = write_mnist(tmp_path, seed=5)
    lbl = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    st = lbl.stat()
    os.utime(lbl, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    img = tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz"
    os.utime(img, ns=(st.st_atime_ns, img.stat().st_mtime_ns + 10**9))
    _, y2 = load_mnist("test", root=tmp_path)
    np.testing.assert_array_equal(y2, written["test"][1])


@pytest.mark.parametrize("bad", ["truncated-gz", "garbage-gz", "truncated-raw", "bad-magic", "trailing"])
def test_mnist_corrupt_files_give_clear_errors(tmp_path, bad):
    write_mnist(tmp_path, gz=bad.endswith("gz"))
    folder = tmp_path / "mnist"
    name = "train-images-idx3-ubyte" + (".gz" if bad.endswith("gz") else "")
    f = folder / name
    b = f.read_bytes()
    f.write_bytes(
        {
            "truncated-gz": b[: len(b) // 2],
            "garbage-gz": b"\x1f\x8b" + b"not really gzip" * 10,
            "truncated-raw": b[:-100],
            "bad-magic": b"\x08\x03\x00\x00" + b[4:],
            "trailing": b + b"\x00",
        }[bad]
    )
    with pytest.raises(DataFormatError) as info:
        load_mnist(root=tmp_path)
    msg = str(info.value)
    assert name in msg
    expected_word = {
        "truncated-gz": "gzip",
        "garbage-gz": "gzip",
        "truncated-raw": "truncated",
        "bad-magic": "magic",
        "trailing": "trailing",
    }[bad]
    assert expected_word in msg
    assert isinstance(info.value, ValueError)


def test_mnist_image_label_count_mismatch(tmp_path):
    write_mnist(tmp_path, gz=False)
    (tmp_path / "mnist" / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(3, np.uint8)))
    with pytest.raises(DataFormatError, match=r"7 images but .* 3 labels"):
        load_mnist(root=tmp_path)


def test_parse_idx_other_dtypes():
    arr = np.arange(6, dtype=">i4").reshape(2, 3)
    out = mnist_mod.parse_idx(idx_bytes(arr))
    assert out.dtype == np.int32 and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)
    f = np.linspace(0, 1, 4).astype(">f4")
    np.testing.assert_array_equal(mnist_mod.parse_idx(idx_bytes(f)), f)


# ---------------------------------------------------------------------------------------------- checksums
def test_checksum_table_matches_data_readme():
    """The table shipped (not the emptied one of the fixture) holds the README's SHA-256 of the content."""
    assert REAL_CHECKSUMS["mnist/train-images-idx3-ubyte"] == (
        "sha256",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    )
    assert REAL_CHECKSUMS["pang-lee-polarity/polarity-v2-1500-reviews.csv"][1].startswith("a21e3106")
    assert sum(1 for k in REAL_CHECKSUMS if k.startswith(("mnist/", "fashion-mnist/"))) == 8
    assert all(len(d) == {"sha256": 64, "md5": 32}[a] for a, d in REAL_CHECKSUMS.values())


@pytest.mark.parametrize("gz", [True, False])
def test_checksum_of_decompressed_content_is_verified(tmp_path, monkeypatch, gz):
    written = write_mnist(tmp_path, gz=gz, splits=("test",))
    content = idx_bytes(written["test"][1])
    monkeypatch.setitem(locate.CHECKSUMS, "mnist/t10k-labels-idx1-ubyte", ("sha256", sha256(content)))
    load_mnist("test", root=tmp_path)  # good digest: loads

    locate.clear_verification_cache()
    mnist_mod._load_pair.cache_clear()
    monkeypatch.setitem(locate.CHECKSUMS, "mnist/t10k-labels-idx1-ubyte", ("sha256", "ab" * 32))
    with pytest.raises(ChecksumError) as info:
        load_mnist("test", root=tmp_path)
    msg = str(info.value)
    assert "t10k-labels-idx1-ubyte" in msg and "ab" * 32 in msg and sha256(content) in msg
    assert info.value.expected == "ab" * 32 and info.value.actual == sha256(content)


def test_real_checksums_reject_tiny_files_with_real_names(tmp_path, monkeypatch):
    """A file under a known name is never accepted without its published digest."""
    write_mnist(tmp_path, splits=("train",))
    monkeypatch.setitem(
        locate.CHECKSUMS,
        "mnist/train-images-idx3-ubyte",
        ("sha256", "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    )
    with pytest.raises(ChecksumError, match="ba891046e6505d7a"):
        load_mnist(root=tmp_path)


def test_verification_is_cached_per_path_size_mtime(tmp_path, monkeypatch):
    f = tmp_path / "mnist" / "x.gz"
    f.parent.mkdir()
    f.write_bytes(gzip.compress(b"hello"))
    monkeypatch.setitem(locate.CHECKSUMS, "mnist/x", ("sha256", sha256(b"hello")))
    calls = []
    real = locate.verify_bytes
    monkeypatch.setattr(locate, "verify_bytes", lambda *a: (calls.append(a[1]), real(*a)))
    assert locate.read_verified(f) == b"hello"
    assert locate.read_verified(f) == b"hello"
    assert calls == ["mnist/x"]
    f.write_bytes(gzip.compress(b"hellO"))
    os.utime(f, ns=(time.time_ns(), f.stat().st_mtime_ns + 10**9))
    with pytest.raises(ChecksumError):
        locate.read_verified(f)


# ----------------------------------------------------------------------------------------- resolution order
def test_resolution_order_root_then_env_then_cache(tmp_path, monkeypatch):
    a, b, c = tmp_path / "root", tmp_path / "env", tmp_path / "cache"
    wa, wb, wc = (write_mnist(p, seed=s, splits=("test",))["test"][1] for p, s in ((a, 1), (b, 2), (c, 3)))
    monkeypatch.setenv("ADAMLAB_DATA", str(b))
    np.testing.assert_array_equal(load_mnist("test", root=a)[1], wa)
    np.testing.assert_array_equal(load_mnist("test")[1], wb)
    monkeypatch.delenv("ADAMLAB_DATA")
    np.testing.assert_array_equal(load_mnist("test")[1], wc)
    # A root missing a file is skipped, not half-used.
    (a / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    monkeypatch.setenv("ADAMLAB_DATA", str(b))
    np.testing.assert_array_equal(load_mnist("test", root=a)[1], wb)


def test_not_found_message_lists_every_place_and_file(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAMLAB_DATA", str(tmp_path / "nowhere"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataNotFoundError) as info:
        load_mnist("train", root=empty, download=False)
    msg = str(info.value)
    for needle in (
        str(empty),
        str(tmp_path / "nowhere"),
        str(tmp_path / "cache"),
        "mnist/train-images-idx3-ubyte.gz",
        "mnist/train-labels-idx1-ubyte",
        "root=",
        "ADAMLAB_DATA",
        "ADAMLAB_CACHE",
        "download",
    ):
        assert needle in msg, needle
    assert isinstance(info.value, FileNotFoundError)


def test_offline_env_disables_download(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAMLAB_OFFLINE", "1")
    with pytest.raises(DataNotFoundError, match="ADAMLAB_OFFLINE"):
        load_fashion_mnist("test")


# -------------------------------------------------------------------------------------------- downloading
def mnist_server(tmp_path, urls=None, split="test", seed=4):
    """Gzipped tiny MNIST files served at ``urls`` (default: the first MNIST URL), digests registered."""
    src = tmp_path / "src"
    written = write_mnist(src, splits=(split,), seed=seed)
    files = {}
    for name, arr in zip(MNIST_NAMES[split], written[split], strict=True):
        locate.CHECKSUMS[f"mnist/{name}"] = ("sha256", sha256(idx_bytes(arr)))
        for base in urls or mnist_mod.MNIST_URLS[:1]:
            files[base + name + ".gz"] = (src / "mnist" / f"{name}.gz").read_bytes()
    return FakeServer(files), written[split]


def test_download_into_cache_then_no_network(tmp_path, monkeypatch):
    server, (x0, y0) = mnist_server(tmp_path)
    monkeypatch.setattr(locate, "urlopen", server)
    X, y = load_mnist("test")
    np.testing.assert_array_equal(y, y0)
    np.testing.assert_array_equal(X, x0.reshape(-1, 784) / np.float32(255))
    assert len(server.calls) == 2
    cache = tmp_path / "cache" / "mnist"
    assert sorted(p.name for p in cache.iterdir()) == [
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]
    mnist_mod._load_pair.cache_clear()
    load_mnist("test")
    assert len(server.calls) == 2  # files present: no network at all


def test_download_falls_back_to_mirror(tmp_path, monkeypatch):
    server, (_, y0) = mnist_server(tmp_path, urls=mnist_mod.MNIST_URLS[1:])
    monkeypatch.setattr(locate, "urlopen", server)
    np.testing.assert_array_equal(load_mnist("test")[1], y0)
    assert server.calls[0].startswith(mnist_mod.MNIST_URLS[0])  # tried the authors' site first (404)


@pytest.mark.parametrize("how", ["reset", "short", "interrupt"])
def test_failed_download_leaves_nothing_in_cache(tmp_path, monkeypatch, how):
    server, _ = mnist_server(tmp_path)
    for url, body in list(server.files.items()):
        if how == "reset":
            server.files[url] = lambda body=body: FakeResponse(body, fail_after=len(body) // 2)
        elif how == "short":  # the server closes early without an error: Content-Length catches it
            server.files[url] = lambda body=body: FakeResponse(body[: len(body) // 2], length=len(body))
        else:
            server.files[url] = lambda body=body: FakeResponse(body, fail_after=len(body) // 2, exc=KeyboardInterrupt())
    monkeypatch.setattr(locate, "urlopen", server)
    if how == "interrupt":
        with pytest.raises(KeyboardInterrupt):
            load_mnist("test")
    else:
        with pytest.raises(DataNotFoundError) as info:
            load_mnist("test")
        assert "failed" in str(info.value) and mnist_mod.MNIST_URLS[0] in str(info.value)
    cache = tmp_path / "cache"
    assert not [p for p in cache.rglob("*") if p.is_file()], "partial download left in the cache"


def test_download_with_wrong_checksum_raises_and_keeps_nothing(tmp_path, monkeypatch):
    server, _ = mnist_server(tmp_path)
    locate.CHECKSUMS["mnist/t10k-images-idx3-ubyte"] = ("sha256", "00" * 32)
    monkeypatch.setattr(locate, "urlopen", server)
    with pytest.raises(ChecksumError, match="t10k-images-idx3-ubyte"):
        load_mnist("test")
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


def test_download_disabled(tmp_path, monkeypatch):
    server, _ = mnist_server(tmp_path)
    monkeypatch.setattr(locate, "urlopen", server)
    with pytest.raises(DataNotFoundError, match="download=False"):
        load_mnist("test", download=False)
    assert server.calls == []


def targz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return buf.getvalue()


def test_cifar_archive_download_and_extraction(tmp_path, monkeypatch):
    src = tmp_path / "src"
    batches = write_cifar(src, n=4)
    members = {f"cifar-10-batches-py/{p.name}": p.read_bytes() for p in (src / "cifar-10-batches-py").iterdir()}
    members["cifar-10-batches-py/readme.html"] = b"<html/>"
    members["../escape"] = b"never extracted"
    archive = targz(members)
    locate.CHECKSUMS["cifar-10-python.tar.gz"] = ("sha256", sha256(archive))
    server = FakeServer({cifar_mod.CIFAR10_URLS[0]: archive})
    monkeypatch.setattr(locate, "urlopen", server)
    _, y = load_cifar10("test", whiten=None)
    np.testing.assert_array_equal(y, batches["test_batch"][1])
    cache = tmp_path / "cache"
    assert sorted(p.name for p in cache.iterdir()) == ["cifar-10-batches-py"]  # archive + staging removed
    assert not (tmp_path / "escape").exists() and not (cache / "escape").exists()
    assert not (cache / "cifar-10-batches-py" / "readme.html").exists()
    load_cifar10("train", whiten=None)
    assert len(server.calls) == 1


def test_corrupt_archive_leaves_nothing(tmp_path, monkeypatch):
    archive = b"\x1f\x8b" + b"definitely not a tarball" * 20
    locate.CHECKSUMS["aclImdb_v1.tar.gz"] = ("sha256", sha256(archive))
    monkeypatch.setattr(locate, "urlopen", FakeServer({reviews_mod.IMDB_URLS[0]: archive}))
    with pytest.raises(DataNotFoundError, match="cannot be extracted"):
        load_reviews("imdb")
    assert not list((tmp_path / "cache").rglob("*"))


def test_imdb_archive_download(tmp_path, monkeypatch):
    members = {f"aclImdb/{s}/{c}/{n}": t.encode() for (s, c), files in IMDB_FILES.items() for n, t in files.items()}
    members["aclImdb/train/unsup/0_0.txt"] = b"unlabelled"
    members["aclImdb/train/labeledBow.feat"] = b"0 0:1"
    archive = targz(members)
    locate.CHECKSUMS["aclImdb_v1.tar.gz"] = ("sha256", sha256(archive))
    monkeypatch.setattr(locate, "urlopen", FakeServer({reviews_mod.IMDB_URLS[0]: archive}))
    texts, y = load_reviews("imdb", "all")
    assert len(texts) == 6 and y.tolist() == [0, 0, 1, 1, 0, 1]
    assert not (tmp_path / "cache" / "aclImdb" / "train" / "unsup").exists()
    assert not (tmp_path / "cache" / "aclImdb_v1.tar.gz").exists()


def test_rotten_tomatoes_download(tmp_path, monkeypatch):
    raw = rt_bytes(RT_ROWS)
    locate.CHECKSUMS["rotten-tomatoes/rotten_tomatoes_corpus_full.csv"] = ("sha256", sha256(raw))
    server = FakeServer({reviews_mod.ROTTEN_TOMATOES_URLS[0]: bz2.compress(raw)})
    monkeypatch.setattr(locate, "urlopen", server)
    texts, _ = load_reviews("rotten-tomatoes", "all")
    assert len(texts) == 4
    assert (tmp_path / "cache" / "rotten-tomatoes" / "rotten_tomatoes_corpus_full.csv.bz2").is_file()


def test_pang_lee_has_no_download_and_says_so():
    with pytest.raises(DataNotFoundError) as info:
        load_reviews("pang-lee")
    msg = str(info.value)
    assert "no download source" in msg and "polarity-v2-1500-reviews.csv.gz" in msg


# ------------------------------------------------------------------------------------------------ CIFAR-10
def test_cifar_values_equal_written(tmp_path):
    batches = write_cifar(tmp_path)
    X, y = load_cifar10("train", root=tmp_path, whiten=None)
    x0 = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
    y0 = np.concatenate([batches[f"data_batch_{i}"][1] for i in range(1, 6)])
    assert X.shape == (30, 3, 32, 32) and X.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(y, y0)
    np.testing.assert_array_equal(X, x0.reshape(30, 3, 32, 32) / np.float32(255))
    # channel-major layout: the first 1024 values of a row are the red plane, row by row
    assert X[0, 0, 0, 1] == np.float32(x0[0, 1]) / np.float32(255)
    assert X[0, 1, 0, 0] == np.float32(x0[0, 1024]) / np.float32(255)
    _, yt = load_cifar10("test", root=tmp_path, whiten=None)
    np.testing.assert_array_equal(yt, batches["test_batch"][1])


def test_cifar_zca_is_fitted_on_training_set(tmp_path):
    batches = write_cifar(tmp_path)
    eps = 0.05
    Xtr, _ = load_cifar10("train", root=tmp_path, whiten="zca", zca_epsilon=eps)
    Xte, _ = load_cifar10("test", root=tmp_path, whiten="zca", zca_epsilon=eps)
    train = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)]) / 255.0
    test = batches["test_batch"][0] / 255.0
    mean, w = data.fit_zca(train, eps)  # fitted on the training images only
    ref = (test - mean) @ w
    np.testing.assert_allclose(Xte.reshape(6, -1), ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(Xtr.reshape(30, -1).mean(axis=0), 0.0, atol=1e-4)
    assert Xtr.dtype == np.float32 and Xtr.shape == (30, 3, 32, 32)


def test_cifar_needs_training_batches_for_zca_of_test(tmp_path):
    write_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    load_cifar10("test", root=tmp_path, whiten=None)
    with pytest.raises(DataNotFoundError, match="data_batch_3"):
        load_cifar10("test", root=tmp_path, whiten="zca", download=False)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > evil-marker",))


@pytest.mark.parametrize("bad", ["truncated", "evil", "shape", "labels"])
def test_cifar_corrupt_batches(tmp_path, bad, monkeypatch):
    write_cifar(tmp_path)
    monkeypatch.chdir(tmp_path)
    f = tmp_path / "cifar-10-batches-py" / "test_batch"
    if bad == "truncated":
        f.write_bytes(f.read_bytes()[:500])
    elif bad == "evil":
        f.write_bytes(pickle.dumps({b"data": _Evil(), b"labels": []}, protocol=2))
    elif bad == "shape":
        f.write_bytes(cifar_pickle(np.zeros((2, 100), np.uint8), [0, 1]))
    else:
        f.write_bytes(cifar_pickle(np.zeros((2, 3072), np.uint8), [0, 10]))
    with pytest.raises(DataFormatError, match="test_batch"):
        load_cifar10("test", root=tmp_path, whiten=None)
    assert not (tmp_path / "evil-marker").exists()


def test_cifar_batch_checksum(tmp_path, monkeypatch):
    write_cifar(tmp_path)
    monkeypatch.setitem(locate.CHECKSUMS, "cifar-10-batches-py/test_batch", ("md5", "0" * 32))
    with pytest.raises(ChecksumError, match="md5"):
        load_cifar10("test", root=tmp_path, whiten=None)


def test_zca_makes_covariance_identity_on_random_data():
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(12, 12))
    x = rng.normal(size=(5000, 12)) @ mix + 3.0
    mean, w = data.fit_zca(x, epsilon=1e-9)
    z = data.apply_zca(x, mean, w).astype(np.float64)
    np.testing.assert_allclose(np.cov(z, rowvar=False, bias=True), np.eye(12), atol=1e-4)
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(w, w.T, atol=1e-10)  # ZCA (not PCA) whitening: symmetric W
    # the same with fewer samples than dimensions (thin-SVD path): identity on the span of the data
    few = rng.normal(size=(8, 12)) @ mix
    m2, w2 = data.fit_zca(few, epsilon=1e-9)
    c = np.cov((few - m2) @ w2, rowvar=False, bias=True)  # float64: W is huge off the data's span
    np.testing.assert_allclose(np.linalg.eigvalsh(c)[-7:], 1.0, atol=1e-3)
    # epsilon damps low-variance directions
    _, w3 = data.fit_zca(x, epsilon=10.0)
    assert np.linalg.eigvalsh(np.cov(data.apply_zca(x, mean, w3), rowvar=False)).max() < 1.0


# ------------------------------------------------------------------------------------------------- reviews
def test_imdb_tree(tmp_path):
    write_imdb(tmp_path)
    texts, y = load_reviews("imdb", "train", root=tmp_path)
    # negatives first, then positives, each by numeric review id; <br /> -> newline
    assert texts == ["Terrible.", "Bad \nacting.", "Good fun.", "Great.\n\nLoved it."]
    assert y.dtype == np.int64 and y.tolist() == [0, 0, 1, 1]
    t_all, y_all = load_reviews("imdb", "all", root=tmp_path)
    t_test, _ = load_reviews("imdb", "test", root=tmp_path)
    assert t_all == texts + t_test and y_all.tolist() == [0, 0, 1, 1, 0, 1]
    assert t_test == ["Meh.", "Masterpiece ☺"]


def test_imdb_bad_utf8(tmp_path):
    write_imdb(tmp_path)
    (tmp_path / "aclImdb" / "test" / "neg" / "7_1.txt").write_bytes(b"\xff\xfe bad")
    with pytest.raises(DataFormatError, match=r"7_1\.txt"):
        load_reviews("imdb", "test", root=tmp_path)


@pytest.mark.parametrize("compress", [True, False])
def test_rotten_tomatoes_values(tmp_path, compress):
    write_rt(tmp_path, compress=compress)
    texts, y = load_reviews("rotten-tomatoes", "all", root=tmp_path)
    assert texts == [r[1] for r in RT_ROWS[1:]]  # plot dropped, order kept, quotes/newlines/unicode intact
    assert y.tolist() == [1, 0, 1, 0]


def big_rt_rows(n_fresh=53, n_rotten=37):
    rows = [("fresh", f"fresh review number {i}, good", "m", "False") for i in range(n_fresh)]
    rows += [("rotten", f"rotten review number {i}, bad", "m", "False") for i in range(n_rotten)]
    rows += [("plot", f"plot {i}", "m", "True") for i in range(5)]
    return rows


def test_review_split_is_deterministic_stratified_and_order_free(tmp_path):
    rows = big_rt_rows()
    write_rt(tmp_path, rows)
    tr, ytr = load_reviews("rotten-tomatoes", "train", root=tmp_path)
    te, yte = load_reviews("rotten-tomatoes", "test", root=tmp_path)
    al, yal = load_reviews("rotten-tomatoes", "all", root=tmp_path)
    assert len(al) == 90 and not set(tr) & set(te) and set(tr) | set(te) == set(al)
    assert (yte == 1).sum() == round(0.2 * 53) and (yte == 0).sum() == round(0.2 * 37)
    assert [t for t in al if t in set(te)] == te  # file order kept
    assert dict(zip(tr, ytr.tolist(), strict=True)) == {t: v for t, v in zip(al, yal.tolist(), strict=True) if t in tr}
    # the same reviews in another order give the same test set
    other = tmp_path / "other"
    rng = np.random.default_rng(1)
    write_rt(other, [rows[i] for i in rng.permutation(len(rows))])
    te2, _ = load_reviews("rotten-tomatoes", "test", root=other)
    assert set(te2) == set(te)


def test_rotten_tomatoes_bad_rows(tmp_path):
    write_rt(tmp_path, [*RT_ROWS, ("meh", "unknown category", "m", "False")])
    with pytest.raises(DataFormatError, match="category"):
        load_reviews("rotten-tomatoes", "all", root=tmp_path)
    folder = tmp_path / "rotten-tomatoes"
    (folder / "rotten_tomatoes_corpus_full.csv.bz2").write_bytes(bz2.compress(b"a,b\n1,2\n"))
    with pytest.raises(DataFormatError, match="columns"):
        load_reviews("rotten-tomatoes", "all", root=tmp_path)
    (folder / "rotten_tomatoes_corpus_full.csv.bz2").write_bytes(b"BZh9 truncated")
    with pytest.raises(DataFormatError, match="bzip2"):
        load_reviews("rotten-tomatoes", "all", root=tmp_path)


def test_pang_lee_bom_long_fields_and_labels(tmp_path):
    raw = write_pl(tmp_path)
    limit = csv.field_size_limit()
    texts, y = load_reviews("pang-lee", "all", root=tmp_path)
    assert texts == [r[1] for r in pl_rows()] and len(texts[2]) == 200000
    assert y.tolist() == [1, 0, 1]
    assert csv.field_size_limit() == limit  # restored
    tr, _ = load_reviews("pang-lee", "train", root=tmp_path)
    te, _ = load_reviews("pang-lee", "test", root=tmp_path)
    assert sorted(tr + te) == sorted(texts)
    # the checksum of the decompressed content (with the BOM) is what is checked
    locate.CHECKSUMS["pang-lee-polarity/polarity-v2-1500-reviews.csv"] = ("sha256", sha256(raw))
    reviews_mod._read_pang_lee.cache_clear()
    load_reviews("pang-lee", "all", root=tmp_path)


def test_pang_lee_bad_label(tmp_path):
    write_pl(tmp_path, rows=[("1", "ok"), ("0", "neutral?")])
    with pytest.raises(DataFormatError, match="line 2"):
        load_reviews("pang-lee", "all", root=tmp_path)


def test_reviews_return_fresh_objects(tmp_path):
    write_rt(tmp_path)
    texts, y = load_reviews("rotten-tomatoes", "all", root=tmp_path)
    texts.clear()
    y[:] = 7
    texts2, y2 = load_reviews("rotten-tomatoes", "all", root=tmp_path)
    assert len(texts2) == 4 and y2.tolist() == [1, 0, 1, 0]


# ------------------------------------------------------------------------------------------ bad arguments
@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda: load_mnist("valid"), "split must be one of ['test', 'train'], got 'valid'"),
        (lambda: load_fashion_mnist("all"), "split must be one of"),
        (lambda: load_cifar10("dev"), "split must be one of ['test', 'train'], got 'dev'"),
        (lambda: load_cifar10(whiten="pca"), "whiten must be one of ['zca', None], got 'pca'"),
        (lambda: load_cifar10(zca_epsilon=-1.0), "zca_epsilon"),
        (
            lambda: load_reviews("yelp"),
            "corpus must be one of ['imdb', 'rotten-tomatoes', 'pang-lee'], got 'yelp'",
        ),
        (lambda: load_reviews("imdb", "dev"), "split must be one of ['train', 'test', 'all'], got 'dev'"),
    ],
)
def test_bad_arguments(call, needle):
    with pytest.raises(ValueError) as info:
        call()
    assert needle in str(info.value)


# ------------------------------------------------------------------------------------------- bag of words
CORPUS = [
    "the cat sat on the mat",
    "the dog sat",
    "The cat and the dog, the end!",
    "a b c",  # one-letter words are not tokens
]


def test_bag_of_words_vocabulary_and_sparsity():
    X, vec = bag_of_words(CORPUS, max_features=3)
    # totals: the 6, cat 2, sat 2, dog 2, on/mat/and/end 1 -> "the" + two of the 2-count words
    vocab = list(vec.get_feature_names_out())
    assert len(vocab) == 3 and "the" in vocab and set(vocab) <= {"the", "cat", "sat", "dog"}
    assert sp.isspmatrix_csr(X) and X.dtype == np.float32 and X.shape == (4, 3)
    assert set(np.unique(X.data)) == {1.0}  # binary by default
    assert X[3].nnz == 0
    Xall, vall = bag_of_words(CORPUS, max_features=None)
    assert list(vall.get_feature_names_out()) == ["and", "cat", "dog", "end", "mat", "on", "sat", "the"]
    assert Xall.nnz == 5 + 3 + 5
    assert Xall.nnz / np.prod(Xall.shape) < 0.5


def test_bag_of_words_ranks_by_total_count_and_counts_option():
    texts = ["spam spam spam spam", "egg ham", "egg ham", "ham egg"]
    # document frequency: egg 3, ham 3, spam 1; total count: spam 4, egg 3, ham 3
    _, vec = bag_of_words(texts, max_features=1)
    assert list(vec.get_feature_names_out()) == ["spam"]
    Xc, vc = bag_of_words(texts, max_features=None, binary=False)
    names = list(vc.get_feature_names_out())
    assert Xc[0, names.index("spam")] == 4.0
    Xt = vc.transform(["spam spam unknownword"])
    assert Xt.dtype == np.float32 and Xt[0, names.index("spam")] == 2.0 and Xt.nnz == 1
    _, vb = bag_of_words(texts, max_features=None)
    assert vb.transform(["spam spam"]).toarray().max() == 1.0


def test_bag_of_words_bad_arguments():
    with pytest.raises(TypeError):
        bag_of_words("just one string")
    with pytest.raises(ValueError, match="max_features"):
        bag_of_words(CORPUS, max_features=0)
