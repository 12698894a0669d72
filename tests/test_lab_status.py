"""``adamlab reproduce --list``'s estimates (measured epoch times scaled by the number of examples, tasks scaled
by their cost) and ``adamlab status DIR`` reading ``DIR/quick``, against hand-computed numbers."""

from __future__ import annotations

import dataclasses
import shutil

import pytest

from adamlab.cli import main
from adamlab.lab import results as R
from adamlab.lab.runner import run_spec
from adamlab.lab.spec import DatasetSpec, ExperimentSpec, TaskSpec
from adamlab.lab.status import (
    bench_train_estimate,
    estimate_seconds,
    panel_epoch_estimate,
    register_task_cost,
    status_text,
)
from test_lab_helpers import tiny_spec


def _with_data(spec: ExperimentSpec, **options) -> ExperimentSpec:
    panel = spec.panels[0]
    data = DatasetSpec("synthetic-dense", {**panel.dataset.options, **options})
    return dataclasses.replace(spec, panels=(dataclasses.replace(panel, dataset=data),))


def _measured(out, spec: ExperimentSpec, n_examples: int, seconds: list[float]) -> None:
    """A results directory of ``spec`` whose one run measured ``seconds`` per epoch on ``n_examples``."""
    R.write_json(out / R.SPEC_FILE, spec.to_dict())
    panel = spec.panels[0]
    R.write_json(out / panel.name / "data.json", {"description": "measured", "n_examples": n_examples})
    history = [{"epoch": 0, "seconds": 0.0}] + [{"epoch": e + 1, "seconds": s} for e, s in enumerate(seconds)]
    R.write_json(R.run_path(out, panel.name, "adam", {"lr": 0.1}, 0), {"complete": False, "history": history})


def test_a_quick_runs_epoch_time_is_scaled_to_the_examples_of_the_spec_estimated(tmp_path):
    quick = _with_data(tiny_spec(epochs=4), subsample=1000)
    _measured(tmp_path / "quick", quick, 1000, [2.0, 4.0])  # 3 s per epoch of 1,000 examples
    target = _with_data(tiny_spec(epochs=10), subsample=6000)
    epoch, where = panel_epoch_estimate(target.panels[0], [tmp_path / "quick"])
    assert epoch == pytest.approx(3.0 * 6000 / 1000)  # 18 s
    assert "3.00 s per epoch of 1,000 examples" in where
    # 4 runs (Adam's two rates, SGD, AdaGrad; one seed) × 10 epochs × 18 s
    seconds, missing = estimate_seconds(target, [tmp_path / "quick"])
    assert missing == [] and seconds == pytest.approx(4 * 10 * 18.0)
    # from the fastest epoch instead (2 s per 1,000 examples): 4 runs × 10 epochs × 12 s
    assert estimate_seconds(target, [tmp_path / "quick"], "min")[0] == pytest.approx(4 * 10 * 12.0)
    with pytest.raises(ValueError, match="statistic must be 'mean' or 'min'"):
        estimate_seconds(target, [tmp_path / "quick"], "median")


def test_the_quiet_core_estimate_comes_from_bench_trains_cpu_time_per_example(tmp_path):
    target = _with_data(tiny_spec(epochs=10), subsample=6000)
    bench = tmp_path / "bench.json"
    R.write_json(bench, {"median_lab_cpu_s": 1.5, "examples": 1000})  # 1.5 ms of CPU per example per epoch
    seconds, where = bench_train_estimate("tiny", target, [], bench_file=bench)
    # 4 runs (Adam's two rates, SGD, AdaGrad; one seed) × 10 epochs × 6,000 examples × 1.5 ms
    assert seconds == pytest.approx(4 * 10 * 6000 * 1.5e-3)
    assert "1.500 ms of CPU per example" in where
    assert bench_train_estimate("tiny", target, [], bench_file=tmp_path / "none.json") is None


def test_the_full_size_comes_from_a_run_of_the_whole_set(tmp_path):
    quick = _with_data(tiny_spec(epochs=4), subsample=1000)
    _measured(tmp_path / "quick", quick, 1000, [3.0])
    whole = tiny_spec(epochs=2)  # the same data set, no subsample: 300 examples recorded in its data.json
    _measured(tmp_path / "full", whole, 300, [])  # no epoch measured there, only its size
    epoch, _ = panel_epoch_estimate(whole.panels[0], [tmp_path / "full", tmp_path / "quick"])
    assert epoch == pytest.approx(3.0 * 300 / 1000)
    # with no run of the whole set anywhere, the data set is loaded to count it (synthetic: n = 300)
    epoch, _ = panel_epoch_estimate(whole.panels[0], [tmp_path / "quick"])
    assert epoch == pytest.approx(0.9)
    assert estimate_seconds(whole, [tmp_path / "nowhere"]) == (None, ["p"])


def test_a_task_measured_with_other_settings_is_scaled_by_its_cost(tmp_path):
    register_task_cost("tiny-task", lambda settings: sum(n * n for n in settings["minibatches"]))
    spec = dataclasses.replace(
        tiny_spec(epochs=1), panels=(), claims=(), tasks=(TaskSpec("t", "tiny-task", {"minibatches": [10, 25, 50]}),)
    )
    R.write_json(tmp_path / R.SPEC_FILE, spec.to_dict())
    R.write_json(R.task_path(tmp_path, "t", 0), {"settings": {"minibatches": [5, 10, 20]}, "seconds": 16.0})
    seconds, missing = estimate_seconds(spec, [tmp_path])
    assert missing == [] and seconds == pytest.approx(16.0 * (100 + 625 + 2500) / (25 + 100 + 400))
    # the same settings: the measured time itself
    R.write_json(R.task_path(tmp_path, "t", 0), {"settings": {"minibatches": [10, 25, 50]}, "seconds": 90.0})
    assert estimate_seconds(spec, [tmp_path])[0] == pytest.approx(90.0)


def test_fig2b_memory_task_cost_predicts_the_full_runs_time():
    from adamlab.lab.experiments.fig2b import FULL_MEMORY_SIZES, QUICK_MEMORY_SIZES, memory_task_cost

    ratio = memory_task_cost({"minibatches": FULL_MEMORY_SIZES}) / memory_task_cost({"minibatches": QUICK_MEMORY_SIZES})
    assert ratio == pytest.approx((10**2 + 25**2 + 50**2) / (5**2 + 10**2 + 20**2))


def test_status_reads_the_quick_run_under_dir_quick(tmp_path, capsys):
    spec = tiny_spec(epochs=1)
    run_spec(spec, tmp_path / "quick", progress=False)
    only_quick = status_text(tmp_path)  # no spec.json in DIR itself, as in docs/results/fig3
    assert f"in {tmp_path / 'quick'}" in only_quick and "4 of 4 runs done" in only_quick
    assert main(["status", str(tmp_path)]) == 0 and "4 of 4 runs done" in capsys.readouterr().out
    both = tmp_path / "both"
    shutil.copytree(tmp_path / "quick", both)
    shutil.copytree(tmp_path / "quick", both / "quick")
    text = status_text(both)
    assert f"in {both}\n" in text and f"in {both / 'quick'}\n" in text
    with pytest.raises(R.ResultsError, match=r"no spec\.json in .* or .*quick"):
        status_text(tmp_path / "empty")
