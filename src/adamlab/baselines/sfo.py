r"""SFO, the sum-of-functions optimizer (Sohl-Dickstein, Poole & Ganguli, ICML 2014), in NumPy float64.

Written from the SFO paper's description of the algorithm (its §2 "Algorithm" and its implementation notes),
not from its authors' code. Section and equation numbers below are those of the ICML 2014 paper; where the
paper leaves a number open (or where we could not check its exact wording) the choice is ours, marked
**(ours)**, and listed in ``docs/sfo.md``.

The problem (SFO eq. 1): minimise :math:`F(x) = \sum_{i=1}^N f_i(x)`, each :math:`f_i` one minibatch.

- **Quadratic models** (§2.1, eqs. 2–3). Each subfunction keeps the point :math:`x^{\tau_i}` where it was last
  evaluated, its value and gradient there, and a positive-definite Hessian estimate :math:`H_i`:
  :math:`g_i(x) = f_i(x^{\tau_i}) + (x - x^{\tau_i})^\top f_i'(x^{\tau_i})
  + \tfrac12 (x - x^{\tau_i})^\top H_i (x - x^{\tau_i})`, and :math:`G(x) = \sum_i g_i(x)`.
- **Update step** (§2.2, eqs. 4–5): :math:`x^t = \arg\min_x G^{t-1}(x)
  = \big(\sum_i H_i\big)^{-1} \sum_i \big(H_i x^{\tau_i} - f_i'(x^{\tau_i})\big)`; then one subfunction
  :math:`j` is evaluated at :math:`x^t` (one minibatch, as in SGD) and its model is refreshed.
- **Shared low-dimensional subspace** (§2.3, eqs. 6–9). Every position and gradient lies in
  :math:`\mathcal{K}^t = \mathrm{span}\{x^0, f_j'(\cdot)\ \text{so far}\}`; all models live in an orthonormal
  basis :math:`P^t` (M × K) of it. A new gradient expands it by its orthogonal part
  :math:`q = f_j' - P P^\top f_j'` (eq. 7), :math:`P \leftarrow [P,\ q/\|q\|]` (eq. 8). When K would exceed
  ``K_max``, the subspace collapses to :math:`\mathrm{orth}[f_1'(x^{\tau_1}) \dots f_N'(x^{\tau_N}),
  x^{\tau_1} \dots x^{\tau_N}]` (eq. 9); every stored vector is projected onto the new basis. Only P is
  M-dimensional, so memory is O(M·K_max) = O(M·N) (§4, "storage cost").
- **Hessian estimates** (§2.4): BFGS on the subfunction's own history of the last ``max_history`` pairs
  (Δx, Δf'), in subspace coordinates, starting from :math:`\beta_i I`. The scale :math:`\beta_i` comes from
  the eigenvalues of the symmetric matrix that best fits the history (the curvatures the history has measured
  along its own directions: :math:`\Delta X^\top \Delta G\, v = \lambda\, \Delta X^\top \Delta X\, v`,
  symmetrised): the paper takes the smallest positive one (``hessian_init="min"``); our default takes their
  median, which converged faster and with far fewer rejected steps in our tests (ours, ``docs/sfo.md``).
  A subfunction without history takes the median β of the others (ours). Pairs with
  :math:`\Delta x^\top \Delta f' \le 0` are skipped, which keeps every :math:`H_i` positive definite.
- **Which subfunction next** (§3, "choosing a target subfunction"): the one whose last evaluation point is
  farthest from the new position, distance measured in the current metric
  :math:`\|x^t - x^{\tau_i}\|_{\sum_k H_k}`. ``target="cyclic"`` and ``"random"`` are offered for comparison.
- **Growing the active set** (§3): optimisation starts with ``initial_active`` subfunctions; one more is
  added whenever the mean model gradient at x is smaller than its standard error across the active
  subfunctions (their models disagree more than they agree).
- **Bad steps** (§3, "detecting bad updates"): if the evaluated subfunction's value rose, and rose more
  than its own quadratic model predicted, the step is rejected: x stays where it was, the evaluation still
  refreshes that subfunction's model (a BFGS pair, and its anchor moves to the new point, so the same step is
  not proposed again), and the step length is halved (it doubles back towards the full step after every
  accepted step, ours).

Use::

    opt = SFO(f_df, theta0, refs)   # f_df(theta, ref) -> (loss, grad) for one minibatch
    theta = opt.optimize(num_passes=20)
    opt.history                     # passes, loss (SFO's estimate), wall-clock seconds
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]
FDF = Callable[[Array, Any], "tuple[float, Any]"]

TARGET_RULES = ("distance", "cyclic", "random")
HESSIAN_INIT_RULES = ("median", "min")


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer >= {low}, got {type(value).__name__} {value!r}")
    if int(value) < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def bfgs_update(hessian: Array, s: Array, y: Array) -> bool:
    r"""One BFGS update of a Hessian estimate, in place (SFO §2.4; Nocedal & Wright eq. 6.19):
    :math:`B \leftarrow B - \frac{B s s^\top B}{s^\top B s} + \frac{y y^\top}{y^\top s}`, so that afterwards
    :math:`B s = y` (the secant condition). Skipped, returning False, when :math:`y^\top s` is not safely
    positive (the update would not stay positive definite)."""
    sy = float(s @ y)
    if not sy > 1e-12 * float(np.linalg.norm(s)) * float(np.linalg.norm(y)):
        return False
    bs = hessian @ s
    sbs = float(s @ bs)
    if not sbs > 0.0:
        return False
    hessian -= np.outer(bs, bs) / sbs
    hessian += np.outer(y, y) / sy
    hessian += hessian.T
    hessian *= 0.5
    return True


def history_scale(ds: Array, dg: Array, rule: str = "median") -> float | None:
    r"""The scale β of the BFGS initialisation βI (§2.4) from the positive eigenvalues of the symmetric matrix
    that best fits the history: their smallest (``rule="min"``, the SFO paper's choice as we read it) or their
    median (``"median"``, our default, see ``docs/sfo.md``). The eigenvalues are those of
    :math:`\mathrm{sym}(\Delta X^\top \Delta G)` relative to :math:`\Delta X^\top \Delta X` (a generalised
    eigenproblem; the Ritz values of the true Hessian on the span of the steps when :math:`f` is quadratic).
    ``ds``, ``dg``: (pairs, K). None when no curvature is positive."""
    gram = ds @ ds.T
    cross = ds @ dg.T
    cross = 0.5 * (cross + cross.T)
    w, v = np.linalg.eigh(gram)
    keep = w > 1e-10 * max(float(w.max()), 0.0)
    if not keep.any():
        return None
    whiten = v[:, keep] / np.sqrt(w[keep])
    curv = np.linalg.eigvalsh(whiten.T @ cross @ whiten)
    pos = curv[curv > 0]
    if not pos.size:
        return None
    return float(pos.min() if rule == "min" else np.median(pos))


class SFO:
    """The sum-of-functions optimizer. See the module docstring for the algorithm and its paper references.

    Args:
        f_df: ``f_df(theta, ref) -> (loss, grad)`` for one subfunction (minibatch); ``theta`` has
            ``theta0``'s shape; ``grad`` any array of that size.
        theta0: the starting point (any shape; float64 inside).
        subfunction_references: one reference per subfunction, passed back to ``f_df`` (N ≥ 1).
        max_history: BFGS pairs kept per subfunction (L).
        subspace_max: K_max, the subspace dimension that triggers a collapse (eq. 9). Default
            ``min(M, max(3N, 2N + 2))`` (ours: the collapse keeps at most 2N + 1 directions).
        initial_active: subfunctions active at the start (§3); None or ≥ N: all.
        target: ``"distance"`` (the paper's rule), ``"cyclic"`` or ``"random"``.
        hessian_init: how β of H_i's initialisation βI is read from the history: ``"median"`` (default,
            ours) or ``"min"`` (the SFO paper's smallest eigenvalue); see :func:`history_scale`.
        initial_step: length of the very first step (a gradient step, before any curvature is known);
            default ``0.01 · max(‖θ0‖, 1)`` (ours).
        seed: seeds the order in which subfunctions join the active set and ``target="random"``.
    """

    def __init__(
        self,
        f_df: FDF,
        theta0: Any,
        subfunction_references: Sequence[Any],
        *,
        max_history: int = 10,
        subspace_max: int | None = None,
        initial_active: int | None = 2,
        target: str = "distance",
        hessian_init: str = "median",
        initial_step: float | None = None,
        seed: int = 0,
    ) -> None:
        if not callable(f_df):
            raise TypeError(f"f_df must be callable as f_df(theta, ref) -> (loss, grad), got {f_df!r}")
        theta = np.array(theta0, dtype=np.float64)
        if theta.size == 0 or not np.all(np.isfinite(theta)):
            raise ValueError("theta0 must be a non-empty array of finite numbers")
        refs = list(subfunction_references)
        if not refs:
            raise ValueError("subfunction_references must hold at least one reference (one per minibatch)")
        if target not in TARGET_RULES:
            raise ValueError(f"target must be one of {TARGET_RULES}, got {target!r}")
        if hessian_init not in HESSIAN_INIT_RULES:
            raise ValueError(f"hessian_init must be one of {HESSIAN_INIT_RULES}, got {hessian_init!r}")
        n, m = len(refs), theta.size
        self.max_history = _check_int("max_history", max_history, 1)
        default_kmax = min(m, max(3 * n, 2 * n + 2))
        kmax = default_kmax if subspace_max is None else _check_int("subspace_max", subspace_max, 1)
        if kmax < min(m, 2 * n + 2):
            lowest = min(m, 2 * n + 2)
            raise ValueError(f"subspace_max must be >= min(M, 2N + 2) = {lowest} (a collapse keeps 2N + 1), got {kmax}")
        self.subspace_max = min(kmax, m)
        active0 = n if initial_active is None else _check_int("initial_active", initial_active, 1)
        if initial_step is not None and not (math.isfinite(initial_step) and initial_step > 0):
            raise ValueError(f"initial_step must be a positive finite number, got {initial_step!r}")
        self.f_df, self.references, self.target, self.hessian_init = f_df, refs, target, hessian_init
        self.shape, self.N, self.M = theta.shape, n, m
        self._rng = np.random.default_rng(seed)
        self._join_order = list(self._rng.permutation(n))
        x0 = theta.reshape(-1)
        self._initial_step = initial_step if initial_step is not None else 0.01 * max(float(np.linalg.norm(x0)), 1.0)

        kb = self.subspace_max + 1  # one spare column: expand, then collapse
        # orthonormal basis of the subspace (eqs. 6–9), the only M-sized store; column-major, so that P[:, :K]
        # is contiguous and P.T @ v runs as one BLAS call without a copy
        self.P = np.zeros((m, kb), order="F")
        self.K = 0
        self.pos = np.zeros((n, kb))  # x^{τ_i} in subspace coordinates
        self.grad = np.zeros((n, kb))  # f_i'(x^{τ_i})
        self.value = np.full(n, np.nan)  # f_i(x^{τ_i})
        self.H = np.zeros((n, kb, kb))  # H_i (only [:K, :K] is used)
        self.beta = np.zeros(n)  # β_i of H_i's initialisation; 0 until the subfunction has history
        self.hist_s = np.zeros((n, self.max_history, kb))
        self.hist_y = np.zeros((n, self.max_history, kb))
        self.hist_len = np.zeros(n, dtype=np.int64)
        self.x = np.zeros(kb)  # current position in subspace coordinates
        self.active: list[int] = []
        self.evaluations = 0
        self.rejected_steps = 0
        self.collapses = 0
        self.step_scale = 1.0
        self.last_update: tuple[int, Array, Array] | None = None  # (j, Δx, Δf') of the latest BFGS pair
        self.history: dict[str, list[float]] = {"passes": [], "loss": [], "seconds": []}
        self._seconds = 0.0
        self._cycle = 0
        self.x[: self.K] = self._expand(x0)
        self._initial_active = min(active0, n)  # evaluated by the first steps, not here

    # ----- public -----------------------------------------------------------------------------------------

    @property
    def theta(self) -> Array:
        """The current position, in ``theta0``'s shape."""
        return (self.P[:, : self.K] @ self.x[: self.K]).reshape(self.shape)

    @property
    def passes(self) -> float:
        """Subfunction evaluations divided by N: effective passes through the data."""
        return self.evaluations / self.N

    def hessian(self, i: int) -> Array:
        """H_i in the current subspace coordinates (K × K)."""
        return self.H[i, : self.K, : self.K].copy()

    def memory_bytes(self) -> int:
        """Bytes held in the optimiser's arrays (O(M·K_max + N·K_max² + N·L·K_max))."""
        return sum(a.nbytes for a in vars(self).values() if isinstance(a, np.ndarray))

    _STATE_ARRAYS = ("pos", "grad", "value", "H", "beta", "hist_s", "hist_y", "hist_len", "x")
    _STATE_SCALARS = ("K", "evaluations", "rejected_steps", "collapses", "step_scale", "_seconds", "_cycle")

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this run is (NumPy arrays, numbers, lists): the basis
        P (its K used columns only), the models, histories, active set, counters, history and the random
        generator's state. ``f_df`` and the references are not part of it."""
        state: dict[str, Any] = {name: getattr(self, name).copy() for name in self._STATE_ARRAYS}
        state.update({name: getattr(self, name) for name in self._STATE_SCALARS})
        state["P"] = self.P[:, : self.K].copy()
        state["active"] = list(self.active)
        state["join_order"] = [int(i) for i in self._join_order]
        state["history"] = {k: list(v) for k, v in self.history.items()}
        state["rng"] = self._rng.bit_generator.state
        state["shape"] = (self.N, self.M, self.subspace_max, self.max_history)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`'s output (of an SFO built with the same N, M and options)."""
        want = (self.N, self.M, self.subspace_max, self.max_history)
        if tuple(state.get("shape", ())) != want:
            raise ValueError(
                f"state is of an SFO with (N, M, subspace_max, max_history) = {tuple(state.get('shape', ()))}, "
                f"this one has {want}"
            )
        for name in self._STATE_ARRAYS:
            getattr(self, name)[...] = np.asarray(state[name])
        for name in self._STATE_SCALARS:
            setattr(self, name, type(getattr(self, name))(state[name]))
        self.P[...] = 0.0
        self.P[:, : self.K] = np.asarray(state["P"])
        self.active = [int(i) for i in state["active"]]
        self._join_order = [int(i) for i in state["join_order"]]
        self.history = {k: [float(x) for x in v] for k, v in state["history"].items()}
        self._rng.bit_generator.state = state["rng"]
        self.last_update = None

    def optimize(self, num_passes: float = 10, on_pass: Callable[[SFO], None] | None = None) -> Array:
        """Run until ``num_passes`` passes through the data have been evaluated in all (counted since the
        start, so calls continue). ``on_pass(self)`` is called after each whole pass; its time is not counted
        in ``history["seconds"]``. Returns :attr:`theta`."""
        if isinstance(num_passes, bool) or not isinstance(num_passes, (int, float)) or not num_passes >= 0:
            raise ValueError(f"num_passes must be a number >= 0, got {num_passes!r}")
        goal = math.ceil(num_passes * self.N - 1e-9)
        while self.evaluations < goal:
            start = time.perf_counter()
            before = self.evaluations // self.N
            self.step()
            self._seconds += time.perf_counter() - start
            self._record()
            if on_pass is not None and self.evaluations // self.N > before:
                on_pass(self)
        return self.theta

    def step(self) -> None:
        """One SFO iteration, one evaluation of f_df: add a subfunction to the active set if due (the first
        ``initial_active`` steps, then §3's rule), else step to the minimum of the models (eq. 5), evaluate the
        chosen subfunction there and update its model (or reject the step)."""
        if len(self.active) < self._initial_active or (len(self.active) < self.N and self._wants_more_subfunctions()):
            self._activate()
            return
        proposal = self._proposal()
        new_x = self.x[: self.K] + self.step_scale * (proposal - self.x[: self.K])
        j = self._choose_target(new_x)
        old_value, old_pos, old_grad = self.value[j], self.pos[j, : self.K].copy(), self.grad[j, : self.K].copy()
        predicted = float(old_grad @ (new_x - old_pos) + 0.5 * (new_x - old_pos) @ self._h(j) @ (new_x - old_pos))
        value, g = self._evaluate(j, new_x)
        k = self.K
        new_x = np.concatenate([new_x, np.zeros(k - new_x.size)])
        old_pos = np.concatenate([old_pos, np.zeros(k - old_pos.size)])
        old_grad = np.concatenate([old_grad, np.zeros(k - old_grad.size)])
        rise = value - old_value
        rejected = rise > 0 and rise > predicted + 1e-12 * (abs(old_value) + 1.0)
        self._add_pair(j, new_x - old_pos, g - old_grad)
        self.pos[j, :k], self.grad[j, :k], self.value[j] = new_x, g, value
        if rejected:
            self.rejected_steps += 1
            self.step_scale *= 0.5
        else:
            self.x[:k] = new_x
            self.step_scale = min(1.0, 2.0 * self.step_scale)
        if self.K > self.subspace_max:
            self._collapse()

    # ----- the pieces -------------------------------------------------------------------------------------

    def _record(self) -> None:
        seen = ~np.isnan(self.value)
        estimate = float(np.nansum(self.value)) * self.N / max(int(seen.sum()), 1)
        self.history["passes"].append(self.passes)
        self.history["loss"].append(estimate)
        self.history["seconds"].append(self._seconds)

    def _h(self, i: int) -> Array:
        return self.H[i, : self.K, : self.K]

    def _evaluate(self, j: int, coords: Array) -> tuple[float, Array]:
        """f_j and f_j' at P·coords; expands the subspace with the gradient (eqs. 7–8); returns the gradient in
        the (possibly grown) subspace's coordinates."""
        theta = (self.P[:, : coords.size] @ coords).reshape(self.shape)
        out = self.f_df(theta, self.references[j])
        if not isinstance(out, tuple) or len(out) != 2:
            raise TypeError("f_df must return a pair (loss, grad)")
        value = float(out[0])
        g = np.asarray(out[1], dtype=np.float64).reshape(-1)
        if g.size != self.M:
            raise ValueError(f"f_df returned a gradient of size {g.size}; theta has {self.M} entries")
        self.evaluations += 1
        if not (math.isfinite(value) and np.all(np.isfinite(g))):
            raise FloatingPointError(f"f_df returned a non-finite loss or gradient for subfunction {j}")
        return value, self._expand(g)

    def _expand(self, v: Array) -> Array:
        """Eqs. 7–8: append the part of v orthogonal to the subspace; return v's coordinates in the (possibly
        grown) basis. Orthogonalised a second time when the first pass cancelled much of v ("twice is
        enough", Parlett 1980), for an orthonormal P to rounding error."""
        basis = self.P[:, : self.K]
        coords = basis.T @ v
        norm = float(np.linalg.norm(v))
        if self.K >= self.M or norm == 0.0:
            return coords
        q = v - basis @ coords
        qn = float(np.linalg.norm(q))
        if qn < 0.7 * norm:
            again = basis.T @ q
            q -= basis @ again
            coords += again
            qn = float(np.linalg.norm(q))
        if qn <= 1e-10 * norm:
            return coords
        k = self.K
        self.P[:, k] = q / qn
        for a in (self.pos, self.grad, self.x):
            a[..., k] = 0.0
        self.hist_s[:, :, k] = 0.0
        self.hist_y[:, :, k] = 0.0
        self.H[:, k, :] = 0.0
        self.H[:, :, k] = 0.0
        self.H[:, k, k] = self.beta  # βI's entry on the new direction: BFGS never touched it
        self.K = k + 1
        return np.append(coords, qn)

    def _collapse(self) -> None:
        """Eq. 9: the subspace becomes orth[latest gradients, latest positions] (plus x); project everything."""
        k = self.K
        seen = ~np.isnan(self.value)
        cols = np.concatenate([self.pos[seen, :k], self.grad[seen, :k], self.x[None, :k]]).T
        u, sv, _ = np.linalg.svd(cols, full_matrices=False)
        u = u[:, sv > 1e-10 * sv[0]]
        r = u.shape[1]
        self.P[:, :r] = self.P[:, :k] @ u
        self.P[:, r:] = 0.0
        for a in (self.pos, self.grad, self.x, self.hist_s, self.hist_y):
            a[..., :r] = a[..., :k] @ u
            a[..., r:] = 0.0
        self.H[:, :r, :r] = np.einsum("ka,nkl,lb->nab", u, self.H[:, :k, :k], u)
        self.H[:, r:, :] = 0.0
        self.H[:, :, r:] = 0.0
        self.K = r
        self.collapses += 1

    def _add_pair(self, j: int, s: Array, y: Array) -> None:
        """Append (Δx, Δf') to subfunction j's history and rebuild H_j from β_j I by BFGS (§2.4)."""
        k, n = self.K, int(self.hist_len[j])
        if n == self.max_history:
            self.hist_s[j, :-1] = self.hist_s[j, 1:].copy()
            self.hist_y[j, :-1] = self.hist_y[j, 1:].copy()
            n -= 1
        self.hist_s[j, n, :k], self.hist_s[j, n, k:] = s, 0.0
        self.hist_y[j, n, :k], self.hist_y[j, n, k:] = y, 0.0
        self.hist_len[j] = n + 1
        self.last_update = (j, s.copy(), y.copy())
        self._rebuild(j)
        # subfunctions without history of their own follow the median scale
        for i in self.active:
            if self.hist_len[i] == 0:
                self._rebuild(i)

    def _rebuild(self, j: int) -> None:
        k, n = self.K, int(self.hist_len[j])
        ds, dg = self.hist_s[j, :n, :k], self.hist_y[j, :n, :k]
        beta = history_scale(ds, dg, self.hessian_init) if n else None
        if beta is None:
            beta = self._median_beta()
        self.beta[j] = beta
        h = self.H[j, :k, :k]
        h[...] = beta * np.eye(k)
        for p in range(n):
            bfgs_update(h, ds[p], dg[p])

    def _median_beta(self) -> float:
        known = self.beta[(self.hist_len > 0) & (self.beta > 0)]
        if known.size:
            return float(np.median(known))
        # the first step: a gradient step of length initial_step
        g = self.grad[self.active, : self.K].sum(axis=0)
        return max(float(np.linalg.norm(g)), 1e-300) / self._initial_step

    def _activate(self) -> None:
        """Add the next subfunction (random order) to the active set: evaluate it at the current x (§3)."""
        j = int(self._join_order[len(self.active)])
        value, g = self._evaluate(j, self.x[: self.K].copy())
        k = self.K
        self.pos[j, :k], self.grad[j, :k], self.value[j] = self.x[:k], g, value
        self.active.append(j)
        for i in self.active:
            if self.hist_len[i] == 0:
                self._rebuild(i)
        if self.K > self.subspace_max:
            self._collapse()

    def _model_gradients(self) -> Array:
        k, act = self.K, self.active
        d = self.x[:k] - self.pos[act, :k]
        return self.grad[act, :k] + np.einsum("nab,nb->na", self.H[act, :k, :k], d)

    def _wants_more_subfunctions(self) -> bool:
        """§3: add one when ‖mean model gradient‖ < its standard error across the active subfunctions."""
        a = len(self.active)
        if a < 2:
            return True
        g = self._model_gradients()
        mean = g.mean(axis=0)
        sq_err = float(((g - mean) ** 2).sum()) / (a * (a - 1))
        return float(mean @ mean) < sq_err

    def _proposal(self) -> Array:
        """Eq. 5: argmin of the sum of the active models, in subspace coordinates."""
        k, act = self.K, self.active
        h_sum = self.H[act, :k, :k].sum(axis=0)
        rhs = np.einsum("nab,nb->a", self.H[act, :k, :k], self.pos[act, :k]) - self.grad[act, :k].sum(axis=0)
        self._h_sum = h_sum
        try:
            c = np.linalg.cholesky(h_sum)
            return np.linalg.solve(c.T, np.linalg.solve(c, rhs))
        except np.linalg.LinAlgError:
            w, v = np.linalg.eigh(h_sum)
            w = np.maximum(w, 1e-12 * max(float(w.max()), 1e-300))
            return v @ ((v.T @ rhs) / w)

    def _choose_target(self, new_x: Array) -> int:
        act = self.active
        if self.target == "cyclic":
            self._cycle += 1
            return act[self._cycle % len(act)]
        if self.target == "random":
            return act[int(self._rng.integers(len(act)))]
        d = new_x - self.pos[act, : self.K]
        dist = np.einsum("na,ab,nb->n", d, self._h_sum, d)
        return act[int(np.argmax(dist))]
