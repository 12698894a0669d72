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
* **Learning rates**: one per panel, no search. The logistic regression takes the lab's choice for fp32 Adam
  on Figure 1 (docs/results/fig1: α = 0.1 with α/√t, quick and full). The MLP takes Algorithm 1's default
  α = 1e-3, not the quick Figure 2a grid's 3e-3: at 3e-3 the tenth epoch's cost of one run is noise that any
  perturbation moves by tens of per cent (a first quick run, seed 0: fp32 0.0358, bf16 0.0624, int8 0.0422),
  so a 1 % claim would judge that noise, not the state format.
* **Control**: a fourth run per seed, fp32 Adam with α·(1 + 10⁻⁶), judged by the same 1 % rule: where it
  fails too, the panel's final cost is more sensitive than the claim's tolerance and the formats' verdicts
  must be read against it.
* **Which tensors**: every float32 weight of at least 4096 elements (the logistic regression's 784×10 matrix,
  the MLP's three matrices) takes bf16/int8 state; the biases stay fp32 (``MIN_QUANTISED_NUMEL``). int8 with
  blocks of 256 (``state_block_size``) and the codes adamlab writes (version 2: ``state_int8_codes``), bf16
  with stochastic rounding seeded by ``state_seed`` = 0.
* **Quick run**: Figure 1's quick length (10 epochs on the 60,000 digits) and Figure 2a's (5,000 digits,
  10 epochs), 3 seeds. Full run: 45 and 200 epochs on all 60,000 digits, 3 seeds.
"""

from __future__ import annotations

import dataclasses

from adamlab.lab.experiments import fig1, fig2a
from adamlab.lab.spec import ClaimSpec, ExperimentSpec, OptimizerSpec, PanelSpec

__all__ = ["FORMATS", "LEARNING_RATES", "TOLERANCE", "build_spec"]

#: (key, legend label, the optimizer's state options, factor on the learning rate); fp32 first (the claims'
#: reference). The control is fp32 Adam with α·(1 + 10⁻⁶): how far a perturbation far below any quantisation
#: error moves the final cost on that panel, i.e. the noise floor of the 1 % claims.
FORMATS: tuple[tuple[str, str, dict[str, object], float], ...] = (
    ("adam_fp32", "Adam, fp32 state", {}, 1.0),
    ("adam_bf16", "Adam, bf16 state", {"state_precision": "bf16"}, 1.0),
    ("adam_int8", "Adam, int8 state", {"state_precision": "int8"}, 1.0),
    ("adam_fp32_control", "Adam, fp32 state, α·(1 + 1e-6): control", {}, 1.0 + 1e-6),
)
#: The learning rate per panel (see the module docstring).
LEARNING_RATES = {"mnist": 0.1, "mnist_mlp": 1e-3}
#: "within 1 % of fp32's final training cost".
TOLERANCE = 0.01


def _panel(panel: PanelSpec, adam_fixed: dict[str, object], title: str) -> PanelSpec:
    lr = LEARNING_RATES[panel.name]
    optimizers = tuple(
        OptimizerSpec(key, label, "adam", {**adam_fixed, **options}, {"lr": (lr * factor,)})
        for key, label, options, factor in FORMATS
    )
    return dataclasses.replace(panel, optimizers=optimizers, title=title, probes=())


def build_spec(*, quick: bool = False, seed: int = 0, seeds: int | None = None) -> ExperimentSpec:
    """The spec: Figure 1's MNIST panel and Figure 2a's panel, Adam with fp32/bf16/int8 state. ``seeds``: how
    many seeds (from ``seed`` on; default 3, quick too: with 2 the t-interval is ±12.7·s/√2 wide)."""
    n_seeds = seeds if seeds is not None else 3
    if n_seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {n_seeds}")
    logistic = next(p for p in fig1.build_spec(quick=quick, seed=seed, seeds=1).panels if p.name == "mnist")
    mlp = fig2a.build_spec(quick=quick, seed=seed, seeds=1).panels[0]
    panels = (
        _panel(logistic, {"lr_decay": "sqrt"}, "Figure 1's MNIST logistic regression: Adam (α/√t) by state format"),
        _panel(mlp, {}, "Figure 2a's MLP with dropout on MNIST: Adam by state format"),
    )
    claims = tuple(
        ClaimSpec(
            panel.name,
            "approx",
            key,
            "adam_fp32",
            f"{where}: {label.split(', ', 1)[1]} within 1 % of fp32",
            TOLERANCE,
        )
        for panel, where in zip(panels, ("Fig. 1 MNIST", "Fig. 2a MLP"))
        for key, label, _, _ in FORMATS[1:]
    )
    epochs = {p.name: p.epochs for p in panels}
    notes = [
        "Adam with fp32, bf16 (stochastic rounding) and int8 (blockwise, B = 256) optimizer state, and a control: "
        "fp32 with α·(1 + 1e-6); the runs of a seed share the initial weights, the minibatches and the dropout "
        f"masks. Learning rates: α = {LEARNING_RATES['mnist']:g} with α/√t on the logistic regression (the lab's "
        f"choice for Figure 1), α = {LEARNING_RATES['mnist_mlp']:g} (Algorithm 1's default) on the MLP; no search. "
        "Each claim: the 95 % t-interval over seeds of the relative gap of the smoothed final training costs "
        "lies within ±1 %; where the control fails too, the panel is more sensitive than the tolerance.",
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
