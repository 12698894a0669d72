#!/usr/bin/env bash
# A short Figure 1 (MNIST logistic regression, no dropout: 3 epochs of Adam with α/√t and of AdaGrad on 10,000
# digits) trained on a GPU and on the CPU, from the same initial weights and minibatches; their training-cost
# curves are compared. Exit status 0 when every epoch agrees to TOL (relative), 1 otherwise.
#   bash scripts/device_check.sh                 # cuda (or DEVICE=mps) against cpu
#   DEVICE=cpu bash scripts/device_check.sh      # the script itself, on a machine without a GPU
# Data: $ADAMLAB_DATA (else ../shared/data beside the checkout, else the download cache).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f .venv/bin/activate ] && . .venv/bin/activate
if [ -z "${ADAMLAB_DATA:-}" ] && [ -d ../shared/data ]; then
    export ADAMLAB_DATA="$(cd ../shared/data && pwd)"
fi
DEVICE="${DEVICE:-cuda}" TOL="${TOL:-1e-3}" OUT="${OUT:-$(mktemp -d)}" python - <<'PY'
import json, math, os, sys, time
from pathlib import Path

from adamlab.lab import results as R
from adamlab.lab.runner import resolve_device, run_spec
from adamlab.lab.spec import DatasetSpec, ExperimentSpec, ModelSpec, OptimizerSpec, PanelSpec

device = resolve_device(os.environ["DEVICE"])
tol = float(os.environ["TOL"])
out = Path(os.environ["OUT"])
panel = PanelSpec(
    name="mnist",
    title="MNIST logistic regression, 10,000 digits",
    dataset=DatasetSpec("mnist", {"split": "train", "subsample": 10000}),
    model=ModelSpec("logistic", l2=1e-4, init_std=0.01),
    optimizers=(
        OptimizerSpec("adam", "Adam", "adam", {"lr_decay": "sqrt"}, {"lr": (0.1,)}),
        OptimizerSpec("adagrad", "AdaGrad", "adagrad", {}, {"lr": (0.1,)}),
    ),
    epochs=3,
)
spec = ExperimentSpec("device_check", "device check", (panel,), seeds=(0,))
curves = {}
for dev in ("cpu", device):
    t0 = time.perf_counter()
    run_spec(spec, out / dev, progress=False, device=dev)
    seconds = time.perf_counter() - t0
    for opt in panel.optimizers:
        record = R.read_json(R.run_path(out / dev, "mnist", opt.key, {"lr": 0.1}, 0))
        assert record["device"] == dev, record["device"]
        curves[(dev, opt.key)] = [h["train_cost"] for h in record["history"]]
    print(f"{dev}: {seconds:.1f} s")
worst = 0.0
for opt in panel.optimizers:
    a, b = curves[("cpu", opt.key)], curves[(device, opt.key)]
    rel = max(abs(x - y) / abs(x) for x, y in zip(a, b))
    worst = max(worst, rel)
    print(f"{opt.key:8s} cpu {' '.join(f'{x:.6f}' for x in a)}")
    print(f"{opt.key:8s} {device:4s}{' '.join(f'{x:.6f}' for x in b)}   max relative difference {rel:.2e}")
print(f"{'OK' if worst <= tol else 'MISMATCH'}: largest relative difference {worst:.2e} (tolerance {tol:g}); results in {out}")
sys.exit(0 if worst <= tol else 1)
PY
