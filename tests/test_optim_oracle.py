"""Every torch path of every optimizer × option equals the NumPy literal implementation (the oracle)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from optim_cases import CASES, IMPLS, case_id

STEPS = 120


def _run_both(case, impl, dtype, shapes=((7, 5), (13,), (1,)), lr=0.01, seed=0):
    _, torch_cls, numpy_cls, opts = case
    rng = np.random.default_rng(seed)
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    thetas = [rng.standard_normal(s).astype(np_dtype) for s in shapes]
    params = [torch.nn.Parameter(torch.from_numpy(t.copy())) for t in thetas]
    opt = torch_cls(params, lr=lr, impl=impl, **opts)
    oracle = numpy_cls(lr=lr, **opts)
    states = [oracle.init(t) for t in thetas]
    for step in range(STEPS):
        # A drifting mean plus noise, with exact zeros now and then (sparse-like coordinates).
        grads = []
        for t in thetas:
            g = (0.5 * np.sin(step / 10) + rng.standard_normal(t.shape)).astype(np_dtype)
            g[rng.random(t.shape) < 0.1] = 0
            grads.append(g)
        for p, g in zip(params, grads):
            p.grad = torch.from_numpy(g.copy())
        opt.step()
        for k, g in enumerate(grads):
            thetas[k], states[k] = oracle.step(thetas[k], g, states[k])
    return opt, params, oracle, thetas, states


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-3)))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_float64_matches_numpy(case, impl):
    opt, params, _, thetas, states = _run_both(case, impl, torch.float64)
    for p, t in zip(params, thetas):
        assert _rel(p.detach().numpy(), t) <= 1e-10
    first, second = opt.moment_keys
    for p, s in zip(params, states):
        st = opt.state[p]
        assert float(st["step"]) == s.t == STEPS
        assert _rel(st[first].numpy(), s.m) <= 1e-10
        second_np = s.v if hasattr(s, "v") else s.u
        assert _rel(st[second].numpy(), second_np) <= 1e-10
        if s.theta_avg is not None:
            assert _rel(st["param_avg"].numpy(), s.theta_avg) <= 1e-10
        if getattr(s, "v_max", None) is not None:
            assert _rel(st["max_exp_avg_sq"].numpy(), s.v_max) <= 1e-10


# float32: each path rounds differently (the fused kernel folds the bias corrections into two scalars), so
# after 120 steps the parameters agree to a relative 1e-4 (measured worst case ≈ 3.3e-5, AMSGrad without
# bias correction, whose first steps are the largest).
FLOAT32_RTOL = 1e-4


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_float32_matches_numpy(case, impl):
    _, params, _, thetas, _ = _run_both(case, impl, torch.float32)
    for p, t in zip(params, thetas):
        assert p.dtype == torch.float32
        assert _rel(p.detach().numpy().astype(np.float64), t.astype(np.float64)) <= FLOAT32_RTOL


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_fused_equals_reference_many_tensors(case):
    """Fused vs reference on many tensors of mixed sizes (enough elements for the threaded split)."""
    _, torch_cls, _, opts = case
    torch.manual_seed(1)
    sizes = [0, 1, 3, 17, 4096, 70_000, 150_001]
    a = [torch.nn.Parameter(torch.randn(n, dtype=torch.float64)) for n in sizes]
    b = [torch.nn.Parameter(x.detach().clone()) for x in a]
    opt_a = torch_cls(a, lr=0.003, impl="fused", **opts)
    opt_b = torch_cls(b, lr=0.003, impl="reference", **opts)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for _ in range(10):
            for x, y in zip(a, b):
                g = torch.randn_like(x)
                x.grad, y.grad = g, g.clone()
            opt_a.step()
            opt_b.step()
    finally:
        torch.set_num_threads(threads)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-14)
        for key in opt_a.state[x]:
            torch.testing.assert_close(opt_a.state[x][key], opt_b.state[y][key], rtol=1e-12, atol=1e-14)
