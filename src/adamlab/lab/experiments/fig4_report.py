"""Figure 4's report: the results of :mod:`adamlab.lab.experiments.fig4` in the paper's layout.

Reads the run files directly, finished or not, so that an unfinished (e.g. partial full) run can be shown:
:func:`collect_cells` (the grid's cells), :func:`plot_alpha_panels` (loss vs log10 α per (β1, β2), red with and
green without bias correction, × for a diverged run), :func:`report_section` (claims (i) and (ii), the fraction
of diverged runs, the check that the early rows are prefixes of the late ones) and :func:`write_report` (the
lab's standard report followed by this section).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from adamlab.files import save_figure
from adamlab.lab import results as R
from adamlab.lab.experiments.fig4 import (
    BETA1,
    BETA2,
    LOG10_ALPHA,
    QUICK_EPOCHS,
    QUICK_EXAMPLES,
    Cell,
    judge_best_cell,
    judge_instability,
    parse_key,
)
from adamlab.lab.spec import ExperimentSpec

__all__ = ["collect_cells", "early_is_prefix_of_late", "plot_alpha_panels", "report_section", "write_report"]


# -- reading the results (whatever has finished) ------------------------------------------------------------


def collect_cells(out: Path, spec: ExperimentSpec, panel: str) -> tuple[list[Cell], dict[str, int]]:
    """The panel's cells from the run files of the first seed that exist and are complete (a cell not yet run
    is left out), and the counts ``{"runs", "complete", "diverged"}`` over every run file of the panel (all
    seeds). Works on an unfinished output directory, so that a partial full run can be shown."""
    p = spec.panel(panel)
    seed = spec.seeds[0]
    cells = []
    counts = {"planned": 0, "complete": 0, "diverged": 0}
    for opt in p.optimizers:
        b1, b2, bc = parse_key(opt.key)
        for setting in opt.settings():
            counts["planned"] += 1
            path = R.run_path(out, panel, opt.key, setting, seed)
            if not path.is_file():
                continue
            record = R.read_json(path)
            if not record.get("complete"):
                continue
            counts["complete"] += 1
            counts["diverged"] += bool(record.get("diverged"))
            last = record["history"][-1].get("train_cost")
            loss = None if record.get("diverged") or last is None or not math.isfinite(last) else float(last)
            cells.append(Cell(b1, b2, bc, round(math.log10(float(setting["lr"]))), loss))
    return cells, counts


def early_is_prefix_of_late(out: Path, spec: ExperimentSpec) -> tuple[int, float | None]:
    """How many cells have both an early and a late run (first seed), and the largest relative difference of
    the early run's final loss from the late run's loss at the same epoch (0 for identical training)."""
    early, late = spec.panel("early"), spec.panel("late")
    n, worst = 0, None
    for opt in early.optimizers:
        for setting in opt.settings():
            a, b = (R.run_path(out, p.name, opt.key, setting, spec.seeds[0]) for p in (early, late))
            if not (a.is_file() and b.is_file()):
                continue
            ha, hb = R.read_json(a)["history"], R.read_json(b)["history"]
            if not R.read_json(a).get("complete") or len(hb) <= early.epochs or len(ha) <= early.epochs:
                continue
            x, y = ha[early.epochs]["train_cost"], hb[early.epochs]["train_cost"]
            if x is None or y is None or not (math.isfinite(x) and math.isfinite(y)):
                continue
            n += 1
            d = abs(x - y) / abs(y)
            worst = d if worst is None else max(worst, d)
    return n, worst


# -- the paper's layout ---------------------------------------------------------------------------------------

RED, GREEN = "#d62728", "#2ca02c"


def plot_alpha_panels(out: Path, spec: ExperimentSpec) -> list[Path]:
    """The paper's Figure 4: per (β1, β2) the loss against log10 α, red with and green without correction, for
    each row (early, late); a diverged cell is an × at the top of its panel, a cell not yet run is absent."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    rows = [p.name for p in spec.panels]
    fig = Figure(figsize=(3.2 * len(BETA1) * len(rows), 2.6 * len(BETA2)))
    axes = fig.subplots(len(BETA2), len(BETA1) * len(rows), squeeze=False, sharex=True)
    for r, row in enumerate(rows):
        cells, counts = collect_cells(out, spec, row)
        table = {(c.beta1, c.beta2, c.bias_correction, c.log10_alpha): c for c in cells}
        finite = [c.loss for c in cells if c.finite and c.loss is not None]
        top = max(finite) if finite else 1.0
        for i, b2 in enumerate(BETA2):
            for j, b1 in enumerate(BETA1):
                ax = axes[i][r * len(BETA1) + j]
                for bc, color in ((True, RED), (False, GREEN)):
                    xs = [e for e in LOG10_ALPHA if (b1, b2, bc, e) in table]
                    ys = [table[(b1, b2, bc, e)].loss for e in xs]
                    ax.plot(
                        [x for x, y in zip(xs, ys, strict=True) if y is not None],
                        [y for y in ys if y is not None],
                        "o-",
                        color=color,
                        ms=3,
                        lw=1.4,
                        label="with correction" if bc else "without (RMSProp + momentum)",
                    )
                    bad = [x for x, y in zip(xs, ys, strict=True) if y is None]
                    level = top if bc else 0.94 * top  # both visible when both diverged
                    ax.plot(bad, [level] * len(bad), "x", color=color, ms=7, mew=2)
                epochs = spec.panel(row).epochs
                ax.set_title(f"{epochs} epochs, β1={b1:g}, β2={b2:g}", fontsize=9)
                ax.set_xticks(list(LOG10_ALPHA))
                if i == len(BETA2) - 1:
                    ax.set_xlabel("log10(α)")
                if r == 0 and j == 0:
                    ax.set_ylabel("loss (−ELBO, nats)")
                ax.grid(alpha=0.3)
        if counts["complete"] < counts["planned"]:
            axes[0][r * len(BETA1)].annotate(
                f"{counts['complete']} of {counts['planned']} cells run",
                (0.02, 0.02),
                xycoords="axes fraction",
                fontsize=8,
            )
    axes[0][0].legend(fontsize=7, loc="upper left")
    title = "Figure 4: VAE loss vs log10(α); red = bias correction, green = none; × = diverged"
    if spec.quick:
        title += f"\nQUICK RUN: {QUICK_EXAMPLES:,} digits, {QUICK_EPOCHS['early']} and {QUICK_EPOCHS['late']} epochs"
    fig.suptitle(title)
    return save_figure(fig, out, "fig4_alpha", ("png", "pdf"), dpi=130, bbox_inches="tight")


def report_section(out: Path, spec: ExperimentSpec) -> str:
    """The Figure 4 part of the report: the paper's layout, claims (i) and (ii), the fraction of runs that
    diverged and the early/late consistency check; from whatever runs have finished."""
    figures = plot_alpha_panels(out, spec)
    rows = {p.name: collect_cells(out, spec, p.name) for p in spec.panels}
    lines = ["## Figure 4 in the paper's layout", ""]
    if spec.quick:
        lines += [f"**{spec.notes[0]}**", ""]
    lines += [f"![Figure 4]({figures[0].name})", ""]
    lines += ["| row | cells run (first seed) | diverged | fraction diverged |", "| --- | --- | --- | --- |"]
    for name, (_, counts) in rows.items():
        frac = counts["diverged"] / counts["complete"] if counts["complete"] else math.nan
        lines.append(
            f"| {name} ({spec.panel(name).epochs} epochs) | {counts['complete']} of {counts['planned']} | "
            f"{counts['diverged']} | {frac:.0%} |"
        )
    by_bc = {bc: [c for cells, _ in rows.values() for c in cells if c.bias_correction == bc] for bc in (True, False)}
    lines.append("")
    for bc, cells in by_bc.items():
        if cells:
            n_bad = sum(not c.finite for c in cells)
            which = "with correction" if bc else "without correction"
            lines.append(f"- {which}: {n_bad} of {len(cells)} runs diverged ({n_bad / len(cells):.0%}).")
    lines += ["", "| claim | verdict | why |", "| --- | --- | --- |"]
    complete = {name: counts["complete"] == counts["planned"] for name, (_, counts) in rows.items()}
    if complete.get("early"):
        late_cells = rows["late"][0] if complete.get("late") else []
        v = judge_instability(rows["early"][0], late_cells)
        reason = v["reason"] + ("" if complete.get("late") else " (the late row is not complete: early only)")
        lines.append(f"| (i) {v['claim']} | **{v['status']}** | {reason} |")
    else:
        lines.append(
            "| (i) without correction, β2 near 1 is unstable early | not judged | the early row is incomplete |"
        )
    for name in rows:
        if complete[name]:
            v = judge_best_cell(rows[name][0])
            lines.append(
                f"| (ii) after {spec.panel(name).epochs} epochs: {v['claim']} | **{v['status']}** | {v['reason']} |"
            )
        else:
            lines.append(f"| (ii) after {spec.panel(name).epochs} epochs | not judged | row incomplete |")
    lines += [
        "",
        "Claim (iii), with correction at least as good as without at every (β1, β2) at its best α, is in the "
        "claims table above (one `as_fast` claim per (β1, β2) and row, over all seeds).",
        "",
    ]
    n, worst = early_is_prefix_of_late(out, spec)
    if n:
        lines.append(
            f"Check: the {n} early runs that also have a late run end where the late run is at the same epoch "
            f"(largest relative difference {worst:.1e}): the rows share initial weights and minibatches."
        )
    return "\n".join(lines) + "\n"


def write_report(out_dir: str | os.PathLike[str]) -> Path:
    """The lab's report (curves, claims (iii) with intervals, grids, §2.1 diagnostics) when every run is in,
    followed by :func:`report_section`; with unfinished runs, the Figure 4 section alone (saying so)."""
    from adamlab.lab import report as lab_report

    out = Path(out_dir)
    spec = R.read_spec(out)
    path = out / "report.md"
    try:
        lab_report.write_report(out)
        head = path.read_text()
    except R.ResultsError as exc:
        head = f"# {spec.title}\n\n**Unfinished run**: {exc}. The section below shows the runs that finished.\n\n"
        head += "".join(f"- {note}\n" for note in spec.notes) + "\n"
    R.atomic_write_text(path, head.rstrip() + "\n\n" + report_section(out, spec))
    return path
