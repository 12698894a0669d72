"""Theorem 4.1 of Kingma & Ba (2015), evaluated on a run.

Assume ‖∇f_t‖₂ ≤ G, ‖∇f_t‖∞ ≤ G∞, ‖θ_n − θ_m‖₂ ≤ D, ‖θ_n − θ_m‖∞ ≤ D∞ for all iterates; β1, β2 ∈ [0, 1)
with γ = β1²/√β2 < 1; α_t = α/√t; β1,t = β1·λ^(t−1), λ ∈ (0, 1); and the update has no ε. Then (§4)

    R(T) ≤ D²/(2α(1−β1)) · Σ_i √(T·v̂_{T,i})                                  (term 1)
         + α(1+β1)·G∞/((1−β1)·√(1−β2)·(1−γ)²) · Σ_i ‖g_{1:T,i}‖₂             (term 2)
         + Σ_i D∞²·G∞·√(1−β2)/(2α(1−β1)(1−λ)²)                              (term 3)

Corollary 4.2 turns this into R(T)/T = O(1/√T) via Σ_i ‖g_{1:T,i}‖₂ ≤ d·G∞·√T.

Measured from a run (:class:`adamlab.theory.regret.OnlineRun`): G∞ = max_{t≤T} ‖g_t‖∞; v̂_T and the
gradient histories; D∞ = max_i (range of {θ_{1,i}, …, θ_{T,i}, θ*_i}); D = √(Σ_i range_i²), the diagonal of
the bounding box of the iterates and θ* — an upper bound of their ℓ2 diameter (exact for d = 1), so the
evaluated right-hand side is never below the theorem's. θ* is included because the proof bounds
‖θ_t − θ*‖ by D. Every input can be overridden (e.g. by the feasible set's a-priori diameters).

β1 = 0 (Reddi et al.'s counterexample): β1,t = 0 = β1·λ^(t−1) for every λ ∈ (0, 1), so the bound holds for
each λ and hence for its infimum, λ → 0, where (1 − λ)² → 1; that is what is evaluated unless λ is given.

The proof is wrong (Reddi, Kale & Kumar 2018): it needs √v̂_{t,i}/α_t ≥ √v̂_{t−1,i}/α_{t−1}, which Adam's
moving average does not guarantee. The bound is therefore a claim to test, not a fact.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from adamlab.numpy import Adam


@dataclass(frozen=True)
class Theorem41Bound:
    """The right-hand side of Theorem 4.1 at T, term by term, with the inputs it was computed from."""

    T: int
    term1: float
    term2: float
    term3: float
    alpha: float
    beta1: float
    beta2: float
    lam: float
    gamma: float
    G_inf: float
    D: float
    D_inf: float
    dim: int
    sum_sqrt_T_vhat: float
    sum_grad_norms: float

    @property
    def total(self) -> float:
        return self.term1 + self.term2 + self.term3

    @property
    def sparsity_ratio(self) -> float:
        """Σ_i ‖g_{1:T,i}‖₂ / (d·G∞·√T) ≤ 1: how far below Corollary 4.2's worst case the gradients are."""
        worst = self.dim * self.G_inf * math.sqrt(self.T)
        return self.sum_grad_norms / worst if worst > 0 else float("nan")

    def as_dict(self) -> dict:
        return {**asdict(self), "total": self.total, "sparsity_ratio": self.sparsity_ratio}


def gamma_of(beta1: float, beta2: float) -> float:
    """γ = β1²/√β2 (§4); +inf when β2 = 0 < β1."""
    if beta2 == 0:
        return 0.0 if beta1 == 0 else math.inf
    return beta1**2 / math.sqrt(beta2)


def check_preconditions(opt: object, *, lam: float | None = None, allow_eps: bool = False) -> float:
    """Check that ``opt`` is the algorithm Theorem 4.1 is about; return the λ to use in term 3.

    Raises ValueError, naming the failed condition, unless: ``opt`` is :class:`adamlab.numpy.Adam` with bias
    correction, no AMSGrad, no weight decay, not maximising; ε = 0 (the analysed update has no ε; pass
    ``allow_eps`` to evaluate anyway); γ = β1²/√β2 < 1; α_t = α/√t (``lr_decay="sqrt"``) with α > 0; and
    β1,t = β1·λ^(t−1) with λ ∈ (0, 1) (``beta1_decay``) — or β1 = 0, for which any λ works (see module doc).
    """
    if not isinstance(opt, Adam):
        raise ValueError(f"Theorem 4.1 is about Adam (Algorithm 1); got {type(opt).__name__}")
    if opt.amsgrad:
        raise ValueError("Theorem 4.1 is about Adam, not AMSGrad (amsgrad=True): v̂_t must be the moving average")
    if not opt.bias_correction:
        raise ValueError("Theorem 4.1 analyses the bias-corrected update (§3); got bias_correction=False")
    if opt.weight_decay != 0 or opt.maximize:
        raise ValueError("Theorem 4.1 needs g_t = ∇f_t(θ_t): weight_decay must be 0 and maximize False")
    if opt.eps != 0 and not allow_eps:
        raise ValueError(f"the update analysed in Theorem 4.1 has no ε: need eps=0, got eps={opt.eps:g}")
    if not opt.lr > 0:
        raise ValueError(f"Theorem 4.1 needs α > 0, got lr={opt.lr:g}")
    g = gamma_of(opt.beta1, opt.beta2)
    if not g < 1:
        raise ValueError(f"Theorem 4.1 needs γ = β1²/√β2 < 1; got γ = {g:.6g} (β1={opt.beta1:g}, β2={opt.beta2:g})")
    if opt.lr_decay != "sqrt":
        raise ValueError(f"Theorem 4.1 needs α_t = α/√t: need lr_decay='sqrt', got lr_decay={opt.lr_decay!r}")
    if lam is not None and not 0.0 < lam < 1.0:
        raise ValueError(f"Theorem 4.1 needs λ ∈ (0, 1), got lam={lam:g}")
    if opt.beta1 == 0:
        return 0.0 if lam is None else float(lam)
    decay = opt.beta1_decay
    if decay is None or not 0.0 < decay < 1.0:
        shown = "None (constant β1, i.e. λ = 1)" if decay is None else f"{decay:g}"
        raise ValueError(
            f"Theorem 4.1 needs β1,t = β1·λ^(t−1) with λ ∈ (0, 1) (e.g. the paper's 1 − 1e-8); beta1_decay={shown}"
        )
    if lam is not None and lam != decay:
        raise ValueError(f"lam={lam:g} differs from the optimizer's beta1_decay={decay:g}")
    return float(decay)


def theorem41_rhs(
    *,
    T: int,
    alpha: float,
    beta1: float,
    beta2: float,
    lam: float,
    G_inf: float,
    D: float,
    D_inf: float,
    vhat_T: np.ndarray,
    grad_norms: np.ndarray,
) -> Theorem41Bound:
    """The three terms of Theorem 4.1 from its inputs: ``vhat_T`` = v̂_{T,i} and ``grad_norms`` = ‖g_{1:T,i}‖₂
    per coordinate i (the sums Σ_i run over their d entries). No precondition is checked here beyond γ < 1."""
    vhat_T, grad_norms = np.asarray(vhat_T, np.float64), np.asarray(grad_norms, np.float64)
    if vhat_T.shape != grad_norms.shape or vhat_T.ndim != 1:
        raise ValueError("vhat_T and grad_norms must be 1-D arrays of the same length d")
    gam = gamma_of(beta1, beta2)
    if not gam < 1:
        raise ValueError(f"Theorem 4.1 needs γ = β1²/√β2 < 1, got {gam:.6g}")
    d = vhat_T.size
    s_v = float(np.sum(np.sqrt(T * vhat_T)))
    s_g = float(np.sum(grad_norms))
    term1 = D**2 / (2 * alpha * (1 - beta1)) * s_v
    term2 = alpha * (1 + beta1) * G_inf / ((1 - beta1) * math.sqrt(1 - beta2) * (1 - gam) ** 2) * s_g
    term3 = d * D_inf**2 * G_inf * math.sqrt(1 - beta2) / (2 * alpha * (1 - beta1) * (1 - lam) ** 2)
    return Theorem41Bound(
        T=int(T),
        term1=term1,
        term2=term2,
        term3=term3,
        alpha=alpha,
        beta1=beta1,
        beta2=beta2,
        lam=lam,
        gamma=gam,
        G_inf=float(G_inf),
        D=float(D),
        D_inf=float(D_inf),
        dim=d,
        sum_sqrt_T_vhat=s_v,
        sum_grad_norms=s_g,
    )


def theorem41_bound(
    run,
    opt: Adam,
    *,
    lam: float | None = None,
    D: float | None = None,
    D_inf: float | None = None,
    G_inf: float | None = None,
    allow_eps: bool = False,
) -> list[Theorem41Bound]:
    """Theorem 4.1's right-hand side at every checkpoint T_k of ``run`` (an OnlineRun of ``opt``).

    Checks the preconditions first (:func:`check_preconditions`). G∞, D, D∞ are measured from the run up to
    T_k (see the module doc) unless given.
    """
    lam_used = check_preconditions(opt, lam=lam, allow_eps=allow_eps)
    if run.vhat is None:
        raise ValueError("the run has no v̂ history (was it played with adamlab.numpy.Adam?)")
    out = []
    for k, Tk in enumerate(run.checkpoints):
        lo = np.minimum(run.x_min[k], run.x_star[k])
        hi = np.maximum(run.x_max[k], run.x_star[k])
        rng = hi - lo
        out.append(
            theorem41_rhs(
                T=int(Tk),
                alpha=opt.lr,
                beta1=opt.beta1,
                beta2=opt.beta2,
                lam=lam_used,
                G_inf=float(run.g_inf[k]) if G_inf is None else G_inf,
                D=float(np.linalg.norm(rng)) if D is None else D,
                D_inf=float(np.max(rng)) if D_inf is None else D_inf,
                vhat_T=run.vhat[k],
                grad_norms=np.sqrt(run.sum_sq_grad[k]),
            )
        )
    return out
