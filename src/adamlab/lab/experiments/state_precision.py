"""Quantised optimizer state in the lab (issue 16): Adam with fp32, bf16 and int8 state on Figure 1's MNIST
logistic regression and Figure 2a's MLP with dropout, judged as claims.

The claim, per panel and per format: Adam's final training cost with ``state_precision`` int8 (bf16) is within
1 % of fp32 Adam's — the lab's "≈" rule (:mod:`adamlab.lab.claims`) with tolerance 1 %: the 95 % t-interval
over seeds of (S_q − S_fp32)/min(S_q, S_fp32), S the smoothed final training cost, lies within ±1 %.

The three runs of a seed share everything but the state's format: the initial weights, the minibatches, the
dropout masks and the learning rate. Choices (recorded in ``spec.json`` and the report):

* **Panels**: Figure 1's MNIST panel (logistic regression, L2 λ = 1e-4, W ~ N(0, 0.01²), Adam with α/√t) and
  Figure 2a's panel (784-1000-1000-10 ReLU, 20 % input and 50 % hidden dropout, constant α), exactly as
  :mod:`~adamlab.lab.experiments.fig1` and :mod:`~adamlab.lab.experiments.fig2a` build them.
* **Learning rates**: one per panel, the one the lab's grid search chose for fp32 Adam on that figure
  (docs/results/fig1: α = 0.1 with α/√t, quick and full; docs/results/fig2a quick: α = 3e-3); no search.
* **Which tensors**: every float32 weight of at least 4096 elements (the logistic regression's 784×10 matrix,
  the MLP's three matrices) takes bf16/int8 state; the biases stay fp32 (``MIN_QUANTISED_NUMEL``). int8 with
  blocks of 256 (``state_block_size``), bf16 with stochastic rounding seeded by ``state_seed`` = 0.
* **Quick run**: Figure 1's quick length (10 epochs on the 60,000 digits) and Figure 2a's (5,000 digits,
  10 epochs), 2 seeds. Full run: 45 and 200 epochs on all 60,000 digits, 3 seeds.
"""

from __future__ import annotations

import dataclasses

from adamlab.lab.experiments import fig1, fig2a
from adamlab.lab.spec import ClaimSpec, ExperimentSpec, OptimizerSpec, PanelSpec

__all__ = ["FORMATS", "LEARNING_RATES", "TOLERANCE", "build_spec"]

#: (key, legend label, the optimizer's state options); fp32 first (the claims' reference).
FORMATS: tuple[tuple[str, str, dict[str, object]], ...] = (
    ("adam_fp32", "Adam, fp32 state", {}),
    ("adam_bf16", "Adam, bf16 state", {"state_precision": "bf16"}),
    ("adam_int8", "Adam, int8 state", {"state_precision": "int8"}),
)
#: The learning rate per panel: the lab's choice for fp32 Adam on that figure (see the module docstring).
LEARNING_RATES = {"mnist": 0.1, "mnist_mlp": 3e-3}
#: "within 1 % of fp32's final training cost".
TOLERANCE = 0.01


def _panel(panel: PanelSpec, adam_fixed: dict[str, object], title: str) -> PanelSpec:
    lr = LEARNING_RATES[panel.name]
    optimizers = tuple(
        OptimizerSpec(key, label, "adam", {**adam_fixed, **options}, {"lr": (lr,)}) for key, label, options in FORMATS
    )
    return dataclasses.replace(panel, optimizers=optimizers, title=title, probes=())


def build_spec(*, quick: bool = False, seed: int = 0, seeds: int | None = None) -> ExperimentSpec:
    """The spec: Figure 1's MNIST panel and Figure 2a's panel, Adam with fp32/bf16/int8 state. ``seeds``: how
    many seeds (from ``seed`` on; default 2 quick, 3 full)."""
    n_seeds = seeds if seeds is not None else (2 if quick else 3)
    if n_seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {n_seeds}")
    logistic = next(p for p in fig1.build_spec(quick=quick, seed=seed, seeds=1).panels if p.name == "mnist")
    mlp = fig2a.build_spec(quick=quick, seed=seed, seeds=1).panels[0]
    panels = (
        _panel(logistic, {"lr_decay": "sqrt"}, "Figure 1's MNIST logistic regression: Adam (α/√t) by state format"),
        _panel(mlp, {}, "Figure 2a's MLP with dropout on MNIST: Adam by state format"),
    )
    claims = tuple(
        ClaimSpec(panel.name, "approx", key, "adam_fp32", f"{where}: {label} within 1 % of fp32", TOLERANCE)
        for panel, where in zip(panels, ("Fig. 1 MNIST", "Fig. 2a MLP"))
        for key, label, _ in FORMATS[1:]
    )
    epochs = {p.name: p.epochs for p in panels}
    notes = [
        "Adam with fp32, bf16 (stochastic rounding) and int8 (blockwise, B = 256) optimizer state; the three runs "
        "of a seed share the initial weights, the minibatches and the dropout masks. Learning rates: "
        f"α = {LEARNING_RATES['mnist']:g} with α/√t on the logistic regression and α = "
        f"{LEARNING_RATES['mnist_mlp']:g} on the MLP, the lab's choices for fp32 Adam on Figures 1 and 2a "
        "(no search here). Each claim: the 95 % t-interval over seeds of the relative gap of the smoothed "
        "final training costs lies within ±1 %.",
    ]
    if quick:
        notes.insert(
            0,
            f"QUICK RUN: {epochs['mnist']} epochs of the logistic regression on the 60,000 digits, "
            f"{epochs['mnist_mlp']} epochs of the MLP on {fig2a.QUICK_EXAMPLES:,} digits, {n_seeds} seeds. The "
            "verdicts are about these shortened runs.",
        )
    return ExperimentSpec(
        name="state_precision",
        title="Quantised optimizer state: Adam's training cost with fp32, bf16 and int8 state",
        panels=panels,
        seeds=tuple(range(seed, seed + n_seeds)),
        claims=claims,
        quick=quick,
        notes=tuple(notes),
    )
