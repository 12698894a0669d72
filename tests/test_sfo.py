"""SFO (adamlab.baselines) against independent answers: scipy's L-BFGS-B and the closed-form minimum on the
full objective, plain SGD on the same minibatches, the secant condition checked on the positions and
gradients f_df actually saw, and tracemalloc for the memory."""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from adamlab.baselines import SFO, module_objective


class Quadratic:
    """f_i(x) = ½ (x − c_i)ᵀ A_i (x − c_i), A_i = BBᵀ/5 + 0.1·I (rank 5 + ridge)."""

    def __init__(self, m: int = 30, n: int = 10, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.A = [b @ b.T / 5 + 0.1 * np.eye(m) for b in rng.normal(size=(n, m, 5))]
        self.c = rng.normal(size=(n, m))
        self.n, self.x0 = n, rng.normal(size=m)

    def __call__(self, x, i):
        d = x - self.c[i]
        return 0.5 * d @ self.A[i] @ d, self.A[i] @ d

    def exact_minimum(self) -> np.ndarray:
        return np.linalg.solve(sum(self.A), sum(a @ c for a, c in zip(self.A, self.c)))


class Logistic:
    """L2-regularised logistic regression split into n minibatches; Σ f_i is the full mean cost."""

    def __init__(self, rows: int = 2000, dim: int = 50, n: int = 20, seed: int = 1, lam: float = 1e-3) -> None:
        rng = np.random.default_rng(seed)
        self.X = rng.normal(size=(rows, dim)) * rng.uniform(0.1, 3, size=dim)
        w = rng.normal(size=dim)
        self.y = (rng.uniform(size=rows) < 1 / (1 + np.exp(-self.X @ w))).astype(float)
        self.idx = np.array_split(np.arange(rows), n)
        self.n, self.rows, self.lam, self.x0 = n, rows, lam, np.zeros(dim)

    def __call__(self, x, i):
        xi, yi = self.X[self.idx[i]], self.y[self.idx[i]]
        z = xi @ x
        loss = (np.logaddexp(0, z) - yi * z).sum() / self.rows + self.lam / 2 * (x @ x) / self.n
        grad = xi.T @ (1 / (1 + np.exp(-z)) - yi) / self.rows + self.lam * x / self.n
        return loss, grad


def full(problem, x):
    out = [problem(x, i) for i in range(problem.n)]
    return sum(o[0] for o in out), sum(o[1] for o in out)


def lbfgsb(problem):
    res = minimize(
        lambda x: full(problem, x),
        problem.x0,
        jac=True,
        method="L-BFGS-B",
        options={"gtol": 1e-12, "ftol": 1e-16, "maxiter": 20000},
    )
    return res.x, res.fun


class Recorder:
    """Wraps f_df and keeps every (ref, theta, grad) SFO asked for: the oracle of the secant tests."""

    def __init__(self, f_df):
        self.f_df, self.calls = f_df, []

    def __call__(self, x, i):
        value, grad = self.f_df(x, i)
        self.calls.append((i, np.array(x, dtype=float), np.array(grad, dtype=float)))
        return value, grad

    def last_two(self, i):
        mine = [c for c in self.calls if c[0] == i]
        return mine[-2], mine[-1]


def test_minimises_a_convex_quadratic_like_lbfgsb_and_the_closed_form():
    q = Quadratic()
    x_ref, f_ref = lbfgsb(q)
    x_exact = q.exact_minimum()
    np.testing.assert_allclose(x_ref, x_exact, atol=1e-6)  # the oracles agree
    opt = SFO(q, q.x0, list(range(q.n)))
    x = opt.optimize(40)
    assert full(q, x)[0] - f_ref <= 1e-9 * max(1.0, abs(f_ref))
    np.testing.assert_allclose(x, x_exact, atol=1e-6)
    assert opt.passes == pytest.approx(40)


def test_minimises_a_logistic_regression_like_lbfgsb():
    p = Logistic()
    x_ref, f_ref = lbfgsb(p)
    x = SFO(p, p.x0, list(range(p.n))).optimize(30)
    f0 = full(p, p.x0)[0]
    assert full(p, x)[0] - f_ref <= 1e-9 * (f0 - f_ref)
    np.testing.assert_allclose(x, x_ref, atol=1e-4 * (1 + np.linalg.norm(x_ref)))


def passes_to_reach(curve, target):
    hit = [p for p, f in curve if f <= target]
    return min(hit) if hit else np.inf


def test_needs_fewer_passes_than_tuned_sgd():
    """Passes until the gap F − F* is below 1e-4 of the initial gap: SFO against plain SGD on the same 20
    minibatches (a fresh order every pass), with its learning rate tuned over a grid, budget 60 passes."""
    p = Logistic()
    _, f_ref = lbfgsb(p)
    f0 = full(p, p.x0)[0]
    target = f_ref + 1e-4 * (f0 - f_ref)
    curve = []
    SFO(p, p.x0, list(range(p.n))).optimize(60, on_pass=lambda o: curve.append((o.passes, full(p, o.theta)[0])))
    sfo_passes = passes_to_reach(curve, target)
    assert sfo_passes < 20
    rng = np.random.default_rng(0)
    sgd_best = np.inf
    for lr in [0.03, 0.1, 0.3, 1.0, 3.0, 10.0]:
        x, sgd_curve = p.x0.copy(), []
        for epoch in range(1, 61):
            for i in rng.permutation(p.n):
                x -= lr * p.n * p(x, i)[1]  # N·∇f_i: an unbiased estimate of ∇F
            f = full(p, x)[0]
            if not np.isfinite(f):
                break
            sgd_curve.append((epoch, f))
        sgd_best = min(sgd_best, passes_to_reach(sgd_curve, target))
    assert sfo_passes < sgd_best


def test_hessian_estimates_satisfy_the_secant_condition_of_the_latest_pair():
    """After every update, H_j (the estimate in the subspace) maps the latest step Δx of subfunction j to its
    gradient change Δf' — with Δx and Δf' taken from what f_df actually saw, projected with the basis P."""
    q = Quadratic(m=40, n=8, seed=3)
    rec = Recorder(q)
    opt = SFO(rec, q.x0, list(range(q.n)), subspace_max=40)
    checked = 0
    for _ in range(60):
        collapses = opt.collapses
        opt.step()
        if opt.last_update is None or opt.collapses != collapses:
            continue
        j = opt.last_update[0]
        (_, x1, g1), (_, x2, g2) = rec.last_two(j)
        s, y = x2 - x1, g2 - g1
        basis = opt.P[:, : opt.K]
        np.testing.assert_allclose(basis @ (basis.T @ s), s, atol=1e-9 * np.linalg.norm(s))
        np.testing.assert_allclose(basis @ (basis.T @ y), y, atol=1e-9 * np.linalg.norm(y))
        np.testing.assert_allclose(opt.hessian(j) @ (basis.T @ s), basis.T @ y, atol=1e-8 * np.linalg.norm(y))
        checked += 1
    assert checked > 30


def test_subspace_collapse_keeps_an_orthonormal_basis_holding_every_latest_point_and_gradient():
    """Eq. 9: with M = 120 > K_max = 3N = 24 the subspace collapses; afterwards P stays orthonormal, K ≤ K_max,
    and every subfunction's latest position and gradient (as f_df saw them) lie in span(P)."""
    p = Logistic(rows=1200, dim=120, n=8, seed=2)
    rec = Recorder(p)
    opt = SFO(rec, p.x0 + 0.1, list(range(p.n)))
    f_start = full(p, opt.theta)[0]
    opt.optimize(15)
    assert opt.collapses > 0 and opt.K <= opt.subspace_max == 24
    basis = opt.P[:, : opt.K]
    np.testing.assert_allclose(basis.T @ basis, np.eye(opt.K), atol=1e-10)
    for i in range(p.n):
        _, x, g = rec.last_two(i)[1]
        for v in (x, g):
            assert np.linalg.norm(v - basis @ (basis.T @ v)) <= 1e-8 * np.linalg.norm(v)
    assert full(p, opt.theta)[0] < 0.5 * f_start


def held_bytes(m: int, n: int) -> tuple[int, int]:
    rng = np.random.default_rng(n)
    centres = rng.normal(size=(n, m))

    def f_df(x, i):
        d = x - centres[i]
        return 0.5 * (i + 1) * (d @ d), (i + 1) * d

    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    opt = SFO(f_df, np.zeros(m), list(range(n)))
    opt.optimize(3)
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return held, opt.memory_bytes()


def test_memory_is_linear_in_the_number_of_subfunctions():
    """SFO §4: storage O(M·N). Bytes held (tracemalloc) at N = 4, 8, 16 with M = 20000 lie on a line whose
    slope is the 3 columns of P per subfunction (K_max = 3N): 3·M·8 bytes."""
    m, sizes = 20000, [4, 8, 16]
    measured = [held_bytes(m, n) for n in sizes]
    held = np.array([h for h, _ in measured], dtype=float)
    slope, intercept = np.polyfit(sizes, held, 1)
    residual = held - (slope * np.array(sizes) + intercept)
    assert np.abs(residual).max() <= 0.02 * held.max()
    assert slope == pytest.approx(3 * m * 8, rel=0.1)
    for h, own in measured:  # the optimiser's own account agrees with tracemalloc
        assert own == pytest.approx(h, rel=0.1)


def test_a_far_too_long_first_step_is_rejected_and_shortened():
    q = Quadratic(seed=4)
    rec = Recorder(q)
    opt = SFO(rec, q.x0, list(range(q.n)), initial_step=1e4)
    start = opt.theta.copy()
    while len(rec.calls) < 3:  # two activations at θ0, then the first step
        opt.step()
    assert opt.rejected_steps >= 1 and opt.step_scale < 1
    np.testing.assert_array_equal(opt.theta, start)  # x did not move to the bad point
    x = opt.optimize(40)
    np.testing.assert_allclose(x, q.exact_minimum(), atol=1e-5)


def test_history_and_on_pass():
    q = Quadratic()
    seen = []
    opt = SFO(q, q.x0, list(range(q.n)))
    opt.optimize(3, on_pass=lambda o: seen.append(o.passes))
    assert seen == [1.0, 2.0, 3.0]
    h = opt.history
    assert len(h["passes"]) == len(h["loss"]) == len(h["seconds"]) == opt.evaluations == 30
    assert np.all(np.diff(h["passes"]) > 0) and np.all(np.diff(h["seconds"]) >= 0)
    opt.optimize(4)  # continues
    assert opt.evaluations == 40
    assert h["loss"][-1] < h["loss"][0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"subfunction_references": []}, "subfunction_references"),
        ({"theta0": [np.nan]}, "theta0"),
        ({"target": "nearest"}, "target must be one of"),
        ({"hessian_init": "max"}, "hessian_init must be one of"),
        ({"max_history": 0}, "max_history"),
        ({"subspace_max": 3}, "subspace_max"),
        ({"initial_step": -1.0}, "initial_step"),
        ({"f_df": 3}, "f_df"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, match):
    args = {"f_df": lambda x, i: (0.0, x), "theta0": np.ones(20), "subfunction_references": [0, 1, 2]}
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        SFO(**args)


def test_bad_num_passes_and_gradient_size():
    with pytest.raises(ValueError, match="num_passes"):
        SFO(lambda x, i: (0.0, x), np.ones(3), [0]).optimize(-1)
    with pytest.raises(ValueError, match="gradient of size 2"):
        SFO(lambda x, i: (0.0, np.ones(2)), np.ones(3), [0]).optimize(1)


def test_module_objective_sums_to_the_full_torch_cost_and_gradient():
    """The torch adapter: Σ_i f_i and Σ_i ∇f_i equal the full-batch cost (mean loss + L2) and its autograd
    gradient; SFO then lowers that cost."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3)).double()
    xs, ys = torch.randn(90, 6, dtype=torch.float64), torch.randint(0, 3, (90,))
    batches = [(xs[i : i + 30], ys[i : i + 30]) for i in range(0, 90, 30)]

    def l2(params):
        return 1e-3 / 2 * sum((p**2).sum() for p in params.values())

    f_df, theta0, refs = module_objective(model, torch.nn.functional.cross_entropy, batches, penalty=l2)
    total = sum(f_df(theta0, r)[0] for r in refs)
    grad = sum(f_df(theta0, r)[1] for r in refs)
    model.zero_grad()
    cost = torch.nn.functional.cross_entropy(model(xs), ys) + l2(dict(model.named_parameters()))
    cost.backward()
    expected = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).numpy()
    assert total == pytest.approx(float(cost.detach()), rel=1e-12)
    np.testing.assert_allclose(grad, expected, rtol=1e-10, atol=1e-14)
    theta = SFO(f_df, theta0, refs).optimize(10)
    assert sum(f_df(theta, r)[0] for r in refs) < 0.8 * total
    f_df.load_into_model(theta)
    np.testing.assert_array_equal(f_df.theta0(), theta)


def test_state_dict_resumes_exactly_where_the_run_was():
    """An SFO rebuilt from another's state_dict continues with the same iterates as the uninterrupted run."""
    p = Logistic(rows=1200, dim=120, n=8, seed=2)  # collapses happen, so the basis must come back too
    whole = SFO(p, p.x0 + 0.1, list(range(p.n)), target="random", seed=5)
    whole.optimize(6)
    first = SFO(p, p.x0 + 0.1, list(range(p.n)), target="random", seed=5)
    first.optimize(3)
    state = first.state_dict()
    resumed = SFO(p, np.zeros(120), list(range(p.n)), target="random", seed=99)
    resumed.load_state_dict(state)
    resumed.optimize(6)
    assert whole.collapses > 0
    np.testing.assert_allclose(resumed.theta, whole.theta, rtol=0, atol=1e-12)
    assert resumed.history["passes"] == whole.history["passes"]
    with pytest.raises(ValueError, match="N, M"):
        SFO(p, np.zeros(120), list(range(4))).load_state_dict(state)
