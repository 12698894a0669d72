#!/usr/bin/env bash
# Set up (with the dev extras) and run the whole test suite, then the benchmark's quick smoke run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
. .venv/bin/activate
if [ -z "${ADAMLAB_DATA:-}" ] && [ -d ../shared/data ]; then
    export ADAMLAB_DATA="$(cd ../shared/data && pwd)"
fi
python -m pytest -q "$@"
