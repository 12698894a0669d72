"""Building the fused kernel: its errors say what went wrong, and the kernel checks out without Python on this
architecture and, under emulation, on aarch64 (tests/kernel_check.c; scripts/check_kernel_arch.sh)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from adamlab.kernels import build

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "tests" / "kernel_check.c"
CFLAGS = ["-O3", "-std=gnu11", "-fno-math-errno", "-fno-trapping-math", f"-I{build.SOURCE.parent}"]


def test_unwritable_cache_directory_is_named(tmp_path, monkeypatch):
    """A cache path that cannot be created (here under a regular file, which stops root too) is reported as
    such, naming the directory and ADAMLAB_CACHE, not as a missing compiler."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("ADAMLAB_CACHE", str(blocker / "cache"))
    with pytest.raises(build.CacheNotWritableError) as info:
        build._build()
    message = str(info.value)
    assert f"cannot write the kernel cache directory {blocker / 'cache' / 'kernels'}" in message
    assert "Not a directory" in message and "set ADAMLAB_CACHE to a writable directory" in message
    assert "compiler" not in message


@pytest.mark.skipif(not Path("/bin/false").exists(), reason="needs /bin/false")
def test_failing_compiler_is_named_with_its_exit_status(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAMLAB_CACHE", str(tmp_path))
    monkeypatch.setenv("ADAMLAB_CC", "/bin/false")
    with pytest.raises(build.KernelUnavailableError) as info:
        build._build()
    message = str(info.value)
    assert "building adam_kernels.c with /bin/false failed: '/bin/false' exited with status 1" in message
    assert message.count("exited with status") == 1  # one reason, not one per threading variant
    assert list((tmp_path / "kernels").glob("*.so")) == []  # no half-written library left


def test_missing_compiler_named_by_adamlab_cc(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAMLAB_CACHE", str(tmp_path))
    monkeypatch.setenv("ADAMLAB_CC", "no-such-cc-7f3a")
    with pytest.raises(build.KernelUnavailableError, match="ADAMLAB_CC='no-such-cc-7f3a' is not an executable"):
        build._build()


def _compile_and_run(cc: list[str], run: list[str], tmp_path: Path, extra: list[str]) -> str:
    exe = tmp_path / "kernel_check"
    subprocess.run([*cc, *CFLAGS, *extra, str(CHECK), "-o", str(exe), "-lm", "-lpthread"], check=True)
    done = subprocess.run([*run, str(exe)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.skipif(build._compiler() is None, reason="no C compiler")
def test_kernel_check_native(tmp_path):
    """Every build this CPU runs, against the paper's algorithms in double (tests/kernel_check.c)."""
    last = _compile_and_run([str(build._compiler())], [], tmp_path, [])
    assert last.startswith("kernel_check: ok")
    runnable = {str(build.ISAS.index(isa)) for isa in build.supported_isas()}
    assert set(last.rsplit("builds: ", 1)[1].rstrip(")").split(",")) == runnable


@pytest.mark.skipif(
    shutil.which("aarch64-linux-gnu-gcc") is None or shutil.which("qemu-aarch64") is None,
    reason="needs an aarch64 cross compiler (aarch64-linux-gnu-gcc) and qemu-user (qemu-aarch64)",
)
def test_kernel_check_aarch64_under_emulation(tmp_path):
    """The kernel cross-compiled for aarch64 (NEON; only the generic build exists there) and run under qemu."""
    last = _compile_and_run(["aarch64-linux-gnu-gcc"], ["qemu-aarch64"], tmp_path, ["-static"])
    assert last == "kernel_check: ok (7 checks, builds: 0)"


@pytest.mark.skipif(not Path("/bin/false").exists(), reason="needs /bin/false")
def test_optimizer_warning_carries_the_real_reason(tmp_path, monkeypatch):
    """The optimizers' fallback warning names why the kernel is unavailable (here ADAMLAB_CC=/bin/false),
    instead of guessing at a missing compiler."""
    import torch

    import adamlab

    monkeypatch.setattr(build, "_lib", None)
    monkeypatch.setattr(build, "_error", None)
    monkeypatch.setenv("ADAMLAB_CACHE", str(tmp_path))
    monkeypatch.setenv("ADAMLAB_CC", "/bin/false")
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.ones(3)
    with pytest.warns(RuntimeWarning, match=r"'/bin/false' exited with status 1") as record:
        adamlab.Adam([p]).step()
    assert "no C compiler?" not in str(record[0].message)
    assert build.unavailable_reason() is not None
