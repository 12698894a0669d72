"""``adamlab.Adam``: Algorithm 1 of Kingma & Ba (2015) as a torch.optim optimizer, with every variant."""

from __future__ import annotations

from typing import Any

import torch

from adamlab.hyperparameters import AdamHyperparameters
from adamlab.optim.base import AdamFamily, bias_corrected_moments


class Adam(AdamFamily):
    r"""Adam (Kingma & Ba, ICLR 2015, Algorithm 1), a drop-in for ``torch.optim.Adam`` and ``AdamW``.

    At step t, for each parameter θ with gradient g_t (element-wise):

    .. code-block:: text

        g_t ← −g_t                                   if maximize
        g_t ← g_t + λ_wd·θ_{t−1}                      L2 weight decay (the paper's experiments)
        θ_{t−1} ← θ_{t−1} − α_t·λ_wd·θ_{t−1}          decoupled weight decay (AdamW) instead
        β1,t = β1·λ^(t−1)                             with beta1_decay=λ (§4, Theorem 4.1); else β1
        m_t = β1,t·m_{t−1} + (1 − β1,t)·g_t           first moment (§2)
        v_t = β2·v_{t−1} + (1 − β2)·g_t²              second raw moment (§2)
        v_t ← max(v_max, v_t), v_max ← v_t            amsgrad (Reddi et al. 2018; max of the raw v, as torch)
        m̂_t = m_t/(1 − β1^t),  v̂_t = v_t/(1 − β2^t)   bias correction (§3); m̂ = m, v̂ = v if disabled
        θ_t = θ_{t−1} − α_t·m̂_t/(√v̂_t + ε)             eps_mode="paper" (Algorithm 1)
        θ_t = θ_{t−1} − α̂_t·m_t/(√v_t + ε)              eps_mode="hat": α̂_t = α_t·√(1−β2^t)/(1−β1^t) (§2, end)
        θ̄_t = β̄·θ̄_{t−1} + (1 − β̄)·θ_t                 averaging (§7.2); β̄ = β2 unless averaging_beta

    α_t = α (``lr``), or α/√t with ``lr_decay="sqrt"`` (the convergence theory's schedule, §4); ``lr`` may
    be changed by torch's LR schedulers as usual. The two ε forms agree when ε̂ = ε·√(1 − β2^t).

    Args (every option is a field of :class:`adamlab.hyperparameters.AdamHyperparameters`, which checks it;
    those after ``amsgrad`` are keyword-only):
        params: parameters or param groups (each group may override every option below).
        lr: α (default 1e-3; a number or a one-element tensor). betas: (β1, β2), each in [0, 1) (default
            (0.9, 0.999); two numbers or two one-element tensors).
        eps: ε ≥ 0 (default 1e-8); ε̂ under ``eps_mode="hat"``.
        weight_decay: λ_wd ≥ 0, added to the gradient (L2) or, with ``decoupled_weight_decay``, AdamW's.
        amsgrad: keep the running maximum of v (state ``max_exp_avg_sq``).
        maximize: ascend the objective. bias_correction: divide by 1 − β^t (default True; False is RMSProp
            with momentum, Figure 4). eps_mode: "paper" or "hat". lr_decay: None or "sqrt".
        beta1_decay: λ in (0, 1] or None. averaging: keep θ̄ (state ``param_avg``); evaluate with
            :meth:`averaged_parameters`. averaging_beta: β̄ in [0, 1), default β2.
        impl: "auto" (per tensor: the fused CPU kernel where it applies; on CUDA/MPS/XPU torch's fused Adam
            where its semantics are adamlab's, else adamlab's foreach path; the reference path elsewhere),
            "fused" (raise where the kernel does not apply; bfloat16/float16 take the reference path),
            "foreach" or "reference". torch.optim's switches work as there: ``fused=True`` means
            ``impl="fused"``, ``foreach=True`` ``impl="foreach"``; ``differentiable=True`` steps on the
            reference path with autograd recording (parameters that require grad must then be non-leaf
            tensors, as in torch). ``capturable=True`` is refused.

    Complex parameters step as real views (each θ = a + ib as the pair (a, b)), as torch.optim does.

    State per parameter, named as torch.optim names it so checkpoints move both ways: ``step`` (float32
    scalar tensor), ``exp_avg`` (m), ``exp_avg_sq`` (v), ``max_exp_avg_sq`` (amsgrad), ``param_avg``
    (averaging; adamlab only).

    Non-finite gradients: coordinates whose gradient is NaN or ±inf keep their parameter and state values,
    every other coordinate takes the step, and ``step()`` then raises ``FloatingPointError`` naming the
    parameters. NaN or inf never enters the state.

    Example:
        >>> import torch, adamlab
        >>> model = torch.nn.Linear(4, 1)
        >>> opt = adamlab.Adam(model.parameters(), lr=1e-2)
        >>> loss = model(torch.ones(2, 4)).pow(2).mean()
        >>> loss.backward(); opt.step(); opt.zero_grad()
    """

    hyperparameters = AdamHyperparameters

    def __init__(
        self,
        params: Any,
        lr: float | torch.Tensor = 1e-3,
        betas: tuple[float, float] | tuple[torch.Tensor, torch.Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        impl: str = "auto",
        foreach: bool | None = None,
        fused: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        **options: Any,
    ) -> None:
        explicit = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)
        super().__init__(
            params,
            explicit,
            options,
            impl=impl,
            foreach=foreach,
            fused=fused,
            capturable=capturable,
            differentiable=differentiable,
        )

    def _effective_ratio(self, state: dict[str, Any], group: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        second = "max_exp_avg_sq" if group["amsgrad"] else "exp_avg_sq"
        m_hat, v_hat, _ = bias_corrected_moments(state, group, "exp_avg", second, correct_second=True)
        root = v_hat.sqrt()
        snr = torch.where(root > 0, m_hat.abs() / torch.where(root > 0, root, 1.0), 0.0)
        return m_hat.abs() / (root + group["eps"]), snr


class AdamW(Adam):
    """AdamW (Loshchilov & Hutter, 2019): :class:`Adam` with decoupled weight decay, a drop-in for
    ``torch.optim.AdamW`` (its defaults: ``weight_decay=1e-2``). Every option of :class:`Adam` applies;
    ``AdamW(params, ...)`` is ``Adam(params, ..., decoupled_weight_decay=True)``.

    >>> import torch, adamlab
    >>> opt = adamlab.AdamW([torch.nn.Parameter(torch.ones(2))])
    >>> opt.param_groups[0]["weight_decay"], opt.param_groups[0]["decoupled_weight_decay"]
    (0.01, True)
    """

    def __init__(
        self,
        params: Any,
        lr: float | torch.Tensor = 1e-3,
        betas: tuple[float, float] | tuple[torch.Tensor, torch.Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("decoupled_weight_decay", True)
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, **kwargs)
