"""``adamlab.AdaMax``: Algorithm 2 of Kingma & Ba (2015) (§7.1) as a torch.optim optimizer."""

from __future__ import annotations

from typing import Any

import torch

from adamlab.hyperparameters import AdaMaxHyperparameters
from adamlab.optim.base import AdamFamily, bias_corrected_moments


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

    hyperparameters = AdaMaxHyperparameters

    def __init__(
        self,
        params: Any,
        lr: float | torch.Tensor = 2e-3,
        betas: tuple[float, float] | tuple[torch.Tensor, torch.Tensor] = (0.9, 0.999),
        eps: float = 0.0,
        weight_decay: float = 0.0,
        foreach: bool | None = None,
        *,
        impl: str = "auto",
        fused: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        **options: Any,
    ) -> None:
        explicit = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
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
        m_hat, u, _ = bias_corrected_moments(state, group, "exp_avg", "exp_inf", correct_second=False)
        ratio = torch.where(u > 0, m_hat.abs() / torch.where(u > 0, u, 1.0), 0.0)
        return ratio, ratio
