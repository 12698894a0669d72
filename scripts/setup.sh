#!/usr/bin/env bash
# Create .venv (if missing) and install adamlab with the extras named in $1 (default: lab).
# torch is installed first, pinned, so pip takes the CPU wheel rather than a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-lab}"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[${extras}]"
# Build the fused CPU kernel and its C++ step bridge now (cached in ~/.cache/adamlab; otherwise built on
# first use). Without a compiler the optimizers still work, on the slower reference path.
adamlab build || echo "setup: continuing without the fused kernel (see the message above)"
