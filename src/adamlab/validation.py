"""Argument checks shared by every optimizer of adamlab (torch and NumPy): fail early, name the argument."""

from __future__ import annotations

import math
from numbers import Real

from adamlab.formulas import EPS_MODES, LR_DECAYS


def _real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def check_hyperparameters(
    *,
    lr: object,
    betas: object,
    eps: object,
    weight_decay: object,
    eps_mode: object = "paper",
    lr_decay: object = None,
    beta1_decay: object = None,
    averaging_beta: object = None,
) -> None:
    """Raise ``ValueError``/``TypeError`` naming the first bad argument and the range it must lie in.

    Allowed: lr ≥ 0 (finite); betas a pair with 0 ≤ β1, β2 < 1; eps ≥ 0; weight_decay ≥ 0;
    eps_mode in {"paper", "hat"}; lr_decay in {None, "sqrt"}; beta1_decay λ in (0, 1] or None;
    averaging_beta in [0, 1) or None.
    """
    lr_f = _real("lr", lr)
    if lr_f < 0:
        raise ValueError(f"lr must be >= 0, got {lr_f}")
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    for i, b in enumerate(betas):
        b_f = _real(f"betas[{i}]", b)
        if not 0.0 <= b_f < 1.0:
            raise ValueError(f"betas[{i}] must lie in [0, 1), got {b_f}")
    eps_f = _real("eps", eps)
    if eps_f < 0:
        raise ValueError(f"eps must be >= 0, got {eps_f}")
    wd_f = _real("weight_decay", weight_decay)
    if wd_f < 0:
        raise ValueError(f"weight_decay must be >= 0, got {wd_f}")
    if eps_mode not in EPS_MODES:
        raise ValueError(f"eps_mode must be one of {EPS_MODES}, got {eps_mode!r}")
    if lr_decay not in LR_DECAYS:
        raise ValueError(f"lr_decay must be one of {LR_DECAYS}, got {lr_decay!r}")
    if beta1_decay is not None:
        lam = _real("beta1_decay", beta1_decay)
        if not 0.0 < lam <= 1.0:
            raise ValueError(f"beta1_decay (λ) must lie in (0, 1], got {lam}")
    if averaging_beta is not None:
        ab = _real("averaging_beta", averaging_beta)
        if not 0.0 <= ab < 1.0:
            raise ValueError(f"averaging_beta must lie in [0, 1), got {ab}")
