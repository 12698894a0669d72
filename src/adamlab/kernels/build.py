"""Build and load the fused C kernel (``adam_kernels.c``) with the system C compiler, on first use.

Why C through ctypes (see docs/performance.md for the measurements): it reaches the memory-bandwidth limit
with one pass over memory, takes the parameter tensors where they lie (no flat buffers, so ``param.grad``,
``state_dict()``, DDP, ZeRO and FSDP see plain tensors), and uses pthreads rather than a second OpenMP runtime.

The shared object is cached under ``$ADAMLAB_CACHE`` (default ``~/.cache/adamlab``), keyed by the source, the
flags, the compiler and the CPU (it is built with ``-march=native``), and written atomically, so concurrent
processes (DDP ranks) can build it at once. Set ``ADAMLAB_CC`` to choose the compiler.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

SOURCE = Path(__file__).with_name("adam_kernels.c")
FLAGS = [
    "-O3",
    "-march=native",
    "-mprefer-vector-width=512",
    "-fno-math-errno",
    "-fno-trapping-math",
    "-shared",
    "-fPIC",
    "-pthread",
]

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_error: str | None = None


class KernelUnavailableError(RuntimeError):
    """The fused kernel could not be built or loaded here (no C compiler, or the build failed)."""


def cache_dir() -> Path:
    return Path(os.environ.get("ADAMLAB_CACHE", Path.home() / ".cache" / "adamlab")) / "kernels"


def _cpu_signature() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _compiler() -> str | None:
    for name in (os.environ.get("ADAMLAB_CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def _build() -> ctypes.CDLL:
    cc = _compiler()
    if cc is None:
        raise KernelUnavailableError("no C compiler found (looked for $ADAMLAB_CC, cc, gcc, clang)")
    source = SOURCE.read_bytes()
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=False).stdout
    key = hashlib.sha256(
        b"\0".join([source, " ".join(FLAGS).encode(), version.encode(), _cpu_signature().encode()])
    ).hexdigest()[:20]
    target = cache_dir() / f"adam_kernels-{key}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        try:
            done = subprocess.run([cc, *FLAGS, "-o", tmp, str(SOURCE), "-lm"], capture_output=True, text=True)
            if done.returncode != 0:
                raise KernelUnavailableError(f"building {SOURCE.name} with {cc} failed:\n{done.stderr[-2000:]}")
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    lib = ctypes.CDLL(str(target))
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.adamlab_adam_step.restype = i64
    lib.adamlab_adam_step.argtypes = [i32, i64, p, p, p, p, p, p, p, p, p, i32, i32, p]
    lib.adamlab_adamax_step.restype = i64
    lib.adamlab_adamax_step.argtypes = [i32, i64, p, p, p, p, p, p, p, p, i32, i32, p]
    lib.adamlab_roofline.restype = None
    lib.adamlab_roofline.argtypes = [i64, p, p, p, p, i32]
    lib.adamlab_roofline_multi.restype = None
    lib.adamlab_roofline_multi.argtypes = [i64, p, p, p, p, p, i32]
    return lib


def load() -> ctypes.CDLL:
    """The loaded kernel library; builds it on first call. Raises KernelUnavailableError if it cannot."""
    global _lib, _error
    if _lib is not None:
        return _lib
    with _lock:
        if _lib is None:
            if _error is not None:
                raise KernelUnavailableError(_error)
            try:
                _lib = _build()
            except (OSError, KernelUnavailableError) as exc:
                _error = str(exc)
                raise KernelUnavailableError(_error) from exc
    return _lib


def available() -> bool:
    """Whether the fused kernel can be used on this machine (builds it if needed)."""
    try:
        load()
    except KernelUnavailableError:
        return False
    return True
