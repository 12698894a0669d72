"""Figure 4 of the paper (§6.4): bias correction, on a variational auto-encoder.

Adam with and without the bias-correction terms (§3) trains the VAE of :class:`adamlab.lab.networks.VAE`
(Kingma & Welling 2013: 784-500-(50+50) softplus encoder, 50-500-784 softplus decoder, Gaussian latent,
Bernoulli decoder) on MNIST, over the paper's grid

    β1 ∈ {0, 0.9} × β2 ∈ {0.99, 0.999, 0.9999} × log10 α ∈ {−5, −4, −3, −2, −1} × {with, without correction}.

"Without correction" is ``adamlab.Adam(bias_correction=False)``: m̂ = m, v̂ = v, which is RMSProp with momentum
(§3, §6.4). The loss is the negative ELBO per example (nats), one sample of z, on the whole training set after
every epoch (a fixed-seed sample, the same at every epoch). The paper plots it after 10 and after 100 epochs,
one panel per (β1, β2), red with and green without correction, against log10 α.

Layout in the lab: each (β1, β2, correction) is one "optimiser" of a panel whose grid is α, so that the grid
search picks each one's best α (the paper's comparison "at its best α") while every cell stays in
``grid.json``. There are two panels, ``early`` (the paper's 10 epochs) and ``late`` (100 epochs), trained
separately from the same initial weights, so that the 60 ten-epoch runs all finish before any
hundred-epoch one starts (the ten-epoch run is the first ten epochs of the hundred-epoch run, which the report
checks).

Choices where the paper is silent: minibatch 128 (the paper's §6 value; AEVB used 100); weights N(0, 0.01²),
biases 0 (AEVB); MNIST's grey values as Bernoulli targets; ε = 1e-8; no weight decay. A run whose loss becomes
NaN/inf is recorded as diverged and stopped; the report gives the fraction of diverged runs.

The report (the paper's layout, claims (i), (ii), the fraction diverged) is :mod:`.fig4_report`'s.

The claims (judged by :func:`judge_instability`, :func:`judge_best_cell` and, per (β1, β2), the lab's
``as_fast`` claim on the curves of the best α):

(i)   without correction, β2 near 1 is unstable, especially in the first epochs;
(ii)  the best results come with small 1 − β2 (β2 ≥ 0.999) and bias correction;
(iii) with correction, Adam is at least as good as without it, at every (β1, β2), each at its best α.

Quick run: 4,000 training digits, 2 and 10 epochs instead of 10 and 100; the whole grid. Every output says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from adamlab.lab.networks import INIT_STD, VAE_HIDDEN, VAE_LATENT
from adamlab.lab.spec import ClaimSpec, DatasetSpec, ExperimentSpec, ModelSpec, OptimizerSpec, PanelSpec, PlotSpec

__all__ = [
    "BETA1",
    "BETA2",
    "FULL_EPOCHS",
    "LOG10_ALPHA",
    "QUICK_EPOCHS",
    "QUICK_EXAMPLES",
    "Cell",
    "build_spec",
    "cell_key",
    "judge_best_cell",
    "judge_instability",
    "parse_key",
    "unstable_cells",
]

BETA1 = (0.0, 0.9)
BETA2 = (0.99, 0.999, 0.9999)
LOG10_ALPHA = (-5, -4, -3, -2, -1)
#: The paper's two rows: the loss after 10 and after 100 epochs ("early", "late").
FULL_EPOCHS = {"early": 10, "late": 100}
QUICK_EPOCHS = {"early": 2, "late": 10}
QUICK_EXAMPLES = 4000
#: How much worse (relative) a loss must be to count as worse; and the margin of claim (ii).
TOLERANCE = 0.01

PAPER = (
    "a variational auto-encoder (one hidden layer of 500 softplus units, 50-dimensional spherical Gaussian "
    "latent) trained with Adam with (red) and without (green, RMSProp with momentum) bias correction, for "
    "β1 ∈ {0, 0.9}, β2 ∈ {0.99, 0.999, 0.9999} and log10(α) from −5 to −1; the loss after {epochs} epochs "
    "against log10(α). Values of β2 close to 1, needed for robustness to sparse gradients, make training "
    "unstable without bias correction, especially in the first epochs; the best results come with small "
    "1 − β2 and bias correction; Adam performs equal or better than RMSProp with momentum regardless of the "
    "hyper-parameter setting."
)


def cell_key(beta1: float, beta2: float, bias_correction: bool) -> str:
    """The optimiser key of one (β1, β2, correction), e.g. ``"b1=0.9_b2=0.999_bc"`` (``_nobc`` without)."""
    return f"b1={beta1:g}_b2={beta2:g}_{'bc' if bias_correction else 'nobc'}"


def parse_key(key: str) -> tuple[float, float, bool]:
    """The inverse of :func:`cell_key`."""
    parts = key.split("_")
    if not (
        len(parts) == 3 and parts[0].startswith("b1=") and parts[1].startswith("b2=") and parts[2] in ("bc", "nobc")
    ):
        raise ValueError(f"not a Figure 4 optimiser key: {key!r}")
    return float(parts[0][3:]), float(parts[1][3:]), parts[2] == "bc"


def _label(beta1: float, beta2: float, bias_correction: bool) -> str:
    return f"β1={beta1:g}, β2={beta2:g}, " + ("with correction" if bias_correction else "without correction")


def _optimizers() -> tuple[OptimizerSpec, ...]:
    lrs = tuple(10.0**e for e in LOG10_ALPHA)
    return tuple(
        OptimizerSpec(
            cell_key(b1, b2, bc),
            _label(b1, b2, bc),
            "adam",
            {"betas": (b1, b2), "bias_correction": bc},
            {"lr": lrs},
        )
        for b1 in BETA1
        for b2 in BETA2
        for bc in (True, False)
    )


def build_spec(*, quick: bool = False, seed: int = 0, seeds: int | None = None) -> ExperimentSpec:
    """The Figure 4 spec. ``seeds``: how many seeds (from ``seed`` on; default 3, quick 2); the whole grid is
    trained with the first, each (β1, β2, correction)'s best α with all."""
    n_seeds = seeds if seeds is not None else (2 if quick else 3)
    if n_seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {n_seeds}")
    epochs = QUICK_EPOCHS if quick else FULL_EPOCHS
    options = {"split": "train", **({"subsample": QUICK_EXAMPLES, "data_seed": 0} if quick else {})}
    model = ModelSpec(
        "vae",
        init_std=INIT_STD,
        objective="negative_elbo",
        options={"hidden": VAE_HIDDEN, "latent": VAE_LATENT},
    )
    panels = tuple(
        PanelSpec(
            name=row,
            title=f"VAE on MNIST, loss after {epochs[row]} epochs",
            dataset=DatasetSpec("mnist", options),
            model=model,
            optimizers=_optimizers(),
            epochs=epochs[row],
            plot=PlotSpec(xlabel="log10(α)", ylabel="loss (negative ELBO, nats)"),
            paper=PAPER.replace("{epochs}", str(FULL_EPOCHS[row])),
        )
        for row in ("early", "late")
    )
    claims = tuple(
        ClaimSpec(
            row,
            "as_fast",
            cell_key(b1, b2, True),
            cell_key(b1, b2, False),
            f"after {epochs[row]} epochs, β1={b1:g}, β2={b2:g}: with correction at least as good as without "
            "(each at its best α)",
            TOLERANCE,
        )
        for row in ("early", "late")
        for b1 in BETA1
        for b2 in BETA2
    )
    notes = [
        "Loss = negative ELBO per example in nats (one sample of z; Bernoulli decoder on the grey values), on "
        "the whole training set after every epoch; minibatch 128; weights N(0, 0.01²), biases 0, the same for "
        "every run; ε = 1e-8. Without correction = adamlab.Adam(bias_correction=False), RMSProp with momentum. "
        "A run whose loss became NaN/inf is recorded as diverged.",
    ]
    if quick:
        notes.insert(
            0,
            f"QUICK RUN: {QUICK_EXAMPLES:,} of MNIST's 60,000 training digits, the loss after "
            f"{QUICK_EPOCHS['early']} and {QUICK_EPOCHS['late']} epochs (paper: 10 and 100). The verdicts "
            "below are about these shortened runs.",
        )
    return ExperimentSpec(
        name="fig4",
        title="Figure 4: bias correction — VAE loss vs log10(α), with (red) and without (green) correction",
        panels=panels,
        seeds=tuple(range(seed, seed + n_seeds)),
        claims=claims,
        quick=quick,
        notes=tuple(notes),
    )


# -- the claims that are not a comparison of two curves ------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One grid cell's outcome: the final loss (mean over its seeds) or ``None`` when it diverged."""

    beta1: float
    beta2: float
    bias_correction: bool
    log10_alpha: int
    loss: float | None

    @property
    def finite(self) -> bool:
        return self.loss is not None and math.isfinite(self.loss)


def _loss(cells: Mapping[tuple[float, float, bool, int], Cell], key: tuple[float, float, bool, int]) -> float:
    cell = cells.get(key)
    return cell.loss if cell is not None and cell.finite and cell.loss is not None else math.inf


def unstable_cells(cells: list[Cell], beta2: float, tolerance: float = TOLERANCE) -> list[tuple[float, int]]:
    """The (β1, log10 α) at ``beta2`` where the uncorrected run diverged or ended more than ``tolerance``
    (relative) above the corrected run, while the corrected run stayed finite."""
    table = {(c.beta1, c.beta2, c.bias_correction, c.log10_alpha): c for c in cells}
    found = []
    for b1 in BETA1:
        for e in LOG10_ALPHA:
            with_bc = _loss(table, (b1, beta2, True, e))
            without = _loss(table, (b1, beta2, False, e))
            if math.isfinite(with_bc) and without > with_bc * (1 + tolerance):
                found.append((b1, e))
    return found


def judge_instability(early: list[Cell], late: list[Cell], tolerance: float = TOLERANCE) -> dict[str, Any]:
    """Claim (i): without correction, β2 near 1 is unstable, especially early.

    U(β2, row) counts the (β1, α) cells at β2 where no correction is worse (diverged, or more than
    ``tolerance`` above the corrected loss). **held** if, in the early row, U(0.9999) ≥ 2 and U(0.9999) >
    U(0.99) (the damage grows as β2 → 1); **did not hold** if U(0.9999) = 0 early; **inconclusive** otherwise.
    Whether it is worse early than late is reported beside (U early vs U late at β2 = 0.9999)."""
    counts = {
        row: {b2: unstable_cells(cells, b2, tolerance) for b2 in BETA2}
        for row, cells in (("early", early), ("late", late))
    }
    near_one, far = len(counts["early"][BETA2[-1]]), len(counts["early"][BETA2[0]])
    if near_one >= 2 and near_one > far:
        status = "held"
    elif near_one == 0:
        status = "did not hold"
    else:
        status = "inconclusive"
    text = f"cells (of {len(BETA1) * len(LOG10_ALPHA)}) where no correction is worse than correction: " + "; ".join(
        f"{row}: " + ", ".join(f"β2={b2:g}: {len(counts[row][b2])}" for b2 in BETA2) for row in ("early", "late")
    )
    return {
        "claim": "without correction, β2 near 1 is unstable, especially in the first epochs",
        "status": status,
        "reason": text,
        "unstable": {row: {f"{b2:g}": counts[row][b2] for b2 in BETA2} for row in counts},
        "worse_early_than_late": len(counts["early"][BETA2[-1]]) > len(counts["late"][BETA2[-1]]),
    }


def judge_best_cell(cells: list[Cell], tolerance: float = TOLERANCE) -> dict[str, Any]:
    """Claim (ii): the best results come with small 1 − β2 (β2 ≥ 0.999) and bias correction.

    L* = the lowest loss among corrected cells with β2 ≥ 0.999; L' = the lowest among all other cells.
    g = (L' − L*)/L'. **held** if g ≥ ``tolerance``; **did not hold** if g ≤ −``tolerance``; **inconclusive**
    (a tie) in between, or when either side has no finite cell."""
    favoured = [c for c in cells if c.finite and c.bias_correction and c.beta2 >= 0.999]
    others = [c for c in cells if c.finite and not (c.bias_correction and c.beta2 >= 0.999)]
    claim = "the best results come with small 1 − β2 and bias correction"
    if not favoured or not others:
        return {"claim": claim, "status": "inconclusive", "reason": "no finite cell on one side"}
    best = min(favoured, key=lambda c: c.loss or math.inf)
    rival = min(others, key=lambda c: c.loss or math.inf)
    assert best.loss is not None and rival.loss is not None
    g = (rival.loss - best.loss) / rival.loss
    status = "held" if g >= tolerance else "did not hold" if g <= -tolerance else "inconclusive"

    def where(c: Cell) -> str:
        correction = "with" if c.bias_correction else "no"
        return f"β1={c.beta1:g}, β2={c.beta2:g}, log10 α={c.log10_alpha}, {correction} correction"

    text = (
        f"best corrected cell with β2 ≥ 0.999: {best.loss:.2f} ({where(best)}); best other: {rival.loss:.2f} "
        f"({where(rival)}); advantage {g:.1%} (margin {tolerance:.0%})"
    )
    return {"claim": claim, "status": status, "reason": text, "advantage": g}
