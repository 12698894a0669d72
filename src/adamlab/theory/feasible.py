"""Feasible sets X of online convex optimisation (§4) and their Euclidean projections Π_X.

The theory of §4 plays every θ_t inside a bounded convex set X (Theorem 4.1 assumes ‖θ_n − θ_m‖₂ ≤ D and
‖θ_n − θ_m‖∞ ≤ D∞). After each optimizer step the runner sets θ ← Π_X(θ) = argmin_{x∈X} ‖x − θ‖₂.

For a box the Euclidean projection is the coordinate-wise clip, which is also the projection in any diagonal
norm ‖·‖_{√V̂} — the one Reddi, Kale & Kumar (2018) use for projected Adam/AMSGrad. For a ball the two differ;
we use the Euclidean one (the standard projected-online-Adam of the brief).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class FeasibleSet(ABC):
    """A closed convex set X ⊂ R^d with its Euclidean projection Π_X."""

    dim: int

    @abstractmethod
    def project(self, x: np.ndarray) -> np.ndarray:
        """Π_X(x) = argmin_{y ∈ X} ‖y − x‖₂ (a new array)."""

    @abstractmethod
    def contains(self, x: np.ndarray, tol: float = 1e-12) -> bool:
        """Whether x ∈ X (up to ``tol``)."""

    @property
    @abstractmethod
    def diameter_l2(self) -> float:
        """sup_{x,y∈X} ‖x − y‖₂: an a-priori D of Theorem 4.1."""

    @property
    @abstractmethod
    def diameter_inf(self) -> float:
        """sup_{x,y∈X} ‖x − y‖∞: an a-priori D∞ of Theorem 4.1."""

    def _check(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.shape != (self.dim,):
            raise ValueError(f"x must have shape ({self.dim},), got {x.shape}")
        return x


class Box(FeasibleSet):
    """X = {x : lo_i ≤ x_i ≤ hi_i}; Π_X(x) = clip(x, lo, hi), coordinate by coordinate.

    >>> Box(-1.0, 1.0, dim=2).project(np.array([3.0, -0.5])).tolist()
    [1.0, -0.5]
    """

    def __init__(self, lo: float | np.ndarray, hi: float | np.ndarray, dim: int | None = None) -> None:
        lo_a, hi_a = np.atleast_1d(np.asarray(lo, np.float64)), np.atleast_1d(np.asarray(hi, np.float64))
        if dim is None:
            dim = max(lo_a.size, hi_a.size)
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim = int(dim)
        self.lo = np.broadcast_to(lo_a, (self.dim,)).copy()
        self.hi = np.broadcast_to(hi_a, (self.dim,)).copy()
        if not (np.all(np.isfinite(self.lo)) and np.all(np.isfinite(self.hi))):
            raise ValueError("Box bounds must be finite (Theorem 4.1 needs a bounded X)")
        if np.any(self.lo > self.hi):
            raise ValueError("Box needs lo <= hi in every coordinate")

    def project(self, x: np.ndarray) -> np.ndarray:
        return np.minimum(np.maximum(self._check(x), self.lo), self.hi)

    def contains(self, x: np.ndarray, tol: float = 1e-12) -> bool:
        x = self._check(x)
        return bool(np.all(x >= self.lo - tol) and np.all(x <= self.hi + tol))

    @property
    def diameter_l2(self) -> float:
        return float(np.linalg.norm(self.hi - self.lo))

    @property
    def diameter_inf(self) -> float:
        return float(np.max(self.hi - self.lo))

    def __repr__(self) -> str:
        if np.all(self.lo == self.lo[0]) and np.all(self.hi == self.hi[0]):
            return f"Box([{self.lo[0]:g}, {self.hi[0]:g}]^{self.dim})"
        return f"Box(lo={self.lo!r}, hi={self.hi!r})"


class Ball(FeasibleSet):
    """X = {x : ‖x − c‖₂ ≤ r}; Π_X(x) = c + (x − c)·min(1, r/‖x − c‖₂).

    >>> Ball(1.0, dim=2).project(np.array([3.0, 4.0])).round(12).tolist()
    [0.6, 0.8]
    """

    def __init__(self, radius: float, center: np.ndarray | float = 0.0, dim: int | None = None) -> None:
        c = np.atleast_1d(np.asarray(center, np.float64))
        if dim is None:
            dim = c.size
        if not (np.isfinite(radius) and radius >= 0):
            raise ValueError(f"radius must be finite and >= 0, got {radius}")
        self.dim, self.radius = int(dim), float(radius)
        self.center = np.broadcast_to(c, (self.dim,)).copy()

    def project(self, x: np.ndarray) -> np.ndarray:
        x = self._check(x)
        r = x - self.center
        n = float(np.linalg.norm(r))
        if n <= self.radius:
            return x.copy()
        return self.center + r * (self.radius / n)

    def contains(self, x: np.ndarray, tol: float = 1e-12) -> bool:
        return bool(np.linalg.norm(self._check(x) - self.center) <= self.radius + tol)

    @property
    def diameter_l2(self) -> float:
        return 2.0 * self.radius

    @property
    def diameter_inf(self) -> float:
        return 2.0 * self.radius

    def __repr__(self) -> str:
        return f"Ball(radius={self.radius:g}, dim={self.dim})"
