"""``adamlab.machine``: the CPU's model name and SIMD features, from /proc/cpuinfo."""

from __future__ import annotations

import platform

from adamlab.machine import cpu_features, cpu_model

X86 = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480C
flags\t\t: fpu vme sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma f16c avx512f avx512dq avx512_bf16 aes

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480C
"""

ARM = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp sve bf16
CPU implementer\t: 0x41
"""


def test_model_and_features_from_an_x86_cpuinfo(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(X86)
    assert cpu_model(path) == "Intel(R) Xeon(R) Platinum 8480C"
    assert cpu_features(path) == [
        "avx",
        "avx2",
        "avx512_bf16",
        "avx512dq",
        "avx512f",
        "f16c",
        "fma",
        "sse",
        "sse2",
        "sse4_1",
        "sse4_2",
        "ssse3",
    ]


def test_arm_features_and_the_fallbacks(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(ARM)
    assert cpu_features(path) == ["asimd", "asimdhp", "bf16", "sve"]
    assert cpu_model(path) == (platform.processor() or platform.machine())  # no "model name" line on ARM
    missing = tmp_path / "absent"
    assert cpu_features(missing) == []
    assert cpu_model(missing) == (platform.processor() or platform.machine())


def test_the_kernel_build_reads_the_features_here():
    from adamlab.kernels import build

    assert build.cpu_features() == cpu_features()
