"""``adamlab bench train``: both loops train the experiment's model, the ratio is the ratio of the medians, and
bad input is refused with the argument's name."""

from __future__ import annotations

import statistics

import numpy as np
import pytest

from adamlab.bench_train import (
    TARGET_RATIO,
    TRAIN_BENCHES,
    format_result,
    handwritten_epochs,
    run_train_benchmark,
)
from adamlab.cli import main
from adamlab.lab.datasets import TrainingData, load_dataset, register_dataset
from adamlab.lab.spec import DatasetSpec


def _pixels(options, data_dir):
    rng = np.random.default_rng(0)
    n = int(options.get("n", 256))
    X = rng.random((n, 784), dtype=np.float32)
    y = X[:, :10].argmax(axis=1).astype(np.int64)
    return TrainingData(X, y, 10, {"description": f"synthetic pixels ({n})", "stand_in_for": None})


@pytest.fixture(scope="module")
def pixels():
    register_dataset("bench-pixels", _pixels)
    return DatasetSpec("bench-pixels", {"n": 300})


@pytest.mark.parametrize("name", ["fig2a", "fig4"])
def test_both_loops_run_and_the_ratio_is_of_the_medians(name, pixels):
    result = run_train_benchmark(name, epochs=2, rounds=2, dataset=pixels)
    assert result["examples"] == 300 and result["batch_size"] == 128 and result["threads"] == 1
    for side in ("lab", "handwritten"):
        for clock in ("wall", "cpu"):
            each = result[f"{side}_epoch_{clock}_s"]
            assert len(each) == 2 and all(t > 0 for t in each)  # one epoch per round, warm-ups dropped
            assert result[f"median_{side}_{clock}_s"] == statistics.median(each)
    assert result["ratio"] == pytest.approx(result["median_lab_wall_s"] / result["median_handwritten_wall_s"])
    assert result["cpu_ratio"] == pytest.approx(result["median_lab_cpu_s"] / result["median_handwritten_cpu_s"])
    assert result["target_met"] == (result["ratio"] <= TARGET_RATIO)
    assert result["cpu_target_met"] == (result["cpu_ratio"] <= TARGET_RATIO)
    assert "ratio lab / hand-written: wall" in format_result(result)
    assert result["cpu"] and len(result["load_average_before"]) == 3


def test_the_handwritten_loop_lowers_the_objective(pixels):
    """The plain loop really trains the VAE: from the same initial weights, the full-set −ELBO after 8 epochs
    is below the one after 2."""
    from adamlab.bench_train import _bench_panel

    data = load_dataset(pixels)
    costs = []
    for epochs in (2, 8):
        panel = _bench_panel(TRAIN_BENCHES["fig4"], epochs, None, pixels)
        times, cost = handwritten_epochs(panel, data, TRAIN_BENCHES["fig4"].loss, threads=1)
        assert len(times) == epochs - 1 and all(wall > 0 and cpu > 0 for wall, cpu in times)
        costs.append(cost)
    assert costs[1] < costs[0]


def test_bad_input_is_refused(pixels, capsys):
    with pytest.raises(ValueError, match=r"unknown model 'fig9' for bench train; valid: fig2a, .*fig4"):
        run_train_benchmark("fig9")
    with pytest.raises(ValueError, match="epochs must be an integer >= 2"):
        run_train_benchmark("fig2a", epochs=1, dataset=pixels)
    with pytest.raises(ValueError, match="examples must be a positive integer"):
        run_train_benchmark("fig2a", examples=0, dataset=pixels)
    with pytest.raises(SystemExit) as exc:
        main(["bench", "train", "fig9"])
    assert exc.value.code == 2 and "invalid choice: 'fig9'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["bench", "train", "fig2a", "--epochs", "1"])
    assert exc.value.code == 2 and "--epochs must be at least 2" in capsys.readouterr().err


def test_the_lab_and_the_handwritten_loop_alternate_epoch_by_epoch(pixels, monkeypatch):
    """In one round the lab's epochs and the hand-written ones interleave: after the lab's first epoch, every
    lab epoch (its full-set evaluation) is followed by one hand-written epoch."""
    import adamlab.bench_train as bt
    import adamlab.lab.runner as runner

    events = []
    lab_evaluate, hand_epoch = runner.evaluate, bt.HandWritten.epoch

    def logged_evaluate(*args, **kwargs):
        events.append("lab")
        return lab_evaluate(*args, **kwargs)

    def logged_epoch(self):
        events.append("hand")
        return hand_epoch(self)

    monkeypatch.setattr(runner, "evaluate", logged_evaluate)
    monkeypatch.setattr(bt.HandWritten, "epoch", logged_epoch)
    result = run_train_benchmark("fig2a", epochs=3, rounds=1, dataset=pixels)
    # epoch 0's evaluation, then (lab epoch, hand-written epoch) three times
    assert events == ["lab"] + ["lab", "hand"] * 3
    assert len(result["lab_epoch_cpu_s"]) == len(result["handwritten_epoch_cpu_s"]) == 2
