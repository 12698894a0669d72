"""Where an experiment's results live on disk, and how they are written (atomically) and read.

Layout under an experiment's output directory ``OUT``::

    OUT/experiment.json                      which experiment, quick or full, seed (written by the registry)
    OUT/spec.json                            the ExperimentSpec that was run
    OUT/<panel>/data.json                    the training set actually used (corpus, stand-in, sizes)
    OUT/<panel>/init_seed<S>.pt              the initial weights shared by every optimiser for seed S
    OUT/<panel>/runs/<opt>/<setting>_seed<S>.json       one run: its setting and per-epoch history
    OUT/<panel>/runs/<opt>/<setting>_seed<S>.ckpt.pt    its checkpoint while unfinished (removed at the end)
    OUT/<panel>/grid.json, grid.csv          every grid point's final training cost and the chosen setting
    OUT/<panel>/curves.csv                   the chosen settings' training-cost curves, one column each
    OUT/report.md, OUT/<name>.png/.pdf       the report and plots (written by adamlab.lab.report)

Every file is written to a temporary file in the same directory and moved into place with :func:`os.replace`,
so an interrupted run never leaves a half-written file behind.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

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
    "write_csv",
    "write_json",
]

SPEC_FILE = "spec.json"
MANIFEST_FILE = "experiment.json"


class ResultsError(RuntimeError):
    """A results directory is missing files or holds results of a different spec."""


# -- atomic writes ---------------------------------------------------------------------------------------


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same directory and :func:`os.replace`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _finite_or_none(obj: Any) -> Any:
    """JSON has no NaN/Infinity: non-finite floats are written as ``null``."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_none(v) for v in obj]
    return obj


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(_finite_or_none(obj), indent=1, sort_keys=True, allow_nan=False) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if (isinstance(v, float) and not math.isfinite(v)) or v is None else v for v in row])
    atomic_write_text(path, buf.getvalue())


def save_torch(path: Path, obj: Any) -> None:
    """:func:`torch.save` to a temporary file, then :func:`os.replace`."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


# -- layout ----------------------------------------------------------------------------------------------


def init_path(out: Path, panel: str, seed: int) -> Path:
    return Path(out) / panel / f"init_seed{seed}.pt"


def run_path(out: Path, panel: str, optimizer: str, setting: dict[str, Any], seed: int) -> Path:
    return Path(out) / panel / "runs" / optimizer / f"{setting_id(setting)}_seed{seed}.json"


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
        ok = all(v is not None and math.isfinite(v) for v in values)
        curve.append(sum(values) / len(values) if ok else math.nan)
    return curve
