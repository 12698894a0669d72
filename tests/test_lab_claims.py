"""The claim verdicts on constructed curves: each kind held / did not hold / inconclusive."""

from __future__ import annotations

import math

import pytest

from adamlab.lab.claims import DID_NOT_HOLD, HELD, INCONCLUSIVE, epochs_to_reach, judge
from adamlab.lab.spec import ClaimSpec


def _claim(kind, tol):
    return ClaimSpec("p", kind, "a", "b", "claim", tol)


def _curve(final, epochs=10, start=1.0):
    return [start + (final - start) * e / epochs for e in range(epochs + 1)]


@pytest.mark.parametrize(
    ("fa", "fb", "status"),
    [(0.30, 0.31, HELD), (0.31, 0.30, HELD), (0.30, 0.32, INCONCLUSIVE), (0.30, 0.40, DID_NOT_HOLD)],
)
def test_approx(fa, fb, status):
    v = judge(_claim("approx", 0.05), _curve(fa), _curve(fb), ("A", "B"))
    assert v.status == status
    assert "A 0.3" in v.reason and "tolerance 5%" in v.reason


@pytest.mark.parametrize(
    ("fa", "fb", "status"),
    [(0.25, 0.30, HELD), (0.30, 0.30, HELD), (0.32, 0.30, INCONCLUSIVE), (0.40, 0.30, DID_NOT_HOLD)],
)
def test_as_fast(fa, fb, status):
    assert judge(_claim("as_fast", 0.05), _curve(fa), _curve(fb), ("A", "B")).status == status


@pytest.mark.parametrize(
    ("fa", "fb", "status"),
    [(0.25, 0.30, HELD), (0.299, 0.30, INCONCLUSIVE), (0.35, 0.30, DID_NOT_HOLD)],
)
def test_faster(fa, fb, status):
    v = judge(_claim("faster", 0.01), _curve(fa), _curve(fb), ("A", "B"))
    assert v.status == status
    assert v.numbers["advantage"] == pytest.approx((fb - fa) / fb)


def test_much_faster():
    slow = _curve(0.5, epochs=100)  # reaches 0.5 only at epoch 100
    fast = [1.0, 0.6, 0.5, *[0.4] * 98]  # reaches 0.5 at epoch 2
    v = judge(_claim("much_faster", 2.0), fast, slow, ("A", "B"))
    assert v.status == HELD and v.numbers["epochs_a_to_final_b"] == 2 and v.numbers["speedup"] == 50
    somewhat = [*_curve(0.5, epochs=70), *[0.49] * 30]  # at epoch 70: 1.4x sooner
    assert judge(_claim("much_faster", 2.0), somewhat, slow, ("A", "B")).status == INCONCLUSIVE
    assert judge(_claim("much_faster", 2.0), slow, fast, ("A", "B")).status == DID_NOT_HOLD


def test_missing_or_diverged_curves_are_inconclusive():
    assert judge(_claim("approx", 0.05), [], _curve(0.3), ("A", "B")).status == INCONCLUSIVE
    assert judge(_claim("faster", 0.05), [1.0, math.nan], _curve(0.3), ("A", "B")).status == INCONCLUSIVE


def test_epochs_to_reach():
    assert epochs_to_reach([1.0, 0.5, 0.2], 0.5) == 1
    assert epochs_to_reach([1.0, math.nan, 0.2], 0.5) == 2
    assert epochs_to_reach([1.0, 0.9], 0.5) is None


def test_unknown_claim_kind_is_refused():
    with pytest.raises(ValueError, match="claim kind must be one of approx, as_fast, faster, much_faster"):
        _claim("better", 0.1)
