"""The runner: same initial weights, grid search, per-epoch files, resume, determinism, diverged runs."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from adamlab.lab import results as R
from adamlab.lab.datasets import DATASETS, TrainingData, register_dataset
from adamlab.lab.runner import make_optimizer, run_spec, select_best
from adamlab.lab.spec import ExperimentSpec, OptimizerSpec
from test_lab_helpers import tiny_panel, tiny_spec


def _histories(out, spec, keep=("train_cost", "train_nll", "train_accuracy", "diagnostics")):
    runs = {}
    for panel in spec.panels:
        for opt in panel.optimizers:
            for setting in opt.settings():
                for seed in spec.seeds:
                    record = R.read_json(R.run_path(out, panel.name, opt.key, setting, seed))
                    runs[(panel.name, opt.key, str(setting), seed)] = [
                        {k: h[k] for k in keep} for h in record["history"]
                    ]
    return runs


def test_every_optimizer_starts_from_the_same_weights(tmp_path):
    spec = tiny_spec(epochs=1, seeds=(0, 1))
    run_spec(spec, tmp_path, progress=False)
    for seed in (0, 1):
        records = [
            R.read_json(R.run_path(tmp_path, "p", o.key, s, seed))
            for o in spec.panels[0].optimizers
            for s in o.settings()
        ]
        assert len({r["init_sha256"] for r in records}) == 1
        assert len({r["history"][0]["train_cost"] for r in records}) == 1
    seeds = [R.read_json(R.run_path(tmp_path, "p", "adagrad", {"lr": 0.1}, s))["init_sha256"] for s in (0, 1)]
    assert seeds[0] != seeds[1]


def test_results_are_written_after_every_epoch(tmp_path):
    seen = []

    def check(path, epoch, entry):
        record = R.read_json(path)
        assert [h["epoch"] for h in record["history"]] == list(range(epoch + 1))
        assert record["complete"] == (epoch == 3)
        seen.append(epoch)

    spec = tiny_spec(epochs=3)
    run_spec(spec, tmp_path, progress=False, on_epoch=check)
    assert seen == [1, 2, 3] * 4  # four runs
    assert not list(tmp_path.rglob("*.ckpt.pt")), "checkpoints of finished runs are removed"
    assert not list(tmp_path.rglob("*.tmp")), "no temporary files are left"
    for name in ("spec.json", "p/grid.json", "p/grid.csv", "p/curves.csv", "p/data.json", "p/init_seed0.pt"):
        assert (tmp_path / name).is_file(), name


def test_adam_runs_record_diagnostics_and_baselines_do_not(tmp_path):
    spec = tiny_spec(epochs=2)
    run_spec(spec, tmp_path, progress=False)
    adam = R.read_json(R.run_path(tmp_path, "p", "adam", {"lr": 0.1}, 0))["history"]
    assert adam[0]["diagnostics"] is None
    for h in adam[1:]:
        for name in ("step_over_lr", "snr"):
            q = h["diagnostics"][name]
            assert 0 <= q["q50"] <= q["q90"] <= q["q99"] <= q["max"]
    sgd = R.read_json(R.run_path(tmp_path, "p", "sgd_nesterov", {"lr": 0.05}, 0))["history"]
    assert all(h["diagnostics"] is None for h in sgd)


def test_every_epoch_records_its_training_seconds_within_the_whole_epoch(tmp_path):
    spec = tiny_spec(epochs=3)
    run_spec(spec, tmp_path, progress=False)
    history = R.read_json(R.run_path(tmp_path, "p", "adam", {"lr": 0.1}, 0))["history"]
    assert history[0]["seconds"] == history[0]["train_seconds"] == 0.0  # epoch 0: the initial evaluation only
    for h in history[1:]:
        # train_seconds: the minibatch loop alone; seconds: the whole epoch (with the full-set evaluation)
        assert 0.0 < h["train_seconds"] <= h["seconds"]
        assert h["train_cpu_seconds"] > 0.0  # the loop's CPU time (one torch thread: about its wall time)


class _Stop(Exception):
    pass


@pytest.mark.parametrize("sparse", [False, True])
def test_a_resumed_run_gives_the_numbers_of_an_uninterrupted_one(tmp_path, sparse):
    spec = tiny_spec(sparse=sparse, dropout=0.3, epochs=4)
    run_spec(spec, tmp_path / "whole", progress=False)

    calls = []

    def interrupt(path, epoch, entry):
        calls.append(epoch)
        if len(calls) == 6:  # in the second run, after its 2nd epoch
            raise _Stop

    with pytest.raises(_Stop):  # a checkpoint after every epoch
        run_spec(spec, tmp_path / "cut", progress=False, on_epoch=interrupt, checkpoint_every_s=0)
    assert list((tmp_path / "cut").rglob("*.ckpt.pt")), "the interrupted run left a checkpoint"
    resumed = []
    run_spec(spec, tmp_path / "cut", progress=False, on_epoch=lambda p, e, _: resumed.append((p.parent.name, e)))
    assert resumed[:2] == [("adam", 3), ("adam", 4)], "the interrupted run resumes at epoch 3; the first is skipped"
    assert _histories(tmp_path / "cut", spec) == _histories(tmp_path / "whole", spec)
    record = R.read_json(R.run_path(tmp_path / "cut", "p", "adam", {"lr": 0.1}, 0))
    assert record["resumed_at_epoch"] == [2]


def test_without_a_checkpoint_yet_an_interrupted_run_starts_again_to_the_same_numbers(tmp_path):
    """The default checkpoints once a minute: a run stopped sooner (its run file already holds 2 epochs) has no
    checkpoint; run again, it trains from epoch 1 and ends with the numbers of an uninterrupted run."""
    spec = tiny_spec(dropout=0.3, epochs=4)
    run_spec(spec, tmp_path / "whole", progress=False)
    calls = []

    def interrupt(path, epoch, entry):
        calls.append(epoch)
        if len(calls) == 6:
            raise _Stop

    with pytest.raises(_Stop):
        run_spec(spec, tmp_path / "cut", progress=False, on_epoch=interrupt)
    assert not list((tmp_path / "cut").rglob("*.ckpt.pt")), "tiny epochs: no checkpoint within the first minute"
    cut = R.read_json(R.run_path(tmp_path / "cut", "p", "adam", {"lr": 0.1}, 0))
    assert len(cut["history"]) == 3 and not cut["complete"]
    resumed = []
    run_spec(spec, tmp_path / "cut", progress=False, on_epoch=lambda p, e, _: resumed.append((p.parent.name, e)))
    assert resumed[:4] == [("adam", 1), ("adam", 2), ("adam", 3), ("adam", 4)]
    assert _histories(tmp_path / "cut", spec) == _histories(tmp_path / "whole", spec)


def test_a_bad_checkpoint_interval_is_refused(tmp_path):
    for bad in (-1, "60", float("nan"), True):
        with pytest.raises(ValueError, match="checkpoint_every_s must be a number of seconds >= 0"):
            run_spec(tiny_spec(epochs=1), tmp_path, progress=False, checkpoint_every_s=bad)


def test_a_complete_run_is_not_trained_again(tmp_path):
    spec = tiny_spec(epochs=2)
    run_spec(spec, tmp_path, progress=False)
    calls = []
    run_spec(spec, tmp_path, progress=False, on_epoch=lambda *a: calls.append(a))
    assert calls == []


def test_runs_are_deterministic_for_a_seed(tmp_path):
    spec = tiny_spec(sparse=True, dropout=0.5, epochs=3)
    run_spec(spec, tmp_path / "a", progress=False)
    torch.manual_seed(123)  # the global generator must not matter
    run_spec(spec, tmp_path / "b", progress=False)
    assert _histories(tmp_path / "a", spec) == _histories(tmp_path / "b", spec)
    other = dataclasses.replace(spec, seeds=(1,))
    run_spec(other, tmp_path / "c", progress=False)
    a = R.read_json(R.run_path(tmp_path / "a", "p", "adam", {"lr": 0.1}, 0))["history"][-1]["train_cost"]
    c = R.read_json(R.run_path(tmp_path / "c", "p", "adam", {"lr": 0.1}, 1))["history"][-1]["train_cost"]
    assert a != c


def test_grid_search_picks_the_lowest_final_cost_and_never_a_diverged_run(tmp_path):
    panel = tiny_panel("p", epochs=3)
    panel = dataclasses.replace(
        panel,
        optimizers=(
            # lr=0 never moves; lr=1e6 diverges; lr=0.05 learns.
            OptimizerSpec("sgd_nesterov", "SGD", "sgd", {"momentum": 0.9, "nesterov": True}, {"lr": (0.0, 0.05, 1e6)}),
        ),
    )
    spec = ExperimentSpec("t", "t", (panel,))
    run_spec(spec, tmp_path, progress=False)
    grid = R.read_grid(tmp_path, "p")["optimizers"]["sgd_nesterov"]
    assert grid["best"] == "lr=0.05"
    rows = {r["setting_id"]: r for r in grid["rows"]}
    assert rows["lr=1e+06"]["mean_final_cost"] is None
    diverged = R.read_json(R.run_path(tmp_path, "p", "sgd_nesterov", {"lr": 1e6}, 0))
    assert diverged["diverged"] and diverged["complete"] and len(diverged["history"]) < 4
    assert rows["lr=0.05"]["mean_final_cost"] < rows["lr=0"]["mean_final_cost"]
    assert grid["best_at_grid_edge"] == []
    curves = (tmp_path / "p" / "curves.csv").read_text().splitlines()
    assert curves[0] == "epoch,sgd_nesterov,sgd_nesterov_min,sgd_nesterov_max" and len(curves) == 5


def test_select_best():
    assert select_best({"a": 0.3, "b": 0.2, "c": 0.2}) == "b"
    assert select_best({"a": None, "b": math.nan, "c": 5.0}) == "c"
    assert select_best({"a": math.inf, "b": 1.0}) == "b"


def test_an_out_dir_holding_another_spec_is_refused(tmp_path):
    run_spec(tiny_spec(epochs=1), tmp_path, progress=False)
    with pytest.raises(R.ResultsError, match="different spec"):
        run_spec(tiny_spec(epochs=2), tmp_path, progress=False)


def test_registered_datasets_and_unknown_names(tmp_path, monkeypatch):
    import numpy as np

    def loader(options, data_dir):
        x = np.eye(4, dtype=np.float32).repeat(8, axis=0)
        return TrainingData(x, np.arange(32) % 2, 2, {"description": "eye", "stand_in_for": None})

    monkeypatch.setitem(DATASETS, "eye", DATASETS.get("eye"))
    register_dataset("eye", loader)
    panel = dataclasses.replace(
        tiny_panel("p", epochs=1), dataset=dataclasses.replace(tiny_panel().dataset, name="eye")
    )
    run_spec(ExperimentSpec("t", "t", (panel,)), tmp_path / "ok", progress=False)
    assert R.read_json(tmp_path / "ok" / "p" / "data.json")["description"] == "eye"
    bad = dataclasses.replace(panel, dataset=dataclasses.replace(panel.dataset, name="nope"))
    with pytest.raises(ValueError, match=r"unknown dataset 'nope'; known: .*mnist"):
        run_spec(ExperimentSpec("t", "t", (bad,)), tmp_path / "bad", progress=False)
    with pytest.raises(ValueError, match="unknown optimizer 'nope'; known: adadelta, adagrad, adam"):
        make_optimizer("nope", [torch.zeros(1, requires_grad=True)])


def test_every_baseline_and_adamlab_optimizer_checkpoints_with_weights_only(tmp_path):
    panel = dataclasses.replace(
        tiny_panel("p", epochs=3),
        optimizers=tuple(
            OptimizerSpec(name, name, name, {}, {"lr": (0.01,)})
            for name in ("adam", "adamax", "sgd", "adagrad", "rmsprop", "adadelta")
        ),
    )
    spec = ExperimentSpec("t", "t", (panel,))
    run_spec(spec, tmp_path / "whole", progress=False)

    def stop(path, epoch, entry):
        if epoch == 2:
            raise _Stop

    for _ in panel.optimizers:
        try:
            run_spec(spec, tmp_path / "cut", progress=False, on_epoch=stop)
        except _Stop:
            pass
    run_spec(spec, tmp_path / "cut", progress=False)
    assert _histories(tmp_path / "cut", spec) == _histories(tmp_path / "whole", spec)


def test_descriptive_parts_of_a_spec_may_change_without_retraining(tmp_path):
    spec = tiny_spec(epochs=1)
    run_spec(spec, tmp_path, progress=False)
    reworded = dataclasses.replace(spec, title="new title", notes=("reworded",), claims=spec.claims[:1])
    calls = []
    run_spec(reworded, tmp_path, progress=False, on_epoch=lambda *a: calls.append(a))
    assert calls == [] and R.read_spec(tmp_path) == reworded


def test_training_flushes_subnormals_and_restores_them_afterwards(tmp_path):
    # x86 FTZ/DAZ while the lab trains (subnormal weights made the MLP's products 35x slower), off afterwards.
    tiny = torch.tensor([1e-40], dtype=torch.float32)  # subnormal in float32 (the smallest normal is 1.2e-38)
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush subnormals")
    torch.set_flush_denormal(False)
    seen: list[float] = []
    spec = tiny_spec(epochs=1)
    run_spec(spec, tmp_path, progress=False, on_epoch=lambda *_: seen.append(float(tiny * 1.0)))
    assert seen and all(v == 0.0 for v in seen)  # flushed during training
    assert float(tiny * 1.0) > 0.0  # and kept again afterwards
    record = R.read_json(R.run_path(tmp_path, "p", "adam", {"lr": 0.1}, 0))
    assert record["flush_denormals"] is True
