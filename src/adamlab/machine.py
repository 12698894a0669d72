"""What machine this is, for the benchmarks' records: the CPU's model name and its SIMD features.

Both read ``/proc/cpuinfo`` (Linux); elsewhere :func:`cpu_model` falls back to :mod:`platform` and
:func:`cpu_features` to an empty list. One home for this (``adamlab bench``, ``adamlab bench train`` and the
kernel build's ISA checks read it here).
"""

from __future__ import annotations

import platform
from pathlib import Path

__all__ = ["CPUINFO", "SIMD_PREFIXES", "cpu_features", "cpu_model"]

#: Where Linux describes the CPU.
CPUINFO = Path("/proc/cpuinfo")
#: The feature flags kept by :func:`cpu_features`: SSE*/AVX*/FMA/F16C on x86, ASIMD/SVE/NEON on ARM, and the
#: half-precision extensions.
SIMD_PREFIXES = ("sse", "ssse", "avx", "fma", "f16c", "asimd", "sve", "neon", "bf16", "fp16")


def _cpuinfo_lines(cpuinfo: Path) -> list[str]:
    try:
        return cpuinfo.read_text().splitlines()
    except OSError:
        return []


def cpu_model(cpuinfo: Path = CPUINFO) -> str:
    """The CPU's model name (``model name`` in /proc/cpuinfo, e.g. ``Intel(R) Xeon(R) Processor``); else
    :func:`platform.processor` or, if that is empty, the architecture (``x86_64``)."""
    for line in _cpuinfo_lines(cpuinfo):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_features(cpuinfo: Path = CPUINFO) -> list[str]:
    """The CPU's SIMD features that matter for the kernels, sorted (the ``flags`` line on x86, ``Features``
    on ARM, filtered to :data:`SIMD_PREFIXES`); ``[]`` when /proc/cpuinfo cannot be read."""
    for line in _cpuinfo_lines(cpuinfo):
        if line.startswith(("flags", "Features")):
            return sorted(f for f in line.split(":", 1)[1].split() if f.startswith(SIMD_PREFIXES))
    return []
