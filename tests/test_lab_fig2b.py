"""Figure 2b in the lab: the SFO epoch driver against autograd and an uninterrupted run, the memory task
against the parameter count, the report's verdict rules on hand-made curves, and a small end-to-end run."""

from __future__ import annotations

import dataclasses
import io
import math

import numpy as np
import pytest
import torch

from adamlab.lab import results as R
from adamlab.lab.claims import DID_NOT_HOLD, HELD, INCONCLUSIVE
from adamlab.lab.datasets import load_dataset
from adamlab.lab.experiments import fig2b
from adamlab.lab.experiments import fig2b_report as rep
from adamlab.lab.models import MLP, training_loss
from adamlab.lab.runner import EpochContext
from adamlab.lab.spec import DatasetSpec, ExperimentSpec, TaskSpec

L2 = 1e-3


def small_problem(seed: int = 0):
    data = load_dataset(DatasetSpec("synthetic-dense", {"n": 240, "d": 12, "classes": 3}))
    torch.manual_seed(seed)
    model = MLP(12, (16,), 3)

    def loss(index: torch.Tensor) -> torch.Tensor:
        xb, yb = data.batch(index)
        return training_loss(model, xb, yb, L2)

    return data, model, loss


def contexts(data, model, loss, epochs, seed=0):
    g = torch.Generator().manual_seed(seed)
    for epoch in range(1, epochs + 1):
        yield EpochContext(model, data, torch.randperm(data.n_examples, generator=g), 128, loss, epoch)


def flat(model) -> torch.Tensor:
    return torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()


def test_the_subfunctions_sum_to_the_lab_objective_and_its_gradient():
    data, model, loss = small_problem()
    driver = fig2b.SFODriver(model.parameters(), minibatches=5)
    ctx = next(contexts(data, model, loss, 1))
    driver._ctx, driver.parts = ctx, list(torch.tensor_split(ctx.order, 5))
    theta = driver._vector()
    values, grads = zip(*(driver._f_df(theta, i) for i in range(5)))
    model.zero_grad()
    full = loss(torch.arange(data.n_examples))
    full.backward()
    expected = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).double().numpy()
    assert sum(values) == pytest.approx(float(full.detach()), rel=1e-6)
    np.testing.assert_allclose(sum(grads), expected, rtol=1e-4, atol=1e-7)


def test_one_epoch_is_one_pass_and_the_cost_falls():
    data, model, loss = small_problem()
    driver = fig2b.SFODriver(model.parameters(), minibatches=6)
    everything = torch.arange(data.n_examples)
    before = float(loss(everything).detach())
    for ctx in contexts(data, model, loss, 4):
        driver.train_epoch(ctx)
        assert driver.sfo.evaluations == 6 * ctx.epoch
    assert float(loss(everything).detach()) < 0.7 * before
    np.testing.assert_array_equal(flat(model).double().numpy(), driver.sfo.theta.astype(np.float32))
    stats = driver.stats()
    assert stats["evaluations"] == 24 and stats["memory_bytes"] > 0


def test_state_dict_survives_torch_save_and_resumes_exactly():
    """Two epochs, a checkpoint through torch.save/torch.load(weights_only=True), two more epochs in a fresh
    driver and model: the same weights as four uninterrupted epochs."""
    data, model, loss = small_problem()
    whole = fig2b.SFODriver(model.parameters(), minibatches=6)
    for ctx in contexts(data, model, loss, 4):
        whole.train_epoch(ctx)
    expected = flat(model)

    data, model, loss = small_problem()
    first = fig2b.SFODriver(model.parameters(), minibatches=6)
    ctxs = list(contexts(data, model, loss, 4))
    for ctx in ctxs[:2]:
        first.train_epoch(ctx)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": first.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)

    data, model2, loss2 = small_problem(seed=7)  # other weights, overwritten by the checkpoint
    model2.load_state_dict(ckpt["model"])
    resumed = fig2b.SFODriver(model2.parameters(), minibatches=6)
    resumed.load_state_dict(ckpt["optimizer"])
    for ctx in ctxs[2:]:
        resumed.train_epoch(dataclasses.replace(ctx, model=model2, loss=loss2))
    torch.testing.assert_close(flat(model2), expected, rtol=0, atol=0)


def test_a_checkpoint_of_the_earlier_driver_with_its_own_seconds_still_loads():
    """The driver no longer keeps its own cumulative seconds (the runner's per-epoch ``train_seconds`` is the
    one measure); a checkpoint written while it did (with ``"train_seconds"``) resumes all the same."""
    data, model, loss = small_problem()
    driver = fig2b.SFODriver(model.parameters(), minibatches=6)
    ctxs = list(contexts(data, model, loss, 2))
    driver.train_epoch(ctxs[0])
    state = driver.state_dict()
    assert "train_seconds" not in state and "train_seconds" not in driver.stats()
    resumed = fig2b.SFODriver(model.parameters(), minibatches=6)
    resumed.load_state_dict({**state, "train_seconds": 12.5})
    resumed.train_epoch(ctxs[1])
    assert resumed.sfo is not None and resumed.sfo.passes >= 2 - 1e-9


def test_a_non_finite_loss_leaves_nan_weights_so_the_runner_stops_the_run():
    data, model, loss = small_problem()
    driver = fig2b.SFODriver(model.parameters(), minibatches=3)
    ctx = next(contexts(data, model, lambda index: loss(index) * math.nan, 1))
    driver.train_epoch(ctx)
    assert torch.isnan(flat(model)).all()


def test_driver_rejects_a_bad_number_of_minibatches():
    with pytest.raises(ValueError, match="minibatches must be a positive integer"):
        fig2b.SFODriver([torch.zeros(2, requires_grad=True)], minibatches=0)


def test_memory_task_is_linear_with_three_basis_columns_per_minibatch():
    """Slope = 3 columns of M float64 per minibatch (K_max = 3N), M the network's parameter count."""
    out = fig2b.memory_task({"minibatches": [2, 4, 8], "features": 200, "hidden": [100], "classes": 3}, 0, False)
    m = 200 * 100 + 100 + 100 * 3 + 3
    assert out["parameters"] == m
    assert out["max_residual_fraction"] < 0.02
    assert out["slope_bytes_per_minibatch"] == pytest.approx(3 * m * 8, rel=0.05)
    np.testing.assert_allclose(out["tracemalloc_bytes"], out["bytes"], rtol=0.05)


def record(costs, seconds):
    return {"history": [{"train_cost": c, "seconds": s} for c, s in zip(costs, seconds)]}


def test_wall_clock_rule():
    adam = [record([2, 1, 0.5, 0.25], [0, 1, 1, 1]), record([2, 1.1, 0.5, 0.2], [0, 1, 1, 1])]
    sfo = [record([2, 1.5, 1.2], [0, 2, 2]), record([2, 1.6, 1.1], [0, 2, 2])]
    # at T = 3 s: Adam 0.25 / 0.2; SFO halfway between 1.5 and 1.2 → 1.35 / 1.35
    v = rep.wall_clock(adam, sfo)
    assert v["values"] == pytest.approx([(1.35 - 0.25) / 1.35, (1.35 - 0.2) / 1.35])
    assert v["status"] == HELD
    fast = [record([2, 1, 0.5, 0.25 + d], [0, 1, 1, 1]) for d in (0.0, 0.01, 0.02)]
    slow = [record([2, 1.5, 1.2], [0, 2, 2]) for _ in range(3)]
    assert rep.wall_clock(slow, fast)["status"] == DID_NOT_HOLD  # the roles swapped, three close seeds
    assert rep.wall_clock(adam[:1], sfo[:1])["status"] == INCONCLUSIVE  # one seed: no interval


def test_wall_clock_uses_the_training_loop_seconds_where_present():
    # train_seconds (the training loop alone) is used where an epoch has it; the whole epoch's seconds otherwise.
    run = {"history": [{"train_cost": 1.0, "seconds": 0.0}, {"train_cost": 0.5, "seconds": 5.0, "train_seconds": 2.0}]}
    old = {"history": [{"train_cost": 1.0, "seconds": 0.0}, {"train_cost": 0.5, "seconds": 5.0}]}
    assert rep._seconds(run) == [0.0, 2.0]
    assert rep._seconds(old) == [0.0, 5.0]


def test_wall_clock_prefers_cpu_time_common_to_both_runs():
    # The training loop's CPU time where both runs of a pair record it; otherwise the best field both have.
    def rec(costs, **fields):
        history = [{"train_cost": costs[0], "seconds": 0.0}]
        for i, c in enumerate(costs[1:]):
            history.append({"train_cost": c, **{k: v[i] for k, v in fields.items()}})
        return {"history": history}

    cpu = rec([1.0, 0.5, 0.25], train_cpu_seconds=[1.0, 1.0], train_seconds=[4.0, 4.0], seconds=[5.0, 5.0])
    wall_only = rec([1.0, 0.8, 0.6], train_seconds=[2.0, 2.0], seconds=[3.0, 3.0])
    assert rep.time_field(cpu) == "train_cpu_seconds" and rep._seconds(cpu) == [0.0, 1.0, 2.0]
    assert rep.time_field(cpu, wall_only) == "train_seconds"
    # per pass: SFO (wall_only) 4 s against Adam's 8 s of train_seconds, their common field
    assert rep.time_ratio([cpu], [wall_only], steps=(10, 1))["per_pass"] == pytest.approx([0.5])
    # at T = 4 s (the shorter run): Adam 0.5, SFO 0.6 → gap (0.6 − 0.5) / 0.6
    assert rep.wall_clock([cpu], [wall_only])["values"] == pytest.approx([0.1 / 0.6])


def test_time_ratio_rule():
    adam = [record([1, 1], [0, 10]), record([1, 1], [0, 10])]
    v = rep.time_ratio(adam, [record([1, 1], [0, 70]), record([1, 1], [0, 72])], steps=(100, 10))
    assert v["per_pass"] == pytest.approx([7.0, 7.2]) and v["per_step"] == pytest.approx([70.0, 72.0])
    assert v["status"] == HELD
    slow = rep.time_ratio(adam, [record([1, 1], [0, 20]), record([1, 1], [0, 21])], steps=(100, 10))
    assert slow["status"] == DID_NOT_HOLD


def test_memory_rule():
    linear = {"minibatches": [1, 2, 4], "bytes": [10, 20, 40], "tracemalloc_bytes": [10, 20, 40], "parameters": 1}
    assert (
        rep.memory({**linear, "slope_bytes_per_minibatch": 10.0, "intercept_bytes": 0.0, "max_residual_fraction": 0.0})[
            "status"
        ]
        == HELD
    )
    assert (
        rep.memory({**linear, "slope_bytes_per_minibatch": 10.0, "intercept_bytes": 0.0, "max_residual_fraction": 0.3})[
            "status"
        ]
        == DID_NOT_HOLD
    )


def test_stops_converging_rule():
    flat_curves = [record([2, 1, 1.0, 0.99, 1.0, 1.0], [0] * 6), record([2, 1.1, 1.0, 1.0, 1.01, 1.0], [0] * 6)]
    v = rep.stops_converging(flat_curves)
    assert v["status"] == HELD
    falling = [record([2, 1, 0.8, 0.4, 0.2, 0.1], [0] * 6), record([2, 1, 0.8, 0.5, 0.2, 0.12], [0] * 6)]
    assert rep.stops_converging(falling)["status"] == DID_NOT_HOLD
    # E = 5 epochs: mid = epoch 2, smoothed final = last epoch (window 1)
    assert rep.stops_converging(falling)["values"] == pytest.approx([(0.8 - 0.1) / 0.8, (0.8 - 0.12) / 0.8])


def test_spec_quick_and_full():
    quick, full = fig2b.build_spec(quick=True), fig2b.build_spec(quick=False)
    assert quick.quick and any("QUICK RUN" in n for n in quick.notes)
    assert not any("QUICK RUN" in n for n in full.notes)
    assert quick.panel("mlp").optimizer("sfo").fixed == {"minibatches": fig2b.QUICK_MINIBATCHES}
    assert full.panel("mlp").optimizer("sfo").fixed == {"minibatches": fig2b.FULL_MINIBATCHES}
    assert full.panel("mlp").model.l2 == fig2b.L2 and full.panel("mlp_dropout").model.hidden_dropout == 0.5
    assert ExperimentSpec.from_json(full.to_json()) == full
    assert len(fig2b.build_spec(quick=True, seeds=3).seeds) == 3
    with pytest.raises(ValueError, match="seeds"):
        fig2b.build_spec(seeds=0)


def test_a_small_run_end_to_end(tmp_path):
    """The whole experiment on a small synthetic stand-in: every run file, the memory task, the wall-clock
    figure and a report with the Figure 2b verdict rows."""
    from adamlab.lab.runner import run_spec

    fig2b.register()
    spec = fig2b.build_spec(quick=True)
    small = DatasetSpec("synthetic-dense", {"n": 300, "d": 10, "classes": 3})
    panels = tuple(
        dataclasses.replace(
            p,
            dataset=small,
            model=dataclasses.replace(p.model, hidden=(12,)),
            epochs=3,
            optimizers=tuple(
                dataclasses.replace(o, fixed={"minibatches": 4}) if o.key == "sfo" else o for o in p.optimizers
            ),
        )
        for p in spec.panels
    )
    task = TaskSpec("sfo_memory", fig2b.TASK, {"minibatches": [2, 4, 8], "features": 10, "hidden": [12], "classes": 3})
    spec = dataclasses.replace(spec, panels=panels, tasks=(task,))
    run_spec(spec, tmp_path, progress=False)
    path = fig2b.write_report(tmp_path)
    text = path.read_text()
    for claim in ("wall-clock time", "5–10× slower", "memory grows linearly", "fails to converge with dropout"):
        assert claim in text
    assert "QUICK RUN" in text
    assert (tmp_path / "fig2b_wallclock.png").is_file()
    sfo_run = R.read_json(R.run_path(tmp_path, "mlp", "sfo", {}, 0))
    assert len(sfo_run["history"]) == 4 and sfo_run["history"][-1]["probes"]["sfo"]["evaluations"] == 12
    assert math.isfinite(sfo_run["history"][-1]["train_cost"])
    # A run stopped before the dropout panel finished its grid search: the report judges what is complete.
    (tmp_path / "mlp_dropout" / "grid.json").unlink()
    text = fig2b.write_report(tmp_path).read_text()
    assert "Not finished" in text and "wall-clock time" in text
    assert "fails to converge with dropout" not in text
