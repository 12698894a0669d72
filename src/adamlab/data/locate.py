"""Finding, downloading and checking the data files.

Where a data set is looked for, in this order (the first place holding every file needed wins):

1. the ``root=`` argument of the loader (a directory);
2. the directory named by the environment variable ``$ADAMLAB_DATA``;
3. the per-user cache, ``$ADAMLAB_CACHE`` or else ``~/.cache/adamlab``;
4. a download from the data set's home site into that cache (only when nothing was found; never when the
   files are present, and never when ``download=False`` or ``$ADAMLAB_OFFLINE`` is set to a non-empty value
   other than ``0``).

Otherwise :class:`DataNotFoundError` is raised, naming every place looked in and the files expected.

Under every such directory the layout is the one of the project's shared data folder: ``mnist/``,
``fashion-mnist/``, ``cifar-10-batches-py/``, ``aclImdb/``, ``rotten-tomatoes/``, ``pang-lee-polarity/``.

Downloads go through the module attribute :data:`urlopen` (tests replace it with a fake server), are written
to a temporary file in the destination directory, checked against the published checksum and only then
moved into place with :func:`os.replace`, so nothing half-written is ever left in the cache.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import lzma
import os
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Any

from adamlab.progress import progress

__all__ = [
    "CACHE_ENV",
    "CHECKSUMS",
    "DATA_ENV",
    "OFFLINE_ENV",
    "ChecksumError",
    "DataError",
    "DataFormatError",
    "DataNotFoundError",
    "cache_dir",
    "checksum_key",
    "clear_verification_cache",
    "decompress_bytes",
    "download_archive",
    "download_file",
    "file_probe",
    "locate",
    "read_verified",
    "urlopen",
    "verify_bytes",
]

DATA_ENV = "ADAMLAB_DATA"
CACHE_ENV = "ADAMLAB_CACHE"
OFFLINE_ENV = "ADAMLAB_OFFLINE"

#: The function used to open URLs. Tests replace it (``monkeypatch.setattr(locate, "urlopen", fake)``); it is
#: called as ``urlopen(request, timeout=seconds)`` and must return a context manager with ``read(n)``.
urlopen: Callable[..., Any] = urllib.request.urlopen

#: Seconds before a connection attempt or a stalled read is given up.
TIMEOUT_S = 60.0

_CHUNK = 1 << 20

#: Checksums of the **decompressed** content, keyed by the path relative to a data root of the file without
#: its compression suffix; values are ``(algorithm, hexdigest)``. The SHA-256 entries are those of the
#: project's data README; the CIFAR-10 MD5s are the ones published with the data set (and used by
#: torchvision); the archive digests are checked on download only.
CHECKSUMS: dict[str, tuple[str, str]] = {
    "mnist/train-images-idx3-ubyte": (
        "sha256",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    "mnist/train-labels-idx1-ubyte": (
        "sha256",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
    "mnist/t10k-images-idx3-ubyte": (
        "sha256",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ),
    "mnist/t10k-labels-idx1-ubyte": (
        "sha256",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
    "fashion-mnist/train-images-idx3-ubyte": (
        "sha256",
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    ),
    "fashion-mnist/train-labels-idx1-ubyte": (
        "sha256",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    ),
    "fashion-mnist/t10k-images-idx3-ubyte": (
        "sha256",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    ),
    "fashion-mnist/t10k-labels-idx1-ubyte": (
        "sha256",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    ),
    "rotten-tomatoes/rotten_tomatoes_corpus_full.csv": (
        "sha256",
        "a6d44ceb33484c6ffa6bf9de99f4f4c5d12c4e410fa04b703498c97c5db652d4",
    ),
    "pang-lee-polarity/polarity-v2-1500-reviews.csv": (
        "sha256",
        "a21e3106433d9fa59fe75707b8af6ee5e2b27ab9bb98f7c0d69878a40b68aa8f",
    ),
    "cifar-10-batches-py/data_batch_1": ("md5", "c99cafc152244af753f735de768cd75f"),
    "cifar-10-batches-py/data_batch_2": ("md5", "d4bba439e000b95fd0a9bffe97cbabec"),
    "cifar-10-batches-py/data_batch_3": ("md5", "54ebc095f3ab1f0389bbae665268c751"),
    "cifar-10-batches-py/data_batch_4": ("md5", "634d18415352ddfa80567beed471001a"),
    "cifar-10-batches-py/data_batch_5": ("md5", "482c414d41f54cd18b22e5b47cb7c3cb"),
    "cifar-10-batches-py/test_batch": ("md5", "40351d587109b95175f43aff81a1287e"),
    # Archives (not decompressed: the digest of the .tar.gz itself).
    "cifar-10-python.tar.gz": (
        "sha256",
        "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
    ),
    "aclImdb_v1.tar.gz": (
        "sha256",
        "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe",
    ),
}


# --------------------------------------------------------------------------------------------------- errors
class DataError(Exception):
    """Base class of the errors of :mod:`adamlab.data`."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A data set is in none of the places looked in and could not be downloaded."""

    def __init__(self, message: str) -> None:
        # FileNotFoundError(msg) alone would format as "[Errno ...]" with two args; keep one plain message.
        Exception.__init__(self, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ChecksumError(DataError, ValueError):
    """A file's content does not have the published checksum."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        algorithm: str,
        expected: str,
        actual: str,
        advice: str = "The file is corrupt, truncated or not the published one: delete it and supply it "
        "again (or let adamlab download it).",
    ) -> None:
        self.path = str(path)
        self.algorithm = algorithm
        self.expected = expected
        self.actual = actual
        super().__init__(f"checksum mismatch for {self.path}: expected {algorithm} {expected}, got {actual}. {advice}")


class DataFormatError(DataError, ValueError):
    """A file exists but cannot be read as the format it should have (corrupt, truncated, wrong kind)."""


# ------------------------------------------------------------------------------------------------ locations
def _env_path(name: str) -> Path | None:
    value = os.environ.get(name, "").strip()
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
    """The per-user cache: ``$ADAMLAB_CACHE`` if set, else ``~/.cache/adamlab`` (not created here)."""
    return _env_path(CACHE_ENV) or Path.home() / ".cache" / "adamlab"


def _offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip() not in ("", "0")


@dataclass(frozen=True)
class _Place:
    label: str
    base: Path | None
    why_missing: str = ""


def _places(root: str | os.PathLike[str] | None) -> list[_Place]:
    return [
        _Place("root= argument", Path(root).expanduser() if root is not None else None, "not given"),
        _Place(f"${DATA_ENV}", _env_path(DATA_ENV), "not set"),
        _Place(f"cache (${CACHE_ENV} or ~/.cache/adamlab)", cache_dir()),
    ]


def file_probe(alternatives: Sequence[Sequence[str]]) -> Callable[[Path], list[Path] | None]:
    """A probe for :func:`locate`: for each group of alternative relative names, the first one that exists.

    ``alternatives=[("mnist/x.gz", "mnist/x"), ...]`` returns ``[base/"mnist/x.gz" or base/"mnist/x", ...]``
    when every group has a regular file under ``base``, else ``None``.
    """

    def probe(base: Path) -> list[Path] | None:
        found = []
        for names in alternatives:
            hit = next((base / n for n in names if (base / n).is_file()), None)
            if hit is None:
                return None
            found.append(hit)
        return found

    return probe


def locate(
    title: str,
    probe: Callable[[Path], Any],
    expected: Iterable[str],
    root: str | os.PathLike[str] | None,
    *,
    fetch: Callable[[Path], None] | None = None,
    sources: Sequence[str] = (),
    download: bool = True,
    how_to_get: str = "",
) -> Any:
    """Return ``probe(base)`` for the first place where it is not ``None`` (see the module docstring).

    ``fetch(cache)`` downloads the data set into the cache directory; it is only called when no place holds
    the files. A :class:`ChecksumError` from it propagates; network errors are reported in the
    :class:`DataNotFoundError`.
    """
    expected = list(expected)
    lines: list[str] = []
    places = _places(root)
    for place in places:
        if place.base is None:
            lines.append(f"  - {place.label}: ({place.why_missing})")
            continue
        if not place.base.is_dir():
            lines.append(f"  - {place.label}: {place.base} (no such directory)")
            continue
        found = probe(place.base)
        if found is not None:
            return found
        lines.append(f"  - {place.label}: {place.base} (files missing)")

    cache = cache_dir()
    if fetch is None:
        lines.append("  - download: no download source known for this data set")
    elif not download:
        lines.append("  - download: disabled (download=False)")
    elif _offline():
        lines.append(f"  - download: disabled (${OFFLINE_ENV} is set)")
    else:
        try:
            fetch(cache)
        except ChecksumError:
            raise
        except (OSError, HTTPException, urllib.error.URLError, DataFormatError, EOFError, zlib.error) as exc:
            lines.append(f"  - download into {cache} from {', '.join(sources)}: failed: {exc}")
        else:
            found = probe(cache)
            if found is not None:
                return found
            lines.append(f"  - download into {cache}: finished but the files are still incomplete")

    msg = [
        f"{title} not found.",
        "Expected, relative to a data directory:",
        *(f"    {e}" for e in expected),
        "Looked in:",
        *lines,
        "Supply the files in one of these ways: pass root='/path/to/data' to the loader, or set "
        f"{DATA_ENV}=/path/to/data, or put them under the cache directory {cache} "
        f"(set {CACHE_ENV} to move it).",
    ]
    if how_to_get:
        msg.append(how_to_get)
    raise DataNotFoundError("\n".join(msg))


# ------------------------------------------------------------------------------------- reading & checksums
_verified: dict[tuple[str, int, int, str, str], bool] = {}


def _stat_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def _decompressor_for(name: str) -> tuple[str, Callable[[bytes], bytes] | None]:
    if name.endswith(".gz"):
        return "gzip", gzip.decompress
    if name.endswith(".bz2"):
        return "bzip2", bz2.decompress
    if name.endswith(".xz"):
        return "xz", lzma.decompress
    return "", None


def decompress_bytes(raw: bytes, path: str | os.PathLike[str]) -> bytes:
    """Decompress ``raw`` according to the suffix of ``path`` (.gz, .bz2, .xz; else returned as is)."""
    kind, fn = _decompressor_for(str(path))
    if fn is None:
        return raw
    try:
        return fn(raw)
    except (OSError, EOFError, zlib.error, lzma.LZMAError, ValueError) as exc:
        raise DataFormatError(
            f"{path}: not a valid {kind} file ({type(exc).__name__}: {exc}); it is probably truncated or "
            "corrupt: delete it and supply it again"
        ) from None


def checksum_key(path: Path, base_parts: int = 2) -> str:
    """The key of ``path`` in :data:`CHECKSUMS`: its last ``base_parts`` components, compression suffix
    removed."""
    rel = "/".join(path.parts[-base_parts:])
    return re.sub(r"\.(gz|bz2|xz)$", "", rel)


def verify_bytes(content: bytes, key: str, where: str | os.PathLike[str]) -> None:
    """Raise :class:`ChecksumError` if ``key`` has a checksum in :data:`CHECKSUMS` that ``content`` lacks."""
    entry = CHECKSUMS.get(key)
    if entry is None:
        return
    algorithm, expected = entry
    actual = hashlib.new(algorithm, content).hexdigest()
    if actual != expected.lower():
        raise ChecksumError(where, algorithm, expected, actual)


def read_verified(path: Path, key: str | None = None) -> bytes:
    """The decompressed content of ``path``, checked against :data:`CHECKSUMS` (``key`` defaults to
    :func:`checksum_key`). A successful check is remembered per (path, size, mtime, digest) for the process.
    """
    path = Path(path)
    key = checksum_key(path) if key is None else key
    try:
        raw = path.read_bytes()
        stat = _stat_key(path)
    except OSError as exc:
        raise DataFormatError(f"{path}: cannot be read ({exc})") from None
    content = decompress_bytes(raw, path)
    entry = CHECKSUMS.get(key)
    if entry is not None:
        memo = (*stat, *entry)
        if not _verified.get(memo):
            verify_bytes(content, key, path)
            _verified[memo] = True
    return content


def clear_verification_cache() -> None:
    """Forget which files were already verified (for tests)."""
    _verified.clear()


# ---------------------------------------------------------------------------------------------- downloading
def _content_length(resp: Any) -> int | None:
    headers = getattr(resp, "headers", None)
    value = headers.get("Content-Length") if headers is not None else None
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _fetch_to(url: str, tmp: Any, desc: str) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "adamlab (python urllib)"})
    with urlopen(request, timeout=TIMEOUT_S) as resp:
        total = _content_length(resp)
        received = 0
        with progress(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, leave=False) as bar:
            while True:
                chunk = resp.read(_CHUNK)
                if not chunk:
                    break
                tmp.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        if total is not None and received != total:
            raise OSError(f"download from {url} ended after {received} of {total} bytes")


def _hash_file(path: Path, algorithm: str, decompress_as: str | None) -> str:
    """Digest of the content of ``path``, streamed; decompressed according to the suffix of
    ``decompress_as`` when given."""
    h = hashlib.new(algorithm)
    kind, _ = _decompressor_for(decompress_as or "")
    openers: dict[str, Callable[..., Any]] = {"gzip": gzip.open, "bzip2": bz2.open, "xz": lzma.open}
    opener = openers.get(kind, open)
    try:
        with opener(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
    except (EOFError, zlib.error, lzma.LZMAError, ValueError, OSError) as exc:
        raise DataFormatError(
            f"{decompress_as or path}: not a valid {kind or 'data'} file ({type(exc).__name__}: {exc})"
        ) from None
    return h.hexdigest()


def _download_verified(urls: Sequence[str], dest: Path, key: str, decompressed: bool) -> None:
    """Download the first of ``urls`` that works to ``dest`` via a temporary file, checking the checksum of
    the (decompressed, if ``decompressed``) content before moving it into place."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    checksum_errors: list[ChecksumError] = []
    for url in urls:
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        tmp_path = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as tmp:
                _fetch_to(url, tmp, dest.name)
                tmp.flush()
                os.fsync(tmp.fileno())
            entry = CHECKSUMS.get(key)
            if entry is not None:
                algorithm, expected = entry
                actual = _hash_file(tmp_path, algorithm, str(dest) if decompressed else None)
                if actual != expected.lower():
                    raise ChecksumError(
                        f"{dest.name} downloaded from {url}",
                        algorithm,
                        expected,
                        actual,
                        "The download was discarded; the server does not serve the published file.",
                    )
            elif decompressed:  # no published digest: at least make sure it decompresses
                _hash_file(tmp_path, "sha256", str(dest))
            os.replace(tmp_path, dest)
            return
        except ChecksumError as exc:
            checksum_errors.append(exc)
            errors.append(f"{url}: {exc}")
        except (OSError, HTTPException, urllib.error.URLError, DataFormatError) as exc:
            errors.append(f"{url}: {type(exc).__name__}: {exc}")
        finally:  # whatever happened (even KeyboardInterrupt), no partial file stays behind
            with contextlib.suppress(FileNotFoundError):
                tmp_path.unlink()
    if checksum_errors:
        raise checksum_errors[-1]
    raise OSError("; ".join(errors))


def download_file(urls: Sequence[str], dest: Path, key: str | None = None) -> None:
    """Download one data file (e.g. ``mnist/train-images-idx3-ubyte.gz``) atomically, checked against
    :data:`CHECKSUMS` for its decompressed content."""
    _download_verified(urls, dest, checksum_key(dest) if key is None else key, decompressed=True)


def download_archive(
    urls: Sequence[str],
    cache: Path,
    archive_name: str,
    want: Callable[[str], str | None],
) -> None:
    """Download a ``.tar.gz`` archive into ``cache`` (checked against ``CHECKSUMS[archive_name]``), and
    extract the regular files for which ``want(member_name)`` returns a relative destination path.

    Files are extracted into a temporary directory inside ``cache`` and then moved into place one by one
    with :func:`os.replace`; the archive and the temporary directory are removed afterwards.
    """
    cache.mkdir(parents=True, exist_ok=True)
    archive = cache / archive_name
    _download_verified(urls, archive, archive_name, decompressed=False)
    staging = Path(tempfile.mkdtemp(dir=cache, prefix=".extract-"))
    try:
        moves: list[tuple[Path, Path]] = []
        try:
            with tarfile.open(archive, "r:*") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    name = member.name[2:] if member.name.startswith("./") else member.name
                    rel = want(name)
                    if rel is None:
                        continue
                    parts = Path(rel).parts
                    if Path(rel).is_absolute() or ".." in parts or not parts:
                        raise DataFormatError(f"{archive}: unsafe member name {member.name!r}")
                    out = staging.joinpath(*parts)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    src = tar.extractfile(member)
                    assert src is not None
                    with src, open(out, "wb") as fh:
                        shutil.copyfileobj(src, fh, _CHUNK)
                    moves.append((out, cache.joinpath(*parts)))
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            raise DataFormatError(f"{archive}: cannot be extracted ({exc})") from None
        for src_path, dst_path in moves:
            dst_path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src_path, dst_path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            archive.unlink()
