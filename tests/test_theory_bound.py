"""Theorem 4.1's right-hand side and its preconditions (adamlab.theory.bound, §4)."""

import math

import numpy as np
import pytest

from adamlab.numpy import Adam, AdaMax
from adamlab.theory import AdaGrad, LinearProblem, check_preconditions, run_online, theorem41_bound, theorem41_rhs
from adamlab.theory.feasible import Box


def test_three_terms_on_a_tiny_case_by_hand():
    # α = 0.5, β1 = 0.4, β2 = 0.64 → √β2 = 0.8, √(1−β2) = 0.6, γ = 0.16/0.8 = 0.2, (1−γ)² = 0.64; λ = 0.5
    b = theorem41_rhs(
        T=4,
        alpha=0.5,
        beta1=0.4,
        beta2=0.64,
        lam=0.5,
        G_inf=2.0,
        D=3.0,
        D_inf=2.0,
        vhat_T=np.array([1.0, 4.0]),
        grad_norms=np.array([2.0, 3.0]),
    )
    # term 1 = 9/(2·0.5·0.6)·(√4 + √16) = 15·6 = 90
    assert b.term1 == pytest.approx(90.0)
    # term 2 = 0.5·1.4·2/(0.6·0.6·0.64)·(2 + 3) = 1.4/0.2304·5 = 30.381944…
    assert b.term2 == pytest.approx(30.38194444, rel=1e-9)
    # term 3 = 2·(4·2·0.6)/(2·0.5·0.6·0.25) = 2·4.8/0.15 = 64
    assert b.term3 == pytest.approx(64.0)
    assert b.total == pytest.approx(184.38194444, rel=1e-9)
    assert b.gamma == pytest.approx(0.2)
    # Σ_i ‖g_{1:T,i}‖₂ / (d·G∞·√T) = 5/(2·2·2)
    assert b.sparsity_ratio == pytest.approx(5 / 8)


def test_bound_measured_from_a_three_step_run_by_hand():
    # f_t = c_t·x on [−1, 1] with c = 1, −2, 2 (θ* = −1); Adam β1 = 0, β2 = 0.64, α = 0.5, ε = 0
    P = LinearProblem("tiny", np.array([1.0, -2.0, 2.0]), Box(-1.0, 1.0, dim=1))
    opt = Adam(lr=0.5, betas=(0.0, 0.64), eps=0.0, lr_decay="sqrt")
    run = run_online(P, opt, checkpoints=[3])
    # the iterates by hand: θ_{t+1} = θ_t − (α/√t)·g_t/√v̂_t
    v, x, xs = 0.0, 0.0, [0.0]
    for t, g in enumerate([1.0, -2.0, 2.0], start=1):
        v = 0.64 * v + 0.36 * g * g
        vhat = v / (1 - 0.64**t)
        x = min(1.0, max(-1.0, x - 0.5 / math.sqrt(t) * g / math.sqrt(vhat)))
        xs.append(x)
    played = [*xs[:3], -1.0]  # θ_1..θ_3 and θ*
    D = max(played) - min(played)
    b = theorem41_bound(run, opt)[-1]
    assert b.D == pytest.approx(D) and b.D_inf == pytest.approx(D)
    assert b.G_inf == 2.0 and b.lam == 0.0
    term1 = D**2 / (2 * 0.5) * math.sqrt(3 * vhat)
    term2 = 0.5 * 2.0 / 0.6 * math.sqrt(1 + 4 + 4)
    term3 = D**2 * 2.0 * 0.6 / (2 * 0.5)
    assert (b.term1, b.term2, b.term3) == pytest.approx((term1, term2, term3))


def test_bound_accepts_overrides():
    P = LinearProblem("tiny", np.array([1.0, -2.0, 2.0]), Box(-1.0, 1.0, dim=1))
    opt = Adam(lr=0.5, betas=(0.0, 0.64), eps=0.0, lr_decay="sqrt")
    run = run_online(P, opt, checkpoints=[3])
    b = theorem41_bound(run, opt, D=2.0, D_inf=2.0, G_inf=5.0, lam=0.5)[-1]
    assert (b.D, b.D_inf, b.G_inf, b.lam) == (2.0, 2.0, 5.0, 0.5)
    assert b.term3 == pytest.approx(4 * 5.0 * 0.6 / (2 * 0.5 * 0.25))


def _adam(**kw):
    base = {"lr": 0.1, "betas": (0.9, 0.999), "eps": 0.0, "lr_decay": "sqrt", "beta1_decay": 1 - 1e-8}
    return Adam(**{**base, **kw})


def test_preconditions_pass_for_the_theorys_schedule():
    assert check_preconditions(_adam()) == 1 - 1e-8
    assert check_preconditions(_adam(betas=(0.0, 0.1), beta1_decay=None)) == 0.0  # β1 = 0: any λ, λ → 0
    assert check_preconditions(_adam(betas=(0.0, 0.1), beta1_decay=None), lam=0.3) == 0.3


@pytest.mark.parametrize(
    ("opt", "match"),
    [
        (_adam(eps=1e-8), "has no ε"),
        (_adam(lr_decay=None), "α_t = α/√t"),
        (_adam(beta1_decay=None), "λ = 1"),
        (_adam(betas=(0.9, 0.5)), "γ = β1²/√β2 < 1"),
        (_adam(amsgrad=True), "not AMSGrad"),
        (_adam(bias_correction=False), "bias-corrected"),
        (_adam(weight_decay=0.1), "weight_decay"),
        (_adam(lr=0.0), "α > 0"),
        (AdaGrad(0.1), "about Adam"),
        (AdaMax(), "about Adam"),
    ],
)
def test_preconditions_refuse_with_a_clear_message(opt, match):
    with pytest.raises(ValueError, match=match):
        check_preconditions(opt)


def test_preconditions_refuse_a_bad_lambda():
    with pytest.raises(ValueError, match="λ ∈ \\(0, 1\\)"):
        check_preconditions(_adam(betas=(0.0, 0.1), beta1_decay=None), lam=1.0)
    with pytest.raises(ValueError, match="differs"):
        check_preconditions(_adam(), lam=0.5)


def test_bound_refuses_a_run_of_the_wrong_optimizer():
    P = LinearProblem("tiny", np.array([1.0, -2.0, 2.0]), Box(-1.0, 1.0, dim=1))
    opt = Adam(lr=0.5, betas=(0.9, 0.99), eps=0.0, lr_decay="sqrt")  # constant β1
    run = run_online(P, opt)
    with pytest.raises(ValueError, match="β1,t = β1·λ"):
        theorem41_bound(run, opt)
    with pytest.raises(ValueError, match="γ"):
        theorem41_rhs(
            T=1, alpha=1, beta1=0.9, beta2=0.5, lam=0.5, G_inf=1, D=1, D_inf=1, vhat_T=[1.0], grad_norms=[1.0]
        )


def test_a_2d_bound_uses_the_diagonal_D_and_the_widest_range_D_inf_by_hand():
    # Two coordinates with different ranges, so D = √(r₁² + r₂²) ≠ D∞ = max(r₁, r₂) (every other test is 1-D).
    coefs = np.array([[1.0, 0.5], [-2.0, 0.5], [2.0, -0.25]])
    P = LinearProblem("2-D", coefs, Box(-1.0, 1.0, dim=2))
    opt = Adam(lr=0.5, betas=(0.0, 0.64), eps=0.0, lr_decay="sqrt")
    run = run_online(P, opt, checkpoints=[3])
    ranges, vhats = [], []
    for i in range(2):  # each coordinate by hand: θ_{t+1} = Π(θ_t − (α/√t)·g_t/√v̂_t)
        v, x, xs = 0.0, 0.0, [0.0]
        for t, g in enumerate(coefs[:, i], start=1):
            v = 0.64 * v + 0.36 * g * g
            vhat = v / (1 - 0.64**t)
            x = min(1.0, max(-1.0, x - 0.5 / math.sqrt(t) * g / math.sqrt(vhat)))
            xs.append(x)
        played = [*xs[:3], -1.0]  # θ_1..θ_3 and θ* = −1 (Σ_t c_t > 0 in both coordinates)
        ranges.append(max(played) - min(played))
        vhats.append(vhat)
    D, D_inf = math.hypot(*ranges), max(ranges)
    assert abs(D - D_inf) > 0.1, "the case must tell D from D∞"
    b = theorem41_bound(run, opt)[-1]
    assert b.D == pytest.approx(D) and b.D_inf == pytest.approx(D_inf) and b.G_inf == 2.0
    term1 = D**2 / (2 * 0.5) * sum(math.sqrt(3 * vh) for vh in vhats)
    term2 = 0.5 * 2.0 / 0.6 * (math.sqrt(1 + 4 + 4) + math.sqrt(0.25 + 0.25 + 0.0625))
    term3 = 2 * D_inf**2 * 2.0 * 0.6 / (2 * 0.5)
    assert (b.term1, b.term2, b.term3) == pytest.approx((term1, term2, term3), rel=1e-12)
