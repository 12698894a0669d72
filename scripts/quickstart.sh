#!/usr/bin/env bash
# The main job: set up, then reproduce Figure 1 of the paper (quick version) and write plots and a report.
# Data: $ADAMLAB_DATA if set, else ../shared/data beside the checkout, else the data sets are downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh lab
. .venv/bin/activate
if [ -z "${ADAMLAB_DATA:-}" ] && [ -d ../shared/data ]; then
    export ADAMLAB_DATA="$(cd ../shared/data && pwd)"
fi
# One worker process per core (at most 2 is what the quick sweep profits from on a small machine).
jobs=$(( $(nproc) < 2 ? 1 : 2 ))
adamlab reproduce fig1 --quick --jobs "$jobs" "$@"
