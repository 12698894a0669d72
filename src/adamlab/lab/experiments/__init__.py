"""The registry of reproducible experiments: ``adamlab reproduce NAME`` runs ``EXPERIMENTS[NAME]``.

An :class:`Experiment` is a name, a one-line description, a ``run`` function and a ``report`` function. The
paper's figures and the theory are lab specs (:func:`spec_experiment` turns a spec builder into an experiment,
trained by :func:`adamlab.lab.runner.run_spec` and reported by :func:`adamlab.lab.report.write_report`); a
spec builder's module is imported only when it is run.

:func:`run_experiment` writes ``experiment.json`` (which experiment, quick or full, seed) into the output
directory, runs (resuming whatever is already there), and writes the report; :func:`report_experiment`
rewrites the report of a saved run from its files.
"""

from __future__ import annotations

import dataclasses
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import adamlab
from adamlab.lab import parallel
from adamlab.lab import results as R
from adamlab.lab.spec import ExperimentSpec

__all__ = [
    "EXPERIMENTS",
    "Experiment",
    "default_out_dir",
    "list_experiments",
    "register_experiment",
    "report_experiment",
    "run_experiment",
    "spec_experiment",
]

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class Experiment:
    """``run(out_dir, *, quick, data_dir, seed, seeds, progress, jobs, shard, device)`` trains into
    ``out_dir`` (and may return the path of a report it wrote itself); ``report(out_dir) -> Path`` writes the
    report from the saved results and returns its path; ``spec(quick, seed, seeds)`` is the experiment's spec
    (for ``--list``'s estimates and ``adamlab status``)."""

    name: str
    description: str
    run: Callable[..., Any]
    report: Callable[[Path], Path]
    spec: Callable[..., ExperimentSpec] | None = None


def spec_experiment(name: str, description: str, build_spec: Callable[..., ExperimentSpec]) -> Experiment:
    """An experiment trained by the lab's runner from ``build_spec(quick=..., seed=..., seeds=...)``
    (``seeds=None``: the spec's default) and reported by :func:`adamlab.lab.report.write_report`."""

    def run(
        out_dir: Path,
        *,
        quick: bool,
        data_dir: PathLike | None,
        seed: int,
        progress: bool,
        seeds: int | None = None,
        jobs: int = 1,
        shard: tuple[int, int] | None = None,
        device: str | None = "cpu",
    ) -> None:
        from adamlab.lab.runner import run_spec

        spec = build_spec(quick=quick, seed=seed, seeds=seeds)
        run_spec(spec, out_dir, data_dir=data_dir, progress=progress, jobs=jobs, shard=shard, device=device)

    def report(out_dir: Path) -> Path:
        from adamlab.lab.report import write_report

        return write_report(out_dir)

    return Experiment(name, description, run, report, build_spec)


def _fig1_spec(*, quick: bool, seed: int, seeds: int | None = None) -> ExperimentSpec:
    from adamlab.lab.experiments.fig1 import build_spec

    return build_spec(quick=quick, seed=seed, seeds=seeds)


def _fig2a_spec(*, quick: bool, seed: int, seeds: int | None = None) -> ExperimentSpec:
    from adamlab.lab.experiments.fig2a import build_spec

    return build_spec(quick=quick, seed=seed, seeds=seeds)


def _fig2b_spec(*, quick: bool, seed: int, seeds: int | None = None) -> ExperimentSpec:
    from adamlab.lab.experiments.fig2b import build_spec

    return build_spec(quick=quick, seed=seed, seeds=seeds)


def _fig2b_report(out_dir: Path) -> Path:
    from adamlab.lab.experiments.fig2b import write_report

    return write_report(out_dir)


def _fig4_spec(*, quick: bool, seed: int, seeds: int | None = None) -> ExperimentSpec:
    from adamlab.lab.experiments.fig4 import build_spec

    return build_spec(quick=quick, seed=seed, seeds=seeds)


def _fig4_report(out_dir: Path) -> Path:
    from adamlab.lab.experiments.fig4_report import write_report

    return write_report(out_dir)


def _fig3_spec(*, quick: bool, seed: int, seeds: int | None = None) -> ExperimentSpec:
    from adamlab.lab.experiments.fig3 import build_spec

    return build_spec(quick=quick, seed=seed, seeds=seeds)


def _fig3_report(out_dir: Path) -> Path:
    from adamlab.lab.experiments.fig3 import report

    return report(out_dir)


def _theory_spec(*, quick: bool, seed: int, seeds: int | None = None) -> ExperimentSpec:
    from adamlab.lab.experiments.theory import build_spec

    return build_spec(quick=quick, seed=seed, seeds=seeds)


def _state_precision_spec(*, quick: bool, seed: int, seeds: int | None = None) -> ExperimentSpec:
    from adamlab.lab.experiments.state_precision import build_spec

    return build_spec(quick=quick, seed=seed, seeds=seeds)


EXPERIMENTS: dict[str, Experiment] = {
    "fig1": spec_experiment(
        "fig1",
        "Figure 1: logistic regression on MNIST and on a sparse bag of words (Adam, SGD-Nesterov, AdaGrad, RMSProp)",
        _fig1_spec,
    ),
    "fig2a": spec_experiment(
        "fig2a",
        "Figure 2a: MLP 784-1000-1000-10 with dropout on MNIST (AdaGrad, RMSProp, SGD-Nesterov, AdaDelta, Adam)",
        _fig2a_spec,
    ),
    # Figure 2b: SFO (adamlab.baselines) as an epoch driver; wall-clock, memory and dropout verdicts in its report.
    "fig2b": dataclasses.replace(
        spec_experiment(
            "fig2b", "Figure 2b: Adam vs SFO on MNIST (MLP, per pass and wall-clock; memory; dropout)", _fig2b_spec
        ),
        report=_fig2b_report,
    ),
    # Figure 4 adds the paper's layout (loss vs log10 α per (β1, β2)) and its own claims to the lab's report.
    "fig4": dataclasses.replace(
        spec_experiment("fig4", "Figure 4: VAE on MNIST, Adam with vs without bias correction", _fig4_spec),
        report=_fig4_report,
    ),
    # Figure 3 adds the paper's two-panel layout, the ε-vs-√v̂ probe and claims 1 and 3 to the lab's report.
    "fig3": dataclasses.replace(
        spec_experiment(
            "fig3",
            "Figure 3: CNN c64-c64-c128-1000 with and without dropout (Fashion-MNIST standing in for CIFAR-10)",
            _fig3_spec,
        ),
        report=_fig3_report,
    ),
    "state_precision": spec_experiment(
        "state_precision",
        "Issue 16: Adam with fp32, bf16 and int8 state on Figures 1 and 2a's MNIST models",
        _state_precision_spec,
    ),
    "theory": spec_experiment(
        "theory",
        "§4 and Reddi et al.: regret of Adam/AMSGrad on online convex problems, and the paper's bounds",
        _theory_spec,
    ),
}


def register_experiment(experiment: Experiment) -> None:
    """Add (or replace) an experiment in the registry."""
    EXPERIMENTS[experiment.name] = experiment


def list_experiments() -> list[tuple[str, str]]:
    """``(name, description)`` of every registered experiment, sorted by name."""
    return [(name, EXPERIMENTS[name].description) for name in sorted(EXPERIMENTS)]


def _get(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; valid experiments: {', '.join(sorted(EXPERIMENTS))}")
    return EXPERIMENTS[name]


def default_out_dir(name: str, quick: bool) -> Path:
    """``runs/<name>`` (``runs/<name>-quick`` for a quick run, so the two never share a directory)."""
    return Path("runs") / (f"{name}-quick" if quick else name)


def run_experiment(
    name: str,
    *,
    quick: bool = False,
    out_dir: PathLike | None = None,
    data_dir: PathLike | None = None,
    seed: int = 0,
    progress: bool = True,
    seeds: int | None = None,
    jobs: int = 1,
    shard: tuple[int, int] | None = None,
    device: str | None = "cpu",
) -> Path:
    """Run experiment ``name`` into ``out_dir`` (resuming a previous run there), then write its report.

    ``seeds``: how many seeds from ``seed`` on (``None``: the experiment's default); ``jobs``: worker
    processes; ``shard``: ``(K, N)``, this process's slice; ``device``: ``"cpu"``/``"cuda"``/``"mps"``
    (``None``: the best available). Returns the report's path — or, for a shard that finished its slice
    before the other shards, the output directory (the report is written once every run is in). Raises
    ``ValueError`` naming the valid experiments for an unknown ``name``.
    """
    experiment = _get(name)
    out = Path(out_dir) if out_dir is not None else default_out_dir(name, quick)
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / R.MANIFEST_FILE
    wanted = {"experiment": name, "quick": quick, "seed": seed}
    if manifest.is_file():
        previous = R.read_json(manifest)
        if {k: previous.get(k) for k in wanted} != wanted:
            raise R.ResultsError(
                f"{out} holds a run of {previous.get('experiment')!r} (quick={previous.get('quick')}, "
                f"seed={previous.get('seed')}); choose another --out directory or delete it"
            )
    elif parallel.is_writer():
        R.write_json(
            manifest,
            {
                **wanted,
                "adamlab": adamlab.__version__,
                "torch": torch.__version__,
                "python": platform.python_version(),
                "machine": platform.machine(),
                "torch_threads_default": torch.get_num_threads(),
            },
        )
    report = experiment.run(
        out,
        quick=quick,
        data_dir=data_dir,
        seed=seed,
        progress=progress,
        seeds=seeds,
        jobs=jobs,
        shard=shard,
        device=device,
    )
    if report is not None:
        return Path(report)
    if shard is not None and (out / R.SPEC_FILE).is_file():
        from adamlab.lab.runner import unit_states

        states = unit_states(R.read_spec(out), out)
        if states["left"] or states["running"] or states["unplanned"]:
            return out  # other shards are still training; `adamlab report OUT` once every run is in
    path = parallel.on_writer(experiment.report, out)  # under torchrun rank 0 writes the report
    return path if path is not None else out / "report.md"


def report_experiment(out_dir: PathLike) -> Path:
    """Rewrite the report of the experiment saved in ``out_dir`` (from its files only); return its path."""
    out = Path(out_dir)
    manifest = out / R.MANIFEST_FILE
    if not manifest.is_file():
        raise R.ResultsError(f"no {R.MANIFEST_FILE} in {out}: not the output directory of `adamlab reproduce`")
    return _get(R.read_json(manifest)["experiment"]).report(out)
