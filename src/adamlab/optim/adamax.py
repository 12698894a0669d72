"""``adamlab.AdaMax``: Algorithm 2 of Kingma & Ba (2015) (§7.1) as a torch.optim optimizer."""

from __future__ import annotations

from typing import Any

import torch

from adamlab.optim import reference
from adamlab.optim.base import AdamFamily, bias_corrected_moments, torch_compat_impl


class AdaMax(AdamFamily):
    r"""AdaMax (Kingma & Ba, ICLR 2015, §7.1, Algorithm 2), a drop-in for ``torch.optim.Adamax``.

    At step t, element-wise (weight decay, maximize, β1 decay, α/√t and averaging as in :class:`adamlab.Adam`):

    .. code-block:: text

        m_t = β1,t·m_{t−1} + (1 − β1,t)·g_t
        u_t = max(β2·u_{t−1}, |g_t| + ε)                    the exponentially weighted infinity norm
        θ_t = θ_{t−1} − (α_t/(1 − β1^t))·m_t/u_t             (α_t·m_t/u_t without bias correction)

    The paper has no ε, so the default is ``eps=0``; a positive ε is added inside the max, exactly where
    torch.optim.Adamax adds it (its default is 1e-8: pass ``eps=1e-8`` for identical results). Where u_t = 0
    the step is 0: with β2 > 0 that happens only where every gradient so far was 0, so m_t = 0 too and the
    paper's m/u is 0/0. |Δ_t| ≤ α_t always (§7.1). Defaults are the paper's: α = 0.002, β = (0.9, 0.999).

    State per parameter, named as torch.optim names it: ``step``, ``exp_avg`` (m), ``exp_inf`` (u),
    ``param_avg`` (averaging). Non-finite gradients are handled as in :class:`adamlab.Adam`.

    Example:
        >>> import torch, adamlab
        >>> w = torch.nn.Parameter(torch.ones(3))
        >>> opt = adamlab.AdaMax([w])
        >>> w.pow(2).sum().backward(); opt.step()
    """

    algorithm = "adamax"
    moment_keys = ("exp_avg", "exp_inf")

    def __init__(
        self,
        params: Any,
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 0.0,
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
        decoupled_weight_decay: bool = False,
        bias_correction: bool = True,
        lr_decay: str | None = None,
        beta1_decay: float | None = None,
        averaging: bool = False,
        averaging_beta: float | None = None,
        impl: str = "auto",
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            maximize=bool(maximize),
            decoupled_weight_decay=bool(decoupled_weight_decay),
            bias_correction=bool(bias_correction),
            lr_decay=lr_decay,
            beta1_decay=beta1_decay,
            averaging=bool(averaging),
            averaging_beta=averaging_beta,
            impl=torch_compat_impl(impl, foreach, None, capturable, differentiable),
        )
        super().__init__(params, defaults)

    def _reference_step(self, p: torch.Tensor, grad: torch.Tensor, state: dict, group: dict) -> int:
        return reference.adamax_step(p, grad, state, group)

    def _effective_ratio(self, state: dict[str, Any], group: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        m_hat, u, _ = bias_corrected_moments(state, group, "exp_avg", "exp_inf", correct_second=False)
        ratio = torch.where(u > 0, m_hat.abs() / torch.where(u > 0, u, 1.0), 0.0)
        return ratio, ratio
