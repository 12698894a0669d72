"""The online runner, the baselines and the proof's quantity Γ_t (adamlab.theory.regret, §4)."""

import math

import numpy as np
import pytest

from adamlab.numpy import Adam
from adamlab.theory import (
    AdaGrad,
    Box,
    LinearProblem,
    OnlineGradientDescent,
    inverse_step,
    log_checkpoints,
    reddi_periodic,
    reddi_stochastic,
    run_online,
    stack_linear,
)


def _hand_problem():
    return LinearProblem("hand", np.array([3.0, -1.0, -1.0, 3.0]), Box(-1.0, 1.0, dim=1))


def test_runner_regret_of_projected_sgd_by_hand():
    # constant α = 0.1: θ1 = 0, θ2 = −0.3, θ3 = −0.2, θ4 = −0.1, θ5 = −0.4
    run = run_online(_hand_problem(), OnlineGradientDescent(lr=0.1, lr_decay=None), checkpoints=[1, 2, 3, 4])
    assert run.losses == pytest.approx([0.0, 0.3, 0.2, -0.3])
    # R(T) = Σ_{t≤T} f_t(θ_t) − min_x (Σ_{t≤T} c_t)·x, with Σ c_t = 3, 2, 1, 4
    assert run.regret == pytest.approx([0.0 + 3.0, 0.3 + 2.0, 0.5 + 1.0, 0.2 + 4.0])
    assert run.x_played[:, 0] == pytest.approx([0.0, -0.3, -0.2, -0.1])
    assert run.x_next == pytest.approx([-0.4])
    assert run.g_inf.tolist() == [3.0, 3.0, 3.0, 3.0]
    assert run.sum_sq_grad[:, 0].tolist() == [9.0, 10.0, 11.0, 20.0]
    assert run.x_min[-1, 0] == pytest.approx(-0.3) and run.x_max[-1, 0] == 0.0


def test_runner_projects_after_each_step():
    # α = 2: θ2 = Π(0 − 2·3) = −1, θ3 = Π(−1 + 2) = 1, θ4 = Π(1 + 2) = 1
    run = run_online(_hand_problem(), OnlineGradientDescent(lr=2.0, lr_decay=None), checkpoints=[1, 2, 3, 4])
    assert run.x_played[:, 0].tolist() == [0.0, -1.0, 1.0, 1.0]
    assert run.x_next.tolist() == [-1.0]


def test_adagrad_step_by_hand():
    opt = AdaGrad(lr=0.5)
    s = opt.init(np.zeros(2))
    th, s = opt.step(np.zeros(2), np.array([3.0, 0.0]), s)
    assert th == pytest.approx([-0.5, 0.0])  # 0/0 → 0 on the second coordinate
    th, s = opt.step(th, np.array([4.0, 2.0]), s)
    assert th == pytest.approx([-0.5 - 0.5 * 4 / 5, -0.5])
    assert s.t == 2 and s.sum_sq.tolist() == [25.0, 4.0]


def test_sgd_step_by_hand():
    opt = OnlineGradientDescent(lr=1.0)  # α/√t
    s = opt.init(np.zeros(1))
    th, s = opt.step(np.zeros(1), np.array([2.0]), s)
    th, s = opt.step(th, np.array([2.0]), s)
    assert th == pytest.approx([-2.0 - 2.0 / math.sqrt(2.0)])


def test_inverse_step_of_adam_by_hand():
    opt = Adam(lr=0.5, betas=(0.0, 0.64), eps=0.0, lr_decay="sqrt")
    s = opt.init(np.zeros(1))
    _, s = opt.step(np.zeros(1), np.array([2.0]), s)
    # v1 = 0.36·4 = 1.44, v̂1 = 1.44/0.36 = 4, √v̂1/α1 = 2/0.5 = 4
    assert inverse_step(opt, s, np.zeros(1)) == pytest.approx([4.0])
    _, s = opt.step(np.zeros(1), np.array([1.0]), s)
    v2 = 0.64 * 1.44 + 0.36
    assert inverse_step(opt, s, np.zeros(1)) == pytest.approx([math.sqrt(v2 / (1 - 0.64**2)) * math.sqrt(2) / 0.5])
    ams = Adam(lr=0.5, betas=(0.0, 0.64), eps=0.0, lr_decay="sqrt", amsgrad=True, bias_correction=False)
    s = ams.init(np.zeros(1))
    _, s = ams.step(np.zeros(1), np.array([2.0]), s)
    _, s = ams.step(np.zeros(1), np.array([1.0]), s)
    assert inverse_step(ams, s, np.zeros(1)) == pytest.approx([math.sqrt(max(1.44, v2)) * math.sqrt(2) / 0.5])


def test_checkpoints():
    c = log_checkpoints(1000, 10)
    assert c[0] == 1 and c[-1] == 1000 and np.all(np.diff(c) > 0)
    assert log_checkpoints(1, 5).tolist() == [1]


def test_stacked_problems_are_exactly_the_separate_runs():
    T = 1500
    a, b = reddi_periodic(T), reddi_stochastic(T, runs=2, seed=4)
    P = stack_linear("both", [a, b])
    make = lambda: Adam(lr=1.0, betas=(0.9, 0.99), eps=0.0, lr_decay="sqrt")  # noqa: E731
    cps = [10, 200, T]
    whole = run_online(P, make(), checkpoints=cps, record_trajectory=True, record_gamma=True)
    alone = run_online(a, make(), checkpoints=cps, record_trajectory=True, record_gamma=True)
    second = run_online(b, make(), checkpoints=cps, record_trajectory=True)
    assert np.array_equal(whole.trajectory[:, :1], alone.trajectory)
    assert np.array_equal(whole.trajectory[:, 1:], second.trajectory)
    assert whole.regret_terms[:, 0] == pytest.approx(alone.regret)
    assert whole.regret_terms[:, 1:].sum(axis=1) == pytest.approx(second.regret)
    assert whole.regret == pytest.approx(alone.regret + second.regret)
    assert whole.violations[0] == alone.violations[0]


def test_runner_rejects_bad_horizon():
    with pytest.raises(ValueError, match="T must lie"):
        run_online(_hand_problem(), AdaGrad(), T=5)


@pytest.mark.parametrize("mode", ["paper", "hat"])
def test_inverse_step_with_eps_in_both_forms_by_hand(mode):
    # α = 0.5, β1 = 0, β2 = 0.64, ε = 0.3. Step 1, g = 2: v̂1 = 1.44/0.36 = 4, α1 = 0.5.
    #   "paper": (√v̂ + ε)/α_t = (2 + 0.3)/0.5 = 4.6
    #   "hat":   the update α̂·m/(√v + ε) with α̂ = α_t·√(1−β2^t) is α_t·m̂/(√v̂ + ε/√(1−β2^t)),
    #            so (√v̂ + ε/√(1−β2^t))/α_t = (2 + 0.3/0.6)/0.5 = 5.0
    opt = Adam(lr=0.5, betas=(0.0, 0.64), eps=0.3, lr_decay="sqrt", eps_mode=mode)
    s = opt.init(np.zeros(1))
    _, s = opt.step(np.zeros(1), np.array([2.0]), s)
    assert inverse_step(opt, s, np.zeros(1)) == pytest.approx([4.6 if mode == "paper" else 5.0])
    # Step 2, g = 1: v2 = 0.64·1.44 + 0.36 = 1.2816, 1 − β2² = 0.5904, α2 = 0.5/√2.
    _, s = opt.step(np.zeros(1), np.array([1.0]), s)
    eps = 0.3 if mode == "paper" else 0.3 / math.sqrt(0.5904)
    expected = (math.sqrt(1.2816 / 0.5904) + eps) / (0.5 / math.sqrt(2.0))
    assert inverse_step(opt, s, np.zeros(1)) == pytest.approx([expected], rel=1e-12)


def test_the_hat_form_of_eps_is_the_step_the_optimizer_takes():
    # The inverse step must be the one the update uses: θ_2 = θ_1 − g_1/inverse_step (β1 = 0, so m̂ = g).
    opt = Adam(lr=0.5, betas=(0.0, 0.64), eps=0.3, lr_decay="sqrt", eps_mode="hat")
    s = opt.init(np.zeros(1))
    theta, s = opt.step(np.zeros(1), np.array([2.0]), s)
    assert theta == pytest.approx(-2.0 / inverse_step(opt, s, theta), rel=1e-12)


def test_recorded_returns_what_was_recorded_and_names_the_switch_for_what_was_not():
    P = _hand_problem()
    plain = run_online(P, OnlineGradientDescent(lr=2.0, lr_decay=None), checkpoints=[1, 2, 3, 4])
    with pytest.raises(ValueError, match="record_trajectory=True"):
        plain.recorded("trajectory")
    with pytest.raises(ValueError, match="record_gamma=True"):
        plain.recorded("gamma")
    traced = run_online(P, OnlineGradientDescent(lr=2.0, lr_decay=None), checkpoints=[4], record_trajectory=True)
    # θ_1..θ_4 by hand, as in test_runner_projects_after_each_step
    assert traced.recorded("trajectory")[:, 0].tolist() == [0.0, -1.0, 1.0, 1.0]
