"""Build and load the fused C kernel (``adam_kernels.c``) with the system C compiler, on first use.

Why C through ctypes (see docs/performance.md for the measurements): it reaches the memory-bandwidth limit
with one pass over memory, takes the parameter tensors where they lie (no flat buffers, so ``param.grad``,
``state_dict()``, DDP, ZeRO and FSDP see plain tensors), and never brings a second OpenMP runtime.

Threads: where torch runs on GNU libgomp (Linux wheels) and the compiler is GCC, the kernel is built with
``-fopenmp``; its ``libgomp.so.1`` then binds to the copy torch has already loaded, so the step runs on torch's
own OpenMP thread pool. Otherwise (or with ``ADAMLAB_KERNEL_THREADS=pthreads``) it starts plain pthreads per
step. :func:`threading_model` says which one is in use.

Instruction sets: the library is built for the architecture's baseline (no ``-march``) and holds, beside the
generic loops, builds of every loop for AVX2 + FMA and for AVX-512 (x86-64), made with the compiler's
per-function target attribute from the same source; the fastest the CPU runs is chosen at load time, so one
build is fast on every CPU of its architecture. ``ADAMLAB_ISA=scalar|avx2|avx512|auto`` (default auto) or
:func:`set_isa` choose another (the tests and ``adamlab bench step --isa`` do); :func:`isa` says which is in use.

The shared object is cached under ``$ADAMLAB_CACHE`` (default ``~/.cache/adamlab``), keyed by the source, the
flags and the compiler, and written atomically, so concurrent processes (DDP ranks) can build it at once. Set
``ADAMLAB_CC`` to choose the compiler.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from adamlab import machine

SOURCE = Path(__file__).with_name("adam_kernels.c")
#: Included by adam_kernels.c: the quantised-state loops (adamlab.kernels.quantized); part of the cache key.
STATE_SOURCE = Path(__file__).with_name("state_kernels.c")
FLAGS = [
    "-O3",
    "-fno-math-errno",
    "-ffp-contract=off",
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


class CacheNotWritableError(KernelUnavailableError):
    """The kernel cache directory cannot be created or written (every build would fail alike)."""


def cache_dir() -> Path:
    return Path(os.environ.get("ADAMLAB_CACHE", Path.home() / ".cache" / "adamlab")) / "kernels"


#: The kernel's instruction-set builds, by their number in adam_kernels.c (ISA_SCALAR, ISA_AVX2, ISA_AVX512).
ISAS = ("scalar", "avx2", "avx512")
#: What each build needs from the CPU (its /proc/cpuinfo flag names; "scalar": the architecture's baseline).
ISA_NEEDS = {"scalar": (), "avx2": ("avx2", "fma"), "avx512": ("avx2", "fma", "avx512f", "avx512dq", "avx512bw")}


def cpu_features() -> list[str]:
    """The CPU's SIMD features that matter here (:func:`adamlab.machine.cpu_features`)."""
    return machine.cpu_features()


def _compiler() -> str | None:
    """The C compiler: $ADAMLAB_CC if set (an error if it names nothing runnable), else cc, gcc or clang."""
    chosen = os.environ.get("ADAMLAB_CC")
    if chosen:
        if shutil.which(chosen) is None:
            raise KernelUnavailableError(f"ADAMLAB_CC={chosen!r} is not an executable compiler on PATH")
        return chosen
    for name in ("cc", "gcc", "clang"):
        if shutil.which(name):
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


STALE_TEMPORARY_S = 3600.0


def _remove_stale_temporaries(folder: Path) -> None:
    """Remove half-written libraries (``tmp*.so``) left by builds that were killed (a process that exited
    while the bridge was building in its background thread): any older than an hour."""
    import time

    for path in folder.glob("tmp*.so"):
        with contextlib.suppress(OSError):
            if time.time() - path.stat().st_mtime > STALE_TEMPORARY_S:
                path.unlink()


def _cached_build(stem: str, key_parts: list[bytes], command: list[str], what: str) -> Path:
    """The library ``stem-<key>.so`` in the cache, built with ``command + ["-o", path]`` if it is not there:
    written to a temporary name and renamed, so that processes building at once (DDP ranks) never load a
    half-written file. ``key_parts`` (source, flags, compiler, …) decide the key."""
    key = hashlib.sha256(b"\0".join(key_parts)).hexdigest()[:20]
    target = cache_dir() / f"{stem}-{key}.so"
    if not target.exists():
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            _remove_stale_temporaries(target.parent)
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise CacheNotWritableError(
                f"cannot write the kernel cache directory {target.parent} ({reason}); set ADAMLAB_CACHE to a "
                "writable directory"
            ) from exc
        os.close(fd)
        try:
            try:
                done = subprocess.run([*command, "-o", tmp], capture_output=True, text=True)
            except OSError as exc:
                raise KernelUnavailableError(f"building {what}: cannot run {command[0]!r}: {exc}") from exc
            if done.returncode != 0:
                output = (done.stderr or done.stdout).strip()[-2000:] or "no error output"
                raise KernelUnavailableError(
                    f"building {what} failed: {command[0]!r} exited with status {done.returncode}: {output}"
                )
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return target


def _compile(cc: str, version: str, variant: str) -> Path:
    flags = [*FLAGS, *VARIANT_FLAGS[variant]]
    return _cached_build(
        f"adam_kernels-{variant}",
        [SOURCE.read_bytes(), STATE_SOURCE.read_bytes(), " ".join(flags).encode(), cc.encode(), version.encode()],
        [cc, *flags, str(SOURCE), "-lm"],
        f"{SOURCE.name} with {cc}",
    )


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
        except CacheNotWritableError:
            raise  # the same for every variant
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
        reasons = {e.split(": ", 1)[1] for e in errors if ": " in e}
        raise KernelUnavailableError(reasons.pop() if len(reasons) == 1 else "; ".join(errors))
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.adamlab_adam_step.restype = i64
    lib.adamlab_adam_step.argtypes = [i32, i64, p, p, p, p, p, p, p, p, p, i32, i32, p]
    lib.adamlab_adam_step_half.restype = i64
    lib.adamlab_adam_step_half.argtypes = [i32, i64, p, p, p, p, p, p, p, p, i32, i32, p]
    lib.adamlab_adamax_step.restype = i64
    lib.adamlab_adamax_step.argtypes = [i32, i64, p, p, p, p, p, p, p, p, i32, i32, p]
    lib.adamlab_adam_step_quantised.restype = i64
    lib.adamlab_adam_step_quantised.argtypes = [i32, i32, i64, p, p, p, p, p, p, p, p, p, i64, p, i32, i32, p]
    lib.adamlab_roofline.restype = None
    lib.adamlab_roofline.argtypes = [i64, p, p, p, p, i32]
    lib.adamlab_roofline_half_multi.restype = None
    lib.adamlab_roofline_half_multi.argtypes = [i64, p, p, p, p, p, i32]
    lib.adamlab_roofline_multi.restype = None
    lib.adamlab_roofline_multi.argtypes = [i64, p, p, p, p, p, i32]
    lib.adamlab_threading.restype = i32
    lib.adamlab_threading.argtypes = []
    for name, args in (("adamlab_isa_supported", [i32]), ("adamlab_set_isa", [i32]), ("adamlab_get_isa", [])):
        getattr(lib, name).restype = i32
        getattr(lib, name).argtypes = args
    try:
        _apply_isa(lib, os.environ.get("ADAMLAB_ISA", "auto"), "ADAMLAB_ISA")
    except ValueError as exc:
        raise KernelUnavailableError(str(exc)) from exc
    return lib, variant


def _isa_number(name: str, what: str) -> int:
    if name == "auto":
        return -1
    if name not in ISAS:
        raise ValueError(f"{what} must be one of auto, {', '.join(ISAS)}; got {name!r}")
    return ISAS.index(name)


def _apply_isa(lib: ctypes.CDLL, name: str, what: str) -> str:
    """Select the instruction-set build ``name`` ("auto": the best this CPU runs) in ``lib``."""
    number = _isa_number(name, what)
    if lib.adamlab_set_isa(number) < 0:
        runs = [isa for i, isa in enumerate(ISAS) if lib.adamlab_isa_supported(i)]
        needs = " and ".join(f.upper() for f in ISA_NEEDS[name])
        raise KernelUnavailableError(
            f"{what}={name}: this CPU cannot run the {name} build (it needs {needs}); it runs {', '.join(runs)}"
        )
    return ISAS[lib.adamlab_get_isa()]


def isa() -> str:
    """The instruction-set build the kernel runs: "scalar", "avx2" or "avx512" (see the module docstring)."""
    return ISAS[load().adamlab_get_isa()]


def supported_isas() -> list[str]:
    """The builds this CPU can run, slowest first ("scalar" always)."""
    lib = load()
    return [name for i, name in enumerate(ISAS) if lib.adamlab_isa_supported(i)]


def set_isa(name: str) -> str:
    """Run the kernel's ``name`` build from now on ("auto": the best this CPU runs); returns the build in
    use. ValueError for an unknown name, KernelUnavailableError for a build this CPU cannot run."""
    return _apply_isa(load(), name, "isa")


@contextlib.contextmanager
def using_isa(name: str) -> Iterator[str]:
    """Run the kernel's ``name`` build inside the ``with`` block, then the one in use before."""
    before = isa()
    try:
        yield set_isa(name)
    finally:
        set_isa(before)


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


def unavailable_reason() -> str | None:
    """Why the kernel could not be built or loaded (None if it was, or has not been tried yet)."""
    return _error


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


# ---------------------------------------------------------------------------------------------- the bridge
# bridge.cpp: the per-step checks and gathering of a cached plan in C++ (see its header). It is an optional
# speed-up over the same checks in Python: it needs a C++ compiler and the Python and torch headers, and takes
# about 20 s to build, so by default it is built in a background thread on first use while the steps take the
# Python checks (the arithmetic is the same kernel either way). ADAMLAB_BRIDGE=off never builds or uses it.

BRIDGE_SOURCE = Path(__file__).with_name("bridge.cpp")
BRIDGE_FLAGS = ["-O2", "-std=c++20", "-shared", "-fPIC", "-w"]

_bridge_lock = threading.Lock()
_bridge: Any = None
_bridge_error: str | None = None
_bridge_thread: threading.Thread | None = None


def _cxx_compiler() -> str | None:
    for name in (os.environ.get("ADAMLAB_CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


def _bridge_command(cxx: str) -> list[str]:
    import sysconfig

    import torch
    from torch.utils.cpp_extension import include_paths

    lib_dir = Path(torch.__file__).parent / "lib"
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    includes = [f"-I{p}" for p in [*include_paths(), sysconfig.get_paths()["include"]]]
    return [
        cxx,
        *BRIDGE_FLAGS,
        f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
        *includes,
        str(BRIDGE_SOURCE),
        f"-L{lib_dir}",
        f"-Wl,-rpath,{lib_dir}",
        "-lc10",
        "-ltorch_cpu",
        "-ltorch_python",
    ]


def _build_bridge() -> Any:
    import importlib.util
    import sys

    import torch

    cxx = _cxx_compiler()
    if cxx is None:
        raise KernelUnavailableError("no C++ compiler found (looked for $ADAMLAB_CXX, c++, g++, clang++)")
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=False).stdout
    command = _bridge_command(cxx)
    key_parts = [BRIDGE_SOURCE.read_bytes(), " ".join(command).encode(), version.encode()]
    key_parts += [torch.__version__.encode(), sys.version.encode()]
    target = _cached_build("adamlab_bridge", key_parts, command, BRIDGE_SOURCE.name)
    spec = importlib.util.spec_from_file_location("adamlab_bridge", target)
    if spec is None or spec.loader is None:
        raise KernelUnavailableError(f"cannot load {target}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bridge_mode() -> str:
    mode = os.environ.get("ADAMLAB_BRIDGE", "auto")
    if mode not in ("auto", "off"):
        raise KernelUnavailableError(f"ADAMLAB_BRIDGE must be auto or off, not {mode!r}")
    return mode


def _bridge_worker() -> None:
    global _bridge, _bridge_error
    try:
        module = _build_bridge()
    except (OSError, ImportError, KernelUnavailableError) as exc:
        _bridge_error = str(exc)
    else:
        _bridge = module


def bridge(wait: bool = False) -> Any:
    """The step bridge module (bridge.cpp), or None while it is being built or where it cannot be.

    The first call starts the build in a background thread and returns None at once; ``wait=True`` waits for
    the build (``adamlab build`` and the benchmark do). :func:`bridge_error` says why it is unavailable."""
    global _bridge_thread, _bridge_error
    if _bridge is not None:
        return _bridge
    if _bridge_error is not None:
        return None
    try:
        if _bridge_mode() == "off":
            return None
    except KernelUnavailableError as exc:
        _bridge_error = str(exc)
        warnings.warn(f"adamlab: {exc}; the step bridge is not used", RuntimeWarning, stacklevel=2)
        return None
    with _bridge_lock:
        if _bridge is None and _bridge_error is None and _bridge_thread is None:
            _bridge_thread = threading.Thread(target=_bridge_worker, name="adamlab-bridge-build", daemon=True)
            _bridge_thread.start()
        thread = _bridge_thread
    if wait and thread is not None:
        thread.join()
    return _bridge


def bridge_error() -> str | None:
    """Why the bridge could not be built (None if it was, or has not been tried or finished yet)."""
    return _bridge_error


def build_all() -> list[str]:
    """Build (or load from the cache) the kernel and the bridge now, waiting for both; lines saying what is in
    use. Raises KernelUnavailableError if the kernel cannot be built (the bridge is optional)."""
    load()
    lines = [f"fused kernel: ready ({threading_model()} threads), cached in {cache_dir()}"]
    module = bridge(wait=True)
    if module is not None:
        lines.append(f"step bridge: ready ({Path(module.__file__).name})")
    elif bridge_error() is not None:
        lines.append(f"step bridge: unavailable, plans are checked in Python (slower per step): {bridge_error()}")
    else:
        lines.append("step bridge: off (ADAMLAB_BRIDGE=off): plans are checked in Python")
    return lines
