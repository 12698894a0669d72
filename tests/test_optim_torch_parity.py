"""Parity with torch.optim wherever the options mean the same thing, and checkpoints both ways."""

from __future__ import annotations

import io

import pytest
import torch

import adamlab

# (adamlab class, adamlab kwargs, torch class, torch kwargs)
PAIRS = [
    (adamlab.Adam, {}, torch.optim.Adam, {}),
    (adamlab.Adam, {"weight_decay": 0.1}, torch.optim.Adam, {"weight_decay": 0.1}),
    (adamlab.Adam, {"amsgrad": True}, torch.optim.Adam, {"amsgrad": True}),
    (adamlab.Adam, {"maximize": True, "amsgrad": True}, torch.optim.Adam, {"maximize": True, "amsgrad": True}),
    (adamlab.Adam, {"weight_decay": 0.1, "decoupled_weight_decay": True}, torch.optim.AdamW, {"weight_decay": 0.1}),
    (
        adamlab.Adam,
        {"weight_decay": 0.01, "decoupled_weight_decay": True, "amsgrad": True},
        torch.optim.AdamW,
        {"weight_decay": 0.01, "amsgrad": True},
    ),
    (adamlab.AdaMax, {"eps": 1e-8}, torch.optim.Adamax, {}),
    (adamlab.AdaMax, {"eps": 1e-8, "weight_decay": 0.1}, torch.optim.Adamax, {"weight_decay": 0.1}),
    (adamlab.AdaMax, {"eps": 1e-8, "maximize": True}, torch.optim.Adamax, {"maximize": True}),
]
IDS = [f"{t.__name__}{tk}-vs-{a.__name__}{ak}" for a, ak, t, tk in PAIRS]


def _model(dtype):
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2)).to(dtype)


def _train(model, opt, steps, seed):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(16, 6, generator=gen, dtype=next(model.parameters()).dtype)
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()


@pytest.mark.parametrize("impl", ["fused", "reference"])
@pytest.mark.parametrize(("ours", "our_kw", "theirs", "their_kw"), PAIRS, ids=IDS)
def test_matches_torch_over_many_steps(ours, our_kw, theirs, their_kw, impl):
    a, b = _model(torch.float64), _model(torch.float64)
    opt_a = ours(a.parameters(), lr=0.01, impl=impl, **our_kw)
    opt_b = theirs(b.parameters(), lr=0.01, foreach=False, **their_kw)
    for step in range(150):
        _train(a, opt_a, 1, seed=step)
        _train(b, opt_b, 1, seed=step)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-10, atol=1e-12)
        sa, sb = opt_a.state[pa], opt_b.state[pb]
        for key in sb:
            torch.testing.assert_close(sa[key].to(sb[key].dtype), sb[key], rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize(("ours", "our_kw", "theirs", "their_kw"), PAIRS, ids=IDS)
@pytest.mark.parametrize("direction", ["torch->adamlab", "adamlab->torch"])
def test_checkpoint_moves_both_ways(ours, our_kw, theirs, their_kw, direction):
    """Train 20 steps in one library, save, load into the other, continue: equals staying in the first."""
    first, first_kw, second, second_kw = (
        (theirs, their_kw, ours, our_kw) if direction == "torch->adamlab" else (ours, our_kw, theirs, their_kw)
    )
    model = _model(torch.float32)
    opt = first(model.parameters(), lr=0.01, **first_kw)
    _train(model, opt, 20, seed=0)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)

    _train(model, opt, 30, seed=1)  # the uninterrupted run

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed = _model(torch.float32)
    resumed.load_state_dict(saved["model"])
    opt2 = second(resumed.parameters(), lr=0.01, **second_kw)
    opt2.load_state_dict(saved["opt"])
    _train(resumed, opt2, 30, seed=1)
    for pa, pb in zip(model.parameters(), resumed.parameters()):
        torch.testing.assert_close(pa, pb, rtol=2e-5, atol=1e-6)


def test_torch_checkpoint_keeps_our_defaults_for_missing_keys():
    model = _model(torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.02)
    _train(model, opt, 2, seed=0)
    ours = adamlab.Adam(model.parameters(), eps_mode="hat", lr_decay="sqrt")
    ours.load_state_dict(opt.state_dict())
    group = ours.param_groups[0]
    # Options torch has: taken from the checkpoint; options torch lacks: our constructor's.
    assert group["decoupled_weight_decay"] is True and group["weight_decay"] == 0.02
    assert group["eps_mode"] == "hat" and group["lr_decay"] == "sqrt" and group["bias_correction"] is True
    _train(model, ours, 2, seed=1)
    assert float(ours.state[next(model.parameters())]["step"]) == 4


def test_lr_scheduler_drives_lr():
    p = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    q = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt_a = adamlab.Adam([p], lr=0.1)
    opt_b = torch.optim.Adam([q], lr=0.1)
    sched_a = torch.optim.lr_scheduler.StepLR(opt_a, step_size=3, gamma=0.5)
    sched_b = torch.optim.lr_scheduler.StepLR(opt_b, step_size=3, gamma=0.5)
    for _ in range(10):
        for x, opt, sched in ((p, opt_a, sched_a), (q, opt_b, sched_b)):
            x.grad = x.detach() * 2 - 0.5
            opt.step()
            sched.step()
    assert opt_a.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**3)
    torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
