"""The state_precision experiment (issue 16): its spec is Figures 1 and 2a's panels with Adam by state format
and 1 % claims, and a short lab run on synthetic digits trains all three formats from the same weights."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from adamlab.lab import results as R
from adamlab.lab.datasets import TrainingData, register_dataset
from adamlab.lab.experiments import EXPERIMENTS, fig1, fig2a
from adamlab.lab.experiments.state_precision import LEARNING_RATES, build_spec
from adamlab.lab.spec import DatasetSpec, ExperimentSpec


def test_spec_takes_figure_1_and_2a_panels() -> None:
    spec = build_spec()
    logistic, mlp = spec.panels
    assert logistic.model == next(p for p in fig1.build_spec().panels if p.name == "mnist").model
    assert mlp.model == fig2a.build_spec().panels[0].model and mlp.epochs == fig2a.FULL_EPOCHS
    assert logistic.epochs == fig1.FULL_EPOCHS["mnist"] and len(spec.seeds) == 3 and not spec.quick
    for panel in spec.panels:
        keys = [o.key for o in panel.optimizers]
        assert keys == ["adam_fp32", "adam_bf16", "adam_int8", "adam_fp32_control"]
        assert {o.optimizer for o in panel.optimizers} == {"adam"}
        assert [o.fixed.get("state_precision", "fp32") for o in panel.optimizers] == ["fp32", "bf16", "int8", "fp32"]
        lr = LEARNING_RATES[panel.name]
        assert [o.grid["lr"] for o in panel.optimizers] == [(lr,), (lr,), (lr,), (lr * (1 + 1e-6),)]
    assert all(o.fixed["lr_decay"] == "sqrt" for o in logistic.optimizers)  # Figure 1's Adam: α/√t
    assert [(c.panel, c.kind, c.a, c.b, c.tolerance) for c in spec.claims] == [
        (panel, "approx", a, "adam_fp32", 0.01)
        for panel in ("mnist", "mnist_mlp")
        for a in ("adam_bf16", "adam_int8", "adam_fp32_control")
    ]
    assert "state_precision" in EXPERIMENTS


def test_quick_spec_says_so_and_round_trips() -> None:
    spec = build_spec(quick=True)
    assert spec.quick and spec.notes[0].startswith("QUICK RUN") and len(spec.seeds) == 3
    assert [p.epochs for p in spec.panels] == [fig1.QUICK_EPOCHS["mnist"], fig2a.QUICK_EPOCHS]
    assert spec.panels[1].dataset.options["subsample"] == fig2a.QUICK_EXAMPLES
    assert ExperimentSpec.from_json(spec.to_json()).to_dict() == spec.to_dict()
    with pytest.raises(ValueError, match="seeds must be >= 1"):
        build_spec(seeds=0)


def _digits(options, data_dir):
    rng = np.random.default_rng(1)
    n = int(options.get("n", 300))
    X = rng.random((n, 784), dtype=np.float32)
    y = (X[:, :10].argmax(axis=1)).astype(np.int64)
    return TrainingData(X, y, 10, {"description": f"synthetic digits ({n})", "stand_in_for": None})


def test_a_short_lab_run_judges_the_claims(tmp_path) -> None:
    """Three epochs of both panels (a small MLP for speed) with two seeds: every format starts from the same
    cost, bf16 and int8 end near fp32 without being fp32, and the report carries the six claims."""
    from adamlab.lab.report import write_report
    from adamlab.lab.runner import run_spec

    register_dataset("test-digits", _digits)
    spec = build_spec(quick=True, seeds=2)
    logistic, mlp = spec.panels
    data = DatasetSpec("test-digits", {"n": 300})
    panels = (
        dataclasses.replace(logistic, dataset=data, epochs=3),
        dataclasses.replace(mlp, dataset=data, epochs=3, model=dataclasses.replace(mlp.model, hidden=(64,))),
    )
    spec = dataclasses.replace(spec, panels=panels)
    run_spec(spec, tmp_path, progress=False)
    for panel in panels:
        for seed in spec.seeds:
            costs = {}
            for o in panel.optimizers:
                record = R.read_json(R.run_path(tmp_path, panel.name, o.key, {"lr": o.grid["lr"][0]}, seed))
                assert record["complete"] and not record["diverged"]
                costs[o.key] = [h["train_cost"] for h in record["history"]]
            fp32 = costs["adam_fp32"]
            for key in ("adam_bf16", "adam_int8"):
                assert costs[key][0] == fp32[0]  # the same initial weights
                if panel.name == "mnist":  # (3 epochs of the tiny MLP move its cost less than a float32 ulp)
                    assert costs[key][1:] != fp32[1:]  # the state format took effect
                assert costs[key][-1] == pytest.approx(fp32[-1], rel=0.1)
    report = write_report(tmp_path).read_text()
    assert report.count("within 1 % of fp32") >= 6
