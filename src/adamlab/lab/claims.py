"""Judge the paper's claims about a figure from two optimisers' training-cost curves.

Each claim compares optimiser *a* with optimiser *b* on one panel, using the curves of their chosen settings
(training cost per epoch, epoch 0 = before training, mean over seeds). With L_a, L_b the final costs:

* ``"approx"`` — "a ≈ b". r = |L_a − L_b| / min(L_a, L_b). **held** if r ≤ tol; **did not hold** if r > 2·tol;
  **inconclusive** in between (close, but not within the tolerance).
* ``"as_fast"`` — "a as fast as b" (at least). d = (L_a − L_b) / L_b, how much higher a ended. **held** if
  d ≤ tol; **did not hold** if d > 2·tol; **inconclusive** in between.
* ``"faster"`` — "a faster than b". g = (L_b − L_a) / L_b, a's final advantage. **held** if g ≥ tol;
  **did not hold** if g ≤ −tol (b ended lower); **inconclusive** if |g| < tol (a tie at the end).
* ``"much_faster"`` — "a ≫ b", tol = a speed-up factor s. e_a = the first epoch at which a's cost is ≤ L_b
  (the level b reaches only at its last epoch E). **held** if e_a ≤ E/s (a gets there at least s times
  sooner); **did not hold** if a never gets there (b ends at or below a); **inconclusive** if a gets there
  sooner, but less than s times sooner.

A claim is also **inconclusive** when a curve is missing or not finite (e.g. every setting diverged).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from adamlab.lab.spec import ClaimSpec

__all__ = ["DID_NOT_HOLD", "HELD", "INCONCLUSIVE", "Verdict", "epochs_to_reach", "judge"]

HELD = "held"
DID_NOT_HOLD = "did not hold"
INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Verdict:
    """The outcome of one claim: ``status`` (held / did not hold / inconclusive), why, and the numbers."""

    claim: ClaimSpec
    status: str
    reason: str
    numbers: dict[str, Any] = field(default_factory=dict)


def epochs_to_reach(curve: Sequence[float], level: float) -> int | None:
    """The first epoch (index) at which ``curve`` is ≤ ``level``, or ``None`` if it never is."""
    for epoch, value in enumerate(curve):
        if math.isfinite(value) and value <= level:
            return epoch
    return None


def _within_tolerance(claim: ClaimSpec, gap: float, text: str, numbers: dict[str, Any]) -> Verdict:
    """Held if ``gap`` ≤ the tolerance, did not hold beyond twice it, inconclusive in between."""
    if gap <= claim.tolerance:
        return Verdict(claim, HELD, text, numbers)
    if gap > 2 * claim.tolerance:
        return Verdict(claim, DID_NOT_HOLD, text, numbers)
    return Verdict(claim, INCONCLUSIVE, text + ", within twice the tolerance", numbers)


def judge(claim: ClaimSpec, curve_a: Sequence[float], curve_b: Sequence[float], labels: tuple[str, str]) -> Verdict:
    """Judge ``claim`` from the training-cost curves of optimisers ``a`` and ``b`` (legend ``labels``)."""
    la, lb = labels
    if not curve_a or not curve_b or not math.isfinite(curve_a[-1]) or not math.isfinite(curve_b[-1]):
        return Verdict(claim, INCONCLUSIVE, "a curve is missing or diverged")
    fa, fb = float(curve_a[-1]), float(curve_b[-1])
    numbers: dict[str, Any] = {"final_a": fa, "final_b": fb, "epochs": len(curve_b) - 1}
    tol = claim.tolerance

    if claim.kind == "approx":
        r = abs(fa - fb) / min(fa, fb)
        numbers["relative_difference"] = r
        text = f"final cost {la} {fa:.4f} vs {lb} {fb:.4f}: differ by {r:.1%} (tolerance {tol:.0%})"
        return _within_tolerance(claim, r, text, numbers)

    if claim.kind == "as_fast":
        d = (fa - fb) / fb
        numbers["excess"] = d
        if d <= 0:
            text = f"final cost {la} {fa:.4f} ≤ {lb} {fb:.4f} ({-d:.1%} lower)"
        else:
            text = f"final cost {la} {fa:.4f} vs {lb} {fb:.4f}: {la} higher by {d:.1%} (tolerance {tol:.0%})"
        return _within_tolerance(claim, d, text, numbers)

    if claim.kind == "faster":
        g = (fb - fa) / fb
        numbers["advantage"] = g
        reach = epochs_to_reach(curve_a, fb)
        numbers["epochs_a_to_final_b"] = reach
        when = f"; {la} reaches {lb}'s final cost at epoch {reach}" if reach is not None else ""
        lower = f"{la} lower by {g:.1%}" if g >= 0 else f"{la} higher by {-g:.1%}"
        text = f"final cost {la} {fa:.4f} vs {lb} {fb:.4f}: {lower} (margin {tol:.0%}){when}"
        if g >= tol:
            return Verdict(claim, HELD, text, numbers)
        if g <= -tol:
            return Verdict(claim, DID_NOT_HOLD, text, numbers)
        return Verdict(claim, INCONCLUSIVE, text + ": a tie within the margin", numbers)

    # much_faster
    epochs = len(curve_b) - 1
    reach = epochs_to_reach(curve_a, fb)
    numbers["epochs_a_to_final_b"] = reach
    if reach is None or fa >= fb:
        text = f"{la} never gets below {lb}'s final cost {fb:.4f} (its own final: {fa:.4f})"
        return Verdict(claim, DID_NOT_HOLD, text, numbers)
    speedup = epochs / reach if reach else math.inf
    numbers["speedup"] = speedup
    text = (
        f"{la} reaches {lb}'s final cost {fb:.4f} (after {epochs} epochs) at epoch {reach}: "
        f"{speedup:.1f}× sooner (needed: ≥ {tol:g}×); final {la} {fa:.4f} vs {lb} {fb:.4f}"
    )
    if speedup >= tol:
        return Verdict(claim, HELD, text, numbers)
    return Verdict(claim, INCONCLUSIVE, text + ": faster, but not by the factor", numbers)
