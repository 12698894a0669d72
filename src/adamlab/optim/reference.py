"""The reference path: each tensor updated on its own with torch operations, literally as the paper writes.

Slow (one temporary per line) but the plainest statement of each algorithm in torch; it runs wherever torch
does (any device, dtype, DTensor) and is what the fused kernel is tested against, option by option.
"""

from __future__ import annotations

import torch

from adamlab import formulas as F


def _gradient(p: torch.Tensor, grad: torch.Tensor, group: dict) -> torch.Tensor:
    """g_t: the gradient (negated under ``maximize``) plus λ·θ for coupled (L2) weight decay."""
    g = -grad if group["maximize"] else grad
    if group["weight_decay"] and not group["decoupled_weight_decay"]:
        g = g + group["weight_decay"] * p
    return g


def _decayed(p: torch.Tensor, group: dict, t: float) -> torch.Tensor:
    """θ − α_t·λ·θ for decoupled weight decay (AdamW), else θ."""
    if group["weight_decay"] and group["decoupled_weight_decay"]:
        return p - (F.step_size(group["lr"], t, group["lr_decay"]) * group["weight_decay"]) * p
    return p


def _ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """numerator/denominator, 0 where the denominator is 0 (ε = 0 and no gradient yet; see adamlab.numpy)."""
    safe = torch.where(denominator > 0, denominator, torch.ones_like(denominator))
    return torch.where(denominator > 0, numerator / safe, torch.zeros_like(numerator))


def _commit(ok: torch.Tensor | None, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Write each new value into its tensor; coordinates where ``ok`` is False keep their old value."""
    for old, new in pairs:
        old.copy_(new if ok is None else torch.where(ok, new, old))


def _finite_mask(grad: torch.Tensor) -> torch.Tensor | None:
    ok = torch.isfinite(grad)
    return None if bool(ok.all()) else ok


def adam_step(p: torch.Tensor, grad: torch.Tensor, state: dict, group: dict) -> int:
    """One step of Algorithm 1 (with the variants of ``adamlab.Adam``) for one tensor; returns the number of
    non-finite gradient entries, whose coordinates are left unchanged."""
    state["step"] += 1
    t = float(state["step"])
    beta1, beta2 = group["betas"]
    g = _gradient(p, grad, group)
    beta1_t = F.beta1_at(beta1, t, group["beta1_decay"])
    m = beta1_t * state["exp_avg"] + (1.0 - beta1_t) * g
    v = beta2 * state["exp_avg_sq"] + (1.0 - beta2) * g * g
    pairs = [(state["exp_avg"], m), (state["exp_avg_sq"], v)]
    v_used = v
    if group["amsgrad"]:
        v_used = torch.maximum(state["max_exp_avg_sq"], v)
        pairs.append((state["max_exp_avg_sq"], v_used))
    alpha_t = F.step_size(group["lr"], t, group["lr_decay"])
    theta = _decayed(p, group, t)
    if not group["bias_correction"]:
        theta = theta - alpha_t * _ratio(m, v_used.sqrt() + group["eps"])
    elif group["eps_mode"] == "paper":
        m_hat = m / F.bias_correction(beta1, t)
        v_hat = v_used / F.bias_correction(beta2, t)
        theta = theta - alpha_t * _ratio(m_hat, v_hat.sqrt() + group["eps"])
    else:
        alpha_hat = F.adam_hat_step(group["lr"], beta1, beta2, t, group["lr_decay"])
        theta = theta - alpha_hat * _ratio(m, v_used.sqrt() + group["eps"])
    _average(state, group, theta, pairs)
    pairs.append((p, theta))
    ok = _finite_mask(grad)
    _commit(ok, pairs)
    return 0 if ok is None else int((~ok).sum())


def adamax_step(p: torch.Tensor, grad: torch.Tensor, state: dict, group: dict) -> int:
    """One step of Algorithm 2 (AdaMax, §7.1) for one tensor; returns the number of non-finite gradient
    entries, whose coordinates are left unchanged."""
    state["step"] += 1
    t = float(state["step"])
    beta1, beta2 = group["betas"]
    g = _gradient(p, grad, group)
    beta1_t = F.beta1_at(beta1, t, group["beta1_decay"])
    m = beta1_t * state["exp_avg"] + (1.0 - beta1_t) * g
    u = torch.maximum(beta2 * state["exp_inf"], g.abs() + group["eps"])
    alpha_t = F.step_size(group["lr"], t, group["lr_decay"])
    if group["bias_correction"]:
        alpha_t = alpha_t / F.bias_correction(beta1, t)
    # Where u = 0 the step is 0 (with β2 > 0 that is where every gradient so far was 0, so m = 0 too).
    ratio = _ratio(m, u)
    theta = _decayed(p, group, t) - alpha_t * ratio
    pairs = [(state["exp_avg"], m), (state["exp_inf"], u)]
    _average(state, group, theta, pairs)
    pairs.append((p, theta))
    ok = _finite_mask(grad)
    _commit(ok, pairs)
    return 0 if ok is None else int((~ok).sum())


def _average(state: dict, group: dict, theta: torch.Tensor, pairs: list) -> None:
    """Temporal averaging (§7.2): θ̄_t = β·θ̄_{t−1} + (1 − β)·θ_t."""
    if group["averaging"]:
        b = group["betas"][1] if group["averaging_beta"] is None else group["averaging_beta"]
        pairs.append((state["param_avg"], b * state["param_avg"] + (1.0 - b) * theta))
