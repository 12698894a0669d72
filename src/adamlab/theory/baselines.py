"""The theory's baselines, with the ``init``/``step`` interface of :mod:`adamlab.numpy`.

* :class:`AdaGrad` (Duchi, Hazan & Singer 2011), the limit of Adam in §5:
  θ_t = θ_{t−1} − α·g_t / (√(Σ_{s≤t} g_s²) + ε), coordinate-wise.
* :class:`OnlineGradientDescent` (Zinkevich 2003), projected SGD with α_t = α/√t: θ_t = θ_{t−1} − α_t·g_t.

Both are pure: ``step`` returns a new (θ, state) and leaves its arguments untouched. Projection onto X is
the runner's job, as for Adam.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from adamlab.formulas import LR_DECAYS, step_size


def _check_lr_eps(lr: float, eps: float) -> None:
    if not (np.isfinite(lr) and lr >= 0):
        raise ValueError(f"lr must be finite and >= 0, got {lr}")
    if not (np.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be finite and >= 0, got {eps}")


def _as_grad(theta: np.ndarray, grad: np.ndarray) -> np.ndarray:
    g = np.asarray(grad, dtype=theta.dtype)
    if g.shape != theta.shape:
        raise ValueError(f"grad must have the shape of theta {theta.shape}, got {g.shape}")
    if not np.all(np.isfinite(g)):
        raise FloatingPointError("grad contains NaN or inf; the state was not changed")
    return g


@dataclass(frozen=True)
class AdaGradState:
    """t: steps taken; sum_sq: Σ_{s≤t} g_s² per coordinate."""

    t: int
    sum_sq: np.ndarray


class AdaGrad:
    """AdaGrad: θ_t = θ_{t−1} − α·g_t/(√(Σ_{s≤t} g_s²) + ε).

    With ε = 0 (the default, as in the §5 limit) a coordinate whose gradients were all 0 so far has
    g_t = 0 too, and its step is defined as 0 (0/0 → 0).
    §5: Adam with β1 = 0, α_t = α/√t and bias correction tends to this update as β2 → 1.
    """

    def __init__(self, lr: float = 0.01, eps: float = 0.0) -> None:
        _check_lr_eps(lr, eps)
        self.lr, self.eps = float(lr), float(eps)

    def init(self, theta: np.ndarray) -> AdaGradState:
        return AdaGradState(t=0, sum_sq=np.zeros_like(theta))

    def step(self, theta: np.ndarray, grad: np.ndarray, state: AdaGradState) -> tuple[np.ndarray, AdaGradState]:
        g = _as_grad(theta, grad)
        s = state.sum_sq + g * g
        denom = np.sqrt(s) + self.eps
        ratio = np.divide(g, denom, out=np.zeros_like(g), where=denom > 0)
        return theta - self.lr * ratio, AdaGradState(t=state.t + 1, sum_sq=s)

    def __repr__(self) -> str:
        return f"AdaGrad(lr={self.lr:g}, eps={self.eps:g})"


@dataclass(frozen=True)
class SGDState:
    """t: steps taken."""

    t: int


class OnlineGradientDescent:
    """Projected online gradient descent: θ_t = θ_{t−1} − α_t·g_t, α_t = α/√t (``lr_decay="sqrt"``) or α."""

    def __init__(self, lr: float = 0.01, lr_decay: str | None = "sqrt") -> None:
        _check_lr_eps(lr, 0.0)
        if lr_decay not in LR_DECAYS:
            raise ValueError(f"lr_decay must be one of {LR_DECAYS}, got {lr_decay!r}")
        self.lr, self.lr_decay = float(lr), lr_decay

    def init(self, theta: np.ndarray) -> SGDState:
        return SGDState(t=0)

    def step(self, theta: np.ndarray, grad: np.ndarray, state: SGDState) -> tuple[np.ndarray, SGDState]:
        g = _as_grad(theta, grad)
        t = state.t + 1
        return theta - step_size(self.lr, t, self.lr_decay) * g, SGDState(t=t)

    def __repr__(self) -> str:
        return f"OnlineGradientDescent(lr={self.lr:g}, lr_decay={self.lr_decay!r})"
