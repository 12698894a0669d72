"""The fused kernel's bfloat16 / float16 Adam (adamlab.kernels.half) against torch's fused CPU Adam.

torch.optim.Adam(fused=True) (and AdamW(fused=True) for decoupled weight decay) on the same bf16/fp16 CPU
tensors is the oracle: the kernel follows its arithmetic order in float32, so parameters and states must
agree bit for bit except for rare ties of the final rounding (at least 99.9% of the entries) and within the
dtype's tolerance everywhere, for every build the CPU runs.
"""

from __future__ import annotations

import pytest
import torch

from adamlab.hyperparameters import AdamHyperparameters
from adamlab.kernels import build
from adamlab.kernels.half import adam_step_half

pytestmark = pytest.mark.skipif(not build.available(), reason="the fused C kernel cannot be built here")

SIZES = [1, 7, 16, 33, 1000, 140_001]
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
        got_all = torch.cat([t.float() for t in got])
        exp_all = torch.cat([t.float() for t in exp])
        same = (got_all == exp_all).float().mean().item()
        assert same >= 0.999, f"{name}: only {same:.4%} of the entries equal torch's"
        # Where they differ (a tie rounded the other way, or an FMA in torch's scalar tail), within the dtype's
        # own tolerance (torch.testing's defaults for bf16/fp16).
        torch.testing.assert_close(torch.cat(list(got)), torch.cat(list(exp)), msg=name)


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
