"""Judge the paper's claims from several seeds' training-cost curves, with a confidence interval.

Each claim compares optimiser *a* with optimiser *b* on one panel, from the curves of their chosen settings,
one curve per seed (training cost per epoch, epoch 0 = before training). Seeds are paired: seed s of *a* and
seed s of *b* start from the same weights and see the same minibatches. A single epoch of a single seed is
noise (on the reviews panel AdaGrad's last 10 epochs span 0.093–0.143), so every rule works on

* the **smoothed final cost** S = the mean of the last k epochs, k = :func:`smoothing_window` (E) =
  max(1, ⌊E/10⌋) for E epochs (1 for 10 epochs, 4 for 45, 16 for 160);
* one number per seed (a relative gap or a speed-up), and the **t-interval** over seeds of their mean:
  m ± t_{0.975, n−1}·s/√n (s the sample standard deviation, n ≥ 2 seeds; :func:`t_interval`).

The rules, with [lo, hi] the 95 % interval of the per-seed statistic and tol the claim's tolerance:

* ``"approx"`` — "a ≈ b". r_s = (S_a − S_b) / min(S_a, S_b). **held** if max(|lo|, |hi|) ≤ tol (the whole
  interval within the tolerance); **did not hold** if lo > 2·tol or hi < −2·tol (the whole interval beyond
  twice it); otherwise **inconclusive**.
* ``"as_fast"`` — "a (at least) as fast as b". d_s = (S_a − S_b) / S_b, how much higher a ends. **held** if
  hi ≤ tol; **did not hold** if lo > 2·tol; otherwise inconclusive.
* ``"faster"`` — "a faster than b". g_s = (S_b − S_a) / S_b, a's advantage. **held** if lo ≥ tol; **did not
  hold** if hi ≤ −tol (b ends lower); otherwise inconclusive (a tie within the margin, or too noisy).
* ``"much_faster"`` — "a ≫ b", tol = a speed-up factor f. The level is b's smoothed final cost S_b; e_b and
  e_a are the first epochs at which b's and a's curves are ≤ S_b (time to reach a cost); the speed-up is
  x_s = e_b / e_a (0 if a never gets there). **held** if lo ≥ f; **did not hold** if hi ≤ 1 (a no sooner
  than b); otherwise inconclusive.

A claim is **inconclusive** with fewer than two seeds (no interval), and when a curve is missing or its
smoothed final cost is not finite (e.g. every setting diverged). The edges are inclusive as written: a gap
exactly at the tolerance holds, a speed-up exactly f holds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from adamlab.lab.spec import ClaimSpec

__all__ = [
    "CONFIDENCE",
    "DID_NOT_HOLD",
    "HELD",
    "INCONCLUSIVE",
    "Verdict",
    "epochs_to_reach",
    "judge",
    "smoothed_final",
    "smoothing_window",
    "t_interval",
]

HELD = "held"
DID_NOT_HOLD = "did not hold"
INCONCLUSIVE = "inconclusive"
#: The confidence level of every interval.
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Verdict:
    """The outcome of one claim: ``status`` (held / did not hold / inconclusive), why, and the numbers
    (per-seed statistics, their mean and interval, the number of seeds)."""

    claim: ClaimSpec
    status: str
    reason: str
    numbers: dict[str, Any] = field(default_factory=dict)


def smoothing_window(epochs: int) -> int:
    """k = max(1, ⌊E/10⌋): how many final epochs the smoothed final cost averages."""
    return max(1, int(epochs) // 10)


def smoothed_final(curve: Sequence[float], window: int) -> float:
    """The mean of the last ``window`` entries of ``curve`` (NaN if any of them is missing or not finite)."""
    tail = [float(v) for v in curve[-window:]] if curve else []
    if len(tail) < window or not all(math.isfinite(v) for v in tail):
        return math.nan
    return sum(tail) / len(tail)


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(mean, lo, hi): Student's t-interval m ± t_{(1+c)/2, n−1}·s/√n of the mean of ``values``; (mean, NaN,
    NaN) with fewer than two values."""
    from scipy import stats

    n = len(values)
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan, math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def epochs_to_reach(curve: Sequence[float], level: float) -> int | None:
    """The first epoch (index) at which ``curve`` is ≤ ``level``, or ``None`` if it never is."""
    for epoch, value in enumerate(curve):
        if math.isfinite(value) and value <= level:
            return epoch
    return None


def _pct(x: float) -> str:
    return f"{x:+.1%}" if math.isfinite(x) else "n/a"


def _interval_text(lo: float, hi: float, n: int, fmt=_pct) -> str:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"no interval from {n} seed{'s' if n != 1 else ''}"
    return f"{CONFIDENCE:.0%} CI [{fmt(lo)}, {fmt(hi)}], {n} seeds"


def judge(
    claim: ClaimSpec,
    curves_a: Sequence[Sequence[float]],
    curves_b: Sequence[Sequence[float]],
    labels: tuple[str, str],
    window: int | None = None,
) -> Verdict:
    """Judge ``claim`` from optimisers a's and b's training-cost curves, one per seed (paired by position);
    ``labels`` are their legend names; ``window``: the smoothing window (default :func:`smoothing_window`)."""
    la, lb = labels
    n = min(len(curves_a), len(curves_b))
    if n == 0:
        return Verdict(claim, INCONCLUSIVE, "a curve is missing", {"seeds": 0})
    epochs = len(curves_b[0]) - 1
    k = window if window is not None else smoothing_window(epochs)
    sa = [smoothed_final(c, k) for c in curves_a[:n]]
    sb = [smoothed_final(c, k) for c in curves_b[:n]]
    numbers: dict[str, Any] = {"seeds": n, "window": k, "smoothed_a": sa, "smoothed_b": sb, "epochs": epochs}
    if not all(math.isfinite(v) and v > 0 for v in sa + sb):
        return Verdict(claim, INCONCLUSIVE, "a curve is missing or diverged", numbers)
    ma, mb = sum(sa) / n, sum(sb) / n
    costs = f"{la} {ma:.4f} vs {lb} {mb:.4f} (mean of the last {k} epoch{'s' if k > 1 else ''}, {n} seeds)"
    tol = claim.tolerance

    if claim.kind == "much_faster":
        speedups = []
        for ca, cb, level in zip(curves_a[:n], curves_b[:n], sb):
            e_a, e_b = epochs_to_reach(ca, level), epochs_to_reach(cb, level)
            speedups.append(0.0 if e_a is None or e_b is None else (math.inf if e_a == 0 else e_b / e_a))
        mean, lo, hi = t_interval(speedups) if all(math.isfinite(x) for x in speedups) else (math.inf,) * 3
        numbers.update(statistic="speedup", values=speedups, mean=mean, lo=lo, hi=hi)
        text = (
            f"{la} reaches {lb}'s final cost {mean:.1f}× sooner ({_interval_text(lo, hi, n, lambda x: f'{x:.1f}×')}; "
            f"needed ≥ {tol:g}×); {costs}"
        )
        if n < 2:
            return Verdict(claim, INCONCLUSIVE, text + ": needs ≥ 2 seeds", numbers)
        if lo >= tol:
            return Verdict(claim, HELD, text, numbers)
        if hi <= 1.0:
            return Verdict(claim, DID_NOT_HOLD, text, numbers)
        return Verdict(claim, INCONCLUSIVE, text, numbers)

    if claim.kind == "approx":
        values = [(a - b) / min(a, b) for a, b in zip(sa, sb)]
        what = f"({la} − {lb})/min"
    elif claim.kind == "as_fast":
        values = [(a - b) / b for a, b in zip(sa, sb)]
        what = f"({la} − {lb})/{lb}"
    else:  # faster
        values = [(b - a) / b for a, b in zip(sa, sb)]
        what = f"({lb} − {la})/{lb}"
    mean, lo, hi = t_interval(values)
    numbers.update(statistic="relative gap", values=values, mean=mean, lo=lo, hi=hi)
    text = f"{costs}: {what} = {_pct(mean)} ({_interval_text(lo, hi, n)}; tolerance {tol:.0%})"
    if n < 2:
        return Verdict(claim, INCONCLUSIVE, text + ": needs ≥ 2 seeds", numbers)
    if claim.kind == "approx":
        if max(abs(lo), abs(hi)) <= tol:
            return Verdict(claim, HELD, text, numbers)
        if lo > 2 * tol or hi < -2 * tol:
            return Verdict(claim, DID_NOT_HOLD, text, numbers)
    elif claim.kind == "as_fast":
        if hi <= tol:
            return Verdict(claim, HELD, text, numbers)
        if lo > 2 * tol:
            return Verdict(claim, DID_NOT_HOLD, text, numbers)
    else:
        if lo >= tol:
            return Verdict(claim, HELD, text, numbers)
        if hi <= -tol:
            return Verdict(claim, DID_NOT_HOLD, text, numbers)
    return Verdict(claim, INCONCLUSIVE, text, numbers)
