"""Feasible sets, projections, problems and the best fixed point in hindsight (adamlab.theory, §4)."""

import numpy as np
import pytest

from adamlab.theory import (
    Ball,
    Box,
    LinearProblem,
    reddi_counterexample,
    reddi_periodic,
    reddi_stochastic,
    regret_of_points,
    sparse_logistic,
)
from adamlab.theory.problems import SparseLogisticProblem


def test_box_projection_by_hand():
    box = Box([-1.0, 0.0], [1.0, 2.0])
    assert box.project(np.array([3.0, -0.5])).tolist() == [1.0, 0.0]
    assert box.project(np.array([-7.0, 5.0])).tolist() == [-1.0, 2.0]
    inside = np.array([0.25, 1.5])
    assert box.project(inside).tolist() == inside.tolist()
    assert box.diameter_inf == 2.0
    assert box.diameter_l2 == pytest.approx(np.sqrt(8.0))


def test_ball_projection_by_hand():
    ball = Ball(1.0, dim=2)
    assert ball.project(np.array([3.0, 4.0])) == pytest.approx([0.6, 0.8])
    assert ball.project(np.array([0.3, -0.4])).tolist() == [0.3, -0.4]
    shifted = Ball(2.0, center=np.array([1.0, 1.0]))
    assert shifted.project(np.array([1.0, 5.0])) == pytest.approx([1.0, 3.0])


@pytest.mark.parametrize("feasible", [Box(-0.5, 2.0, dim=3), Ball(1.5, center=np.array([0.5, -1.0, 2.0]))])
def test_projection_is_the_nearest_point(feasible):
    """Variational characterisation of Π_X: ⟨y − Π(y), z − Π(y)⟩ ≤ 0 for every z ∈ X, and Π(y) ∈ X."""
    rng = np.random.default_rng(0)
    for _ in range(50):
        y = 4 * rng.standard_normal(3)
        p = feasible.project(y)
        assert feasible.contains(p)
        for _ in range(20):
            z = feasible.project(4 * rng.standard_normal(3))
            assert np.dot(y - p, z - p) <= 1e-12
        assert np.linalg.norm(feasible.project(p) - p) <= 1e-12  # idempotent


def test_regret_of_a_known_sequence_by_hand():
    # f_t(x) = c_t·x on [−1, 1], c = 3, −1, −1, 3; played 0, 0.5, −0.5, 1
    P = LinearProblem("hand", np.array([3.0, -1.0, -1.0, 3.0]), Box(-1.0, 1.0, dim=1))
    # Σ f_t(x_t) = 0 − 0.5 + 0.5 + 3 = 3; Σ c_t = 4, so θ* = −1 and Σ f_t(θ*) = −4; R = 7
    assert regret_of_points(P, np.array([0.0, 0.5, -0.5, 1.0])) == pytest.approx(7.0)
    x, v = P.best_fixed_point(4)
    assert x.tolist() == [-1.0] and v == pytest.approx(-4.0)
    # after 3 rounds Σ c_t = 1 → still −1, value −1; after 2 rounds Σ c_t = 2
    assert P.best_fixed_point(3)[1] == pytest.approx(-1.0)
    assert regret_of_points(P, np.array([0.0, 0.5])) == pytest.approx(-0.5 + 2.0)


def test_linear_best_fixed_point_on_a_ball_matches_cauchy_schwarz():
    c = np.array([[3.0, 0.0], [0.0, -4.0]])
    P = LinearProblem("ball", c, Ball(2.0, dim=2))
    x, v = P.best_fixed_point(2)
    # min over ‖x‖ ≤ 2 of 3x1 − 4x2 is −2·‖(3, −4)‖ = −10 at x = −2·(3, −4)/5
    assert v == pytest.approx(-10.0)
    assert x == pytest.approx([-1.2, 1.6])


def test_logistic_best_fixed_point_matches_a_grid_search():
    P = sparse_logistic(40, 1, active=1, seed=3, radius=2.0)
    grid = np.linspace(-2.0, 2.0, 400001)
    X = P.X.toarray()[:, 0]
    vals = np.sum(np.logaddexp(0.0, -P.y[:, None] * X[:, None] * grid[None, :]), axis=0)
    x, v = P.best_fixed_point(40)
    assert v == pytest.approx(vals.min(), abs=1e-7)
    assert x[0] == pytest.approx(grid[vals.argmin()], abs=1e-4)


def test_logistic_losses_and_gradients_by_formula():
    P = sparse_logistic(30, 12, active=3, seed=1)
    w = np.random.default_rng(2).standard_normal(12)
    for t in (1, 2, 17, 30):
        f, g = P.loss_and_grad(t, w)
        x, y = P.X[t - 1].toarray().ravel(), P.y[t - 1]
        z = y * x @ w
        assert f == pytest.approx(np.log1p(np.exp(-z)))
        assert g == pytest.approx(-y * x / (1.0 + np.exp(z)))
        assert np.count_nonzero(g) == np.count_nonzero(x)  # sparse gradients
    F, G = P.cumulative(30, w)
    assert F == pytest.approx(sum(P.loss(t, w) for t in range(1, 31)))
    assert G == pytest.approx(sum(P.grad(t, w) for t in range(1, 31)))
    assert P.X[0].nnz == 12  # dense first example: every v_i > 0 from t = 1


def test_reddi_sequences():
    P = reddi_counterexample(7, C=3.0)
    assert P.coefs[:, 0].tolist() == [3.0, -1.0, -1.0, 3.0, -1.0, -1.0, 3.0]
    Q = reddi_periodic(205)
    assert Q.coefs[0, 0] == 1010.0 and Q.coefs[101, 0] == 1010.0 and Q.coefs[202, 0] == 1010.0
    assert np.sum(Q.coefs[:101, 0] == -10.0) == 100
    S = reddi_stochastic(100000, runs=2, seed=0)
    frac = np.mean(S.coefs == 1010.0)
    assert 0.008 < frac < 0.012
    with pytest.raises(ValueError, match="C > 2"):
        reddi_counterexample(10, C=2.0)


def test_logistic_rejects_bad_labels():
    from scipy import sparse

    with pytest.raises(ValueError, match="labels"):
        SparseLogisticProblem("bad", sparse.eye(3), np.array([1.0, 0.0, -1.0]), Box(-1, 1, dim=3))
