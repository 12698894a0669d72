"""The paper's claims (§2.1, §3, §5, §7.1) as properties, checked on the NumPy oracle and the torch paths.

Two of the step-size claims hold only in the scope the paper derives them in (a sparse history, a constant
gradient); for arbitrary gradient histories the exact worst case is larger, and the tests below pin both the
exact bound and a history that exceeds the paper's figure (see docs/optimizers.md, "What the paper's bounds
do and do not say").
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import adamlab
from adamlab import formulas as F
from adamlab.numpy import Adam, AdaMax

betas_strategy = st.tuples(st.floats(0.0, 0.99, allow_subnormal=False), st.floats(0.5, 0.9999, allow_subnormal=False))
# Magnitudes where g² neither underflows nor overflows in float64 (the claims are about real arithmetic).
gradients = st.just(0.0) | st.floats(1e-50, 1e3) | st.floats(-1e3, -1e-50)
gradient_histories = st.lists(gradients, min_size=1, max_size=40)


def _steps(opt, grads, theta0=0.0):
    """Δ_t for a 1-D history of gradients (NumPy oracle)."""
    theta = np.array([theta0])
    state = opt.init(theta)
    deltas = []
    for g in grads:
        new, state = opt.step(theta, np.array([g]), state)
        deltas.append(float(new[0] - theta[0]))
        theta = new
    return deltas


def _torch_steps(cls, grads, impl, **kw):
    p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = cls([p], impl=impl, **kw)
    deltas = []
    for g in grads:
        before = float(p.detach())
        p.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
        deltas.append(float(p.detach()) - before)
    return deltas


# ---------------------------------------------------------------- invariance to diagonal rescaling (§2.1)


@settings(max_examples=30, deadline=None)
@given(
    scales=st.lists(st.floats(1e-3, 1e3), min_size=3, max_size=3),
    betas=betas_strategy,
    seed=st.integers(0, 2**16),
)
def test_invariant_to_diagonal_rescaling_of_the_gradient(scales, betas, seed):
    rng = np.random.default_rng(seed)
    grads = rng.standard_normal((30, 3)) + 0.3
    c = np.array(scales)
    runs = []
    for factor in (np.ones(3), c):
        opt = Adam(lr=0.01, betas=betas, eps=0.0)
        theta = np.zeros(3)
        state = opt.init(theta)
        for g in grads:
            theta, state = opt.step(theta, factor * g, state)
        runs.append(theta)
    np.testing.assert_allclose(runs[0], runs[1], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("impl", ["fused", "reference"])
def test_torch_paths_invariant_to_rescaling(impl):
    torch.manual_seed(0)
    grads = torch.randn(30, 5, dtype=torch.float64) + 0.2
    c = torch.tensor([1e-3, 0.1, 1.0, 10.0, 1e3], dtype=torch.float64)
    out = []
    for factor in (torch.ones(5, dtype=torch.float64), c):
        p = torch.nn.Parameter(torch.zeros(5, dtype=torch.float64))
        opt = adamlab.Adam([p], lr=0.01, eps=0.0, impl=impl)
        for g in grads:
            p.grad = factor * g
            opt.step()
        out.append(p.detach().clone())
    torch.testing.assert_close(out[0], out[1], rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------- the effective step |Δ_t| (§2.1)


@settings(max_examples=60, deadline=None)
@given(betas=betas_strategy, g=st.floats(1e-3, 1e3) | st.floats(-1e3, -1e-3), zeros=st.integers(0, 200))
def test_sparse_history_step_is_within_the_papers_bound(betas, g, zeros):
    """The paper's case: every earlier gradient 0, then g. |Δ_t| ≤ α(1−β1)/√(1−β2) if (1−β1) > √(1−β2),
    else ≤ α; and the value is exactly α(1−β1)√(1−β2^t)/((1−β1^t)√(1−β2))."""
    beta1, beta2 = betas
    delta = abs(_steps(Adam(lr=1.0, betas=betas, eps=0.0), [0.0] * zeros + [g])[-1])
    t = zeros + 1
    exact = (1 - beta1) * math.sqrt(1 - beta2**t) / ((1 - beta1**t) * math.sqrt(1 - beta2))
    assert delta == pytest.approx(exact, rel=1e-9)
    assert delta <= F.adam_step_bound(beta1, beta2, 1.0) * (1 + 1e-9)


def test_sparse_bound_is_reached_in_the_extreme_sparse_case():
    """With the defaults the bound 3.16·α is approached as t grows after a long run of zero gradients."""
    delta = abs(_steps(Adam(lr=1.0, eps=0.0), [0.0] * 20000 + [1.0])[-1])
    assert delta == pytest.approx((1 - 0.9) / math.sqrt(1 - 0.999), rel=1e-6)


def _worst_case_ratio(beta1: float, beta2: float, t: int) -> float:
    """max over all histories g_1..g_t of |m̂_t|/√v̂_t (Cauchy–Schwarz, attained by g_i ∝ (β1/β2)^(t−i))."""
    gamma = beta1**2 / beta2
    series = t if gamma == 1 else (1 - gamma**t) / (1 - gamma)
    return (1 - beta1) / math.sqrt(1 - beta2) * math.sqrt(series) * math.sqrt(1 - beta2**t) / (1 - beta1**t)


@settings(max_examples=80, deadline=None)
@given(betas=betas_strategy, grads=gradient_histories)
def test_step_never_exceeds_the_exact_worst_case(betas, grads):
    beta1, beta2 = betas
    for t, delta in enumerate(_steps(Adam(lr=1.0, betas=betas, eps=0.0), grads), start=1):
        assert abs(delta) <= _worst_case_ratio(beta1, beta2, t) * (1 + 1e-9)


def test_a_growing_gradient_exceeds_the_papers_bound():
    """The paper's 3.16·α is not a bound for every history: g_i ∝ (β1/β2)^(t−i) reaches the exact worst case,
    which for the defaults at t = 300 is 3.70·α (and tends to 7.3·α)."""
    beta1, beta2, t = 0.9, 0.999, 300
    grads = [(beta1 / beta2) ** (t - i) for i in range(1, t + 1)]
    delta = abs(_steps(Adam(lr=1.0, eps=0.0), grads)[-1])
    assert delta == pytest.approx(_worst_case_ratio(beta1, beta2, t), rel=1e-9)
    assert delta > 1.15 * F.adam_step_bound(beta1, beta2, 1.0)


@settings(max_examples=40, deadline=None)
@given(betas=betas_strategy, g=st.floats(1e-4, 1e4) | st.floats(-1e4, -1e-4), steps=st.integers(1, 60))
def test_constant_gradient_steps_exactly_alpha_from_the_first_step(betas, g, steps):
    deltas = _steps(Adam(lr=0.01, betas=betas, eps=0.0), [g] * steps)
    for delta in deltas:
        assert abs(delta) == pytest.approx(0.01, rel=1e-9)
        assert math.copysign(1, delta) == -math.copysign(1, g)


@pytest.mark.parametrize("impl", ["fused", "reference"])
def test_torch_constant_gradient_steps_exactly_alpha(impl):
    for delta in _torch_steps(adamlab.Adam, [2.5] * 20, impl, lr=0.01, eps=0.0):
        assert delta == pytest.approx(-0.01, rel=1e-9)


# ---------------------------------------------------------------- the two ε forms (§2, end)


@pytest.mark.parametrize("impl", ["fused", "reference"])
def test_eps_forms_agree_when_eps_hat_is_eps_sqrt_one_minus_beta2_t(impl):
    torch.manual_seed(0)
    eps, beta2 = 1e-3, 0.99  # a large ε, so that a mismatch would show
    grads = torch.randn(50, 4, dtype=torch.float64) * 0.01
    p = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    q = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    paper = adamlab.Adam([p], lr=0.01, betas=(0.9, beta2), eps=eps, impl=impl)
    hat = adamlab.Adam([q], lr=0.01, betas=(0.9, beta2), eps=eps, eps_mode="hat", impl=impl)
    fixed = adamlab.Adam([torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))], eps=eps, eps_mode="hat")
    for t, g in enumerate(grads, start=1):
        hat.param_groups[0]["eps"] = F.eps_hat(eps, beta2, t)
        p.grad, q.grad = g.clone(), g.clone()
        paper.step()
        hat.step()
    torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-14)
    assert fixed.param_groups[0]["eps"] == eps  # a fixed ε̂ is a different algorithm (checked below)
    r = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    fixed_hat = adamlab.Adam([r], lr=0.01, betas=(0.9, beta2), eps=eps, eps_mode="hat", impl=impl)
    for g in grads:
        r.grad = g.clone()
        fixed_hat.step()
    assert (r - p).abs().max() > 1e-6


# ---------------------------------------------------------------- §5: AdaGrad and RMSProp as limits


def test_adam_approaches_adagrad_as_beta2_goes_to_one():
    rng = np.random.default_rng(0)
    grads = rng.standard_normal((60, 3))
    theta_ada = np.zeros(3)
    acc = np.zeros(3)
    for g in grads:  # AdaGrad, θ ← θ − α·g/√(Σ g²)
        acc += g * g
        theta_ada = theta_ada - 0.1 * g / np.sqrt(acc)
    gaps = []
    for one_minus_beta2 in (1e-2, 1e-4, 1e-6):
        opt = Adam(lr=0.1, betas=(0.0, 1 - one_minus_beta2), eps=0.0, lr_decay="sqrt")
        theta = np.zeros(3)
        state = opt.init(theta)
        for g in grads:
            theta, state = opt.step(theta, g, state)
        gaps.append(np.max(np.abs(theta - theta_ada)))
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[2] < 1e-5


@pytest.mark.parametrize("impl", ["fused", "reference"])
def test_no_bias_correction_and_beta1_zero_is_rmsprop(impl):
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(10, dtype=torch.float64))
    b = torch.nn.Parameter(a.detach().clone())
    ours = adamlab.Adam([a], lr=0.01, betas=(0.0, 0.9), eps=1e-6, bias_correction=False, impl=impl)
    rmsprop = torch.optim.RMSprop([b], lr=0.01, alpha=0.9, eps=1e-6, foreach=False)
    for _ in range(100):
        g = torch.randn(10, dtype=torch.float64)
        a.grad, b.grad = g.clone(), g.clone()
        ours.step()
        rmsprop.step()
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)


# ---------------------------------------------------------------- AdaMax (§7.1)


def _adamax_worst_case(beta1: float, beta2: float, t: int) -> float:
    """max over histories of |m̂_t|/u_t: attained by |g_i| = β2^(i−t), i.e. a gradient shrinking by β2 a step."""
    r = beta1 / beta2
    series = t if r == 1 else (1 - r**t) / (1 - r)
    return (1 - beta1) * series / (1 - beta1**t)


@settings(max_examples=80, deadline=None)
@given(betas=betas_strategy, grads=gradient_histories)
def test_adamax_step_within_alpha_up_to_its_exact_worst_case(betas, grads):
    beta1, beta2 = betas
    deltas = _steps(AdaMax(lr=1.0, betas=betas), grads)
    for t, delta in enumerate(deltas, start=1):
        assert abs(delta) <= max(1.0, _adamax_worst_case(beta1, beta2, t)) * (1 + 1e-9)
    if beta1 == 0:  # no momentum: |Δ_t| = α·|g_t|/u_t ≤ α
        assert all(abs(d) <= 1.0 + 1e-12 for d in deltas)


def test_adamax_bound_alpha_holds_for_bounded_variation_and_is_exceeded_slightly_otherwise():
    # A gradient of constant magnitude: |Δ_t| ≤ α exactly as the paper says.
    for delta in _steps(AdaMax(lr=1.0), [1.0, -1.0, 1.0, 1.0, -1.0] * 20):
        assert abs(delta) <= 1.0 + 1e-12
    # A gradient shrinking by β2 each step: |Δ_t| → (1−β1)/(1−β1/β2)·… = 1.009·α with the defaults.
    t = 400
    delta = abs(_steps(AdaMax(lr=1.0), [0.999 ** (i - t) for i in range(1, t + 1)])[-1])
    assert delta == pytest.approx(_adamax_worst_case(0.9, 0.999, t), rel=1e-9)
    assert delta > 1.005


@pytest.mark.parametrize("impl", ["fused", "reference"])
def test_adamax_u_zero_gives_zero_step(impl):
    deltas = _torch_steps(adamlab.AdaMax, [0.0, 0.0, 1.0], impl)
    assert deltas[:2] == [0.0, 0.0]
    # t = 3: m = (1 − β1)·1 = 0.1, u = 1, Δ = −α·m/((1 − β1³)·u)
    assert deltas[2] == pytest.approx(-0.002 * 0.1 / (1 - 0.9**3), rel=1e-12)
