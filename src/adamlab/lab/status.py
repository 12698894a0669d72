"""How far an experiment is, and how long it will take: ``adamlab status DIR`` and the estimates of
``adamlab reproduce --list``.

Times are measured, never guessed: the seconds per epoch of a panel are the mean of the ``seconds`` recorded
in the epochs of its runs (training time of one epoch, one torch thread), found in the directory itself or, for
``--list``, in the results of earlier runs of the same experiment (``runs/NAME``, ``runs/NAME-quick``, and the
committed ``docs/results/NAME``); a task's time is its recorded ``seconds``. An estimate is that time × epochs ×
runs, per panel, summed (for one process; divide by ``--jobs`` on a machine with that many free cores).
"""

from __future__ import annotations

import glob
import math
from pathlib import Path
from typing import Any

from adamlab.lab import results as R
from adamlab.lab.runner import _is_complete, unit_states
from adamlab.lab.spec import ExperimentSpec

__all__ = ["epoch_seconds", "estimate_seconds", "estimate_text", "format_duration", "status_text"]

_REPO_RESULTS = Path(__file__).resolve().parents[3] / "docs" / "results"


def format_duration(seconds: float | None) -> str:
    """``3 h 05 min``, ``12 min``, ``40 s``; ``unknown`` for None."""
    if seconds is None or not math.isfinite(seconds):
        return "unknown"
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600} h {(s % 3600) // 60:02d} min"
    if s >= 60:
        return f"{round(s / 60)} min"
    return f"{s} s"


def epoch_seconds(out: Path, panel: str) -> tuple[float, int] | None:
    """(mean seconds per trained epoch, number of epochs measured) of ``panel``'s runs under ``out``."""
    total, n = 0.0, 0
    for path in glob.glob(str(Path(out) / panel / "runs" / "*" / "*.json")):
        try:
            history = R.read_json(path)["history"]
        except (OSError, ValueError, KeyError):
            continue
        for h in history[1:]:
            if isinstance(h.get("seconds"), (int, float)):
                total += h["seconds"]
                n += 1
    return (total / n, n) if n else None


def _task_seconds(out: Path, spec: ExperimentSpec) -> dict[str, float]:
    found = {}
    for task in spec.tasks:
        for seed in spec.seeds:
            path = R.task_path(out, task.name, seed)
            if path.is_file():
                record = R.read_json(path)
                if record.get("settings") == task.settings:  # a task's time holds for its own settings only
                    found[task.name] = float(record.get("seconds", math.nan))
    return found


def _measured_dirs(name: str) -> list[Path]:
    places = [
        Path("runs") / name,
        Path("runs") / f"{name}-quick",
        Path("docs") / "results" / name,
        _REPO_RESULTS / name,
    ]
    return [p for p in places if (p / R.SPEC_FILE).is_file()]


def estimate_seconds(spec: ExperimentSpec, dirs: list[Path]) -> tuple[float | None, list[str]]:
    """The estimated one-process time of ``spec`` from the epochs measured in ``dirs``; (None, what is
    missing) if some panel or task was never measured."""
    total, missing = 0.0, []
    for panel in spec.panels:
        measured = next((m for d in dirs if (m := epoch_seconds(d, panel.name)) is not None), None)
        if measured is None:
            missing.append(panel.name)
            continue
        runs = sum(len(o.settings()) for o in panel.optimizers) * len(spec.grid_seeds)
        runs += len(panel.optimizers) * len(spec.extra_seeds)
        total += measured[0] * panel.epochs * runs
    for task in spec.tasks:
        seconds = next((t[task.name] for d in dirs if task.name in (t := _task_seconds(d, spec))), None)
        if seconds is None:
            missing.append(task.name)
        else:
            total += seconds * len(spec.seeds)
    return (None if missing else total), missing


def estimate_text(name: str, quick: bool) -> str:
    """One line for ``reproduce --list``: runs, epochs and the estimated time of experiment ``name``."""
    from adamlab.lab.experiments import EXPERIMENTS

    experiment = EXPERIMENTS[name]
    if experiment.spec is None:
        return "(no spec: no estimate)"
    try:
        spec = experiment.spec(quick=quick, seed=0, seeds=None)
    except Exception as exc:  # a spec that cannot be built here must not break the listing
        return f"(spec not available: {exc})"
    runs = sum(
        sum(len(o.settings()) for o in p.optimizers) * len(spec.grid_seeds) + len(p.optimizers) * len(spec.extra_seeds)
        for p in spec.panels
    )
    epochs = sum(
        p.epochs
        * (
            sum(len(o.settings()) for o in p.optimizers) * len(spec.grid_seeds)
            + len(p.optimizers) * len(spec.extra_seeds)
        )
        for p in spec.panels
    )
    seconds, missing = estimate_seconds(spec, _measured_dirs(name))
    what = f"{runs} runs, {epochs} epochs" if spec.panels else f"{len(spec.tasks)} tasks"
    what += f", {len(spec.seeds)} seed{'s' if len(spec.seeds) > 1 else ''}"
    if seconds is None:
        return f"{what}; estimate: not measured yet for {', '.join(missing)}"
    return f"{what}; estimate ≈ {format_duration(seconds)} in one process (measured epoch times)"


def status_text(out: Path) -> str:
    """``adamlab status``: per panel, runs done / running / left, and the time left."""
    out = Path(out)
    spec = R.read_spec(out)
    states = unit_states(spec, out)
    lines = [f"{spec.name} ({'quick' if spec.quick else 'full'}, seeds {', '.join(map(str, spec.seeds))}) in {out}"]
    total_left = 0.0
    unknown = False
    groups: list[tuple[str, Any]] = [(p.name, p) for p in spec.panels] + [(t.name, None) for t in spec.tasks]
    for name, panel in groups:
        counts = {k: [u for u in v if (u.panel == name or u.task == name)] for k, v in states.items()}
        measured = epoch_seconds(out, name) if panel is not None else None
        left_epochs = 0
        if panel is not None:
            left_epochs += (len(counts["left"]) + len(counts["unplanned"])) * panel.epochs
            for u in counts["running"]:
                path = u.path(out)
                done = len(R.read_json(path)["history"]) - 1 if path.is_file() else 0
                left_epochs += max(0, panel.epochs - done)
            if measured is not None:
                total_left += left_epochs * measured[0]
            elif left_epochs:
                unknown = True
        n_left = len(counts["left"]) + len(counts["unplanned"])
        line = f"  {name:20s} done {len(counts['done']):4d}  running {len(counts['running']):3d}  left {n_left:4d}"
        if panel is not None:
            line += f"  ({left_epochs} epochs left"
            line += f", {measured[0]:.2f} s per epoch)" if measured else ", no epoch measured yet)"
        lines.append(line)
    running = len(states["running"])
    complete = not (states["left"] or states["running"] or states["unplanned"])
    if complete:
        lines.append("complete: every run is in (`adamlab report` writes the report)")
    else:
        eta = None if unknown else total_left / max(1, running)
        lines.append(
            f"time left ≈ {format_duration(None if unknown else total_left)} of training in one process"
            + (f"; ≈ {format_duration(eta)} with the {running} runs now running in parallel" if running > 1 else "")
        )
    done_files = [u for u in states["done"] if _is_complete(u.path(out))]
    lines.append(f"{len(done_files)} of {sum(len(v) for v in states.values())} runs done")
    return "\n".join(lines)
