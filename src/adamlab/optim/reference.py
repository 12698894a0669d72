"""The torch paths written in torch operations: each algorithm once per tensor (``*_step``, the reference) and
once over lists of tensors with torch's multi-tensor ``_foreach`` operations (``*_foreach``, for devices
without adamlab's fused kernel: CUDA, MPS, XPU).

The reference path is the plainest statement of each algorithm in torch (one temporary per line); it runs
wherever torch does (any device, dtype, DTensor, ``meta``) and under autograd (``differentiable=True``), and
is what the fused kernel and the foreach path are tested against, option by option (tests/optim_cases.py).
The foreach path computes the same expressions in the same order, a few kernels over all tensors at once.

Non-finite gradients: coordinates whose gradient is NaN or ±inf keep their parameter and state (the
reference path masks them; the foreach path sends the few tensors that have any to the reference path).

Quantised state (``state_precision="bf16"``/``"int8"``) has its own reference step, with its formats:
:func:`adamlab.optim.quantised.step`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from adamlab import formulas as F
from adamlab.hyperparameters import AdaMaxHyperparameters, AdamHyperparameters

State = dict[str, Any]

# ---------------------------------------------------------------------- one tensor (the reference)


def _gradient(p: torch.Tensor, grad: torch.Tensor, hp: Any) -> torch.Tensor:
    """g_t: the gradient (negated under ``maximize``) plus λ·θ for coupled (L2) weight decay."""
    g = -grad if hp.maximize else grad
    if hp.weight_decay and not hp.decoupled_weight_decay:
        g = g + hp.weight_decay * p
    return g


def _decayed(p: torch.Tensor, hp: Any, t: float) -> torch.Tensor:
    """θ − α_t·λ·θ for decoupled weight decay (AdamW), else θ."""
    if hp.weight_decay and hp.decoupled_weight_decay:
        return p - (F.step_size(hp.lr, t, hp.lr_decay) * hp.weight_decay) * p
    return p


def _ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """numerator/denominator, 0 where the denominator is 0 (ε = 0 and no gradient yet; see adamlab.numpy)."""
    safe = torch.where(denominator > 0, denominator, torch.ones_like(denominator))
    return torch.where(denominator > 0, numerator / safe, torch.zeros_like(numerator))


def _commit(ok: torch.Tensor | None, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Write each new value into its tensor; coordinates where ``ok`` is False keep their old value."""
    for old, new in pairs:
        old.copy_(new if ok is None else torch.where(ok, new, old))


def _read(t: torch.Tensor) -> torch.Tensor:
    """A tensor the step reads before writing it: a copy under autograd (``differentiable=True``), so that
    the in-place writes of :func:`_commit` never change a value autograd saved for the backward pass."""
    return t.clone() if t.requires_grad and torch.is_grad_enabled() else t


def _finite_mask(grad: torch.Tensor) -> torch.Tensor | None:
    """Where the gradient is finite; None if it is everywhere (or on ``meta``, which has no values)."""
    if grad.device.type == "meta":
        return None
    ok = torch.isfinite(grad)
    return None if bool(ok.all()) else ok


def _average(state: State, hp: Any, theta: torch.Tensor, pairs: list) -> None:
    """Temporal averaging (§7.2): θ̄_t = β̄·θ̄_{t−1} + (1 − β̄)·θ_t."""
    if hp.averaging:
        b = hp.average_beta
        pairs.append((state["param_avg"], b * _read(state["param_avg"]) + (1.0 - b) * theta))


def adam_step(p: torch.Tensor, grad: torch.Tensor, state: State, hp: AdamHyperparameters) -> int:
    """One step of Algorithm 1 (with the variants of ``adamlab.Adam``) for one tensor; returns the number of
    non-finite gradient entries, whose coordinates are left unchanged."""
    state["step"] += 1
    t = float(state["step"])
    beta1, beta2 = hp.betas
    p_old = _read(p)
    g = _gradient(p_old, grad, hp)
    beta1_t = F.beta1_at(beta1, t, hp.beta1_decay)
    m = beta1_t * _read(state["exp_avg"]) + (1.0 - beta1_t) * g
    v = beta2 * _read(state["exp_avg_sq"]) + (1.0 - beta2) * g * g
    pairs = [(state["exp_avg"], m), (state["exp_avg_sq"], v)]
    v_used = v
    if hp.amsgrad:
        v_used = torch.maximum(_read(state["max_exp_avg_sq"]), v)
        pairs.append((state["max_exp_avg_sq"], v_used))
    alpha_t = F.step_size(hp.lr, t, hp.lr_decay)
    theta = _decayed(p_old, hp, t)
    if not hp.bias_correction:
        theta = theta - alpha_t * _ratio(m, v_used.sqrt() + hp.eps)
    elif hp.eps_mode == "paper":
        m_hat = m / F.bias_correction(beta1, t)
        v_hat = v_used / F.bias_correction(beta2, t)
        theta = theta - alpha_t * _ratio(m_hat, v_hat.sqrt() + hp.eps)
    else:
        alpha_hat = F.adam_hat_step(hp.lr, beta1, beta2, t, hp.lr_decay)
        theta = theta - alpha_hat * _ratio(m, v_used.sqrt() + hp.eps)
    _average(state, hp, theta, pairs)
    pairs.append((p, theta))
    ok = _finite_mask(grad)
    _commit(ok, pairs)
    return 0 if ok is None else int((~ok).sum())


def adamax_step(p: torch.Tensor, grad: torch.Tensor, state: State, hp: AdaMaxHyperparameters) -> int:
    """One step of Algorithm 2 (AdaMax, §7.1) for one tensor; returns the number of non-finite gradient
    entries, whose coordinates are left unchanged."""
    state["step"] += 1
    t = float(state["step"])
    beta1, beta2 = hp.betas
    p_old = _read(p)
    g = _gradient(p_old, grad, hp)
    beta1_t = F.beta1_at(beta1, t, hp.beta1_decay)
    m = beta1_t * _read(state["exp_avg"]) + (1.0 - beta1_t) * g
    u = torch.maximum(beta2 * _read(state["exp_inf"]), g.abs() + hp.eps)
    alpha_t = F.step_size(hp.lr, t, hp.lr_decay)
    if hp.bias_correction:
        alpha_t = alpha_t / F.bias_correction(beta1, t)
    # Where u = 0 the step is 0 (with β2 > 0 that is where every gradient so far was 0, so m = 0 too).
    theta = _decayed(p_old, hp, t) - alpha_t * _ratio(m, u)
    pairs = [(state["exp_avg"], m), (state["exp_inf"], u)]
    _average(state, hp, theta, pairs)
    pairs.append((p, theta))
    ok = _finite_mask(grad)
    _commit(ok, pairs)
    return 0 if ok is None else int((~ok).sum())


# ---------------------------------------------------------------------- lists of tensors (foreach)


def _split_nonfinite(grads: Sequence[torch.Tensor]) -> list[bool]:
    """Whether each gradient is finite everywhere: one multi-tensor max-norm and one device sync."""
    if not grads:
        return []
    norms = torch._foreach_norm(list(grads), float("inf"))
    return torch.stack([n.float() for n in norms]).isfinite().tolist()


def _tiny_floor(denominators: list[torch.Tensor]) -> None:
    """Raise exact zeros of the denominators to the dtype's smallest normal number: a 0/0 (ε = 0, no gradient
    yet, so the numerator is 0 too) becomes 0, as the reference path's :func:`_ratio` defines it."""
    if denominators:
        torch._foreach_clamp_min_(denominators, torch.finfo(denominators[0].dtype).tiny)


def _foreach(
    step_one: Any,
    update: Any,
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    states: Sequence[State],
    hp: Any,
) -> list[int]:
    """Run ``update`` over the tensors whose gradients are finite (grouped by dtype and device, as torch's
    foreach kernels need), ``step_one`` (the reference) over the others; the non-finite counts."""
    counts = [0] * len(params)
    finite = _split_nonfinite(grads)
    groups: dict[tuple[torch.dtype, torch.device], list[int]] = {}
    for i, (p, ok) in enumerate(zip(params, finite)):
        if ok:
            groups.setdefault((p.dtype, p.device), []).append(i)
        else:
            counts[i] = step_one(params[i], grads[i], states[i], hp)
    for members in groups.values():
        ps = [params[i] for i in members]
        sts = [states[i] for i in members]
        for s in sts:
            s["step"] += 1
        ts = [float(s["step"]) for s in sts]
        g = [grads[i] for i in members]
        if hp.maximize:
            g = list(torch._foreach_neg(g))
        if hp.weight_decay and not hp.decoupled_weight_decay:
            g = list(torch._foreach_add(g, ps, alpha=hp.weight_decay))
        beta1_t = [F.beta1_at(hp.beta1, t, hp.beta1_decay) for t in ts]
        m = [s["exp_avg"] for s in sts]
        torch._foreach_mul_(m, beta1_t)
        torch._foreach_add_(m, torch._foreach_mul(g, [1.0 - b for b in beta1_t]))
        alpha_t = [F.step_size(hp.lr, t, hp.lr_decay) for t in ts]
        if hp.weight_decay and hp.decoupled_weight_decay:
            torch._foreach_sub_(ps, torch._foreach_mul(ps, [a * hp.weight_decay for a in alpha_t]))
        update(ps, g, m, sts, ts, alpha_t, hp)
        if hp.averaging:
            avg = [s["param_avg"] for s in sts]
            torch._foreach_mul_(avg, hp.average_beta)
            torch._foreach_add_(avg, torch._foreach_mul(ps, 1.0 - hp.average_beta))
    return counts


def _adam_update(ps: list, g: list, m: list, sts: list, ts: list, alpha_t: list, hp: AdamHyperparameters) -> None:
    """v, then θ ← θ − α_t·m̂/(√v̂ + ε) (or its variants) over lists; m and decoupled decay are done."""
    v = [s["exp_avg_sq"] for s in sts]
    torch._foreach_mul_(v, hp.beta2)
    torch._foreach_add_(v, torch._foreach_mul(torch._foreach_mul(g, 1.0 - hp.beta2), g))
    v_used = v
    if hp.amsgrad:
        v_used = [s["max_exp_avg_sq"] for s in sts]
        torch._foreach_maximum_(v_used, v)
    numerator: Sequence[torch.Tensor]
    if not hp.bias_correction:
        numerator, scale = m, alpha_t
        denom = list(torch._foreach_sqrt(v_used))
    elif hp.eps_mode == "paper":
        numerator = torch._foreach_div(m, [F.bias_correction(hp.beta1, t) for t in ts])
        denom = list(torch._foreach_sqrt(torch._foreach_div(v_used, [F.bias_correction(hp.beta2, t) for t in ts])))
        scale = alpha_t
    else:
        numerator = m
        denom = list(torch._foreach_sqrt(v_used))
        scale = [F.adam_hat_step(hp.lr, hp.beta1, hp.beta2, t, hp.lr_decay) for t in ts]
    torch._foreach_add_(denom, hp.eps)
    if hp.eps == 0:
        _tiny_floor(denom)
    ratio = torch._foreach_div(numerator, denom)
    torch._foreach_mul_(ratio, scale)
    torch._foreach_sub_(ps, ratio)


def _adamax_update(ps: list, g: list, m: list, sts: list, ts: list, alpha_t: list, hp: AdaMaxHyperparameters) -> None:
    """u = max(β2·u, |g| + ε), then θ ← θ − (α_t/(1 − β1^t))·m/u over lists; m and decoupled decay are done."""
    u = [s["exp_inf"] for s in sts]
    torch._foreach_mul_(u, hp.beta2)
    torch._foreach_maximum_(u, torch._foreach_add(torch._foreach_abs(g), hp.eps))
    if hp.bias_correction:
        alpha_t = [a / F.bias_correction(hp.beta1, t) for a, t in zip(alpha_t, ts)]
    denom = torch._foreach_clamp_min(u, torch.finfo(u[0].dtype).tiny)  # u = 0 only where m = 0: the step is 0
    ratio = torch._foreach_div(m, denom)
    torch._foreach_mul_(ratio, alpha_t)
    torch._foreach_sub_(ps, ratio)


def adam_foreach(
    params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], states: Sequence[State], hp: AdamHyperparameters
) -> list[int]:
    """:func:`adam_step` over lists of tensors with torch's multi-tensor operations; the non-finite counts."""
    return _foreach(adam_step, _adam_update, params, grads, states, hp)


def adamax_foreach(
    params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], states: Sequence[State], hp: AdaMaxHyperparameters
) -> list[int]:
    """:func:`adamax_step` over lists of tensors with torch's multi-tensor operations; the non-finite counts."""
    return _foreach(adamax_step, _adamax_update, params, grads, states, hp)


__all__ = ["adam_foreach", "adam_step", "adamax_foreach", "adamax_step"]
