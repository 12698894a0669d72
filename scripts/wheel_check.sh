#!/usr/bin/env bash
# CI: build adamlab's wheel, install it into a fresh venv outside the checkout, and assert that the installed
# package builds and uses both the fused C kernel and the C++ step bridge (their sources must be in the wheel).
# The fresh venv sees .venv's site-packages (torch 2.13.0 CPU) through a .pth line, so nothing is downloaded;
# .venv's editable adamlab is not visible there (its finder .pth is not processed), only the wheel's copy.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
. .venv/bin/activate
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
python -m pip wheel --quiet --no-deps --no-build-isolation -w "$WORK/dist" .
WHEEL="$(ls "$WORK"/dist/adamlab-*.whl)"
python - "$WHEEL" <<'PY'
import sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
for needed in ("adamlab/kernels/adam_kernels.c", "adamlab/kernels/bridge.cpp"):
    assert needed in names, f"{needed} is missing from the wheel"
print("wheel holds the kernel and bridge sources")
PY
python -m venv "$WORK/venv"
SITE="$("$WORK/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > "$SITE/_adamlab_ci_torch.pth"
"$WORK/venv/bin/python" -m pip install --quiet --no-deps --no-index "$WHEEL"
cd "$WORK"
export ADAMLAB_CACHE="$WORK/cache"  # a fresh build from the installed sources, not a cached library
"$WORK/venv/bin/adamlab" build
"$WORK/venv/bin/python" - "$ROOT" <<'PY'
import sys
from pathlib import Path

import torch

import adamlab
from adamlab.kernels import build

root = Path(sys.argv[1]).resolve()
assert root not in Path(adamlab.__file__).resolve().parents, f"adamlab imported from the checkout: {adamlab.__file__}"
build.load()
assert build.bridge(wait=True) is not None, f"the step bridge is not in use: {build.bridge_error()}"
w = torch.nn.Parameter(torch.ones(1000))
opt = adamlab.Adam([w], impl="fused")
for _ in range(3):
    w.grad = torch.ones(1000)
    opt.step()
assert opt._plans, "the fused plan was not cached"
print(f"installed wheel ({adamlab.__file__}): kernel and bridge in use")
PY
