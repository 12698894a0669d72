"""Play an optimizer through an online convex problem and measure its regret (§4).

Round t = 1, …, T (the paper's indexing of §4 and its appendix):

    play θ_t,  suffer f_t(θ_t),  observe g_t = ∇f_t(θ_t),  θ_{t+1} = Π_X(step(θ_t, g_t))

with θ_1 = the problem's ``x0`` and ``step`` any optimizer with the ``init``/``step`` interface of
:mod:`adamlab.numpy` (Adam, AdaMax) or :mod:`adamlab.theory.baselines` (AdaGrad, online gradient descent).
The optimizer's state (m, v, …) is left as the optimizer made it; only θ is projected (projected online Adam).

Recorded: every loss f_t(θ_t); at log-spaced checkpoints T_k the regret R(T_k) = Σ_{t≤T_k} f_t(θ_t) − F_{T_k}(θ*),
θ*, and the quantities Theorem 4.1 is stated in (G∞, the coordinate ranges of θ_1..θ_T that give D and D∞,
Σ_t g_{t,i}², v̂_{T,i}); and, every step, the proof's assumption of monotone inverse step sizes

    Γ_{t,i} = √v̂_{t,i}/α_t − √v̂_{t−1,i}/α_{t−1} ≥ 0      (Kingma & Ba's appendix; Reddi et al. 2018, Γ_t)

through its minimum over coordinates, the count of steps where it fails per coordinate, and the first one.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from adamlab import formulas as F
from adamlab.numpy import Adam, AdaMax
from adamlab.progress import progress as _bar
from adamlab.theory.baselines import AdaGrad, OnlineGradientDescent
from adamlab.theory.problems import OnlineProblem


def log_checkpoints(T: int, n: int = 60) -> np.ndarray:
    """About ``n`` log-spaced integers in [1, T], increasing, always ending with T."""
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    pts = np.unique(np.round(np.geomspace(1, T, max(int(n), 2))).astype(np.int64))
    return pts if pts[-1] == T else np.append(pts, T)


def second_moment(opt: Any, state: Any) -> np.ndarray | None:
    """v̂_t as the optimizer uses it: Adam's v_t/(1 − β2^t) (v_max for AMSGrad; no division without bias
    correction); AdaGrad's Σ_{s≤t} g_s²/t (the §5 limit of Adam's v̂). None for other optimizers or t = 0."""
    t = getattr(state, "t", 0)
    if t == 0:
        return None
    if isinstance(opt, Adam):
        v = state.v_max if opt.amsgrad else state.v
        return v / F.bias_correction(opt.beta2, t) if opt.bias_correction else v
    if isinstance(opt, AdaGrad):
        return state.sum_sq / t
    return None


def inverse_step(opt: Any, state: Any, theta: np.ndarray) -> np.ndarray | None:
    """The per-coordinate inverse step size after step t, the quantity the proof of Theorem 4.1 needs to
    be non-decreasing in t: √v̂_t/α_t for Adam (ε = 0; (√v̂_t + ε)/α_t otherwise, ε rescaled by
    1/√(1 − β2^t) in ``eps_mode="hat"``), u_t/α_t for AdaMax, (√(Σ g²) + ε)/α for AdaGrad (= √v̂_t/α_t with
    v̂_t = Σ g²/t, α_t = α/√t) and 1/α_t for gradient descent (shaped like θ).
    None where undefined (t = 0, α_t = 0, an unknown optimizer)."""
    t = getattr(state, "t", 0)
    if t == 0:
        return None
    if isinstance(opt, Adam):
        a_t = F.step_size(opt.lr, t, opt.lr_decay)
        if a_t == 0:
            return None
        vhat = second_moment(opt, state)
        if vhat is None:
            return None
        eps = opt.eps
        if opt.bias_correction and opt.eps_mode == "hat":
            eps = eps / math.sqrt(F.bias_correction(opt.beta2, t))
        return (np.sqrt(vhat) + eps) * (1.0 / a_t)
    if isinstance(opt, AdaMax):
        a_t = F.step_size(opt.lr, t, opt.lr_decay)
        return state.u * (1.0 / a_t) if a_t > 0 else None
    if isinstance(opt, AdaGrad):
        return (np.sqrt(state.sum_sq) + opt.eps) * (1.0 / opt.lr) if opt.lr > 0 else None
    if isinstance(opt, OnlineGradientDescent):
        a_t = F.step_size(opt.lr, t, opt.lr_decay)
        return np.full(np.shape(theta), 1.0 / a_t) if a_t > 0 else None
    return None


@dataclass
class OnlineRun:
    """What :func:`run_online` measured. Arrays indexed by k refer to ``checkpoints[k]`` = T_k.

    losses[t−1] = f_t(θ_t); regret[k] = R(T_k); best_value[k] = F_{T_k}(θ*); x_star[k] = θ* after T_k rounds;
    x_played[k] = θ_{T_k}; x_next = θ_{T+1}; sum_sq_grad[k, i] = Σ_{t≤T_k} g_{t,i}² (so ‖g_{1:T_k,i}‖₂ is its
    root); g_inf[k] = max_{t≤T_k} ‖g_t‖∞; g_l2[k] = max_{t≤T_k} ‖g_t‖₂; x_min/x_max[k, i] = min/max over
    θ_{1..T_k, i}; vhat[k] = v̂_{T_k} (Adam, AdaGrad; else None); gamma_min[t−1] = min_i Γ_{t,i} (NaN at
    t = 1); violations[i] = #{t : Γ_{t,i} < 0}; first_violation[i] = the first such t (0: never);
    gamma[t−1, i] = Γ_{t,i} and trajectory[t−1] = θ_t when recorded; regret_terms[k, i]: the per-coordinate
    regret of a separable problem (Σ_{t≤T_k} f_{t,i}(θ_{t,i}) − min_{x_i} Σ_{t≤T_k} f_{t,i}(x_i)).
    """

    name: str
    problem: str
    optimizer: str
    T: int
    losses: np.ndarray
    checkpoints: np.ndarray
    regret: np.ndarray
    best_value: np.ndarray
    x_star: np.ndarray
    x_played: np.ndarray
    x_next: np.ndarray
    sum_sq_grad: np.ndarray
    g_inf: np.ndarray
    g_l2: np.ndarray
    x_min: np.ndarray
    x_max: np.ndarray
    seconds: float
    vhat: np.ndarray | None = None
    gamma_min: np.ndarray | None = None
    violations: np.ndarray | None = None
    first_violation: np.ndarray | None = None
    gamma: np.ndarray | None = None
    regret_terms: np.ndarray | None = None
    trajectory: np.ndarray | None = None

    def recorded(self, name: str) -> np.ndarray:
        """The optional array ``name`` (``gamma``, ``trajectory``, ``regret_terms``, ``vhat``, …); a ValueError
        saying how to record it where this run did not."""
        value = getattr(self, name)
        if value is None:
            how = {"gamma": "record_gamma=True", "trajectory": "record_trajectory=True"}.get(name)
            hint = f"pass {how} to run_online" if how else "it is recorded only where it is defined"
            raise ValueError(f"this run did not record {name!r}: {hint}")
        return value

    @property
    def average_regret(self) -> np.ndarray:
        """R(T_k)/T_k."""
        return self.regret / self.checkpoints

    @property
    def x_final(self) -> np.ndarray:
        """θ_T, the last point played."""
        return self.x_played[-1]


def regret_of_points(problem: OnlineProblem, points: np.ndarray) -> float:
    """R(T) = Σ_{t=1..T} f_t(θ_t) − min_{θ∈X} Σ_{t=1..T} f_t(θ) for given points θ_1..θ_T (rows of ``points``)."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, problem.dim)
    T = pts.shape[0]
    played = sum(problem.loss(t, pts[t - 1]) for t in range(1, T + 1))
    return float(played - problem.best_fixed_point(T)[1])


def run_online(
    problem: OnlineProblem,
    optimizer: Any,
    *,
    T: int | None = None,
    checkpoints: ArrayLike | None = None,
    name: str | None = None,
    record_gamma: bool = False,
    record_trajectory: bool = False,
    progress: bool = False,
) -> OnlineRun:
    """Play ``optimizer`` on ``problem`` for T rounds (default: the horizon) with projection onto X.

    Returns an :class:`OnlineRun` with the regret at ``checkpoints`` (default: ~60 log-spaced), to which T
    itself is always added.
    Deterministic: nothing here is random.
    """
    T = problem.horizon if T is None else int(T)
    if not 1 <= T <= problem.horizon:
        raise ValueError(f"T must lie in [1, horizon={problem.horizon}], got {T}")
    cps = log_checkpoints(T) if checkpoints is None else np.unique(np.asarray(checkpoints, dtype=np.int64))
    if cps.size and (cps[0] < 1 or cps[-1] > T):
        raise ValueError(f"checkpoints must lie in [1, T={T}]")
    cps = np.union1d(cps, [T]).astype(np.int64)  # R(T) itself is always measured
    d, k_n = problem.dim, cps.size
    losses = np.empty(T)
    snap = {key: np.empty((k_n, d)) for key in ("x_played", "x_star", "sum_sq_grad", "x_min", "x_max", "vhat", "terms")}
    g_inf, g_l2, best_value = np.empty(k_n), np.empty(k_n), np.empty(k_n)
    gamma_min = np.full(T, np.nan)
    violations, first_violation = np.zeros(d, np.int64), np.zeros(d, np.int64)
    gamma = np.full((T, d), np.nan) if record_gamma else None
    trajectory = np.empty((T, d)) if record_trajectory else None
    has_vhat, has_gamma = True, True

    x = problem.x0.copy()
    state = optimizer.init(x)
    sum_sq, xmin, xmax = np.zeros(d), x.copy(), x.copy()
    terms = np.zeros(d) if problem.separable else None
    ginf = gl2 = 0.0
    prev_inv: np.ndarray | None = None
    k, next_cp = 0, int(cps[0])
    step, project, loss_and_grad = optimizer.step, problem.feasible.project, problem.loss_and_grad
    bar = _bar(total=T, desc=name or problem.name, enabled=progress, leave=False, mininterval=0.5, unit="step")
    chunk = max(1, T // 200)
    start = time.perf_counter()
    # the loop is the hot path of every experiment: plain ufunc/method calls only (no np.* wrappers)
    for t in range(1, T + 1):
        f, g = loss_and_grad(t, x)
        losses[t - 1] = f
        g2 = g * g
        sum_sq += g2
        gmax = float(abs(g).max())
        if gmax > ginf:
            ginf = gmax
        gn = math.sqrt(float(g2.sum()))
        if gn > gl2:
            gl2 = gn
        np.minimum(xmin, x, out=xmin)
        np.maximum(xmax, x, out=xmax)
        if terms is not None:
            terms += problem.loss_terms(t, x)
        if trajectory is not None:
            trajectory[t - 1] = x
        x_played = x
        x, state = step(x, g, state)
        x = project(x)
        if has_gamma:
            inv = inverse_step(optimizer, state, x)
            if inv is None:
                has_gamma = False
            else:
                if prev_inv is not None:
                    gam = inv - prev_inv
                    gmin = float(gam.min())
                    gamma_min[t - 1] = gmin
                    if gmin < 0:
                        bad = gam < 0
                        violations += bad
                        first_violation[(first_violation == 0) & bad] = t
                    if gamma is not None:
                        gamma[t - 1] = gam
                prev_inv = inv
        if t == next_cp:
            snap["x_played"][k], snap["sum_sq_grad"][k] = x_played, sum_sq
            snap["x_min"][k], snap["x_max"][k] = xmin, xmax
            g_inf[k], g_l2[k] = ginf, gl2
            vh = second_moment(optimizer, state) if has_vhat else None
            if vh is None:
                has_vhat = False
            else:
                snap["vhat"][k] = vh
            if terms is not None:
                snap["terms"][k] = terms
            k += 1
            next_cp = int(cps[k]) if k < k_n else 0
        if t % chunk == 0:
            bar.update(chunk)
    bar.close()
    seconds = time.perf_counter() - start

    cum = np.cumsum(losses)
    for k, Tk in enumerate(cps):
        xs, bv = problem.best_fixed_point(int(Tk))
        snap["x_star"][k], best_value[k] = xs, bv
    regret = cum[cps - 1] - best_value
    regret_terms = None
    if terms is not None:
        regret_terms = snap["terms"] - np.stack([problem.best_terms(int(Tk)) for Tk in cps])
    return OnlineRun(
        name=name or f"{type(optimizer).__name__} on {problem.name}",
        problem=problem.name,
        optimizer=repr(optimizer) if not isinstance(optimizer, (Adam, AdaMax)) else _describe(optimizer),
        T=T,
        losses=losses,
        checkpoints=cps,
        regret=regret,
        best_value=best_value,
        x_star=snap["x_star"],
        x_played=snap["x_played"],
        x_next=x,
        sum_sq_grad=snap["sum_sq_grad"],
        g_inf=g_inf,
        g_l2=g_l2,
        x_min=snap["x_min"],
        x_max=snap["x_max"],
        seconds=seconds,
        vhat=snap["vhat"] if has_vhat else None,
        gamma_min=gamma_min if has_gamma else None,
        violations=violations if has_gamma else None,
        first_violation=first_violation if has_gamma else None,
        gamma=gamma if has_gamma else None,
        regret_terms=regret_terms,
        trajectory=trajectory,
    )


def _describe(opt: Adam | AdaMax) -> str:
    keys = ("lr", "beta1", "beta2", "eps", "lr_decay", "beta1_decay", "bias_correction", "amsgrad")
    parts = [f"{k}={getattr(opt, k)!r}" for k in keys if hasattr(opt, k)]
    return f"{type(opt).__name__}({', '.join(parts)})"
