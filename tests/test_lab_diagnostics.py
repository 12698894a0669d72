"""The §2.1 diagnostics the lab records every epoch (``AdamFamily.diagnostics``): count, mean and max over every
coordinate, quantiles from a fixed-size random sample (65,536 draws with the seed) when there are more."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import adamlab
from adamlab.optim.base import _summary

QS = (0.5, 0.9, 0.99)


def _hand_quantile(values: np.ndarray, q: float) -> float:
    """Linear interpolation between order statistics: h = (N − 1)·q, x₍⌊h⌋₎ + (h − ⌊h⌋)·(x₍⌊h⌋+1₎ − x₍⌊h⌋₎)."""
    s = sorted(values.tolist())
    h = (len(s) - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (h - lo) * (s[hi] - s[lo])


def _uniform(n: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, generator=torch.Generator().manual_seed(seed))


def test_quantiles_come_from_the_seeded_sample_and_match_numpy_and_a_hand_computation():
    x = _uniform(300_000)
    out = _summary(x, 65_536, torch.Generator().manual_seed(0))
    # The documented sample: 65,536 positions drawn with replacement by torch.randint from the seeded generator.
    index = torch.randint(x.numel(), (65_536,), generator=torch.Generator().manual_seed(0))
    sample = x[index].double().numpy()
    for q, key in zip(QS, ("q50", "q90", "q99")):
        assert out[key] == pytest.approx(float(np.quantile(sample, q)), rel=1e-12)
        assert out[key] == pytest.approx(_hand_quantile(sample, q), rel=1e-12)


def test_sampled_quantiles_are_close_to_the_exact_ones_and_count_mean_max_use_every_coordinate():
    x = _uniform(1_800_000)  # about Figure 2a's network (1.8 M parameters)
    full = x.double().numpy()
    out = _summary(x, 65_536, torch.Generator().manual_seed(0))
    for q, key in zip(QS, ("q50", "q90", "q99")):
        # the sample quantile's standard error is √(q(1 − q)/65,536) ≤ 0.002: 0.01 is five of them
        assert out[key] == pytest.approx(float(np.quantile(full, q)), abs=0.01)
    assert out["count"] == x.numel()
    assert out["mean"] == pytest.approx(float(full.mean()), rel=1e-6)
    assert out["max"] == float(full.max())


def test_few_coordinates_give_exact_quantiles():
    x = _uniform(1000)
    out = _summary(x, 65_536, torch.Generator().manual_seed(0))
    for q, key in zip(QS, ("q50", "q90", "q99")):
        assert out[key] == pytest.approx(_hand_quantile(x.double().numpy(), q), rel=1e-12)


@pytest.mark.parametrize("n", [1000, 200_000])
def test_non_finite_coordinates_are_left_out(n):
    x = _uniform(n)
    x[::7] = math.nan
    x[3::7] = math.inf
    finite = x[torch.isfinite(x)].double().numpy()
    out = _summary(x, 65_536, torch.Generator().manual_seed(0))
    assert out["count"] == finite.size
    assert out["mean"] == pytest.approx(float(finite.mean()), rel=1e-9)
    assert out["max"] == float(finite.max())
    for q, key in zip(QS, ("q50", "q90", "q99")):
        assert math.isfinite(out[key])
        assert out[key] == pytest.approx(float(np.quantile(finite, q)), abs=0.015)
    assert _summary(torch.full((5,), math.nan), 10, torch.Generator()) == {"count": 0}


def test_diagnostics_of_a_large_model_are_deterministic_and_check_their_argument():
    p = torch.nn.Parameter(torch.zeros(100_000))
    opt = adamlab.Adam([p], lr=0.01)
    g = torch.Generator().manual_seed(3)
    for _ in range(3):
        p.grad = torch.randn(100_000, generator=g)
        opt.step()
    assert opt.diagnostics() == opt.diagnostics()  # the same sample for the same seed
    assert opt.diagnostics(seed=1) != opt.diagnostics(seed=0)
    d = opt.diagnostics(max_coordinates=200_000)  # every coordinate: exact quantiles
    state = opt.state[p]
    m_hat = state["exp_avg"] / (1 - 0.9**3)
    v_hat = state["exp_avg_sq"] / (1 - 0.999**3)
    snr = (m_hat.abs() / v_hat.sqrt()).double().numpy()
    assert d["snr"]["q90"] == pytest.approx(float(np.quantile(snr, 0.9)), rel=1e-5)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="max_coordinates must be a positive integer"):
            opt.diagnostics(max_coordinates=bad)
