"""The claim rules (adamlab.lab.claims) on constructed curves over seeds, with hand-computed answers.

Numbers are chosen exact in binary (1.0, 1.25, 1.625, …) so that "a gap exactly at the tolerance" is exactly
that; with identical seeds the sample deviation is 0 and the t-interval is the point itself.
"""

from __future__ import annotations

import math

import pytest
from scipy import stats

from adamlab.lab.claims import (
    DID_NOT_HOLD,
    HELD,
    INCONCLUSIVE,
    epochs_to_reach,
    judge,
    smoothed_final,
    smoothing_window,
    t_interval,
)
from adamlab.lab.spec import ClaimSpec


def _claim(kind, tol):
    return ClaimSpec("p", kind, "a", "b", "claim", tol)


def _flat_end(final, epochs=10, start=4.0):
    """Falls linearly to ``final`` by epoch E/2 and stays there (so the smoothed final cost is ``final``)."""
    half = max(1, epochs // 2)
    return [start + (final - start) * min(1.0, e / half) for e in range(epochs + 1)]


def _seeds(final, n=3, **kw):
    return [_flat_end(final, **kw) for _ in range(n)]


def _status(kind, tol, fa, fb, n=3):
    return judge(_claim(kind, tol), _seeds(fa, n), _seeds(fb, n), ("A", "B")).status


def test_smoothing_window_and_smoothed_final():
    assert [smoothing_window(e) for e in (1, 9, 10, 40, 45, 160)] == [1, 1, 1, 4, 4, 16]
    assert smoothed_final([5.0, 1.0, 2.0, 3.0], 2) == 2.5
    assert math.isnan(smoothed_final([1.0, math.nan], 2))
    assert math.isnan(smoothed_final([1.0], 2))


def test_t_interval_against_scipy():
    values = [0.1, 0.3, 0.2, 0.6]
    mean, lo, hi = t_interval(values)
    ref = stats.t.interval(0.95, len(values) - 1, loc=stats.tmean(values), scale=stats.sem(values))
    assert mean == pytest.approx(0.3)
    assert (lo, hi) == pytest.approx(ref, rel=1e-12)
    m, lo1, hi1 = t_interval([0.4])
    assert m == 0.4 and math.isnan(lo1) and math.isnan(hi1)
    assert t_interval([0.25, 0.25]) == (0.25, 0.25, 0.25)


# -- the edges the issue names ------------------------------------------------------------------------------------


def test_approx_divides_by_the_smaller_cost():
    # |1.0 − 1.2| / min = 0.2 > tol 0.19 (inconclusive); / max would be 0.1667 ≤ 0.19 (held).
    assert _status("approx", 0.19, 1.0, 1.2) == INCONCLUSIVE
    assert _status("approx", 0.19, 1.2, 1.0) == INCONCLUSIVE


def test_approx_gap_exactly_at_the_tolerance_holds():
    assert _status("approx", 0.25, 1.0, 1.25) == HELD
    assert _status("approx", 0.25, 1.25, 1.0) == HELD


def test_approx_between_two_and_three_tolerances_did_not_hold():
    # r = 0.625 = 2.5·tol: beyond 2·tol (did not hold); a limit at 3·tol would call it inconclusive.
    assert _status("approx", 0.25, 1.0, 1.625) == DID_NOT_HOLD
    # r = 0.5 = exactly 2·tol: not beyond it, inconclusive.
    assert _status("approx", 0.25, 1.0, 1.5) == INCONCLUSIVE


def test_as_fast_edges():
    assert _status("as_fast", 0.25, 1.25, 1.0) == HELD  # exactly at the tolerance
    assert _status("as_fast", 0.25, 1.0, 1.25) == HELD  # a lower
    assert _status("as_fast", 0.25, 1.625, 1.0) == DID_NOT_HOLD  # 2.5·tol
    assert _status("as_fast", 0.25, 1.5, 1.0) == INCONCLUSIVE  # exactly 2·tol


def test_faster_edges():
    assert _status("faster", 0.25, 1.0, 1.0) == INCONCLUSIVE  # a tie
    assert _status("faster", 0.25, 0.75, 1.0) == HELD  # gap exactly at the margin
    assert _status("faster", 0.25, 0.875, 1.0) == INCONCLUSIVE  # below the margin
    assert _status("faster", 0.25, 1.25, 1.0) == DID_NOT_HOLD  # b lower by exactly the margin


def _reach(epoch_a, epoch_b, epochs=16, level=1.0):
    """a reaches ``level`` first at ``epoch_a`` (or never, None), b at ``epoch_b``; both then stay flat."""

    def curve(at):
        return [4.0 if (at is None or e < at) else level for e in range(epochs + 1)]

    return curve(epoch_a), curve(epoch_b)


def test_much_faster_edges():
    claim = _claim("much_faster", 2.0)
    # b reaches its own final cost at epoch 8, a at epoch 4: exactly 2× sooner, a tie with the factor: held.
    a, b = _reach(4, 8)
    v = judge(claim, [a, a], [b, b], ("A", "B"))
    assert v.status == HELD and v.numbers["values"] == [2.0, 2.0]
    a, b = _reach(5, 8)  # 1.6×: faster, but not by the factor
    assert judge(claim, [a, a], [b, b], ("A", "B")).status == INCONCLUSIVE
    a, b = _reach(8, 8)  # no sooner at all
    assert judge(claim, [a, a], [b, b], ("A", "B")).status == DID_NOT_HOLD
    a, b = _reach(None, 8)  # never
    v = judge(claim, [a, a], [b, b], ("A", "B"))
    assert v.status == DID_NOT_HOLD and v.numbers["values"] == [0.0, 0.0]


# -- seeds and noise --------------------------------------------------------------------------------------------


def test_one_seed_is_always_inconclusive():
    v = judge(_claim("faster", 0.01), _seeds(0.5, 1), _seeds(1.0, 1), ("A", "B"))
    assert v.status == INCONCLUSIVE and "2 seeds" in v.reason


def test_noisy_seeds_are_inconclusive_where_the_means_alone_would_decide():
    # Mean gap of "faster" = (0.10 + 0.10 − 0.05)/3 = 0.05 ≥ 1 %, but the seeds disagree: the interval spans 0.
    a = [_flat_end(0.90), _flat_end(0.90), _flat_end(1.05)]
    b = _seeds(1.0)
    v = judge(_claim("faster", 0.01), a, b, ("A", "B"))
    assert v.numbers["mean"] == pytest.approx(0.05)
    assert v.numbers["lo"] < 0 < v.numbers["hi"] and v.status == INCONCLUSIVE
    # "≈" with gaps of ±8 % around 0 (tolerance 5 %): the mean is 0 but the interval leaves ±5 %.
    a = [_flat_end(1.08), _flat_end(1.0 / 1.08), _flat_end(1.0)]
    v = judge(_claim("approx", 0.05), a, _seeds(1.0), ("A", "B"))
    assert abs(v.numbers["mean"]) < 1e-12 and v.status == INCONCLUSIVE


def test_consistent_seeds_decide_with_the_interval_printed():
    a = [_flat_end(0.80), _flat_end(0.79), _flat_end(0.81)]
    v = judge(_claim("faster", 0.05), a, _seeds(1.0), ("A", "B"))
    mean, lo, hi = t_interval([0.2, 0.21, 0.19])
    assert v.status == HELD
    assert (v.numbers["mean"], v.numbers["lo"], v.numbers["hi"]) == pytest.approx((mean, lo, hi))
    assert "95% CI [+" in v.reason and "3 seeds" in v.reason


def test_the_final_noisy_epoch_alone_does_not_decide():
    # b's last epoch is a spike; its smoothed final cost (mean of the last 4 of 40 epochs) is not.
    base = _flat_end(1.0, epochs=40)
    spiky = [*base[:-1], 1.6]
    v = judge(_claim("as_fast", 0.05), _seeds(1.0, epochs=40), [spiky, spiky], ("A", "B"))
    assert v.numbers["window"] == 4
    assert v.numbers["smoothed_b"][0] == pytest.approx((3 * 1.0 + 1.6) / 4)
    assert v.status == HELD


def test_missing_or_diverged_curves_are_inconclusive():
    assert judge(_claim("faster", 0.01), [], [], ("A", "B")).status == INCONCLUSIVE
    bad = [[1.0, math.nan]] * 2
    assert judge(_claim("approx", 0.05), bad, _seeds(1.0, 2, epochs=1), ("A", "B")).status == INCONCLUSIVE


def test_epochs_to_reach():
    assert epochs_to_reach([3.0, 2.0, 1.0], 2.0) == 1
    assert epochs_to_reach([3.0, math.nan, 1.0], 2.0) == 2
    assert epochs_to_reach([3.0, 2.5], 2.0) is None
