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
    assert spec.quick is quick
    # quick ≥ 2 seeds, full ≥ 3; the grid with the first seed, the others at the chosen settings
    assert spec.seeds == ((3, 4) if quick else (3, 4, 5)) and spec.grid_seeds == (3,)
    assert build_spec(quick=quick, seed=0, seeds=5).seeds == (0, 1, 2, 3, 4)
    mnist, reviews, plain = spec.panel("mnist"), spec.panel("reviews"), spec.panel("reviews_nodropout")
    assert {o.key for o in mnist.optimizers} == {"adam", "sgd_nesterov", "adagrad"}
    assert {o.key for o in reviews.optimizers} == {"adam", "sgd_nesterov", "adagrad", "rmsprop"}
    assert {o.key for o in plain.optimizers} == {o.key for o in reviews.optimizers}
    assert mnist.batch_size == reviews.batch_size == 128
    # §6.1: α/√t for Adam in both logistic-regression experiments; the baselines at a constant rate
    for panel in spec.panels:
        assert panel.optimizer("adam").fixed == {"lr_decay": "sqrt"}
        assert all("lr_decay" not in o.fixed for o in panel.optimizers if o.key != "adam")
    assert mnist.model.l2 > 0 and reviews.model.input_dropout == 0.5 and plain.model.input_dropout == 0.0
    assert plain.dataset == reviews.dataset and reviews.dataset.options["max_features"] == 10000
    sgd = mnist.optimizer("sgd_nesterov")
    assert sgd.optimizer == "sgd" and sgd.fixed["nesterov"] is True
    if quick:
        assert (mnist.epochs, reviews.epochs) < (45, 160)
        assert all(len(o.settings()) == 2 for p in spec.panels for o in p.optimizers)
        assert "QUICK RUN" in spec.notes[0]
    else:
        assert (mnist.epochs, reviews.epochs, plain.epochs) == (45, 160, 160)
        assert len(sgd.settings()) == 18 and len(mnist.optimizer("adam").settings()) == 9
    claims = {(c.panel, c.kind, c.a, c.b) for c in spec.claims}
    assert ("reviews", "much_faster", "adagrad", "sgd_nesterov") in claims
    assert ("reviews_nodropout", "much_faster", "adagrad", "sgd_nesterov") in claims
    assert len(spec.claims) == 6
    with pytest.raises(ValueError, match="seeds must be >= 1"):
        build_spec(seeds=0)


def test_a_directory_of_another_run_is_refused(tmp_path, monkeypatch):
    calls = []
    exp = EXPERIMENTS["fig1"]
    fake = type(exp)("fake", "a fake", lambda out, **kw: calls.append(kw), lambda out: out / "report.md")
    # run() returning None: the registry writes the report; returning a path: that is the report.
    monkeypatch.setitem(EXPERIMENTS, "fake", fake)
    assert run_experiment("fake", out_dir=tmp_path, seed=1, progress=False) == tmp_path / "report.md"
    assert calls == [
        {
            "quick": False,
            "data_dir": None,
            "seed": 1,
            "progress": False,
            "seeds": None,
            "jobs": 1,
            "shard": None,
            "device": "cpu",
        }
    ]
    with pytest.raises(ResultsError, match="holds a run of 'fake'"):
        run_experiment("fake", out_dir=tmp_path, seed=2)
    assert report_experiment(tmp_path) == tmp_path / "report.md"
    own = type(exp)("own", "reports itself", lambda out, **kw: out / "own.md", lambda out: out / "other.md")
    monkeypatch.setitem(EXPERIMENTS, "own", own)
    assert run_experiment("own", out_dir=tmp_path / "own") == tmp_path / "own" / "own.md"
    with pytest.raises(ResultsError, match=r"no experiment\.json"):
        report_experiment(tmp_path / "nothing")
