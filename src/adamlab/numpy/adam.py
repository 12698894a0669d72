"""Algorithm 1 (Adam) and Algorithm 2 (AdaMax) of Kingma & Ba (2015), literally, over NumPy arrays."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from adamlab import formulas as F
from adamlab.hyperparameters import AdaMaxHyperparameters, AdamHyperparameters

_FLOATS = (np.float32, np.float64)


def _check_arrays(theta: np.ndarray, grad: np.ndarray) -> None:
    if not isinstance(theta, np.ndarray) or theta.dtype.type not in _FLOATS:
        raise TypeError(f"theta must be a float32 or float64 numpy array, got {getattr(theta, 'dtype', theta)!r}")
    if np.shape(grad) != theta.shape:
        raise ValueError(f"grad must have the shape of theta {theta.shape}, got {np.shape(grad)}")
    if not np.all(np.isfinite(grad)):
        raise FloatingPointError("grad contains NaN or inf; the state was not changed")


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator/denominator, defined as 0 where the denominator is 0.

    With ε = 0 the paper's m̂/√v̂ is 0/0 wherever every gradient so far was 0 (m = v = 0); adamlab defines
    the step there as 0, in every path, rather than writing NaN into θ.
    """
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


@dataclass(frozen=True)
class AdamState:
    """t: steps taken; m, v: first and second raw moment estimates (§2); v_max: AMSGrad's running max of v;
    theta_avg: the temporal average θ̄ of §7.2 (not bias-corrected; see ``Adam.averaged``)."""

    t: int
    m: np.ndarray
    v: np.ndarray
    v_max: np.ndarray | None = None
    theta_avg: np.ndarray | None = None


@dataclass(frozen=True)
class AdaMaxState:
    """t: steps taken; m: first moment; u: exponentially weighted infinity norm (§7.1);
    theta_avg: the temporal average θ̄ of §7.2."""

    t: int
    m: np.ndarray
    u: np.ndarray
    theta_avg: np.ndarray | None = None


class _Base:
    """Options (one :mod:`adamlab.hyperparameters` type per algorithm: defaults and checks) and the steps
    Adam and AdaMax share. Every option is readable as an attribute (``opt.lr``, ``opt.beta1``, …)."""

    hp: AdamHyperparameters | AdaMaxHyperparameters

    def __getattr__(self, name: str) -> Any:
        if name == "hp":
            raise AttributeError(name)
        return getattr(self.hp, name)

    def _gradient(self, theta: np.ndarray, grad: np.ndarray) -> np.ndarray:
        """g_t: the gradient of the objective (negated under ``maximize``) plus the L2 term λ·θ, if coupled."""
        g = np.asarray(grad, dtype=theta.dtype)
        if self.maximize:
            g = -g
        if self.weight_decay and not self.decoupled_weight_decay:
            g = g + self.weight_decay * theta
        return g

    def _decay(self, theta: np.ndarray, t: int) -> np.ndarray:
        """Decoupled weight decay (AdamW): θ ← θ − α_t·λ·θ, applied to θ_{t−1}."""
        if self.weight_decay and self.decoupled_weight_decay:
            return theta - F.step_size(self.lr, t, self.lr_decay) * self.weight_decay * theta
        return theta

    def _average(self, theta: np.ndarray, theta_avg: np.ndarray | None) -> np.ndarray | None:
        """θ̄_t = β·θ̄_{t−1} + (1 − β)·θ_t (§7.2)."""
        if not self.averaging:
            return None
        assert theta_avg is not None
        b = self.hp.average_beta
        return b * theta_avg + (1.0 - b) * theta

    def averaged(self, state: AdamState | AdaMaxState) -> np.ndarray:
        """The bias-corrected temporal average θ̂_t = θ̄_t/(1 − β^t) of §7.2."""
        if state.theta_avg is None:
            raise ValueError("averaged() needs an optimizer built with averaging=True")
        if state.t == 0:
            raise ValueError("averaged() is undefined before the first step (t = 0)")
        return state.theta_avg * F.average_correction(self.hp.average_beta, state.t)


class Adam(_Base):
    """Adam, Algorithm 1 of Kingma & Ba (2015), with the paper's variants and its known corrections.

    With g_t the gradient, at step t:

        m_t = β1,t·m_{t−1} + (1 − β1,t)·g_t          (β1,t = β1·λ^(t−1) under ``beta1_decay``; §4)
        v_t = β2·v_{t−1} + (1 − β2)·g_t²
        m̂_t = m_t/(1 − β1^t),  v̂_t = v_t/(1 − β2^t)  (§3; m̂ = m, v̂ = v without ``bias_correction``)
        θ_t = θ_{t−1} − α_t·m̂_t/(√v̂_t + ε)           (``eps_mode="paper"``, Algorithm 1)
        θ_t = θ_{t−1} − α̂_t·m_t/(√v_t + ε)            (``eps_mode="hat"``: α̂_t = α_t·√(1−β2^t)/(1−β1^t), end of §2)

    α_t = α, or α/√t with ``lr_decay="sqrt"``. ``amsgrad``: v_max,t = max(v_max,t−1, v_t) replaces v_t in
    the step (the max of the raw v, as torch.optim does; without bias correction this is Reddi et al.'s AMSGrad).
    ``averaging``: θ̄_t = β·θ̄_{t−1} + (1 − β)·θ_t (§7.2, β = β2 unless ``averaging_beta``).
    With ε = 0, the step is 0 where √v̂ = 0 (no gradient yet), not 0/0.
    """

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        **options: Any,
    ) -> None:
        """The options of :class:`adamlab.hyperparameters.AdamHyperparameters` (keyword-only after amsgrad)."""
        AdamHyperparameters.check_options(options, "adamlab.numpy.Adam()")
        self.hp = AdamHyperparameters(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, **options
        )

    def init(self, theta: np.ndarray) -> AdamState:
        """m_0 = 0, v_0 = 0, t = 0 (and v_max,0 = 0, θ̄_0 = 0 where used)."""
        z = np.zeros_like(theta)
        return AdamState(
            t=0,
            m=z,
            v=z.copy(),
            v_max=z.copy() if self.amsgrad else None,
            theta_avg=z.copy() if self.averaging else None,
        )

    def step(self, theta: np.ndarray, grad: np.ndarray, state: AdamState) -> tuple[np.ndarray, AdamState]:
        """One step of Algorithm 1; returns the new θ and state, leaving the arguments untouched."""
        _check_arrays(theta, grad)
        t = state.t + 1
        g = self._gradient(theta, grad)
        beta1_t = F.beta1_at(self.beta1, t, self.beta1_decay)
        beta2 = self.beta2
        m = beta1_t * state.m + (1.0 - beta1_t) * g
        v = beta2 * state.v + (1.0 - beta2) * g * g
        v_max = None
        v_used = v
        if self.amsgrad:
            assert state.v_max is not None
            v_max = v_used = np.maximum(state.v_max, v)
        alpha_t = F.step_size(self.lr, t, self.lr_decay)
        theta = self._decay(theta, t)
        if not self.bias_correction:
            theta = theta - alpha_t * _ratio(m, np.sqrt(v_used) + self.eps)
        elif self.eps_mode == "paper":
            m_hat = m / F.bias_correction(self.beta1, t)
            v_hat = v_used / F.bias_correction(beta2, t)
            theta = theta - alpha_t * _ratio(m_hat, np.sqrt(v_hat) + self.eps)
        else:
            alpha_hat = F.adam_hat_step(self.lr, self.beta1, beta2, t, self.lr_decay)
            theta = theta - alpha_hat * _ratio(m, np.sqrt(v_used) + self.eps)
        theta = theta.astype(state.m.dtype, copy=False)
        new = replace(state, t=t, m=m, v=v, v_max=v_max, theta_avg=self._average(theta, state.theta_avg))
        return theta, new


class AdaMax(_Base):
    """AdaMax, Algorithm 2 of Kingma & Ba (2015) (§7.1):

        m_t = β1,t·m_{t−1} + (1 − β1,t)·g_t
        u_t = max(β2·u_{t−1}, |g_t| + ε)
        θ_t = θ_{t−1} − (α_t/(1 − β1^t))·m_t/u_t

    The paper has no ε (default 0 here); a positive ε is added inside the max as torch.optim.Adamax does.
    Where u_t = 0 the step is defined as 0 (with β2 > 0 that is where every gradient so far was 0, so
    m_t = 0 too and the paper's m/u is 0/0).
    |Δ_t| ≤ α always (§7.1). ``bias_correction=False`` drops the 1/(1 − β1^t).
    """

    def __init__(
        self,
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 0.0,
        weight_decay: float = 0.0,
        **options: Any,
    ) -> None:
        """The options of :class:`adamlab.hyperparameters.AdaMaxHyperparameters` (keyword-only after
        weight_decay)."""
        AdaMaxHyperparameters.check_options(options, "adamlab.numpy.AdaMax()")
        self.hp = AdaMaxHyperparameters(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, **options)

    def init(self, theta: np.ndarray) -> AdaMaxState:
        """m_0 = 0, u_0 = 0, t = 0."""
        z = np.zeros_like(theta)
        return AdaMaxState(t=0, m=z, u=z.copy(), theta_avg=z.copy() if self.averaging else None)

    def step(self, theta: np.ndarray, grad: np.ndarray, state: AdaMaxState) -> tuple[np.ndarray, AdaMaxState]:
        """One step of Algorithm 2; returns the new θ and state, leaving the arguments untouched."""
        _check_arrays(theta, grad)
        t = state.t + 1
        g = self._gradient(theta, grad)
        beta1_t = F.beta1_at(self.beta1, t, self.beta1_decay)
        m = beta1_t * state.m + (1.0 - beta1_t) * g
        u = np.maximum(self.beta2 * state.u, np.abs(g) + self.eps)
        alpha_t = F.step_size(self.lr, t, self.lr_decay)
        if self.bias_correction:
            alpha_t = alpha_t / F.bias_correction(self.beta1, t)
        ratio = _ratio(m, u)
        theta = (self._decay(theta, t) - alpha_t * ratio).astype(state.m.dtype, copy=False)
        new = replace(state, t=t, m=m, u=u, theta_avg=self._average(theta, state.theta_avg))
        return theta, new
