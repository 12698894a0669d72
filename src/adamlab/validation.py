"""Argument checks of adamlab's hyper-parameter types (``adamlab.hyperparameters``): fail early, name the
argument and the range it must lie in."""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real
from typing import Any


def _is_tensor(value: object) -> bool:
    """A torch (or NumPy) scalar container, recognised without importing torch."""
    return hasattr(value, "numel") and hasattr(value, "item") and not isinstance(value, (bool, Real))


def as_real(name: str, value: object) -> float:
    """``value`` as a finite float: a real number, or a tensor of one element (as torch.optim accepts ``lr``
    and ``betas``). Raises TypeError/ValueError naming ``name``."""
    if _is_tensor(value):
        numel = value.numel()  # type: ignore[attr-defined]
        if numel != 1:
            raise ValueError(f"{name} as a tensor must have exactly one element, got {numel} elements")
        value = value.item()  # type: ignore[attr-defined]
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"{name} must be finite, got {result!r}")
    return result


def check_interval(
    name: str,
    value: float,
    *,
    low: float,
    high: float | None = None,
    open_low: bool = False,
    open_high: bool = False,
) -> float:
    """``value`` if it lies in the interval (bounds closed unless ``open_*``), else ValueError naming it."""
    too_low = value <= low if open_low else value < low
    too_high = high is not None and (value >= high if open_high else value > high)
    if too_low or too_high:
        if high is None:
            raise ValueError(f"{name} must be {'>' if open_low else '>='} {low:g}, got {value}")
        lo, hi = "(" if open_low else "[", ")" if open_high else "]"
        raise ValueError(f"{name} must lie in {lo}{low:g}, {high:g}{hi}, got {value}")
    return value


def as_beta_pair(betas: object) -> tuple[float, float]:
    """(β1, β2) as floats, each in [0, 1). Both numbers or both one-element tensors (as torch.optim)."""
    if not isinstance(betas, Sequence) or isinstance(betas, str) or len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    if _is_tensor(betas[0]) != _is_tensor(betas[1]):
        raise ValueError(f"betas must be both numbers or both tensors, got {betas!r}")
    b1, b2 = (
        check_interval(f"betas[{i}]", as_real(f"betas[{i}]", b), low=0.0, high=1.0, open_high=True)
        for i, b in enumerate(betas)
    )
    return b1, b2


def check_choice(name: str, value: Any, allowed: Sequence[Any]) -> Any:
    """``value`` if it is one of ``allowed``, else ValueError naming both."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}")
    return value


__all__ = ["as_beta_pair", "as_real", "check_choice", "check_interval"]
