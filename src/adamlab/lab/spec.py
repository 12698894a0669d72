"""An experiment as data: what to train, with which optimisers and grids, and which of the paper's claims to
judge.

A spec is pure data (dataclasses of numbers, strings, tuples and dicts), JSON-serialisable both ways, so that
what was run is saved next to its results (``spec.json``) and the report can be written from the files alone.
The runner (:mod:`adamlab.lab.runner`) trains a spec; the report (:mod:`adamlab.lab.report`) reads its
results.

The paper (§6) uses the same initialisation for every optimiser, a minibatch of 128, and picks each
optimiser's hyper-parameters (learning rate, momentum) by a dense grid search; the grids are not given, so
every grid here is a documented choice.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "CLAIM_KINDS",
    "ClaimSpec",
    "DatasetSpec",
    "ExperimentSpec",
    "ModelSpec",
    "OptimizerSpec",
    "PanelSpec",
    "PlotSpec",
    "TaskSpec",
    "setting_id",
]

#: How a claim compares two optimisers' training-cost curves; see :mod:`adamlab.lab.claims`.
CLAIM_KINDS = ("approx", "as_fast", "faster", "much_faster")


def _check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


@dataclass(frozen=True)
class DatasetSpec:
    """A training set by name (a key of :data:`adamlab.lab.datasets.DATASETS`) and its loader's options.

    ``options`` are passed to the loader, e.g. ``{"corpus": "auto", "max_features": 10000}``.
    """

    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelSpec:
    """The model and its loss.

    ``kind``: a key of :data:`adamlab.lab.models.MODELS` — built in: ``"logistic"`` (multi-class logistic
    regression; one logit and a sigmoid for two classes) and ``"mlp"`` (ReLU hidden layers of sizes
    ``hidden``); :func:`adamlab.lab.models.register_model` adds more (a CNN, a VAE), whose own settings go in
    ``options``. ``input_dropout`` / ``hidden_dropout``: the probability of zeroing an input feature / a
    hidden unit during training (inverted dropout, so no rescaling at evaluation). ``objective``: a key of
    :data:`adamlab.lab.models.OBJECTIVES`, the per-example loss averaged over a minibatch (``"nll"``: the
    negative log-likelihood of the labels; a VAE registers its negative ELBO). ``l2``: the coefficient λ of
    the penalty (λ/2)·Σ‖W‖² over the weight matrices (not the biases), added to the mean objective; this is
    the paper's "L2-regularised" loss, not decoupled weight decay. ``init_std``: weights start as
    N(0, init_std²) drawn from the run's seed, biases at 0 (a registered model may draw its own, see
    :func:`adamlab.lab.models.init_parameters`).
    """

    kind: str = "logistic"
    hidden: tuple[int, ...] = ()
    input_dropout: float = 0.0
    hidden_dropout: float = 0.0
    l2: float = 0.0
    init_std: float = 0.01
    objective: str = "nll"
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("input_dropout", "hidden_dropout"):
            p = getattr(self, name)
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name} must lie in [0, 1), got {p}")
        if self.l2 < 0:
            raise ValueError(f"l2 must be >= 0, got {self.l2}")
        if self.init_std < 0:
            raise ValueError(f"init_std must be >= 0, got {self.init_std}")
        if self.kind == "logistic" and self.hidden:
            raise ValueError("a logistic model has no hidden layers; use kind='mlp'")


def setting_id(setting: dict[str, Any]) -> str:
    """A short, file-name-safe name of one grid point, e.g. ``"lr=0.001_momentum=0.9"``."""
    if not setting:
        return "default"
    parts = []
    for key in sorted(setting):
        value = setting[key]
        text = f"{value:g}" if isinstance(value, float) else str(value)
        parts.append(f"{key}={text}")
    return "_".join(parts)


@dataclass(frozen=True)
class OptimizerSpec:
    """One optimiser of a panel and its hyper-parameter grid.

    ``key``: its name within the panel (used in files and claims), ``label``: the legend label,
    ``optimizer``: a key of :data:`adamlab.lab.runner.OPTIMIZERS` (``"adam"``, ``"adamax"``, ``"sgd"``,
    ``"adagrad"``, ``"rmsprop"``, ``"adadelta"``), ``fixed``: keyword arguments common to every grid point,
    ``grid``: hyper-parameter name → the values searched; every combination is one setting.
    """

    key: str
    label: str
    optimizer: str
    fixed: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    def settings(self) -> list[dict[str, Any]]:
        """Every point of the grid, in grid order (the first hyper-parameter varies slowest)."""
        names = list(self.grid)
        return [dict(zip(names, values, strict=True)) for values in itertools.product(*(self.grid[n] for n in names))]

    def kwargs(self, setting: dict[str, Any]) -> dict[str, Any]:
        """The optimiser's keyword arguments at one grid point."""
        return {**self.fixed, **setting}


@dataclass(frozen=True)
class PlotSpec:
    """The paper's axes for a panel; ``None`` leaves a limit to the data. A quick run's x-axis ends at its last
    epoch; a y-range that would cut off a curve's end is widened."""

    xlabel: str = "iterations over entire dataset"
    ylabel: str = "training cost"
    xlim: tuple[float, float] | None = None
    ylim: tuple[float, float] | None = None
    yscale: str = "linear"


@dataclass(frozen=True)
class PanelSpec:
    """One panel of a figure: a dataset, a model and the optimisers compared on it.

    ``paper``: the paper's panel in words (what it shows and finds), quoted beside ours in the report.
    ``probes``: keys of :data:`adamlab.lab.runner.PROBES`, measurements taken after every epoch from the
    model, the optimiser and the data (e.g. the fraction of coordinates where ε > √v̂) and stored in that
    epoch's record under ``"probes"``.
    """

    name: str
    title: str
    dataset: DatasetSpec
    model: ModelSpec
    optimizers: tuple[OptimizerSpec, ...]
    epochs: int
    batch_size: int = 128
    plot: PlotSpec = field(default_factory=PlotSpec)
    paper: str = ""
    probes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        keys = [o.key for o in self.optimizers]
        if len(set(keys)) != len(keys):
            raise ValueError(f"optimizer keys must be unique within panel {self.name!r}, got {keys}")

    def optimizer(self, key: str) -> OptimizerSpec:
        for o in self.optimizers:
            if o.key == key:
                return o
        raise KeyError(f"panel {self.name!r} has no optimizer {key!r}; it has {[o.key for o in self.optimizers]}")


@dataclass(frozen=True)
class ClaimSpec:
    """One of the paper's claims, as a comparison of two optimisers' curves on a panel.

    ``kind``: ``"approx"`` (a ≈ b), ``"as_fast"`` (a at least as fast as b), ``"faster"`` (a > b) or
    ``"much_faster"`` (a ≫ b); ``tolerance`` is the
    kind's threshold (see :mod:`adamlab.lab.claims`); ``text`` is the claim in the paper's words.
    """

    panel: str
    kind: str
    a: str
    b: str
    text: str
    tolerance: float

    def __post_init__(self) -> None:
        _check_choice("claim kind", self.kind, CLAIM_KINDS)


@dataclass(frozen=True)
class TaskSpec:
    """A unit of work that is not a training run: ``function`` (a key of :data:`adamlab.lab.runner.TASKS`)
    called with ``settings`` and the seed, returning a JSON-ready dict, saved as one run file like a training
    run's (the theory's online-learning experiments are tasks)."""

    name: str
    function: str
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExperimentSpec:
    """A whole experiment (one figure of the paper): its panels and tasks, seeds, claims, and report notes.

    Seeds: the grid search (per panel and optimiser, the setting with the lowest smoothed final cost, see
    :func:`adamlab.lab.runner.grid_search`) trains every setting with the first ``search_seeds`` of ``seeds``
    (``None``: all of them); the remaining seeds are trained at the chosen setting only, so that every
    verdict is decided over all ``seeds`` while the grid costs one seed. ``notes`` say how this run differs
    from the paper (quick mode, stand-in data sets). ``report``: a key of
    :data:`adamlab.lab.report.REPORTS`, the function that writes the report (``"curves"``: the figure's
    training-cost curves, claims and grids).
    """

    name: str
    title: str
    panels: tuple[PanelSpec, ...] = ()
    seeds: tuple[int, ...] = (0,)
    claims: tuple[ClaimSpec, ...] = ()
    quick: bool = False
    notes: tuple[str, ...] = ()
    search_seeds: int | None = 1
    tasks: tuple[TaskSpec, ...] = ()
    report: str = "curves"

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ValueError("seeds must not be empty")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {self.seeds}")
        if self.search_seeds is not None and self.search_seeds < 1:
            raise ValueError(f"search_seeds must be >= 1 or None, got {self.search_seeds}")
        names = [p.name for p in self.panels] + [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"panel and task names must be unique, got {names}")
        for claim in self.claims:
            panel = self.panel(claim.panel)
            panel.optimizer(claim.a)
            panel.optimizer(claim.b)

    @property
    def grid_seeds(self) -> tuple[int, ...]:
        """The seeds every grid point is trained with."""
        return self.seeds if self.search_seeds is None else self.seeds[: self.search_seeds]

    @property
    def extra_seeds(self) -> tuple[int, ...]:
        """The seeds trained at the chosen setting only."""
        return self.seeds[len(self.grid_seeds) :]

    def panel(self, name: str) -> PanelSpec:
        for p in self.panels:
            if p.name == name:
                return p
        raise KeyError(f"experiment {self.name!r} has no panel {name!r}; it has {[p.name for p in self.panels]}")

    # -- JSON ---------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        return json.loads(json.dumps(asdict(self)))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExperimentSpec:
        """The inverse of :meth:`to_dict` (fields missing in an older ``spec.json`` take their defaults)."""

        def panel(p: dict[str, Any]) -> PanelSpec:
            plot = dict(p["plot"])
            for lim in ("xlim", "ylim"):
                if plot.get(lim) is not None:
                    plot[lim] = tuple(plot[lim])
            return PanelSpec(
                name=p["name"],
                title=p["title"],
                dataset=DatasetSpec(**p["dataset"]),
                model=ModelSpec(**{**p["model"], "hidden": tuple(p["model"]["hidden"])}),
                optimizers=tuple(
                    OptimizerSpec(**{**o, "grid": {k: tuple(v) for k, v in o["grid"].items()}}) for o in p["optimizers"]
                ),
                epochs=p["epochs"],
                batch_size=p["batch_size"],
                plot=PlotSpec(**plot),
                paper=p["paper"],
                probes=tuple(p.get("probes", ())),
            )

        return cls(
            name=d["name"],
            title=d["title"],
            panels=tuple(panel(p) for p in d["panels"]),
            seeds=tuple(d["seeds"]),
            claims=tuple(ClaimSpec(**c) for c in d["claims"]),
            quick=d["quick"],
            notes=tuple(d["notes"]),
            search_seeds=d.get("search_seeds"),
            tasks=tuple(TaskSpec(**t) for t in d.get("tasks", ())),
            report=d.get("report", "curves"),
        )

    @classmethod
    def from_json(cls, text: str) -> ExperimentSpec:
        return cls.from_dict(json.loads(text))
