"""How far an experiment is, and how long it will take: ``adamlab status DIR`` and the estimates of
``adamlab reproduce --list``.

Times are measured, never guessed: the seconds per epoch of a panel are the mean of the ``seconds`` recorded
in the epochs of its runs (the whole epoch, one torch thread), found in the directory itself or, for
``--list``, in the results of earlier runs of the same experiment (``runs/NAME``, ``runs/NAME-quick``, and the
committed ``docs/results/NAME`` and ``docs/results/NAME/quick``), scaled by the number of examples: an epoch
measured on n examples taking t seconds is taken to take t·N/n on the N examples of the spec estimated (a quick
run's subset estimates the full run). A task's time is its recorded ``seconds`` for the same settings, or, for
a task that registers a cost (:func:`register_task_cost`), a measurement with other settings scaled by the
cost. An estimate is the epoch time × epochs × runs, per panel, summed, plus the tasks (for one process; divide
by ``--jobs`` on a machine with that many free cores). The times are those of the machine and load the
measurement ran under (on this project's busy 2-core machine, often 5–10× a quiet core's), and an epoch's
constant costs (diagnostics, files) are scaled with it: an upper estimate. Where ``adamlab bench train NAME``
has measured the lab's epoch (``docs/bench-train/NAME.json``), ``--list`` also gives the estimate on a core of
its own from that measurement's CPU time (:func:`bench_train_estimate`).
"""

from __future__ import annotations

import glob
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adamlab.lab import results as R
from adamlab.lab.runner import _is_complete, unit_states
from adamlab.lab.spec import DatasetSpec, ExperimentSpec, PanelSpec

__all__ = [
    "TASK_COSTS",
    "bench_train_estimate",
    "epoch_seconds",
    "estimate_seconds",
    "estimate_text",
    "format_duration",
    "panel_epoch_estimate",
    "register_task_cost",
    "status_text",
]

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


def epoch_seconds(out: Path, panel: str, statistic: str = "mean") -> tuple[float, int] | None:
    """(seconds per trained epoch, number of epochs measured) of ``panel``'s runs under ``out``: the mean (or,
    with ``statistic="min"``, the fastest) of the whole epochs' ``seconds`` (training, evaluation, diagnostics:
    what a run costs)."""
    if statistic not in ("mean", "min"):
        raise ValueError(f"statistic must be 'mean' or 'min', got {statistic!r}")
    total, n, fastest = 0.0, 0, math.inf
    for path in glob.glob(str(Path(out) / panel / "runs" / "*" / "*.json")):
        try:
            history = R.read_json(path)["history"]
        except (OSError, ValueError, KeyError):
            continue
        for h in history[1:]:
            if isinstance(h.get("seconds"), (int, float)):
                total += h["seconds"]
                fastest = min(fastest, h["seconds"])
                n += 1
    if not n:
        return None
    return (total / n if statistic == "mean" else fastest), n


def _examples(out: Path, panel: str) -> int | None:
    """The number of training examples of ``panel``'s runs under ``out`` (its ``data.json``)."""
    path = Path(out) / panel / "data.json"
    try:
        n = R.read_json(path).get("n_examples")
    except (OSError, ValueError):
        return None
    return int(n) if isinstance(n, int) and n > 0 else None


def _dataset_size(dataset: DatasetSpec, dirs: list[Path]) -> int | None:
    """How many examples ``dataset`` has: its ``subsample`` option, else the ``n_examples`` recorded for the same
    data set (name and options) without subsample in one of ``dirs``, else that of loading it (``None`` if it
    cannot be loaded here)."""
    options = dict(dataset.options)
    if options.get("subsample") is not None:
        return int(options["subsample"])
    for d in dirs:
        try:
            panels = R.read_json(Path(d) / R.SPEC_FILE)["panels"]
        except (OSError, ValueError, KeyError):
            continue
        for p in panels:
            other = dict(p["dataset"].get("options", {}))
            if p["dataset"]["name"] == dataset.name and other.get("subsample") is None:
                if {k: v for k, v in other.items() if k != "data_seed"} == {
                    k: v for k, v in options.items() if k != "data_seed"
                }:
                    n = _examples(Path(d), p["name"])
                    if n is not None:
                        return n
    key = (dataset.name, repr(sorted(options.items())))
    if key not in _LOADED_SIZES:
        try:
            from adamlab.lab.datasets import load_dataset

            _LOADED_SIZES[key] = load_dataset(dataset).n_examples
        except Exception:  # no data here: the estimate says so
            _LOADED_SIZES[key] = None
    return _LOADED_SIZES[key]


_LOADED_SIZES: dict[tuple[str, str], int | None] = {}


def panel_epoch_estimate(panel: PanelSpec, dirs: list[Path], statistic: str = "mean") -> tuple[float, str] | None:
    """The estimated seconds of one epoch of ``panel`` (on its own training set) and where it comes from.

    An epoch's work is proportional to the number of examples it passes over (the minibatches and the full-set
    evaluation; the per-epoch constants — diagnostics, files — are small), so the measured seconds per epoch
    of ``panel``'s runs in the first of ``dirs`` that has any, t over n examples, become t·N/n for this panel's
    N examples: a quick run's subset measures the full run's epoch. ``statistic``: t is the mean epoch, or the
    fastest (``"min"``: the epoch measured when the machine was least loaded). ``None`` if no run of the panel
    was measured or N is unknown."""
    for d in dirs:
        measured = epoch_seconds(d, panel.name, statistic)
        n = _examples(d, panel.name)
        if measured is None or n is None:
            continue
        target = _dataset_size(panel.dataset, [d, *dirs])
        if target is None:
            return None
        where = f"{measured[0]:.2f} s per epoch of {n:,} examples in {d}"
        return measured[0] * target / n, where
    return None


def _task_seconds(out: Path, spec: ExperimentSpec) -> dict[str, float]:
    """A task's recorded seconds under ``out``, for its own settings; for other settings, scaled by the task's
    registered cost (:func:`register_task_cost`)."""
    found: dict[str, float] = {}
    for task in spec.tasks:
        for seed in spec.seeds:
            path = R.task_path(out, task.name, seed)
            if not path.is_file():
                continue
            record = R.read_json(path)
            seconds = float(record.get("seconds", math.nan))
            if record.get("settings") == task.settings:  # a task's time holds for its own settings only
                found[task.name] = seconds
                break
            cost = TASK_COSTS.get(task.function)
            if cost is not None and task.name not in found:
                found[task.name] = seconds * cost(task.settings) / cost(record.get("settings", {}))
    return found


#: ``cost(settings) -> number`` per task function: a task's time is taken as proportional to it, so that a
#: measurement with some settings estimates the time with others (e.g. Figure 2b's SFO memory task).
TASK_COSTS: dict[str, Callable[[dict[str, Any]], float]] = {}


def register_task_cost(function: str, cost: Callable[[dict[str, Any]], float]) -> None:
    """Let ``reproduce --list`` scale a measured run of task ``function`` to other settings by ``cost``."""
    TASK_COSTS[function] = cost


def _measured_dirs(name: str) -> list[Path]:
    places = [
        Path("runs") / name,
        Path("runs") / f"{name}-quick",
        Path("docs") / "results" / name,
        Path("docs") / "results" / name / "quick",
        _REPO_RESULTS / name,
        _REPO_RESULTS / name / "quick",
        _REPO_RESULTS / f"{name}-quick",
    ]
    found: list[Path] = []
    for p in places:
        if (p / R.SPEC_FILE).is_file() and p.resolve() not in [f.resolve() for f in found]:
            found.append(p)
    return found


def _runs(spec: ExperimentSpec, panel: PanelSpec) -> int:
    return sum(len(o.settings()) for o in panel.optimizers) * len(spec.grid_seeds) + len(panel.optimizers) * len(
        spec.extra_seeds
    )


def estimate_seconds(spec: ExperimentSpec, dirs: list[Path], statistic: str = "mean") -> tuple[float | None, list[str]]:
    """The estimated one-process time of ``spec`` from the epochs measured in ``dirs``, each panel's epoch
    scaled to its number of examples (:func:`panel_epoch_estimate`): Σ over panels of epoch seconds × epochs ×
    runs, plus each task's seconds × seeds; ``statistic``: from the mean or the fastest measured epochs. (None,
    what is missing) if some panel or task was never measured."""
    total, missing = 0.0, []
    for panel in spec.panels:
        estimate = panel_epoch_estimate(panel, dirs, statistic)
        if estimate is None:
            missing.append(panel.name)
            continue
        total += estimate[0] * panel.epochs * _runs(spec, panel)
    for task in spec.tasks:
        seconds = next((t[task.name] for d in dirs if task.name in (t := _task_seconds(d, spec))), None)
        if seconds is None:
            missing.append(task.name)
        else:
            total += seconds * len(spec.seeds)
    return (None if missing else total), missing


#: Where ``adamlab bench train NAME --out`` results are kept (docs/lab.md "Speed").
_REPO_BENCH_TRAIN = _REPO_RESULTS.parent / "bench-train"


def bench_train_estimate(
    name: str, spec: ExperimentSpec, dirs: list[Path], bench_file: Path | None = None
) -> tuple[float, str] | None:
    """The one-process time of ``spec`` on a core of its own, from ``adamlab bench train NAME``'s measurement
    (``docs/bench-train/NAME.json``): the lab's epoch CPU time per example (``median_lab_cpu_s`` /
    ``examples``: training, full-set evaluation, diagnostics, files, on one thread) × each panel's examples ×
    epochs × runs. The benchmark times the experiment's first panel's model; the other panels of the
    experiments that have a benchmark train the same network (with or without dropout, other β or α), so the
    same cost per example is used for them. Tasks (not benchmarked) are added from their recorded seconds.
    ``None`` if there is no such file (``bench_file``: another one) or a panel's size or a task's time is
    unknown."""
    path = bench_file or Path("docs") / "bench-train" / f"{name}.json"
    if not path.is_file() and bench_file is None:
        path = _REPO_BENCH_TRAIN / f"{name}.json"
    try:
        bench = R.read_json(path)
        per_example = float(bench["median_lab_cpu_s"]) / int(bench["examples"])
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
        return None
    total = 0.0
    for panel in spec.panels:
        n = _dataset_size(panel.dataset, dirs)
        if n is None:
            return None
        total += per_example * n * panel.epochs * _runs(spec, panel)
    for task in spec.tasks:
        seconds = next((t[task.name] for d in dirs if task.name in (t := _task_seconds(d, spec))), None)
        if seconds is None:
            return None
        total += seconds * len(spec.seeds)
    return total, f"{per_example * 1e3:.3f} ms of CPU per example per epoch in {path}"


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
    from adamlab.lab.runner import import_experiment_module

    import_experiment_module(name)  # its task costs
    runs = sum(_runs(spec, p) for p in spec.panels)
    epochs = sum(p.epochs * _runs(spec, p) for p in spec.panels)
    dirs = _measured_dirs(name)
    seconds, missing = estimate_seconds(spec, dirs)
    what = f"{runs} runs, {epochs} epochs" if spec.panels else f"{len(spec.tasks)} tasks"
    what += f", {len(spec.seeds)} seed{'s' if len(spec.seeds) > 1 else ''}"
    if seconds is None:
        return f"{what}; estimate: not measured yet for {', '.join(missing)}"
    fastest, _ = estimate_seconds(spec, dirs, "min")
    span = format_duration(seconds)
    if fastest is not None and format_duration(fastest) != span:
        span = f"{format_duration(fastest)} (fastest epochs) – {span} (mean epochs)"
    text = (
        f"{what}; estimate ≈ {span} in one process"
        " (epoch times measured in earlier runs, under the load they met, scaled by examples)"
    )
    quiet = bench_train_estimate(name, spec, dirs)
    if quiet is not None:
        text += f"; ≈ {format_duration(quiet[0])} on a core of its own (adamlab bench train's CPU time)"
    return text


def status_text(out: Path) -> str:
    """``adamlab status DIR``: per panel, runs done / running / left, and the time left, for the experiment in
    ``DIR`` and for its quick run in ``DIR/quick`` (where ``adamlab reproduce NAME --quick --out DIR/quick`` put
    it, e.g. ``docs/results/fig3/quick``), whichever of the two exist."""
    out = Path(out)
    dirs = [d for d in (out, out / "quick") if (d / R.SPEC_FILE).is_file()]
    if not dirs:
        raise R.ResultsError(
            f"no {R.SPEC_FILE} in {out} or {out / 'quick'}: not the output directory of `adamlab reproduce`"
        )
    return "\n\n".join(_status_of(d) for d in dirs)


def _status_of(out: Path) -> str:
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
