"""Plots and a Markdown report of a lab experiment, read from its saved results only (never by re-training).

:func:`write_report` reads ``spec.json``, each panel's ``data.json``, ``grid.json`` and the chosen runs' files
(see :mod:`adamlab.lab.results`) and writes, into the same directory:

* ``<name>.png`` and ``<name>.pdf`` — the figure: training cost vs epochs of each optimiser's chosen setting
  (mean over seeds), one panel per spec panel, on the paper's axes (widened where our curves leave them);
* ``<name>_diagnostics.png/.pdf`` — for optimisers with diagnostics (adamlab's Adam/AdaMax): quantiles over
  coordinates of |Δ_t|/α_t and of the SNR |m̂|/√v̂ per epoch (§2.1);
* ``report.md`` — the paper's figure beside ours in words, each of the paper's claims judged (held / did not
  hold / inconclusive, with the numbers; :mod:`adamlab.lab.claims`), the chosen hyper-parameters and the whole
  grid, and the diagnostics at the first and last epoch.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from adamlab.files import save_figure
from adamlab.lab import results as R
from adamlab.lab.claims import HELD, INCONCLUSIVE, Verdict, judge
from adamlab.lab.models import describe_model
from adamlab.lab.spec import ExperimentSpec, PanelSpec

__all__ = [
    "README_BEGIN",
    "README_END",
    "PanelResults",
    "fmt",
    "load_panel",
    "plot_curves",
    "readme_block",
    "save",
    "sync_readme",
    "write_report",
]

#: A README block generated from a results directory: ``<!-- adamlab report: DIR -->`` … ``<!-- /adamlab report -->``
#: (DIR relative to the README); :func:`sync_readme` rewrites what is between the markers.
README_BEGIN = "<!-- adamlab report: {dir} -->"
README_END = "<!-- /adamlab report -->"

FORMATS = ("png", "pdf")
_COLORS = {
    "adam": "C3",
    "sgd_nesterov": "C0",
    "adagrad": "C2",
    "rmsprop": "C1",
    "adadelta": "C4",
    "adamax": "C5",
}
_MARK = {HELD: "✅ held", INCONCLUSIVE: "⚠️ inconclusive"}


@dataclass
class PanelResults:
    """A panel's saved results: its spec, the data used, the grid search, and the chosen runs."""

    spec: PanelSpec
    data: dict[str, Any]
    grid: dict[str, Any]
    chosen: dict[str, list[dict[str, Any]]]  # optimiser key -> the chosen setting's run record per seed
    curves: dict[str, list[float]]  # optimiser key -> mean training cost per epoch (over seeds)
    seeds: tuple[int, ...] = ()  # the seeds whose chosen runs are complete for every optimiser

    def seed_curves(self, key: str) -> list[list[float]]:
        """The chosen setting's training-cost curve of every seed (in the spec's seed order)."""
        return [
            [math.nan if h.get("train_cost") is None else h["train_cost"] for h in r["history"]]
            for r in self.chosen[key]
        ]

    def label(self, key: str) -> str:
        return self.grid[key]["label"]

    @property
    def data_description(self) -> str:
        return self.data.get("description", self.spec.dataset.name)


def load_panel(spec: ExperimentSpec, panel: PanelSpec, out: Path) -> PanelResults | None:
    """A panel's results, or ``None`` if it has not finished: no grid search yet, or no seed whose chosen runs
    are complete for every optimiser. Seeds missing for some optimiser are left out (the verdicts say how many
    seeds they rest on)."""
    grid_file = out / panel.name / "grid.json"
    if not grid_file.is_file():
        return None
    grid = R.read_json(grid_file)["optimizers"]
    data_file = out / panel.name / "data.json"
    data = R.read_json(data_file) if data_file.is_file() else {}
    records: dict[str, dict[int, dict[str, Any]]] = {}
    for opt in panel.optimizers:
        records[opt.key] = {}
        for s in spec.seeds:
            path = R.run_path(out, panel.name, opt.key, grid[opt.key]["best_setting"], s)
            if path.is_file():
                record = R.read_json(path)
                if record.get("complete"):
                    records[opt.key][s] = record
    seeds = [s for s in spec.seeds if all(s in records[o.key] for o in panel.optimizers)]
    if not seeds:
        return None
    chosen = {key: [by_seed[s] for s in seeds] for key, by_seed in records.items()}
    curves = {k: R.mean_curve(v) for k, v in chosen.items()}
    return PanelResults(panel, data, grid, chosen, curves, tuple(seeds))


def fmt(x: float | None, digits: int = 4, kind: str = "f") -> str:
    """The one number format of the reports: ``digits`` after the point (``kind="f"``) or significant
    (``"g"``); a missing or non-finite value as "—"."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{x:.{digits}{kind}}"


def _setting_text(setting: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in setting.items()) or "default"


# -- plots ---------------------------------------------------------------------------------------------------


def save(fig: Figure, out: Path, stem: str, dpi: int = 150, **savefig: Any) -> list[Path]:
    """The one way a report saves a figure: ``<stem>.png`` and ``.pdf`` in ``out``, each atomically
    (:func:`adamlab.files.save_figure`); returns the paths."""
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    return save_figure(fig, out, stem, FORMATS, dpi=dpi, **savefig)


def _diagnosed(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The epochs of the first seed's run that have §2.1 diagnostics (adamlab optimisers, after epoch 0)."""
    return [h for h in records[0]["history"] if "step_over_lr" in (h.get("diagnostics") or {})]


def _suptitle(spec: ExperimentSpec, what: str) -> str:
    note = "\nQUICK RUN: fewer epochs, coarser grids — not the paper's protocol" if spec.quick else ""
    return f"{what}{note}"


def plot_curves(spec: ExperimentSpec, panels: list[PanelResults], out: Path) -> list[Path]:
    """The figure: training cost vs epochs, one panel per spec panel, the paper's axes where they fit."""
    fig = Figure(figsize=(6.0 * len(panels), 4.8), layout="constrained")
    for i, pr in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for key, curve in pr.curves.items():
            label = f"{pr.label(key)} ({_setting_text(pr.grid[key]['best_setting'])})"
            ax.plot(range(len(curve)), curve, label=label, color=_COLORS.get(key), lw=1.6)
            low, high = _band(pr.seed_curves(key))
            if len(pr.chosen[key]) > 1:
                ax.fill_between(range(len(low)), low, high, color=_COLORS.get(key), alpha=0.2, lw=0)
        plot = pr.spec.plot
        ax.set_xlabel(plot.xlabel)
        ax.set_ylabel(plot.ylabel)
        ax.set_yscale(plot.yscale)
        ax.set_xlim(*(plot.xlim if plot.xlim is not None and not spec.quick else (0, pr.spec.epochs)))
        finite = [v for c in pr.curves.values() for v in c[1:] if math.isfinite(v)]
        if plot.ylim is not None and finite:
            lo = min(plot.ylim[0], 0.97 * min(finite))
            hi = plot.ylim[1] if max(c[-1] for c in pr.curves.values()) < plot.ylim[1] else 1.05 * max(finite)
            ax.set_ylim(lo, hi)
        ax.set_title(f"{pr.spec.title}\n{pr.data_description}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(_suptitle(spec, spec.title), fontsize=11)
    return save(fig, out, spec.name, bbox_inches="tight")


def _band(curves: list[list[float]]) -> tuple[list[float], list[float]]:
    """Per epoch, the lowest and highest cost over seeds (the spread drawn around the mean)."""
    length = max(len(c) for c in curves)
    lo, hi = [], []
    for e in range(length):
        values = [c[e] for c in curves if e < len(c) and math.isfinite(c[e])]
        lo.append(min(values) if values else math.nan)
        hi.append(max(values) if values else math.nan)
    return lo, hi


def plot_diagnostics(spec: ExperimentSpec, panels: list[PanelResults], out: Path) -> list[Path]:
    """|Δ_t|/α_t and SNR quantiles per epoch for every chosen run that has diagnostics (seed of the first)."""
    rows = []
    for pr in panels:
        for key, records in pr.chosen.items():
            history = _diagnosed(records)
            if history:
                rows.append((pr, key, history))
    if not rows:
        return []
    fig = Figure(figsize=(11.0, 3.4 * len(rows)), layout="constrained")
    for r, (pr, key, history) in enumerate(rows):
        epochs = [h["epoch"] for h in history]
        for c, (name, title) in enumerate((("step_over_lr", "|Δ_t| / α_t"), ("snr", "SNR |m̂| / √v̂"))):
            ax = fig.add_subplot(len(rows), 2, 2 * r + c + 1)
            for q, style in (("q50", "-"), ("q90", "--"), ("q99", ":"), ("max", "-.")):
                ax.plot(epochs, [h["diagnostics"][name].get(q, math.nan) for h in history], style, label=q)
            if name == "step_over_lr":
                ax.axhline(1.0, color="grey", lw=0.8)
            ax.set_yscale("log")
            ax.set_xlabel("epoch")
            ax.set_title(f"{pr.spec.name}: {pr.label(key)} — {title}", fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle(_suptitle(spec, f"{spec.name}: §2.1 diagnostics over all coordinates"), fontsize=11)
    return save(fig, out, f"{spec.name}_diagnostics", bbox_inches="tight")


# -- the Markdown report ------------------------------------------------------------------------------------


def _claims(spec: ExperimentSpec, panels: dict[str, PanelResults]) -> list[Verdict]:
    verdicts = []
    for claim in spec.claims:
        if claim.panel not in panels:
            continue
        pr = panels[claim.panel]
        labels = (pr.label(claim.a), pr.label(claim.b))
        verdicts.append(judge(claim, pr.seed_curves(claim.a), pr.seed_curves(claim.b), labels))
    return verdicts


def _ours_in_words(pr: PanelResults) -> str:
    finals = sorted(
        ((c[-1] if c and math.isfinite(c[-1]) else math.inf, k) for k, c in pr.curves.items()),
        key=lambda t: t[0],
    )
    parts = [f"{pr.label(k)} {fmt(v)}" for v, k in finals]
    first = {k: c[1] for k, c in pr.curves.items() if len(c) > 1}
    lead = min(first, key=lambda k: first[k]) if first else None
    text = f"after {pr.spec.epochs} epochs the training cost is, lowest first: {'; '.join(parts)}."
    if lead is not None:
        text += f" After the first epoch {pr.label(lead)} is lowest ({fmt(first[lead])})."
    return text


def _grid_table(pr: PanelResults) -> list[str]:
    lines = [
        "| optimiser | grid | chosen | final cost (chosen) | note |",
        "| --- | --- | --- | --- | --- |",
    ]
    for opt in pr.spec.optimizers:
        g = pr.grid[opt.key]
        grid = "; ".join(f"{k} ∈ {{{', '.join(f'{v:g}' for v in vals)}}}" for k, vals in opt.grid.items())
        fixed = _setting_text(opt.fixed)
        diverged = sum(1 for row in g["rows"] if row["mean_final_cost"] is None)
        notes = []
        if g["best_at_grid_edge"]:
            notes.append(f"at the edge of the grid in {', '.join(g['best_at_grid_edge'])}")
        if diverged:
            notes.append(f"{diverged} setting(s) diverged")
        lines.append(
            f"| {opt.label} (`{opt.optimizer}`, {fixed}) | {grid} | {_setting_text(g['best_setting'])} "
            f"| {fmt(g['best_final_cost'])} | {'; '.join(notes)} |"
        )
    lines.append("")
    lines.append("<details><summary>Every grid point (final training cost)</summary>")
    lines.append("")
    lines.append("| optimiser | setting | final cost |")
    lines.append("| --- | --- | --- |")
    for opt in pr.spec.optimizers:
        for row in pr.grid[opt.key]["rows"]:
            cost = fmt(row["mean_final_cost"]) if row["mean_final_cost"] is not None else "diverged"
            lines.append(f"| {opt.label} | {row['setting_id']} | {cost} |")
    lines += ["", "</details>"]
    return lines


def _diagnostics_table(pr: PanelResults) -> list[str]:
    lines: list[str] = []
    for key, records in pr.chosen.items():
        history = _diagnosed(records)
        if not history:
            continue
        if not lines:
            lines = [
                "| optimiser | epoch | \\|Δ\\|/α q50 | q90 | q99 | max | SNR q50 | q90 | q99 | max |",
                "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
            ]
        for h in (history[0], history[-1]):
            d, s = h["diagnostics"]["step_over_lr"], h["diagnostics"]["snr"]
            cells = [fmt(d.get(q), 3) for q in ("q50", "q90", "q99", "max")]
            cells += [fmt(s.get(q), 3) for q in ("q50", "q90", "q99", "max")]
            lines.append(f"| {pr.label(key)} | {h['epoch']} | " + " | ".join(cells) + " |")
    return lines


def _markdown(
    spec: ExperimentSpec,
    panels: list[PanelResults],
    verdicts: list[Verdict],
    figures: list[Path],
    unfinished: list[str] | None = None,
) -> str:
    md = [f"# {spec.title}", ""]
    if unfinished:
        md += [
            f"> **Not finished**: panel(s) {', '.join(f'`{n}`' for n in unfinished)} have not finished their grid "
            "search; their claims are not judged below. Rerun the same command to continue.",
            "",
        ]
    if spec.quick:
        md += [
            "> **Quick run** — not the paper's protocol; for a full reproduction run without `--quick`.",
            "",
        ]
    md += [f"- {note}" for note in spec.notes]
    for pr in panels:
        stand_in = pr.data.get("stand_in_for")
        line = f"- Panel `{pr.spec.name}`: {pr.data_description}"
        if stand_in:
            line += f" — **a stand-in for {stand_in}**, not available here; its numbers are not the paper's"
        md.append(line + ".")
    md += [
        f"- Seeds: {', '.join(map(str, spec.seeds))} (grid search with {', '.join(map(str, spec.grid_seeds))})"
        + "".join(
            f"; panel `{pr.spec.name}` so far {len(pr.seeds)} seed(s)"
            for pr in panels
            if len(pr.seeds) < len(spec.seeds)
        )
        + ". "
        "Curves: training cost (mean NLL + L2 penalty, whole training set, no dropout) of each optimiser's "
        "chosen setting, the mean over seeds, with a band from the lowest to the highest seed.",
        "",
    ]
    for f in figures:
        if f.suffix == ".png":
            md += [f"![{f.stem}]({f.name})", ""]

    held = sum(v.status == HELD for v in verdicts)
    md += [f"## The paper's claims, checked ({held} of {len(verdicts)} held)", ""]
    md += ["| panel | the paper's claim | verdict | the numbers |", "| --- | --- | --- | --- |"]
    for v in verdicts:
        mark = _MARK.get(v.status, "❌ did not hold")
        md.append(f"| {v.claim.panel} | {v.claim.text} | {mark} | {v.reason} |")
    md += [
        "",
        "Rules (see `adamlab.lab.claims`): each seed gives one number — the relative gap of the smoothed "
        "final costs (mean of the last ⌊E/10⌋ epochs), or for *≫* the speed-up in epochs to reach the slower "
        "optimiser's smoothed final cost — and the verdict is read from the 95 % t-interval of their mean: "
        "*≈* holds when the whole interval lies within ±tolerance and fails when it lies beyond twice it; "
        "*as fast* holds when its top is ≤ tolerance and fails when its bottom is > twice it; *faster* holds "
        "when its bottom is ≥ the margin and fails when its top is ≤ −margin; *≫* holds when its bottom is ≥ "
        "the factor and fails when its top is ≤ 1. Anything else, or a single seed, is inconclusive.",
        "",
    ]

    for pr in panels:
        md += [f"## Panel `{pr.spec.name}`: {pr.spec.title}", ""]
        md += [f"**The paper:** {pr.spec.paper}", "", f"**Ours:** {_ours_in_words(pr)}", ""]
        md += [f"### Chosen hyper-parameters ({pr.spec.epochs} epochs, minibatch {pr.spec.batch_size})", ""]
        n_features, n_classes = pr.data.get("n_features"), pr.data.get("n_classes")
        md += [f"Model: {describe_model(pr.spec.model, n_features, n_classes)}.", ""]
        md += _grid_table(pr)
        diag = _diagnostics_table(pr)
        if diag:
            md += ["", "### Adam's §2.1 diagnostics (first and last epoch, over all coordinates)", ""]
            md += diag
            md += [
                "",
                "|Δ|/α is the effective step over its learning rate α_t: §2.1 bounds it by (1−β1)/√(1−β2) "
                "(≈ 3.16 with the defaults) and expects ≲ 1 in common cases (the trust region); the SNR "
                "|m̂|/√v̂ should shrink as the optimum nears.",
            ]
        md.append("")

    md += ["## Files", ""]
    md += [f"- `{f.name}`" for f in figures]
    md += [
        "- `spec.json` (what was run), `<panel>/grid.json` and `grid.csv` (every grid point), "
        "`<panel>/curves.csv` (the plotted curves), `<panel>/runs/<optimiser>/<setting>_seed<S>.json` "
        "(per-epoch history of every run, with diagnostics).",
        "",
    ]
    return "\n".join(md)


def write_report(out_dir: str | os.PathLike[str]) -> Path:
    """Write the plots and ``report.md`` of the experiment saved in ``out_dir``; return the report's path.

    A spec whose ``report`` is not ``"curves"`` is reported by its experiment module's own ``write_report``
    (``adamlab.lab.experiments.<name>``, e.g. the theory's), built from this module's toolkit."""
    from adamlab.lab.runner import import_experiment_module

    out = Path(out_dir)
    spec = R.read_spec(out)
    import_experiment_module(spec.name)
    if spec.report != "curves":
        import importlib

        module = importlib.import_module(f"adamlab.lab.experiments.{spec.name}")
        return Path(module.write_report(out))
    loaded = {p.name: load_panel(spec, p, out) for p in spec.panels}
    panels = [pr for pr in loaded.values() if pr is not None]
    if not panels:
        raise R.ResultsError(f"{out} has not finished: no panel has finished its grid search yet; rerun the experiment")
    unfinished = [name for name, pr in loaded.items() if pr is None]
    verdicts = _claims(spec, {p.spec.name: p for p in panels})
    figures = plot_curves(spec, panels, out) + plot_diagnostics(spec, panels, out)
    path = out / "report.md"
    R.atomic_write_text(path, _markdown(spec, panels, verdicts, figures, unfinished))
    return path


# -- the README's numbers -----------------------------------------------------------------------------------------


def readme_block(out_dir: str | os.PathLike[str], link_base: str | None = None) -> str:
    """The Markdown a README shows for the results in ``out_dir``: what was covered (panels, epochs, seeds,
    runs), the figure (``link_base``: the directory's path as the README links it), and every claim's verdict
    with its interval — computed from the saved files alone (no plot is drawn)."""
    from adamlab.lab.runner import import_experiment_module, unit_states

    out = Path(out_dir)
    spec = R.read_spec(out)
    import_experiment_module(spec.name)
    if spec.report != "curves":  # the experiment's module writes its own block (e.g. the theory's)
        import importlib

        module = importlib.import_module(f"adamlab.lab.experiments.{spec.name}")
        return str(module.readme_block(out, link_base))
    loaded = {p.name: load_panel(spec, p, out) for p in spec.panels}
    panels = {k: v for k, v in loaded.items() if v is not None}
    states = unit_states(spec, out)
    n_done = len(states["done"])
    n_all = sum(len(v) for v in states.values())
    lines = [
        f"Results: `{link_base or out}` ({'quick' if spec.quick else 'full'} run; {n_done} of {n_all} runs done).",
        "",
        "| panel | epochs | seeds in the verdicts |",
        "| --- | --- | --- |",
    ]
    for p in spec.panels:
        pr = loaded[p.name]
        seeds = ", ".join(map(str, pr.seeds)) if pr is not None else "— (grid search not finished)"
        lines.append(f"| {p.name} | {p.epochs} | {seeds} |")
    if panels and link_base is not None:
        lines += ["", f"![{spec.title}]({link_base}/{spec.name}.png)"]
    lines += ["", "| claim of the paper | verdict | the numbers |", "| --- | --- | --- |"]
    verdicts = {id(v.claim): v for v in _claims(spec, panels)}
    for claim in spec.claims:
        v = verdicts.get(id(claim))
        if v is None:
            lines.append(f"| {claim.text} | not run yet | — |")
        else:
            lines.append(f"| {claim.text} | {_MARK.get(v.status, '❌ did not hold')} | {v.reason} |")
    return "\n".join(lines)


def sync_readme(readme: str | os.PathLike[str], *, check: bool = False) -> list[str]:
    """Regenerate every ``adamlab report`` block of ``readme`` from its results directory (relative to the
    README); write the README unless ``check``. Returns the directories whose block was out of date."""
    import re

    path = Path(readme)
    text = path.read_text(encoding="utf-8")
    pattern = re.compile(r"<!-- adamlab report: (\S+) -->\n(.*?)<!-- /adamlab report -->", re.S)
    stale: list[str] = []

    def fresh(match: re.Match[str]) -> str:
        rel = match.group(1)
        block = readme_block(path.parent / rel, link_base=rel)
        if match.group(2).strip() != block.strip():
            stale.append(rel)
        return f"{README_BEGIN.format(dir=rel)}\n{block}\n{README_END}"

    new = pattern.sub(fresh, text)
    if stale and not check:
        R.atomic_write_text(path, new)
    return stale
