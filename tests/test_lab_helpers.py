"""Tiny experiments for the lab's tests (synthetic data only: no files, no network), and checks of them."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from adamlab.lab import results as R
from adamlab.lab.runner import grid_search
from adamlab.lab.spec import (
    ClaimSpec,
    DatasetSpec,
    ExperimentSpec,
    ModelSpec,
    OptimizerSpec,
    PanelSpec,
    PlotSpec,
    setting_id,
)


def tiny_panel(name: str = "dense", *, sparse: bool = False, epochs: int = 4, dropout: float = 0.0) -> PanelSpec:
    dataset = DatasetSpec("synthetic-sparse" if sparse else "synthetic-dense", {"n": 300, "d": 12, "classes": 3})
    return PanelSpec(
        name=name,
        title=f"tiny {name}",
        dataset=dataset,
        model=ModelSpec("logistic", input_dropout=dropout, l2=1e-3),
        optimizers=(
            OptimizerSpec("adam", "Adam", "adam", {"lr_decay": "sqrt"}, {"lr": (0.01, 0.1)}),
            OptimizerSpec("sgd_nesterov", "SGD Nesterov", "sgd", {"momentum": 0.9, "nesterov": True}, {"lr": (0.05,)}),
            OptimizerSpec("adagrad", "AdaGrad", "adagrad", {}, {"lr": (0.1,)}),
        ),
        epochs=epochs,
        batch_size=32,
        plot=PlotSpec(ylim=(0.2, 1.2)),
        paper="a tiny synthetic panel",
    )


def tiny_spec(
    *, sparse: bool = False, epochs: int = 4, dropout: float = 0.0, seeds=(0,), search_seeds: int | None = None
) -> ExperimentSpec:
    return ExperimentSpec(
        name="tiny",
        title="tiny experiment",
        panels=(tiny_panel("p", sparse=sparse, epochs=epochs, dropout=dropout),),
        seeds=tuple(seeds),
        claims=(
            ClaimSpec("p", "approx", "adam", "sgd_nesterov", "Adam ≈ SGD", 0.05),
            ClaimSpec("p", "faster", "adam", "adagrad", "Adam faster than AdaGrad", 0.01),
        ),
        quick=True,
        notes=("a test run",),
        search_seeds=search_seeds,
    )


def fake_results(out: Path, spec: ExperimentSpec, curves: dict[str, dict[str, list[float]]]) -> None:
    """Write run files with the given training-cost curves ``{panel: {"<opt>/<setting_id>": curve}}``
    (every other grid point gets a flat curve at 10), then the grid search, as the runner would."""
    R.write_json(out / R.SPEC_FILE, spec.to_dict())
    for panel in spec.panels:
        R.write_json(out / panel.name / "data.json", {"description": "constructed", "stand_in_for": None})
        for opt in panel.optimizers:
            for setting in opt.settings():
                curve = curves.get(panel.name, {}).get(f"{opt.key}/{setting_id(setting)}", [10.0] * (panel.epochs + 1))
                for seed in spec.seeds:
                    R.write_json(
                        R.run_path(out, panel.name, opt.key, setting, seed),
                        {
                            "complete": True,
                            "diverged": not math.isfinite(curve[-1]),
                            "epochs": panel.epochs,
                            "history": [
                                {"epoch": e, "train_cost": c, "diagnostics": None} for e, c in enumerate(curve)
                            ],
                        },
                    )
        grid_search(spec, panel, out)


def test_tiny_spec_round_trips_through_json():
    spec = tiny_spec(sparse=True, dropout=0.5, seeds=(0, 1))
    assert ExperimentSpec.from_json(spec.to_json()) == spec


def test_fake_results_choose_the_lowest_curve(tmp_path):
    spec = tiny_spec(epochs=2)
    fake_results(tmp_path, spec, {"p": {"adam/lr=0.1": [1.0, 0.5, 0.25], "adam/lr=0.01": [1.0, 0.6, 0.3]}})
    grid = R.read_grid(tmp_path, "p")["optimizers"]
    assert grid["adam"]["best"] == "lr=0.1"
    assert grid["adam"]["best_final_cost"] == 0.25


def test_the_grid_search_uses_the_smoothed_final_cost(tmp_path):
    # 20 epochs: the mean of the last 2. lr=0.1 ends lowest on its last epoch alone (a dip to 0.1), but its
    # last two average (0.5 + 0.1)/2 = 0.3 > lr=0.01's (0.28 + 0.28)/2.
    spec = tiny_spec(epochs=20)
    dip = [1.0] * 19 + [0.5, 0.1]
    flat = [1.0] * 19 + [0.28, 0.28]
    fake_results(tmp_path, spec, {"p": {"adam/lr=0.1": dip, "adam/lr=0.01": flat}})
    grid = R.read_grid(tmp_path, "p")["optimizers"]["adam"]
    assert grid["smoothing_window"] == 2
    assert grid["best"] == "lr=0.01" and grid["best_smoothed_cost"] == pytest.approx(0.28)
