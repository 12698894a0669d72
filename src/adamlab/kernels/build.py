"""Build and load the fused C kernel (``adam_kernels.c``) with the system C compiler, on first use.

Why C through ctypes (see docs/performance.md for the measurements): it reaches the memory-bandwidth limit
with one pass over memory, takes the parameter tensors where they lie (no flat buffers, so ``param.grad``,
``state_dict()``, DDP, ZeRO and FSDP see plain tensors), and never brings a second OpenMP runtime.

Threads: where torch runs on GNU libgomp (Linux wheels) and the compiler is GCC, the kernel is built with
``-fopenmp``; its ``libgomp.so.1`` then binds to the copy torch has already loaded, so the step runs on torch's
own OpenMP thread pool. Otherwise (or with ``ADAMLAB_KERNEL_THREADS=pthreads``) it starts plain pthreads per
step. :func:`threading_model` says which one is in use.

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
]
#: Threading variants: extra flags for each (see the module docstring).
VARIANT_FLAGS = {"openmp": ["-fopenmp"], "pthreads": ["-pthread"]}

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


def _libgomp_paths() -> set[str]:
    """Paths of the libgomp copies mapped into this process (Linux; empty elsewhere)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return set()
    return {line.split()[-1] for line in maps.splitlines() if "/libgomp" in line}


def _variants(cc_version: str) -> list[str]:
    """Threading variants to try, best first: OpenMP only where it would share torch's own libgomp."""
    choice = os.environ.get("ADAMLAB_KERNEL_THREADS", "auto")
    if choice not in ("auto", "openmp", "pthreads"):
        raise KernelUnavailableError(f"ADAMLAB_KERNEL_THREADS must be auto, openmp or pthreads, not {choice!r}")
    if choice == "pthreads":
        return ["pthreads"]
    import torch  # noqa: F401  (torch loads its OpenMP runtime; fused.py has imported it already)

    gcc = "Free Software Foundation" in cc_version or "gcc" in cc_version.lower()
    if choice == "openmp" or (gcc and _libgomp_paths()):
        return ["openmp", "pthreads"]
    return ["pthreads"]


def _compile(cc: str, version: str, variant: str) -> Path:
    source = SOURCE.read_bytes()
    flags = [*FLAGS, *VARIANT_FLAGS[variant]]
    key = hashlib.sha256(
        b"\0".join([source, " ".join(flags).encode(), version.encode(), _cpu_signature().encode()])
    ).hexdigest()[:20]
    target = cache_dir() / f"adam_kernels-{variant}-{key}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        try:
            done = subprocess.run([cc, *flags, "-o", tmp, str(SOURCE), "-lm"], capture_output=True, text=True)
            if done.returncode != 0:
                raise KernelUnavailableError(f"building {SOURCE.name} with {cc} failed:\n{done.stderr[-2000:]}")
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return target


def _build() -> tuple[ctypes.CDLL, str]:
    cc = _compiler()
    if cc is None:
        raise KernelUnavailableError("no C compiler found (looked for $ADAMLAB_CC, cc, gcc, clang)")
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=False).stdout
    errors = []
    for variant in _variants(version):
        try:
            target = _compile(cc, version, variant)
            before = _libgomp_paths()
            lib = ctypes.CDLL(str(target))
        except (OSError, KernelUnavailableError) as exc:
            errors.append(f"{variant}: {exc}")
            continue
        if variant == "openmp" and before and _libgomp_paths() != before:
            # A second libgomp came in (torch's has another soname here): do not let two runtimes share
            # the cores; the pthreads build does not use it.
            errors.append("openmp: would load a second OpenMP runtime")
            continue
        break
    else:
        raise KernelUnavailableError("; ".join(errors))
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.adamlab_adam_step.restype = i64
    lib.adamlab_adam_step.argtypes = [i32, i64, p, p, p, p, p, p, p, p, p, i32, i32, p]
    lib.adamlab_adamax_step.restype = i64
    lib.adamlab_adamax_step.argtypes = [i32, i64, p, p, p, p, p, p, p, p, i32, i32, p]
    lib.adamlab_roofline.restype = None
    lib.adamlab_roofline.argtypes = [i64, p, p, p, p, i32]
    lib.adamlab_roofline_multi.restype = None
    lib.adamlab_roofline_multi.argtypes = [i64, p, p, p, p, p, i32]
    lib.adamlab_threading.restype = i32
    lib.adamlab_threading.argtypes = []
    return lib, variant


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
                _lib, _ = _build()
            except (OSError, KernelUnavailableError) as exc:
                _error = str(exc)
                raise KernelUnavailableError(_error) from exc
    return _lib


def threading_model() -> str:
    """How the loaded kernel runs its threads: "openmp" (torch's own OpenMP pool) or "pthreads"."""
    return "openmp" if load().adamlab_threading() == 1 else "pthreads"


def available() -> bool:
    """Whether the fused kernel can be used on this machine (builds it if needed)."""
    try:
        load()
    except KernelUnavailableError:
        return False
    return True
