"""The experiment registry and Figure 1's spec (built, not trained: no data needed)."""

from __future__ import annotations

import pytest

from adamlab.lab.experiments import EXPERIMENTS, list_experiments, report_experiment, run_experiment
from adamlab.lab.experiments.fig1 import build_spec
from adamlab.lab.results import ResultsError
from adamlab.lab.spec import ExperimentSpec


def test_the_registry_lists_fig1_and_theory():
    names = [name for name, _ in list_experiments()]
    assert {"fig1", "theory"} <= set(names)
    assert names == sorted(names)


def test_unknown_experiment_names_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown experiment 'fig9'; valid experiments: .*fig1.*theory"):
        run_experiment("fig9", out_dir=tmp_path)


@pytest.mark.parametrize("quick", [False, True])
def test_fig1_spec(quick):
    spec = build_spec(quick=quick, seed=3)
    assert ExperimentSpec.from_json(spec.to_json()) == spec
    assert spec.seeds == (3,) and spec.quick is quick
    mnist, reviews = spec.panel("mnist"), spec.panel("reviews")
    assert {o.key for o in mnist.optimizers} == {"adam", "sgd_nesterov", "adagrad"}
    assert {o.key for o in reviews.optimizers} == {"adam", "sgd_nesterov", "adagrad", "rmsprop"}
    assert mnist.batch_size == reviews.batch_size == 128
    assert mnist.optimizer("adam").fixed == {"lr_decay": "sqrt"} and reviews.optimizer("adam").fixed == {}
    assert mnist.model.l2 > 0 and reviews.model.input_dropout == 0.5
    assert reviews.dataset.options["max_features"] == 10000
    sgd = mnist.optimizer("sgd_nesterov")
    assert sgd.optimizer == "sgd" and sgd.fixed["nesterov"] is True
    if quick:
        assert (mnist.epochs, reviews.epochs) < (45, 160)
        assert all(len(o.settings()) == 2 for p in spec.panels for o in p.optimizers)
        assert "QUICK RUN" in spec.notes[0]
    else:
        assert (mnist.epochs, reviews.epochs) == (45, 160)
        assert len(sgd.settings()) == 20 and len(mnist.optimizer("adam").settings()) == 10
    assert len(spec.claims) == 5


def test_a_directory_of_another_run_is_refused(tmp_path, monkeypatch):
    calls = []
    exp = EXPERIMENTS["fig1"]
    fake = type(exp)("fake", "a fake", lambda out, **kw: calls.append(kw), lambda out: out / "report.md")
    # run() returning None: the registry writes the report; returning a path: that is the report.
    monkeypatch.setitem(EXPERIMENTS, "fake", fake)
    assert run_experiment("fake", out_dir=tmp_path, seed=1, progress=False) == tmp_path / "report.md"
    assert calls == [{"quick": False, "data_dir": None, "seed": 1, "progress": False}]
    with pytest.raises(ResultsError, match="holds a run of 'fake'"):
        run_experiment("fake", out_dir=tmp_path, seed=2)
    assert report_experiment(tmp_path) == tmp_path / "report.md"
    own = type(exp)("own", "reports itself", lambda out, **kw: out / "own.md", lambda out: out / "other.md")
    monkeypatch.setitem(EXPERIMENTS, "own", own)
    assert run_experiment("own", out_dir=tmp_path / "own") == tmp_path / "own" / "own.md"
    with pytest.raises(ResultsError, match=r"no experiment\.json"):
        report_experiment(tmp_path / "nothing")
