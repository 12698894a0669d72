"""The paper's scalar formulas, each in exactly one place.

Every optimizer path of adamlab (the NumPy literal implementation, the torch reference path and, mirrored
line by line in ``kernels/adam_kernels.c``, the fused CPU kernel) takes its per-step scalars from here.
Section numbers refer to Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015.
"""

from __future__ import annotations

import math

EPS_MODES = ("paper", "hat")
LR_DECAYS = (None, "sqrt")


def bias_correction(beta: float, t: int | float) -> float:
    """The de-biasing factor 1 − β^t of §3: ``E[v_t] = E[g²]·(1 − β2^t)`` for v_0 = 0."""
    return 1.0 - beta**t


def step_size(lr: float, t: int | float, lr_decay: str | None) -> float:
    """α_t: the constant α, or the convergence theory's α/√t (§4, Theorem 4.1) when ``lr_decay="sqrt"``."""
    if lr_decay == "sqrt":
        return lr / math.sqrt(t)
    return lr


def beta1_at(beta1: float, t: int | float, beta1_decay: float | None) -> float:
    """β1,t = β1·λ^(t−1) (§4, Theorem 4.1); the constant β1 when ``beta1_decay`` is None."""
    if beta1_decay is None:
        return beta1
    return beta1 * beta1_decay ** (t - 1)


def eps_hat(eps: float, beta2: float, t: int | float) -> float:
    """ε̂ = ε·√(1 − β2^t): the ε̂ that makes the efficient form equal to Algorithm 1 exactly (end of §2)."""
    return eps * math.sqrt(bias_correction(beta2, t))


def adam_scalars(
    lr: float,
    beta1: float,
    beta2: float,
    t: int | float,
    *,
    bias_correction_on: bool,
    lr_decay: str | None,
) -> tuple[float, float]:
    """The two step scalars of Adam at step t: ``(step, denom_scale)``.

    Algorithm 1 writes θ ← θ − α_t·m̂/(√v̂ + ε) with m̂ = m/(1 − β1^t), v̂ = v/(1 − β2^t). Dividing m̂ and
    √v̂ out gives θ ← θ − step·m/(√v·denom_scale + ε) with
    ``step = α_t/(1 − β1^t)`` and ``denom_scale = 1/√(1 − β2^t)``; without bias correction both factors are 1.
    The bias correction of m always uses the constant β1 (the paper's appendix, also under β1 decay).
    """
    alpha_t = step_size(lr, t, lr_decay)
    if not bias_correction_on:
        return alpha_t, 1.0
    return alpha_t / bias_correction(beta1, t), 1.0 / math.sqrt(bias_correction(beta2, t))


def adam_hat_step(lr: float, beta1: float, beta2: float, t: int | float, lr_decay: str | None) -> float:
    """α_t of the efficient form (end of §2): α·√(1 − β2^t)/(1 − β1^t), with α/√t in place of α if asked."""
    return step_size(lr, t, lr_decay) * math.sqrt(bias_correction(beta2, t)) / bias_correction(beta1, t)


def averaging_beta(beta2: float, averaging_beta: float | None) -> float:
    """β̄ of the temporal average θ̄ (§7.2): the given ``averaging_beta``, else β2 (the paper's choice)."""
    return beta2 if averaging_beta is None else averaging_beta


def average_correction(beta: float, t: int | float) -> float:
    """1/(1 − β^t): turns the temporal average θ̄_t into the bias-corrected θ̂_t of §7.2."""
    return 1.0 / bias_correction(beta, t)


def adam_step_bound(beta1: float, beta2: float, lr: float) -> float:
    """The bound on |Δ_t| of §2.1: α·(1 − β1)/√(1 − β2) if (1 − β1) > √(1 − β2), else α."""
    if (1.0 - beta1) > math.sqrt(1.0 - beta2):
        return lr * (1.0 - beta1) / math.sqrt(1.0 - beta2)
    return lr
