"""Figure 4's spec (the paper's grid, layout and claims) and the judgement of its claims on hand-built cells."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from adamlab.lab.experiments import fig4, fig4_report
from adamlab.lab.experiments.fig4 import Cell, build_spec, cell_key, judge_best_cell, judge_instability, parse_key
from adamlab.lab.spec import ExperimentSpec


def test_spec_is_the_papers_grid():
    spec = build_spec()
    assert [p.name for p in spec.panels] == ["early", "late"]
    assert [p.epochs for p in spec.panels] == [10, 100]
    for panel in spec.panels:
        assert panel.batch_size == 128
        assert panel.model.kind == "vae" and panel.model.objective == "negative_elbo"
        assert len(panel.optimizers) == 2 * 3 * 2
        cells = {(*o.fixed["betas"], o.fixed["bias_correction"], lr) for o in panel.optimizers for lr in o.grid["lr"]}
        assert len(cells) == 60
        assert {b1 for b1, *_ in cells} == {0.0, 0.9}
        assert {b2 for _, b2, *_ in cells} == {0.99, 0.999, 0.9999}
        assert sorted({round(math.log10(lr)) for *_, lr in cells}) == [-5, -4, -3, -2, -1]
        assert all(o.optimizer == "adam" for o in panel.optimizers)
    # claim (iii): one as-fast comparison per (β1, β2) and row, with correction first
    assert len(spec.claims) == 12
    assert all(c.kind == "as_fast" and c.a.endswith("_bc") and c.b.endswith("_nobc") for c in spec.claims)
    assert len(spec.seeds) == 3 and spec.search_seeds == 1


def test_quick_spec_says_so_and_round_trips():
    spec = build_spec(quick=True, seed=4)
    assert spec.quick and spec.notes[0].startswith("QUICK RUN")
    assert [p.epochs for p in spec.panels] == [2, 10]
    assert spec.panels[0].dataset.options["subsample"] == fig4.QUICK_EXAMPLES
    assert spec.seeds == (4, 5)
    assert ExperimentSpec.from_json(spec.to_json()).to_dict() == spec.to_dict()
    with pytest.raises(ValueError, match="seeds must be >= 1"):
        build_spec(seeds=0)


def test_cell_keys_round_trip():
    for b1 in fig4.BETA1:
        for b2 in fig4.BETA2:
            for bc in (True, False):
                assert parse_key(cell_key(b1, b2, bc)) == (b1, b2, bc)
    assert cell_key(0.9, 0.9999, False) == "b1=0.9_b2=0.9999_nobc"
    with pytest.raises(ValueError, match="not a Figure 4 optimiser key"):
        parse_key("adam")


def _cells(loss) -> list[Cell]:
    """Every cell of the grid with loss(b1, b2, bc, e)."""
    return [
        Cell(b1, b2, bc, e, loss(b1, b2, bc, e))
        for b1 in fig4.BETA1
        for b2 in fig4.BETA2
        for bc in (True, False)
        for e in fig4.LOG10_ALPHA
    ]


def test_instability_held_when_no_correction_breaks_near_one():
    # with correction: 100 everywhere; without: diverged at the two largest α for β2 = 0.9999, else equal
    def early(b1, b2, bc, e):
        return None if (not bc and b2 == 0.9999 and e >= -2) else 100.0

    def late(b1, b2, bc, e):
        return 90.0

    verdict = judge_instability(_cells(early), _cells(late))
    assert verdict["status"] == "held"
    assert verdict["unstable"]["early"]["0.9999"] == [(0.0, -2), (0.0, -1), (0.9, -2), (0.9, -1)]
    assert verdict["unstable"]["early"]["0.99"] == []
    assert verdict["worse_early_than_late"] is True


def test_instability_did_not_hold_when_no_correction_is_as_good():
    same = _cells(lambda b1, b2, bc, e: 100.0)
    assert judge_instability(same, same)["status"] == "did not hold"


def test_instability_tolerance_edge():
    # without correction exactly 1% worse: not counted (needs more than the tolerance); 1.5% worse: counted
    def worse(factor):
        return _cells(lambda b1, b2, bc, e: 100.0 if bc else (100.0 * factor if b2 == 0.9999 else 100.0))

    assert judge_instability(worse(1.01), worse(1.01))["status"] == "did not hold"
    assert judge_instability(worse(1.015), worse(1.015))["status"] == "held"


def test_instability_inconclusive_when_as_bad_far_from_one():
    def loss(b1, b2, bc, e):
        return 100.0 if bc else (120.0 if e == -1 else 100.0)  # the same damage at every β2

    assert judge_instability(_cells(loss), _cells(loss))["status"] == "inconclusive"


def test_best_cell():
    def loss(best_b2, best_bc, gap):
        def f(b1, b2, bc, e):
            return 100.0 - gap if (b2 == best_b2 and bc == best_bc and e == -3 and b1 == 0.9) else 100.0

        return _cells(f)

    held = judge_best_cell(loss(0.9999, True, 5.0))
    assert held["status"] == "held" and held["advantage"] == pytest.approx(0.05)
    assert judge_best_cell(loss(0.99, True, 5.0))["status"] == "did not hold"  # best at large 1 − β2
    assert judge_best_cell(loss(0.9999, False, 5.0))["status"] == "did not hold"  # best without correction
    assert judge_best_cell(loss(0.999, True, 0.5))["status"] == "inconclusive"  # 0.5% < the 1% margin
    diverged = [dataclasses.replace(c, loss=None) for c in loss(0.999, True, 5.0)]
    assert judge_best_cell(diverged)["status"] == "inconclusive"


def _pixels(options, data_dir):
    from adamlab.lab.datasets import TrainingData

    rng = np.random.default_rng(0)
    n = int(options.get("n", 128))
    X = (rng.random((n, 784)) < 0.3).astype(np.float32)  # binary pixels
    return TrainingData(X, np.zeros(n, dtype=np.int64), 10, {"description": f"binary pixels ({n})"})


@pytest.mark.slow
def test_a_small_grid_through_the_lab_and_the_report(tmp_path):
    """A slice of the grid (β1 = 0.9, β2 ∈ {0.99, 0.9999}, α ∈ {1e-3, 1e-1}) on 128 binary images, 1 and 2
    epochs: the VAE trains through the runner with the −ELBO as its cost, the report writes the paper's layout,
    and each early run ends exactly where its late run is after the same epoch (same weights, same batches)."""
    from adamlab.lab.datasets import register_dataset
    from adamlab.lab.runner import run_spec

    register_dataset("test-binary-pixels", _pixels)
    spec = build_spec(quick=True, seeds=1)
    keep = {cell_key(0.9, b2, bc) for b2 in (0.99, 0.9999) for bc in (True, False)}
    panels = tuple(
        dataclasses.replace(
            p,
            dataset=fig4.DatasetSpec("test-binary-pixels", {"n": 128}),
            optimizers=tuple(dataclasses.replace(o, grid={"lr": (1e-3, 1e-1)}) for o in p.optimizers if o.key in keep),
            epochs=e,
        )
        for p, e in zip(spec.panels, (1, 2), strict=True)
    )
    spec = dataclasses.replace(spec, panels=panels, claims=())
    run_spec(spec, tmp_path, progress=False)
    cells, counts = fig4_report.collect_cells(tmp_path, spec, "early")
    assert counts["planned"] == counts["complete"] == 8 and len(cells) == 8
    ok = [c for c in cells if c.finite]
    assert ok and all((c.loss or 0) > 0 for c in ok)  # −ELBO ≥ −log p(x) > 0 for binary pixels
    # with correction and α = 1e-3 the loss fell below the ≈ 784·log 2 nats of the initial (logits ≈ 0) decoder
    assert all((c.loss or 0) < 784 * np.log(2) for c in ok if c.bias_correction and c.log10_alpha == -3)
    n, worst = fig4_report.early_is_prefix_of_late(tmp_path, spec)
    assert n == len(ok) and worst == 0.0
    report = fig4_report.write_report(tmp_path).read_text()
    assert "Figure 4 in the paper's layout" in report and "QUICK RUN" in report
    assert (tmp_path / "fig4_alpha.png").is_file()
    assert "| early (1 epochs) | 8 of 8 |" in report
