#!/bin/sh
# Check the fused kernel (src/adamlab/kernels/adam_kernels.c) without Python: tests/kernel_check.c, built
# natively (every instruction-set build this CPU runs) and, where the tools exist, cross-compiled for aarch64
# (NEON) and run under qemu-user emulation.
#   scripts/check_kernel_arch.sh            # native, then aarch64 if aarch64-linux-gnu-gcc and qemu-aarch64 exist
# Debian/Ubuntu: apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
set -eu
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
flags="-O3 -std=gnu11 -fno-math-errno -fno-trapping-math -I src/adamlab/kernels"
${CC:-cc} $flags tests/kernel_check.c -o "$out/native" -lm -lpthread
echo "native ($(uname -m)):"
"$out/native" | tail -n 1
if command -v aarch64-linux-gnu-gcc >/dev/null && command -v qemu-aarch64 >/dev/null; then
    aarch64-linux-gnu-gcc $flags -static tests/kernel_check.c -o "$out/aarch64" -lm -lpthread
    echo "aarch64 (qemu-aarch64):"
    qemu-aarch64 "$out/aarch64" | tail -n 1
else
    echo "aarch64: skipped (needs aarch64-linux-gnu-gcc and qemu-aarch64)"
fi
