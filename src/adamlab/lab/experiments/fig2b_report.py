"""Figure 2b's report: the lab's report (curves per pass, the spec's claims, grids), then the parts that are not
curve-against-curve comparisons — training cost against wall-clock seconds, the time per pass and per update
step, SFO's memory against the number of minibatches, and whether SFO stops converging with dropout.

Every verdict is one number per seed and Student's t-interval of its mean over the seeds
(:func:`adamlab.lab.claims.t_interval`, 95%); fewer than two seeds give "inconclusive". The rules:

* **wall-clock** — T = the shorter of the two runs' total seconds; each run's cost at T by linear
  interpolation of cost against cumulative seconds; g = (C_SFO(T) − C_Adam(T)) / C_SFO(T). Held if lo ≥ 1%,
  did not hold if hi ≤ −1%.
* **5–10× slower per iteration** — r = SFO's seconds per pass / Adam's. Held if [lo, hi] ⊂ [5, 10]; did not
  hold if hi < 5 or lo > 10.
* **memory linear in the number of minibatches** — bytes at three sizes, least-squares line; held if no
  point is off the line by more than 2% of the largest, did not hold beyond 10%.
* **SFO stops converging with dropout** — d = (C(E/2) − S_E) / C(E/2), the relative fall of SFO's cost over
  the second half of the E passes (S_E the lab's smoothed final cost). Held if hi ≤ 5%, did not hold if
  lo ≥ 20%.

The seconds are the training loop's alone (not the lab's full-set evaluation after each epoch): its CPU time
``train_cpu_seconds`` where both runs of a pair record it (one torch thread per run, so it is the time the run
takes on a core of its own, whatever else the shared machine ran meanwhile), else its wall-clock time
``train_seconds``, else (run files of older versions) the whole epoch's ``seconds`` — see :func:`time_field`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from adamlab.lab import results as R
from adamlab.lab.claims import DID_NOT_HOLD, HELD, INCONCLUSIVE, smoothed_final, smoothing_window, t_interval
from adamlab.lab.spec import ExperimentSpec

__all__ = ["report_section", "verdicts", "write_report"]


#: Which per-epoch time the wall-clock comparison reads, best first: the training loop's CPU time (one torch
#: thread per run, so it is the wall-clock time the run takes on a core of its own, whatever else the machine
#: ran meanwhile), its wall-clock time, then the whole epoch's (run files written before those fields existed).
TIME_FIELDS = ("train_cpu_seconds", "train_seconds", "seconds")
AXIS_LABELS = {
    "train_cpu_seconds": "seconds of training (CPU time of the training loop, one thread)",
    "train_seconds": "wall-clock seconds of training (the training loop alone)",
    "seconds": "wall-clock seconds (training + the per-epoch evaluation)",
}


def time_field(*records: dict[str, Any]) -> str:
    """The first of :data:`TIME_FIELDS` that every trained epoch of every one of ``records`` records."""
    epochs = [h for record in records for h in record["history"][1:]]
    return next((f for f in TIME_FIELDS if all(f in h for h in epochs)), "seconds")


def _seconds(record: dict[str, Any], field: str | None = None) -> list[float]:
    """Cumulative seconds of training at every epoch (0 at epoch 0), from ``field`` (default: the run's
    :func:`time_field`)."""
    field = field or time_field(record)
    per_epoch = [float(h.get(field, 0.0) or 0.0) for h in record["history"]]
    return list(np.cumsum([0.0, *per_epoch[1:]]))


def _costs(record: dict[str, Any]) -> list[float]:
    return [math.nan if h.get("train_cost") is None else float(h["train_cost"]) for h in record["history"]]


def _status(lo: float, hi: float, held: bool, failed: bool) -> str:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return INCONCLUSIVE
    return HELD if held else DID_NOT_HOLD if failed else INCONCLUSIVE


def _interval(mean: float, lo: float, hi: float, n: int, fmt: str = "{:.1%}") -> str:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{fmt.format(mean)} (one seed: no interval)"
    return f"{fmt.format(mean)}, 95% interval [{fmt.format(lo)}, {fmt.format(hi)}] over {n} seeds"


def wall_clock(adam: list[dict[str, Any]], sfo: list[dict[str, Any]]) -> dict[str, Any]:
    """The wall-clock verdict from the chosen runs (paired by seed)."""
    gaps = []
    for a, s in zip(adam, sfo):
        field = time_field(a, s)
        ta, ts = _seconds(a, field), _seconds(s, field)
        horizon = min(ta[-1], ts[-1])
        ca, cs = float(np.interp(horizon, ta, _costs(a))), float(np.interp(horizon, ts, _costs(s)))
        gaps.append((cs - ca) / cs)
    mean, lo, hi = t_interval(gaps)
    status = _status(lo, hi, lo >= 0.01, hi <= -0.01)
    text = f"at equal seconds SFO's cost is above Adam's by {_interval(mean, lo, hi, len(gaps))}"
    return {"status": status, "text": text, "values": gaps}


def time_ratio(adam: list[dict[str, Any]], sfo: list[dict[str, Any]], steps: tuple[int, int]) -> dict[str, Any]:
    """Seconds per pass, SFO over Adam, and (context) per update step; ``steps`` = (Adam's, SFO's) per pass."""
    fields = [time_field(a, s) for a, s in zip(adam, sfo)]
    per_pass = [_seconds(s, f)[-1] / _seconds(a, f)[-1] for a, s, f in zip(adam, sfo, fields)]
    per_step = [r * steps[0] / steps[1] for r in per_pass]
    mean, lo, hi = t_interval(per_pass)
    status = _status(lo, hi, lo >= 5 and hi <= 10, hi < 5 or lo > 10)
    m2, lo2, hi2 = t_interval(per_step)
    text = (
        f"SFO takes {_interval(mean, lo, hi, len(per_pass), '{:.2f}×')} Adam's time per pass; per update step "
        f"({steps[1]} SFO evaluations vs {steps[0]} Adam steps per pass) "
        f"{_interval(m2, lo2, hi2, len(per_step), '{:.1f}×')}"
    )
    return {"status": status, "text": text, "per_pass": per_pass, "per_step": per_step}


def memory(results: dict[str, Any]) -> dict[str, Any]:
    """The memory verdict from the memory task's results."""
    worst = float(results["max_residual_fraction"])
    slope = float(results["slope_bytes_per_minibatch"])
    status = HELD if worst <= 0.02 and slope > 0 else DID_NOT_HOLD if worst > 0.1 or slope <= 0 else INCONCLUSIVE
    pairs = ", ".join(f"{n}: {b / 2**20:,.1f} MiB" for n, b in zip(results["minibatches"], results["bytes"]))
    text = (
        f"bytes held by SFO on the {results['parameters']:,}-parameter network — {pairs}; line: "
        f"{slope / 2**20:,.2f} MiB per minibatch + {results['intercept_bytes'] / 2**20:,.1f} MiB, largest "
        f"deviation {worst:.2%} of the largest point (tracemalloc: "
        + ", ".join(f"{b / 2**20:,.1f}" for b in results["tracemalloc_bytes"])
        + " MiB)"
    )
    return {"status": status, "text": text}


def stops_converging(sfo: list[dict[str, Any]]) -> dict[str, Any]:
    """Whether SFO's cost still falls over the second half of the run (dropout panel)."""
    falls = []
    for s in sfo:
        c = _costs(s)
        epochs = len(c) - 1
        mid = c[max(epochs // 2, 1)]
        falls.append((mid - smoothed_final(c, smoothing_window(epochs))) / mid)
    mean, lo, hi = t_interval(falls)
    status = _status(lo, hi, hi <= 0.05, lo >= 0.2)
    counts = [s["history"][-1].get("probes", {}).get("sfo", {}) for s in sfo]
    rejected = [c.get("rejected_steps", math.nan) / max(c.get("evaluations", math.nan), 1) for c in counts]
    text = (
        f"SFO's cost fell by {_interval(mean, lo, hi, len(falls))} over the second half of the run; "
        f"rejected steps: {', '.join(f'{r:.0%}' for r in rejected)} of its evaluations (per seed)"
    )
    return {"status": status, "text": text, "values": falls}


def _chosen(out: Path, spec: ExperimentSpec, panel: str, key: str) -> list[dict[str, Any]]:
    """The complete runs of ``key``'s chosen setting on ``panel``, one per seed done; none while the panel's
    grid search has not finished (a partial run's report judges what is complete)."""
    if not (Path(out) / panel / "grid.json").is_file():
        return []
    grid = R.read_grid(out, panel)["optimizers"]
    paths = [R.run_path(out, panel, key, grid[key]["best_setting"], s) for s in spec.seeds]
    records = [R.read_json(p) for p in paths if p.is_file()]
    return [r for r in records if r.get("complete")]


def verdicts(out: Path, spec: ExperimentSpec) -> list[tuple[str, dict[str, Any]]]:
    """(claim in the paper's words, verdict) for the claims the curve comparisons do not cover."""
    rows: list[tuple[str, dict[str, Any]]] = []
    panel = spec.panel("mlp")
    adam, sfo = _chosen(out, spec, "mlp", "adam"), _chosen(out, spec, "mlp", "sfo")
    if adam and sfo:
        rows.append(("Adam makes faster progress than SFO in wall-clock time", wall_clock(adam, sfo)))
        steps = (
            math.ceil(_examples(out, panel.name) / panel.batch_size),
            int(panel.optimizer("sfo").fixed["minibatches"]),
        )
        rows.append(("SFO is 5–10× slower per iteration (pass over the data)", time_ratio(adam, sfo, steps)))
    tasks = [R.task_path(out, "sfo_memory", s) for s in spec.seeds]
    done = [R.read_json(p) for p in tasks if p.is_file()]
    if done:
        rows.append(("SFO's memory grows linearly with the number of minibatches", memory(done[0]["results"])))
    drop = _chosen(out, spec, "mlp_dropout", "sfo")
    if drop:
        rows.append(("SFO fails to converge with dropout noise (its cost stops falling)", stops_converging(drop)))
    return rows


def _examples(out: Path, panel: str) -> int:
    return int(R.read_json(out / panel / "data.json")["n_examples"])


def plot_wall_clock(out: Path, spec: ExperimentSpec) -> list[Path]:
    """Training cost against cumulative wall-clock seconds, every seed, for each panel."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from adamlab.files import save_figure

    fig = Figure(figsize=(5.5 * len(spec.panels), 4), layout="constrained")
    FigureCanvasAgg(fig)
    for i, panel in enumerate(spec.panels):
        ax = fig.add_subplot(1, len(spec.panels), i + 1)
        chosen = {key: _chosen(out, spec, panel.name, key) for key in ("adam", "sfo")}
        field = time_field(*chosen["adam"], *chosen["sfo"])
        for key, color in (("adam", "C3"), ("sfo", "C0")):
            for j, record in enumerate(chosen[key]):
                label = panel.optimizer(key).label if j == 0 else None
                ax.plot(_seconds(record, field), _costs(record), color=color, alpha=0.8, label=label)
        ax.set_yscale("log")
        ax.set_xlabel(AXIS_LABELS[field])
        ax.set_ylabel("training cost")
        ax.set_title(panel.title, fontsize=9)
        if chosen["adam"] or chosen["sfo"]:
            ax.legend()
    quick = " — QUICK RUN" if spec.quick else ""
    fig.suptitle(f"Figure 2b: training cost against wall-clock time{quick}", fontsize=10)
    return save_figure(fig, out, "fig2b_wallclock", ("png", "pdf"), dpi=150, bbox_inches="tight")


def report_section(out: Path, spec: ExperimentSpec) -> str:
    rows = verdicts(out, spec)
    figures = plot_wall_clock(out, spec)
    lines = ["## Figure 2b: wall-clock time, time per pass, memory, dropout", ""]
    if spec.quick:
        lines += ["**QUICK RUN** — these verdicts are about the shortened run (see the notes above).", ""]
    lines += ["| the paper's claim | verdict | evidence |", "| --- | --- | --- |"]
    lines += [f"| {claim} | **{v['status']}** | {v['text']} |" for claim, v in rows]
    lines += ["", "The rules are in `adamlab/lab/experiments/fig2b_report.py`.", ""]
    lines += [f"![wall-clock]({figures[0].name})", ""]
    return "\n".join(lines)


def write_report(out_dir: str | os.PathLike[str]) -> Path:
    """The lab's report, followed by :func:`report_section`."""
    from adamlab.lab import report as lab_report

    out = Path(out_dir)
    spec = R.read_spec(out)
    path = lab_report.write_report(out)
    head = path.read_text()
    R.atomic_write_text(path, head.rstrip() + "\n\n" + report_section(out, spec))
    return path
