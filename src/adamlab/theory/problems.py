"""Online convex optimisation problems (§4 of Kingma & Ba 2015).

At round t = 1, …, T an unknown convex loss f_t is revealed after the learner plays θ_t ∈ X; the learner then
sees g_t = ∇f_t(θ_t). The regret against the best fixed point in hindsight is

    R(T) = Σ_{t=1..T} [f_t(θ_t) − f_t(θ*)],   θ* = argmin_{θ ∈ X} Σ_{t=1..T} f_t(θ)          (§4)

A problem here is the sequence (f_t, ∇f_t), t = 1..horizon, the feasible set X with its projection, the start
point θ_1 and the minimiser of the cumulative loss F_T(θ) = Σ_{t≤T} f_t(θ) over X — exactly for linear losses
on a box or a ball, by L-BFGS-B/SLSQP (scipy) otherwise.

Provided: :class:`LinearProblem` (with Reddi, Kale & Kumar's counterexamples, online and stochastic) and
:class:`SparseLogisticProblem` (online logistic regression with sparse features, the setting of §4's
remark on sparse gradients).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, cast

import numpy as np

from adamlab.theory.feasible import Ball, Box, FeasibleSet


class OnlineProblem(ABC):
    """A sequence of convex losses f_1, …, f_horizon on a feasible set X, with θ_1 = ``x0``.

    Subclasses give ``loss_and_grad(t, x)`` (f_t(x), ∇f_t(x); t counts from 1) and
    ``cumulative(T, x)`` (F_T(x) = Σ_{t≤T} f_t(x) and ∇F_T(x), vectorised). ``best_fixed_point(T)`` returns
    (θ*, F_T(θ*)); the default minimises F_T numerically with scipy and caches the result per T.
    A *separable* problem (f_t(x) = Σ_i f_{t,i}(x_i)) also gives the per-coordinate losses and minima, so
    that d independent 1-D problems can be played at once as one d-dimensional problem.
    """

    separable: bool = False

    def __init__(self, name: str, feasible: FeasibleSet, horizon: int, x0: np.ndarray | float | None = None):
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        self.name, self.feasible, self.horizon = name, feasible, int(horizon)
        x0_a = np.zeros(feasible.dim) if x0 is None else np.broadcast_to(np.asarray(x0, np.float64), (feasible.dim,))
        self.x0 = feasible.project(np.array(x0_a, dtype=np.float64))
        self._best: dict[int, tuple[np.ndarray, float]] = {}

    @property
    def dim(self) -> int:
        return self.feasible.dim

    def _check_t(self, t: int) -> None:
        if not 1 <= t <= self.horizon:
            raise IndexError(f"round t must lie in [1, {self.horizon}], got {t}")

    @abstractmethod
    def loss_and_grad(self, t: int, x: np.ndarray) -> tuple[float, np.ndarray]:
        """(f_t(x), ∇f_t(x)) at round t (1-based). The gradient may be a read-only view."""

    def loss(self, t: int, x: np.ndarray) -> float:
        return self.loss_and_grad(t, x)[0]

    def grad(self, t: int, x: np.ndarray) -> np.ndarray:
        return self.loss_and_grad(t, x)[1]

    @abstractmethod
    def cumulative(self, T: int, x: np.ndarray) -> tuple[float, np.ndarray]:
        """(F_T(x), ∇F_T(x)) with F_T = Σ_{t=1..T} f_t."""

    def loss_terms(self, t: int, x: np.ndarray) -> np.ndarray:
        """Separable problems: the vector (f_{t,i}(x_i))_i whose sum is f_t(x)."""
        raise NotImplementedError(f"{type(self).__name__} is not separable")

    def best_terms(self, T: int) -> np.ndarray:
        """Separable problems: (min_{x_i} Σ_{t≤T} f_{t,i}(x_i))_i, whose sum is F_T(θ*)."""
        raise NotImplementedError(f"{type(self).__name__} is not separable")

    def best_fixed_point(self, T: int) -> tuple[np.ndarray, float]:
        """(θ*, F_T(θ*)): the best fixed point in hindsight after T rounds, θ* = argmin_{θ∈X} F_T(θ)."""
        self._check_t(T)
        if T not in self._best:
            self._best[T] = self._solve(T)
        x, v = self._best[T]
        return x.copy(), v

    def _solve(self, T: int) -> tuple[np.ndarray, float]:
        """Minimise the convex F_T over X with scipy (L-BFGS-B on a box, SLSQP on a ball), warm-started."""
        from scipy import optimize

        start = self.x0
        if self._best:
            start = self._best[min(self._best, key=lambda s: abs(s - T))][0]
        fun = lambda x: self.cumulative(T, x)  # noqa: E731
        feas = self.feasible
        if isinstance(feas, Box):
            res = optimize.minimize(
                fun,
                start,
                jac=True,
                method="L-BFGS-B",
                bounds=list(zip(feas.lo, feas.hi)),
                options={"maxiter": 20000, "ftol": 1e-11, "gtol": 1e-7, "maxcor": 20},
            )
        elif isinstance(feas, Ball):
            cons = {
                "type": "ineq",
                "fun": lambda x: feas.radius**2 - np.sum((x - feas.center) ** 2),
                "jac": lambda x: -2.0 * (x - feas.center),
            }
            res = optimize.minimize(
                fun, start, jac=True, method="SLSQP", constraints=[cons], options={"maxiter": 1000, "ftol": 1e-14}
            )
        else:  # pragma: no cover - only Box and Ball exist
            raise TypeError(f"no solver for feasible set {feas!r}")
        x = feas.project(res.x)
        return x, float(self.cumulative(T, x)[0])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.feasible!r}, horizon={self.horizon})"


class LinearProblem(OnlineProblem):
    """Linear losses f_t(x) = ⟨c_t, x⟩, ∇f_t = c_t, from a (horizon × d) coefficient array.

    The best fixed point is closed-form: F_T(x) = ⟨C_T, x⟩ with C_T = Σ_{t≤T} c_t, so on a box
    θ*_i = lo_i if C_{T,i} > 0, hi_i if C_{T,i} < 0 (and F_T(θ*) = Σ_i min(C_{T,i}·lo_i, C_{T,i}·hi_i));
    on a ball θ* = center − r·C_T/‖C_T‖₂. On a box the problem is separable coordinate by coordinate.
    """

    def __init__(
        self,
        name: str,
        coefs: np.ndarray,
        feasible: FeasibleSet,
        x0: np.ndarray | float | None = None,
    ) -> None:
        c = np.asarray(coefs, dtype=np.float64)
        if c.ndim == 1:
            c = c[:, None]
        if c.ndim != 2 or c.shape[1] != feasible.dim:
            raise ValueError(f"coefs must have shape (horizon, {feasible.dim}), got {np.shape(coefs)}")
        if not np.all(np.isfinite(c)):
            raise ValueError("coefs must be finite")
        super().__init__(name, feasible, c.shape[0], x0)
        self.coefs = c
        self.coefs.flags.writeable = False
        self.separable = isinstance(feasible, Box)
        self._csum: np.ndarray | None = None

    def _C(self, T: int) -> np.ndarray:
        if self._csum is None:
            self._csum = np.cumsum(self.coefs, axis=0)
        return self._csum[T - 1]

    def loss_and_grad(self, t: int, x: np.ndarray) -> tuple[float, np.ndarray]:
        c = self.coefs[t - 1]
        return float(c @ x), c

    def loss_terms(self, t: int, x: np.ndarray) -> np.ndarray:
        if not self.separable:
            return super().loss_terms(t, x)
        return self.coefs[t - 1] * x

    def cumulative(self, T: int, x: np.ndarray) -> tuple[float, np.ndarray]:
        self._check_t(T)
        C = self._C(T)
        return float(C @ x), C.copy()

    def best_terms(self, T: int) -> np.ndarray:
        if not self.separable:
            return super().best_terms(T)
        self._check_t(T)
        C, box = self._C(T), self.feasible
        assert isinstance(box, Box)  # separable ⇔ a box
        return np.minimum(C * box.lo, C * box.hi)

    def _solve(self, T: int) -> tuple[np.ndarray, float]:
        C, feas = self._C(T), self.feasible
        if isinstance(feas, Box):
            # ties (C_i = 0) take the point of [lo_i, hi_i] nearest 0; any point is optimal there
            x = np.where(C > 0, feas.lo, np.where(C < 0, feas.hi, np.clip(0.0, feas.lo, feas.hi)))
            return x, float(np.sum(self.best_terms(T)))
        if isinstance(feas, Ball):
            n = float(np.linalg.norm(C))
            x = feas.center.copy() if n == 0 else feas.center - feas.radius * C / n
            return x, float(C @ feas.center - feas.radius * n)
        return super()._solve(T)  # pragma: no cover


def periodic_linear(name: str, pattern: list[float], horizon: int, *, x0: float = 0.0) -> LinearProblem:
    """f_t(x) = pattern[(t − 1) mod p]·x on X = [−1, 1]: a 1-D periodic linear sequence."""
    reps = -(-horizon // len(pattern))
    c = np.tile(np.asarray(pattern, np.float64), reps)[:horizon]
    return LinearProblem(name, c, Box(-1.0, 1.0, dim=1), x0)


def reddi_counterexample(horizon: int, C: float = 3.0, *, x0: float = 0.0) -> LinearProblem:
    """Reddi, Kale & Kumar (2018), Theorem 1: on X = [−1, 1], f_t(x) = C·x if t mod 3 = 1, else −x (C > 2).

    F_T(x) = (C − 2)·x·T/3 + O(1), so θ* = −1; Adam with β1 = 0, β2 = 1/(1 + C²), α_t = α/√t drifts to +1,
    where each period costs 2(C − 2) more than θ*: R(T)/T → 2(C − 2)/3.
    """
    if not C > 2:
        raise ValueError(f"the counterexample needs C > 2, got {C}")
    return periodic_linear(f"reddi-C{C:g}", [C, -1.0, -1.0], horizon, x0=x0)


def reddi_periodic(
    horizon: int, large: float = 1010.0, small: float = -10.0, period: int = 101, *, x0: float = 0.0
) -> LinearProblem:
    """Reddi et al. (2018), §5 synthetic experiment: f_t(x) = 1010·x if t mod 101 = 1, else −10·x, X = [−1, 1].

    One period sums to (1010 − 100·10)·x = 10·x, so θ* = −1.
    """
    if period < 2:
        raise ValueError(f"period must be >= 2, got {period}")
    return periodic_linear(f"reddi-{large:g}/{small:g}-p{period}", [large] + [small] * (period - 1), horizon, x0=x0)


def reddi_stochastic(
    horizon: int,
    *,
    large: float = 1010.0,
    small: float = -10.0,
    p: float = 0.01,
    runs: int = 1,
    seed: int = 0,
    x0: float = 0.0,
) -> LinearProblem:
    """Reddi et al. (2018), stochastic version: f_t(x) = 1010·x with probability 0.01, else −10·x, on [−1, 1].

    E[f_t(x)] = (0.01·1010 − 0.99·10)·x = 0.2·x, so the expected loss is minimised at −1. ``runs`` independent
    draws are stacked as the coordinates of X = [−1, 1]^runs: the problem is separable and every optimizer here
    updates coordinates independently, so coordinate k is exactly the 1-D run on draw k.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must lie in [0, 1], got {p}")
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    rng = np.random.default_rng(seed)
    c = np.where(rng.random((horizon, runs)) < p, large, small)
    return LinearProblem(f"reddi-stochastic-p{p:g}", c, Box(-1.0, 1.0, dim=runs), x0)


def stack_linear(name: str, problems: list[LinearProblem]) -> LinearProblem:
    """Play independent linear problems on boxes at once, as the coordinates of one problem on the product box.

    Exact for every optimizer of adamlab and :mod:`adamlab.theory.baselines`: they update each coordinate from
    its own gradient history only, and Π_X of a product box is the coordinate-wise projection. The regret of
    problem j is the runner's per-coordinate ``regret_terms`` of its coordinates.
    """
    if not problems:
        raise ValueError("stack_linear needs at least one problem")
    if any(not isinstance(p, LinearProblem) or not isinstance(p.feasible, Box) for p in problems):
        raise ValueError("stack_linear stacks LinearProblems on boxes only")
    horizon = min(p.horizon for p in problems)
    coefs = np.concatenate([p.coefs[:horizon] for p in problems], axis=1)
    boxes = [cast(Box, p.feasible) for p in problems]
    box = Box(np.concatenate([b.lo for b in boxes]), np.concatenate([b.hi for b in boxes]))
    return LinearProblem(name, coefs, box, np.concatenate([p.x0 for p in problems]))


class SparseLogisticProblem(OnlineProblem):
    """Online logistic regression: f_t(θ) = log(1 + exp(−y_t·⟨x_t, θ⟩)), y_t ∈ {−1, +1}.

    ∇f_t(θ) = −y_t·σ(−y_t·⟨x_t, θ⟩)·x_t, so the gradient has the sparsity pattern of the feature vector x_t
    (the case of §4's remark: with sparse gradients the bound's Σ_i ‖g_{1:T,i}‖₂ is far below d·G∞·√T).
    ``X`` is a scipy.sparse CSR matrix (horizon × d); θ* is found with L-BFGS-B (box) or SLSQP (ball).
    """

    def __init__(self, name: str, X, y: np.ndarray, feasible: FeasibleSet, x0: np.ndarray | float | None = None):
        from scipy import sparse

        X = sparse.csr_matrix(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if X.shape[1] != feasible.dim or y.shape != (X.shape[0],):
            raise ValueError(f"X must be (horizon, {feasible.dim}) and y (horizon,); got {X.shape}, {y.shape}")
        if not np.all(np.abs(y) == 1):
            raise ValueError("labels y must be -1 or +1")
        super().__init__(name, feasible, X.shape[0], x0)
        self.X, self.y = X, y
        self._prefix: dict[int, Any] = {}

    def loss_and_grad(self, t: int, x: np.ndarray) -> tuple[float, np.ndarray]:
        X = self.X
        a, b = X.indptr[t - 1], X.indptr[t]
        idx, val = X.indices[a:b], X.data[a:b]
        yt = float(self.y[t - 1])
        z = yt * float(val @ x[idx])
        # scalar softplus(−z) and σ(−z) with math: this runs once per round
        e = math.exp(-abs(z))
        loss = max(-z, 0.0) + math.log1p(e)
        sig = 1.0 / (1.0 + e) if z <= 0 else e / (1.0 + e)  # σ(−z)
        g = np.zeros(self.dim)
        g[idx] = (-yt * sig) * val
        return loss, g

    def cumulative(self, T: int, x: np.ndarray) -> tuple[float, np.ndarray]:
        self._check_t(T)
        if T not in self._prefix:
            self._prefix = {T: self.X[:T]}  # keep one prefix: solves come one T at a time
        XT, yT = self._prefix[T], self.y[:T]
        z = yT * (XT @ x)
        return float(np.sum(_softplus(-z))), XT.T @ (-yT * _sigmoid(-z))


def _sigmoid(z):
    """σ(z) = 1/(1 + e^{−z}), without overflow."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z)))


def _softplus(z):
    """log(1 + e^z) = max(z, 0) + log1p(e^{−|z|}), without overflow (and ~6× faster than np.logaddexp)."""
    z = np.asarray(z)
    return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))


def sparse_logistic(
    horizon: int,
    dim: int,
    *,
    active: int = 10,
    zipf: float = 1.1,
    radius: float = 1.0,
    seed: int = 0,
    dense_first: bool = True,
) -> SparseLogisticProblem:
    """A synthetic sparse online logistic regression on the box X = [−radius, radius]^d.

    Example t has ``active`` binary features drawn without replacement with P(feature i) ∝ i^(−zipf) (a few
    frequent features, many rare ones, as in bag-of-words data); y_t = +1 with probability σ(⟨x_t, w⟩) for a
    hidden w ~ N(0, 1)^d scaled to unit signal per example. With ``dense_first`` the first example has every
    feature on, so every coordinate's gradient history starts non-zero: v_{t,i} > 0 for all t, i and the
    ε-free update analysed in Theorem 4.1 (ε = 0) never meets 0/0.
    """
    from scipy import sparse

    if not 1 <= active <= dim:
        raise ValueError(f"active must lie in [1, dim={dim}], got {active}")
    rng = np.random.default_rng(seed)
    logp = -zipf * np.log(np.arange(1, dim + 1, dtype=np.float64))
    perm = rng.permutation(dim)  # which coordinates are the frequent ones
    # Gumbel-top-k: the k largest of log p_i + Gumbel noise are a draw of k features without replacement
    rows: list[np.ndarray] = []
    for lo in range(0, horizon, 2048):
        n = min(2048, horizon - lo)
        keys = logp - np.log(-np.log(rng.random((n, dim))))
        rows.extend(np.argpartition(-keys, active - 1, axis=1)[:, :active])
    if dense_first:
        rows[0] = np.arange(dim)
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
    indices = perm[np.concatenate(rows)]
    X = sparse.csr_matrix((np.ones(indices.size), indices, indptr), shape=(horizon, dim))
    X.sort_indices()
    w = rng.standard_normal(dim) / np.sqrt(active)
    y = np.where(rng.random(horizon) < _sigmoid(X @ w), 1.0, -1.0)
    name = f"sparse-logistic-d{dim}-k{active}"
    return SparseLogisticProblem(name, X, y, Box(-radius, radius, dim=dim))
