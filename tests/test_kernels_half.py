"""The fused kernel's bfloat16 / float16 Adam (adamlab.kernels.half) against torch's fused CPU Adam.

torch.optim.Adam(fused=True) (and AdamW(fused=True) for decoupled weight decay) on the same bf16/fp16 CPU
tensors is the oracle: the kernel follows its arithmetic order in float32 (and its FMAs), so parameters and
states must agree bit for bit on every coordinate, for every build the CPU runs (sizes around the vector
widths, so that vector bodies and padded tails both run; values down to subnormals).
"""

from __future__ import annotations

import pytest
import torch

from adamlab.hyperparameters import AdamHyperparameters
from adamlab.kernels import build
from adamlab.kernels.half import adam_step_half

pytestmark = pytest.mark.skipif(not build.available(), reason="the fused C kernel cannot be built here")

SIZES = [1, 7, 15, 16, 17, 31, 32, 33, 47, 63, 64, 65, 1000, 140_001]
STEPS = 5
OPTIONS = [
    {},
    {"weight_decay": 0.1},
    {"weight_decay": 0.1, "decoupled_weight_decay": True},
    {"maximize": True},
    {"amsgrad": True},
    {"betas": (0.3, 0.99), "eps": 1e-6, "lr": 1e-2},  # 1 − β1 ≥ 0.5: the lerp's other branch
]


def _torch_optimizer(params, options):
    kw = {k: v for k, v in options.items() if k != "decoupled_weight_decay"}
    cls = torch.optim.AdamW if options.get("decoupled_weight_decay") else torch.optim.Adam
    kw.setdefault("weight_decay", 0.0)
    return cls(params, fused=True, **kw)


@pytest.mark.parametrize("isa", build.ISAS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_matches_torch_fused_adam(isa, dtype, options):
    if isa not in build.supported_isas():
        pytest.skip(f"this CPU cannot run the {isa} build (it needs {', '.join(build.ISA_NEEDS[isa])})")
    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(n, generator=gen).to(dtype) for n in SIZES]
    grads = [[(torch.randn(n, generator=gen) * 0.1).to(dtype) for n in SIZES] for _ in range(STEPS)]
    hp = AdamHyperparameters(**options)

    want = [torch.nn.Parameter(p.clone()) for p in start]
    opt = _torch_optimizer(want, options)
    ours = [p.clone() for p in start]
    m = [torch.zeros_like(p) for p in start]
    v = [torch.zeros_like(p) for p in start]
    vmax = [torch.zeros_like(p) for p in start] if hp.amsgrad else None
    steps = [torch.tensor(0.0) for _ in start]
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with build.using_isa(isa):
            for gs in grads:
                for p, g in zip(want, gs):
                    p.grad = g.clone()
                opt.step()
                assert adam_step_half(ours, gs, m, v, vmax, steps, hp) == [0] * len(SIZES)
    finally:
        torch.set_num_threads(saved)
    assert all(float(s) == STEPS for s in steps)
    pairs = [("θ", ours, [p.detach() for p in want])]
    pairs += [("m", m, [opt.state[p]["exp_avg"] for p in want]), ("v", v, [opt.state[p]["exp_avg_sq"] for p in want])]
    if vmax is not None:
        pairs.append(("v_max", vmax, [opt.state[p]["max_exp_avg_sq"] for p in want]))
    for name, got, exp in pairs:
        got_bits = torch.cat([t.view(torch.int16) for t in got])
        exp_bits = torch.cat([t.view(torch.int16) for t in exp])
        differ = (got_bits != exp_bits).nonzero().flatten()
        assert len(differ) == 0, f"{name}: {len(differ)} entries differ from torch's, first at {differ[:5].tolist()}"


@pytest.mark.parametrize("isa", build.ISAS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_extreme_values_match_torch_fused_adam(isa, dtype):
    """Subnormal, zero, tiny and large gradients and parameters (values where a conversion or a shortcut in the
    division would show): still torch's bits."""
    if isa not in build.supported_isas():
        pytest.skip(f"this CPU cannot run the {isa} build (it needs {', '.join(build.ISA_NEEDS[isa])})")
    gen = torch.Generator().manual_seed(1)
    n = 4099
    tiny = torch.finfo(dtype).smallest_normal
    scales = torch.tensor([0.0, tiny / 8, tiny, 1e-3, 1.0, 100.0])[torch.randint(0, 6, (n,), generator=gen)]
    start = (torch.randn(n, generator=gen) * scales.roll(1)).to(dtype)
    grads = [(torch.randn(n, generator=gen) * scales).to(dtype) for _ in range(STEPS)]
    want = torch.nn.Parameter(start.clone())
    opt = torch.optim.Adam([want], fused=True, lr=1e-2, eps=1e-8)
    ours, m, v, step = start.clone(), torch.zeros_like(start), torch.zeros_like(start), torch.tensor(0.0)
    with build.using_isa(isa):
        for g in grads:
            want.grad = g.clone()
            opt.step()
            assert adam_step_half([ours], [g], [m], [v], None, [step], AdamHyperparameters(lr=1e-2)) == [0]
    for name, got, exp in [("θ", ours, want.detach()), ("m", m, opt.state[want]["exp_avg"])]:
        differ = (got.view(torch.int16) != exp.view(torch.int16)).nonzero().flatten()
        assert len(differ) == 0, f"{name}: {len(differ)} entries differ from torch's, first at {differ[:5].tolist()}"
    assert torch.equal(v.view(torch.int16), opt.state[want]["exp_avg_sq"].view(torch.int16))


@pytest.mark.parametrize("isa", build.ISAS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_non_finite_gradients_leave_their_coordinates_unchanged(isa, dtype):
    """NaN/±∞ gradient entries, in a vector body and in the tail: counted, and θ, m, v, v_max keep their old
    bits there; every other coordinate takes the step it takes without them."""
    if isa not in build.supported_isas():
        pytest.skip(f"this CPU cannot run the {isa} build (it needs {', '.join(build.ISA_NEEDS[isa])})")
    gen = torch.Generator().manual_seed(2)
    n = 100
    hp = AdamHyperparameters(lr=0.1, amsgrad=True)
    state = [(torch.rand(n, generator=gen) * s).to(dtype) for s in (1.0, 0.1, 0.01, 0.02)]
    g = torch.randn(n, generator=gen).to(dtype)
    bad_at = [3, 40, 97]
    g_bad = g.clone()
    g_bad[bad_at] = torch.tensor([float("nan"), float("inf"), float("-inf")]).to(dtype)
    clean = [t.clone() for t in state]
    dirty = [t.clone() for t in state]
    with build.using_isa(isa):
        assert adam_step_half([clean[0]], [g], [clean[1]], [clean[2]], [clean[3]], [torch.tensor(0.0)], hp) == [0]
        assert adam_step_half([dirty[0]], [g_bad], [dirty[1]], [dirty[2]], [dirty[3]], [torch.tensor(0.0)], hp) == [3]
    keep = torch.zeros(n, dtype=torch.bool)
    keep[bad_at] = True
    for before, after, stepped in zip(state, dirty, clean):
        assert torch.equal(after[keep].view(torch.int16), before[keep].view(torch.int16))
        assert torch.equal(after[~keep].view(torch.int16), stepped[~keep].view(torch.int16))


def test_non_finite_gradient_entries_are_skipped_and_counted():
    p = torch.randn(40).to(torch.bfloat16)
    before = p.clone()
    g = torch.randn(40).to(torch.bfloat16)
    g[5], g[33] = float("nan"), float("inf")
    m, v = torch.zeros_like(p), torch.zeros_like(p)
    bad = adam_step_half([p], [g], [m], [v], None, [torch.tensor(0.0)], AdamHyperparameters(lr=0.1))
    assert bad == [2]
    assert p[5] == before[5] and p[33] == before[33] and m[5] == 0 and v[33] == 0
    assert (p != before).sum() == 38


def test_bad_arguments_are_named():
    p = [torch.zeros(4, dtype=torch.bfloat16)]
    z = [torch.zeros(4, dtype=torch.bfloat16)]
    step = [torch.tensor(0.0)]
    hp = AdamHyperparameters()
    with pytest.raises(ValueError, match="params: bfloat16 or float16 tensors expected"):
        adam_step_half([torch.zeros(4)], [torch.zeros(4)], [torch.zeros(4)], [torch.zeros(4)], None, step, hp)
    with pytest.raises(ValueError, match=r"grads: contiguous CPU torch\.bfloat16 tensors"):
        adam_step_half(p, [torch.zeros(4, dtype=torch.float16)], z, z, None, step, hp)
    with pytest.raises(ValueError, match=r"max_exp_avg_sqs: give them exactly when hp\.amsgrad"):
        adam_step_half(p, z, z, z, None, step, AdamHyperparameters(amsgrad=True))
    with pytest.raises(ValueError, match=r"hp\.averaging"):
        adam_step_half(p, z, z, z, None, step, AdamHyperparameters(averaging=True))
    with pytest.raises(ValueError, match="steps: one float32 scalar tensor"):
        adam_step_half(p, z, z, z, None, [torch.tensor(0.0, dtype=torch.float64)], hp)
