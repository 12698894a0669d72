"""Edge cases, bad input, non-finite gradients, temporal averaging and diagnostics."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import adamlab
import adamlab.numpy as anp

IMPLS = ["fused", "reference"]
CLASSES = [adamlab.Adam, adamlab.AdaMax]


# ---------------------------------------------------------------- bad input: clear errors at construction

BAD = [
    ({"lr": -1.0}, ValueError, "lr must be >= 0"),
    ({"lr": float("nan")}, ValueError, "lr must be finite"),
    ({"lr": float("inf")}, ValueError, "lr must be finite"),
    ({"lr": "0.1"}, TypeError, "lr must be a real number"),
    ({"lr": torch.tensor([0.1, 0.2])}, ValueError, "lr as a tensor must have exactly one element, got 2"),
    ({"betas": (torch.tensor(0.9), 0.999)}, ValueError, "betas must be both numbers or both tensors"),
    ({"nesterov": True}, TypeError, "unexpected keyword argument 'nesterov'; its options are lr, betas"),
    ({"betas": (1.0, 0.999)}, ValueError, r"betas\[0\] must lie in \[0, 1\)"),
    ({"betas": (0.9, -0.1)}, ValueError, r"betas\[1\] must lie in \[0, 1\)"),
    ({"betas": (0.9,)}, ValueError, "betas must be a pair"),
    ({"eps": -1e-8}, ValueError, "eps must be >= 0"),
    ({"weight_decay": -0.1}, ValueError, "weight_decay must be >= 0"),
    ({"lr_decay": "linear"}, ValueError, r"lr_decay must be one of \(None, 'sqrt'\)"),
    ({"beta1_decay": 0.0}, ValueError, r"beta1_decay \(λ\) must lie in \(0, 1\]"),
    ({"beta1_decay": 1.5}, ValueError, r"beta1_decay \(λ\) must lie in \(0, 1\]"),
    ({"averaging_beta": 1.0}, ValueError, r"averaging_beta must lie in \[0, 1\)"),
    ({"impl": "cuda"}, ValueError, "impl must be one of"),
    ({"capturable": True}, ValueError, "capturable=True"),
]


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize(("kwargs", "error", "match"), BAD)
def test_bad_hyperparameters_raise_naming_the_argument(cls, kwargs, error, match):
    with pytest.raises(error, match=match):
        cls([torch.nn.Parameter(torch.zeros(2))], **kwargs)


@pytest.mark.parametrize("cls", [anp.Adam, anp.AdaMax])
@pytest.mark.parametrize(
    ("kwargs", "error", "match"), [b for b in BAD if "impl" not in b[0] and "capturable" not in b[0]]
)
def test_numpy_bad_hyperparameters(cls, kwargs, error, match):
    with pytest.raises(error, match=match):
        cls(**kwargs)


def test_unknown_eps_mode():
    with pytest.raises(ValueError, match=r"eps_mode must be one of \('paper', 'hat'\), got 'keras'"):
        adamlab.Adam([torch.nn.Parameter(torch.zeros(2))], eps_mode="keras")


def test_bad_param_group_option_is_rejected_and_not_added():
    opt = adamlab.Adam([torch.nn.Parameter(torch.zeros(2))])
    with pytest.raises(ValueError, match="lr must be >= 0"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))], "lr": -1})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("cls", CLASSES)
def test_integer_params_raise(cls):
    with pytest.raises(TypeError, match=r"parameter 0 of param group 0 is integer \(torch.int64\)"):
        cls([torch.zeros(2, dtype=torch.int64)])


@pytest.mark.parametrize("cls", CLASSES)
def test_sparse_gradient_raises(cls):
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = cls(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(TypeError, match="does not support sparse gradients"):
        opt.step()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_takes_the_half_kernel_or_the_reference_path(dtype):
    """bfloat16/float16 under impl="fused" (and "auto"): Adam without averaging takes the kernel's half-precision
    loops, equal to torch.optim.Adam(fused=True) (float32 arithmetic in torch's order, state in the dtype);
    with averaging (which those loops do not keep) the reference path, equal to impl="reference"."""
    torch.manual_seed(0)
    start, grads = torch.randn(300).to(dtype), [torch.randn(300).to(dtype) for _ in range(4)]
    ps = [torch.nn.Parameter(start.clone()) for _ in range(5)]
    opts = [
        adamlab.Adam([ps[0]], lr=1e-2, impl="fused"),
        torch.optim.Adam([ps[1]], lr=1e-2, fused=True),
        adamlab.Adam([ps[2]], lr=1e-2, impl="fused", averaging=True),
        adamlab.Adam([ps[3]], lr=1e-2, impl="reference", averaging=True),
        adamlab.Adam([ps[4]], lr=1e-2),
    ]
    for g in grads:
        for p, opt in zip(ps, opts):
            p.grad = g.clone()
            opt.step()
    assert torch.equal(ps[0], ps[1]) and torch.equal(ps[0], ps[4])
    assert torch.equal(opts[0].state[ps[0]]["exp_avg_sq"], opts[1].state[ps[1]]["exp_avg_sq"])
    assert torch.equal(ps[2], ps[3])
    assert not opts[0]._plans


def test_fused_refuses_other_devices_naming_the_reason():
    p = torch.empty(4, device="meta", requires_grad=True)
    p.grad = torch.empty(4, device="meta")
    with pytest.raises(
        RuntimeError,
        match="impl='fused' needs dense contiguous float32/float64 CPU tensors; "
        "parameter 0 of param group 0 is on meta",
    ):
        adamlab.Adam([p], impl="fused").step()


def test_torch_style_switches_are_accepted():
    p = torch.nn.Parameter(torch.zeros(2))
    assert adamlab.Adam([p], fused=True).param_groups[0]["impl"] == "fused"
    assert adamlab.Adam([p], foreach=True).param_groups[0]["impl"] == "foreach"
    assert adamlab.Adam([p], differentiable=True).param_groups[0]["differentiable"] is True
    with pytest.raises(RuntimeError, match="differentiable=True steps on the reference path"):
        adamlab.Adam([p], fused=True, differentiable=True)


# ---------------------------------------------------------------- non-finite gradients


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_gradient_never_enters_the_state(cls, impl, bad):
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(6, dtype=torch.float64))
    q = torch.nn.Parameter(p.detach().clone())
    opt = cls([p], lr=0.01, impl=impl, averaging=True)
    twin = cls([q], lr=0.01, impl=impl, averaging=True)
    for _ in range(3):
        g = torch.randn(6, dtype=torch.float64)
        p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        twin.step()
    before = {k: v.clone() for k, v in opt.state[p].items()}
    p_before = p.detach().clone()
    g = torch.randn(6, dtype=torch.float64)
    g_bad = g.clone()
    g_bad[2] = bad
    p.grad, q.grad = g_bad, g.clone()
    with pytest.raises(FloatingPointError, match=r"parameter 0 of param group 0 \(1 entries\)"):
        opt.step()
    twin.step()
    for key, value in opt.state[p].items():
        assert torch.isfinite(value).all(), key
        if key != "step":
            assert value[2] == before[key][2]  # the bad coordinate kept its value
            keep = [0, 1, 3, 4, 5]
            torch.testing.assert_close(value[keep], twin.state[q][key][keep], rtol=0, atol=0)
    assert p[2] == p_before[2]
    torch.testing.assert_close(p[[0, 1, 3, 4, 5]], q[[0, 1, 3, 4, 5]], rtol=0, atol=0)


def test_numpy_nonfinite_gradient_raises_and_changes_nothing():
    opt = anp.Adam()
    theta = np.ones(3)
    state = opt.init(theta)
    with pytest.raises(FloatingPointError, match="grad contains NaN or inf"):
        opt.step(theta, np.array([1.0, np.nan, 0.0]), state)
    assert state.t == 0 and np.all(state.m == 0)


# ---------------------------------------------------------------- parameters and groups


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("cls", CLASSES)
def test_params_without_grad_and_zero_size_and_mixed_dtypes(cls, impl):
    a = torch.nn.Parameter(torch.ones(3, dtype=torch.float32))
    b = torch.nn.Parameter(torch.ones(4, dtype=torch.float64))
    empty = torch.nn.Parameter(torch.ones(0, dtype=torch.float32))
    no_grad = torch.nn.Parameter(torch.ones(2))
    opt = cls([a, b, empty, no_grad], lr=0.1, impl=impl)
    for p in (a, b, empty):
        p.grad = torch.ones_like(p)
    opt.step()
    assert no_grad not in opt.state or not opt.state[no_grad]
    assert torch.equal(no_grad, torch.ones(2))
    assert empty.shape == (0,) and float(opt.state[empty]["step"]) == 1
    # One step with a constant gradient moves every coordinate by exactly α (bias-corrected), in both dtypes.
    expected = 1 - 0.1 if cls is adamlab.AdaMax else 1 - 0.1 / (1 + 1e-8)
    torch.testing.assert_close(a, torch.full((3,), expected, dtype=torch.float32))
    torch.testing.assert_close(b, torch.full((4,), expected, dtype=torch.float64))


@pytest.mark.parametrize("impl", IMPLS)
def test_frozen_then_unfrozen_parameter_keeps_its_own_step(impl):
    a = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    b = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = adamlab.Adam([a, b], lr=0.1, impl=impl)
    oracle = anp.Adam(lr=0.1)
    sb = oracle.init(np.zeros(2))
    theta_b = np.zeros(2)
    for step in range(6):
        a.grad = torch.ones(2, dtype=torch.float64)
        b.grad = None if step in (2, 3) else torch.full((2,), 0.5 * step - 1, dtype=torch.float64)
        opt.step()
        if b.grad is not None:
            theta_b, sb = oracle.step(theta_b, b.grad.numpy(), sb)
    assert float(opt.state[a]["step"]) == 6 and float(opt.state[b]["step"]) == 4
    np.testing.assert_allclose(b.detach().numpy(), theta_b, rtol=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
def test_closure_and_zero_grad(impl):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    x = torch.randn(20, 3)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3  # realisable: the optimum loss is 0
    opt = adamlab.Adam(model.parameters(), lr=0.05, impl=impl)
    calls = []

    def closure():
        opt.zero_grad()
        loss = (model(x) - y).pow(2).mean()
        loss.backward()
        calls.append(loss.item())
        return loss

    losses = [opt.step(closure).item() for _ in range(200)]
    assert len(calls) == 200 and losses[-1] < 1e-2 * losses[0]
    opt.zero_grad(set_to_none=True)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("cls", CLASSES)
def test_maximize_is_minimize_of_the_negation(cls, impl):
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(5, dtype=torch.float64))
    q = torch.nn.Parameter(p.detach().clone())
    up = cls([p], lr=0.01, maximize=True, impl=impl)
    down = cls([q], lr=0.01, impl=impl)
    for _ in range(20):
        g = torch.randn(5, dtype=torch.float64)
        p.grad, q.grad = g.clone(), -g
        up.step()
        down.step()
    assert torch.equal(p, q)


@pytest.mark.parametrize("impl", IMPLS)
def test_per_group_options(impl):
    a = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    b = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = adamlab.Adam([{"params": [a]}, {"params": [b], "lr": 0.5, "amsgrad": True}], lr=0.1, impl=impl)
    a.grad = torch.ones(2, dtype=torch.float64)
    b.grad = torch.ones(2, dtype=torch.float64)
    opt.step()
    assert float(a.detach()[0]) == pytest.approx(-0.1, rel=1e-6)
    assert float(b.detach()[0]) == pytest.approx(-0.5, rel=1e-6)
    assert "max_exp_avg_sq" in opt.state[b] and "max_exp_avg_sq" not in opt.state[a]


# ---------------------------------------------------------------- temporal averaging (§7.2)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("cls", CLASSES)
def test_averaged_parameters_swap_in_the_bias_corrected_average_and_back(cls, impl):
    rng = np.random.default_rng(0)
    theta0 = rng.standard_normal(4)
    p = torch.nn.Parameter(torch.tensor(theta0))
    opt = cls([p], lr=0.05, averaging=True, impl=impl)
    oracle = (anp.Adam if cls is adamlab.Adam else anp.AdaMax)(lr=0.05, averaging=True)
    theta, state = theta0.copy(), oracle.init(theta0)
    # θ̄ by hand: θ̄_t = β2·θ̄_{t−1} + (1−β2)·θ_t, θ̂_t = θ̄_t/(1−β2^t)
    by_hand = np.zeros(4)
    for _ in range(30):
        g = rng.standard_normal(4) + theta
        p.grad = torch.tensor(g)
        opt.step()
        theta, state = oracle.step(theta, g, state)
        by_hand = 0.999 * by_hand + 0.001 * theta
    expected = by_hand / (1 - 0.999**30)
    np.testing.assert_allclose(oracle.averaged(state), expected, rtol=1e-10)
    current = p.detach().clone()
    with opt.averaged_parameters():
        np.testing.assert_allclose(p.detach().numpy(), expected, rtol=1e-10)
    assert torch.equal(p, current)
    with pytest.raises(KeyError), opt.averaged_parameters():
        raise KeyError("evaluation failed")
    assert torch.equal(p, current)


def test_averaged_parameters_needs_averaging():
    p = torch.nn.Parameter(torch.zeros(2))
    opt = adamlab.Adam([p])
    with pytest.raises(RuntimeError, match="averaging=True"), opt.averaged_parameters():
        pass


# ---------------------------------------------------------------- diagnostics (§2.1)


@pytest.mark.parametrize("impl", IMPLS)
def test_diagnostics_constant_gradient(impl):
    p = torch.nn.Parameter(torch.zeros(100, dtype=torch.float64))
    opt = adamlab.Adam([p], lr=0.01, eps=0.0, impl=impl)
    with pytest.raises(RuntimeError, match="at least one step"):
        opt.diagnostics()
    for _ in range(5):
        p.grad = torch.linspace(1, 2, 100, dtype=torch.float64)
        opt.step()
    d = opt.diagnostics()
    # Constant gradient: m̂ = g and v̂ = g², so |Δ|/α = |m̂|/√v̂ = 1 for every coordinate.
    for key in ("step_over_lr", "snr"):
        assert d[key]["count"] == 100
        for stat in ("mean", "q50", "q90", "q99", "max"):
            assert d[key][stat] == pytest.approx(1.0, rel=1e-9)


def test_diagnostics_match_hand_computation():
    p = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = adamlab.Adam([p], lr=0.01, betas=(0.5, 0.75), eps=0.0)
    for g in ([1.0, 4.0], [-1.0, 2.0]):
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    # By hand: m1 = 0.5·g1 = [0.5, 2]; m2 = 0.5·m1 + 0.5·g2 = [-0.25, 2]; v2 = 0.75·0.25·g1² + 0.25·g2²
    m = np.array([-0.25, 2.0]) / (1 - 0.5**2)
    v = (0.75 * 0.25 * np.array([1.0, 16.0]) + 0.25 * np.array([1.0, 4.0])) / (1 - 0.75**2)
    ratio = np.abs(m) / np.sqrt(v)
    d = opt.diagnostics()
    assert d["snr"]["max"] == pytest.approx(ratio.max(), rel=1e-12)
    assert d["snr"]["mean"] == pytest.approx(ratio.mean(), rel=1e-12)
    assert math.isclose(d["step_over_lr"]["max"], ratio.max(), rel_tol=1e-12)


# ---------------------------------------------------------------- the fused path's cached plan


def _twins(shape=(3, 4)):
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(*shape, dtype=torch.float64))
    b = torch.nn.Parameter(a.detach().clone())
    return a, b, adamlab.Adam([a], lr=0.01, impl="fused"), adamlab.Adam([b], lr=0.01, impl="reference")


def _both_step(a, b, oa, ob, grad):
    a.grad, b.grad = grad.clone(), grad.clone()
    oa.step()
    ob.step()


def test_plan_follows_reassigned_parameter_storage():
    a, b, oa, ob = _twins()
    for _ in range(3):
        _both_step(a, b, oa, ob, torch.randn(3, 4, dtype=torch.float64))
    with torch.no_grad():
        a.data = a.data.clone() + 1.0  # new storage
        b.data = b.data.clone() + 1.0
    for _ in range(3):
        _both_step(a, b, oa, ob, torch.randn(3, 4, dtype=torch.float64))
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_plan_follows_state_replaced_by_hand_and_non_contiguous_grads():
    a, b, oa, ob = _twins()
    for _ in range(3):
        _both_step(a, b, oa, ob, torch.randn(3, 4, dtype=torch.float64))
    oa.state[a]["exp_avg"] = torch.zeros_like(a)  # reset the first moment by replacing the tensor
    ob.state[b]["exp_avg"] = torch.zeros_like(b)
    _both_step(a, b, oa, ob, torch.randn(3, 4, dtype=torch.float64))
    torch.testing.assert_close(oa.state[a]["exp_avg"], ob.state[b]["exp_avg"], rtol=1e-12, atol=1e-14)
    a.grad = torch.randn(4, 3, dtype=torch.float64).t()  # same shape, not contiguous
    b.grad = a.grad.clone()
    assert not a.grad.is_contiguous()
    with pytest.raises(RuntimeError, match="impl='fused' needs dense contiguous"):
        oa.step()
    oa.param_groups[0]["impl"] = "auto"  # auto takes the reference path for that tensor
    oa.step()
    ob.step()
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_plan_dropped_by_load_state_dict_and_add_param_group():
    a, b, oa, ob = _twins()
    saved = None
    for i in range(4):
        if i == 2:
            saved = (a.detach().clone(), copy_state(oa))
        _both_step(a, b, oa, ob, torch.full((3, 4), float(i + 1), dtype=torch.float64))
    with torch.no_grad():
        a.copy_(saved[0])
    oa.load_state_dict(saved[1])
    _both_step(a, b, oa, ob, torch.full((3, 4), 3.0, dtype=torch.float64))  # replays step 3 on a
    assert float(oa.state[a]["step"]) == 3
    c = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    oa.add_param_group({"params": [c]})
    c.grad = torch.ones(2, dtype=torch.float64)
    a.grad = torch.ones(3, 4, dtype=torch.float64)
    oa.step()
    assert float(oa.state[c]["step"]) == 1 and float(c.detach()[0]) == pytest.approx(-0.01, rel=1e-6)


def copy_state(opt):
    import copy

    return copy.deepcopy(opt.state_dict())


def test_without_a_compiler_auto_warns_once_and_takes_the_reference_path(monkeypatch):
    from adamlab.kernels import build

    monkeypatch.setattr(build, "available", lambda: False)
    monkeypatch.setattr(build, "load", lambda: (_ for _ in ()).throw(build.KernelUnavailableError("no cc")))
    a = torch.nn.Parameter(torch.randn(3, 4, dtype=torch.float64))
    b = torch.nn.Parameter(a.detach().clone())
    auto = adamlab.Adam([a], lr=0.01)
    ref = adamlab.Adam([b], lr=0.01, impl="reference")
    with pytest.warns(RuntimeWarning, match="fused CPU kernel could not be built"):
        _both_step(a, b, auto, ref, torch.ones(3, 4, dtype=torch.float64))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        _both_step(a, b, auto, ref, torch.ones(3, 4, dtype=torch.float64))
    assert torch.equal(a, b)
    with pytest.raises(RuntimeError, match="impl='fused' needs the fused CPU kernel, which is unavailable: no cc"):
        adamlab.Adam([a], impl="fused")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("option", ["amsgrad", "averaging"])
def test_switching_on_a_state_option_after_the_first_step_is_refused(impl, option):
    p = torch.nn.Parameter(torch.zeros(3))
    opt = adamlab.Adam([p], impl=impl)
    p.grad = torch.ones(3)
    opt.step()
    opt.step()  # the fused path now holds a cached plan
    opt.param_groups[0][option] = True
    key = "max_exp_avg_sq" if option == "amsgrad" else "param_avg"
    with pytest.raises(RuntimeError, match=f"has no {key} in its state: amsgrad or averaging was switched on"):
        opt.step()
