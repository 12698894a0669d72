"""Where an experiment's results live on disk, and how they are written (atomically) and read.

Layout under an experiment's output directory ``OUT``::

    OUT/experiment.json                      which experiment, quick or full, seed (written by the registry)
    OUT/spec.json                            the ExperimentSpec that was run
    OUT/<panel>/data.json                    the training set actually used (corpus, stand-in, sizes)
    OUT/<panel>/init_seed<S>.pt              the initial weights shared by every optimiser for seed S
    OUT/<panel>/runs/<opt>/<setting>_seed<S>.json       one run: its setting and per-epoch history
    OUT/<panel>/runs/<opt>/<setting>_seed<S>.ckpt.pt    its checkpoint while unfinished (removed at the end)
    OUT/<panel>/runs/<opt>/<setting>_seed<S>.lock       held while a process trains it (see the runner)
    OUT/<panel>/grid.json, grid.csv          every grid point's final training cost and the chosen setting
    OUT/<panel>/curves.csv                   the chosen settings' training-cost curves (mean, min, max over seeds)
    OUT/tasks/<task>_seed<S>.json            a task's result (e.g. the theory's experiments)
    OUT/report.md, OUT/<name>.png/.pdf       the report and plots (written by adamlab.lab.report)

Every file is written to a temporary file in the same directory and moved into place with :func:`os.replace`,
so an interrupted run never leaves a half-written file behind.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# The writes themselves are adamlab.files' (atomic); re-exported for the lab's modules.
from adamlab.files import atomic_write_bytes, atomic_write_text, read_json, save_torch, write_csv, write_json
from adamlab.lab.spec import ExperimentSpec, setting_id

__all__ = [
    "ResultsError",
    "atomic_write_bytes",
    "atomic_write_text",
    "ckpt_path",
    "init_path",
    "mean_curve",
    "read_grid",
    "read_json",
    "read_spec",
    "run_path",
    "save_torch",
    "task_path",
    "write_csv",
    "write_json",
]

SPEC_FILE = "spec.json"
MANIFEST_FILE = "experiment.json"


class ResultsError(RuntimeError):
    """A results directory is missing files or holds results of a different spec."""


# -- layout ----------------------------------------------------------------------------------------------


def init_path(out: Path, panel: str, seed: int) -> Path:
    return Path(out) / panel / f"init_seed{seed}.pt"


def run_path(out: Path, panel: str, optimizer: str, setting: dict[str, Any], seed: int) -> Path:
    return Path(out) / panel / "runs" / optimizer / f"{setting_id(setting)}_seed{seed}.json"


def task_path(out: Path, task: str, seed: int) -> Path:
    return Path(out) / "tasks" / f"{task}_seed{seed}.json"


def ckpt_path(run_file: Path) -> Path:
    return run_file.with_name(run_file.name.removesuffix(".json") + ".ckpt.pt")


def read_spec(out: Path) -> ExperimentSpec:
    path = Path(out) / SPEC_FILE
    if not path.is_file():
        raise ResultsError(f"no {SPEC_FILE} in {out}: not the output directory of a lab experiment")
    return ExperimentSpec.from_json(path.read_text(encoding="utf-8"))


def read_grid(out: Path, panel: str) -> dict[str, Any]:
    path = Path(out) / panel / "grid.json"
    if not path.is_file():
        raise ResultsError(f"missing {path}: the panel {panel!r} has not finished; rerun the experiment")
    return read_json(path)


def mean_curve(records: Sequence[dict[str, Any]], key: str = "train_cost") -> list[float]:
    """The per-epoch mean of ``key`` over runs (seeds); epochs missing in any run (diverged) are NaN."""
    length = max(len(r["history"]) for r in records)
    curve = []
    for i in range(length):
        values = [r["history"][i].get(key) if i < len(r["history"]) else None for r in records]
        finite = [float(v) for v in values if v is not None and math.isfinite(v)]
        curve.append(sum(finite) / len(values) if len(finite) == len(values) else math.nan)
    return curve
