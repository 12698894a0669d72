"""Figure 2a's spec: the paper's network, optimisers, minibatch and axes, our recorded choices, and a short
lab run of the dropout MLP through the runner on a synthetic set (dropout on in training, off in evaluation)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from adamlab.lab import results as R
from adamlab.lab.datasets import TrainingData, register_dataset
from adamlab.lab.experiments.fig2a import FULL_EPOCHS, QUICK_EXAMPLES, build_spec
from adamlab.lab.networks import dropout_mlp, parameter_count
from adamlab.lab.spec import DatasetSpec, ExperimentSpec, OptimizerSpec


def test_spec_is_the_papers_setup():
    spec = build_spec()
    (panel,) = spec.panels
    assert [o.label for o in panel.optimizers] == ["AdaGrad", "RMSProp", "SGDNesterov", "AdaDelta", "Adam"]
    assert [o.optimizer for o in panel.optimizers] == ["adagrad", "rmsprop", "sgd", "adadelta", "adam"]
    assert panel.epochs == FULL_EPOCHS == 200 and panel.batch_size == 128
    m = panel.model
    assert (m.kind, m.hidden, m.input_dropout, m.hidden_dropout, m.l2, m.init_std) == (
        "mlp",
        (1000, 1000),
        0.2,
        0.5,
        0.0,
        0.01,
    )
    assert panel.plot.yscale == "log" and panel.plot.xlim == (0, 200)
    sgd = panel.optimizer("sgd_nesterov")
    assert sgd.fixed["nesterov"] is True and set(sgd.grid) == {"lr", "momentum"}
    assert all(len(o.grid["lr"]) >= 3 for o in panel.optimizers)  # a grid, not a guess
    # "Adam converges fastest": Adam against each of the four others
    assert sorted(c.b for c in spec.claims) == ["adadelta", "adagrad", "rmsprop", "sgd_nesterov"]
    assert all(c.a == "adam" and c.kind == "faster" for c in spec.claims)
    assert len(spec.seeds) == 3 and not spec.quick


def test_quick_spec_says_so_and_round_trips():
    spec = build_spec(quick=True)
    assert spec.quick and spec.notes[0].startswith("QUICK RUN") and len(spec.seeds) == 2
    (panel,) = spec.panels
    assert panel.dataset.options["subsample"] == QUICK_EXAMPLES and panel.epochs < 200
    assert all(len(o.settings()) == 2 for o in panel.optimizers)
    assert ExperimentSpec.from_json(spec.to_json()).to_dict() == spec.to_dict()
    with pytest.raises(ValueError, match="seeds must be >= 1"):
        build_spec(seeds=0)


def test_the_lab_builds_the_papers_network():
    from adamlab.lab.models import build_model

    model = build_model(build_spec().panels[0].model, 784, 10)
    assert parameter_count(model) == parameter_count(dropout_mlp()) == 1_796_010
    assert (model.input_dropout, model.hidden_dropout) == (0.2, 0.5)


def _pixels(options, data_dir):
    """A tiny MNIST-like set: 784 values in [0, 1], 10 classes depending on the pixels."""
    rng = np.random.default_rng(0)
    n = int(options.get("n", 256))
    X = rng.random((n, 784), dtype=np.float32)
    y = (X[:, :10].argmax(axis=1)).astype(np.int64)
    return TrainingData(X, y, 10, {"description": f"synthetic pixels ({n})", "stand_in_for": None})


def test_a_short_lab_run_trains_the_dropout_mlp(tmp_path):
    """Two epochs of Adam through the runner: the cost (evaluated without dropout) falls, and the run record
    carries Adam's §2.1 diagnostics."""
    from adamlab.lab.runner import run_spec

    register_dataset("test-pixels", _pixels)
    spec = build_spec(quick=True, seeds=1)
    panel = dataclasses.replace(
        spec.panels[0],
        dataset=DatasetSpec("test-pixels", {"n": 256}),
        optimizers=(OptimizerSpec("adam", "Adam", "adam", {}, {"lr": (1e-3,)}),),
        epochs=2,
    )
    spec = dataclasses.replace(spec, panels=(panel,), claims=())
    run_spec(spec, tmp_path, progress=False)
    record = R.read_json(R.run_path(tmp_path, panel.name, "adam", {"lr": 1e-3}, spec.seeds[0]))
    costs = [h["train_cost"] for h in record["history"]]
    assert record["complete"] and not record["diverged"] and len(costs) == 3
    assert costs[-1] < costs[0]
    assert record["history"][-1]["diagnostics"]["step_over_lr"]["count"] == 1_796_010
