"""adamlab's step does what torch.optim.Optimizer's step wrapper does (hooks, profiler label, LR schedulers),
checked against torch.optim.Adam's behaviour on the same calls."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

import adamlab
from adamlab.optim.base import AdamFamily


def _pair():
    p = torch.nn.Parameter(torch.ones(3))
    q = torch.nn.Parameter(torch.ones(3))
    return p, q, adamlab.Adam([p], lr=0.1), torch.optim.Adam([q], lr=0.1)


def _log_hooks(opt, log):
    pre = opt.register_step_pre_hook(lambda o, args, kwargs: log.append(("pre", o is opt, len(args), sorted(kwargs))))
    post = opt.register_step_post_hook(
        lambda o, args, kwargs: log.append(("post", o is opt, len(args), sorted(kwargs)))
    )
    return pre, post


def test_torch_does_not_wrap_the_step_again():
    p = torch.nn.Parameter(torch.ones(2))
    for _ in range(2):
        adamlab.Adam([p])
        adamlab.AdaMax([p])
    assert adamlab.Adam.step is AdamFamily.step and adamlab.AdaMax.step is AdamFamily.step
    assert AdamFamily.step.hooked is True


@pytest.mark.parametrize("call", ["plain", "closure_positional", "closure_keyword"])
def test_step_hooks_are_called_as_torch_calls_them(call):
    p, q, ours, theirs = _pair()
    logs: dict[str, list] = {"ours": [], "theirs": []}
    for name, opt, param in (("ours", ours, p), ("theirs", theirs, q)):
        _log_hooks(opt, logs[name])

        def closure(param=param):
            param.grad = torch.ones(3)
            return 1.5

        param.grad = torch.ones(3)
        if call == "plain":
            out = opt.step()
        elif call == "closure_positional":
            out = opt.step(closure)
        else:
            out = opt.step(closure=closure)
        assert out == (None if call == "plain" else 1.5)
    assert logs["ours"] == logs["theirs"] and len(logs["ours"]) == 2
    torch.testing.assert_close(p, q)


def test_global_hooks_and_removal():
    p, q, ours, theirs = _pair()
    seen = []
    pre = register_optimizer_step_pre_hook(lambda o, a, k: seen.append(("pre", type(o).__name__)))
    post = register_optimizer_step_post_hook(lambda o, a, k: seen.append(("post", type(o).__name__)))
    try:
        for opt, param in ((ours, p), (theirs, q)):
            param.grad = torch.ones(3)
            opt.step()
    finally:
        pre.remove()
        post.remove()
    assert seen == [("pre", "Adam"), ("post", "Adam")] * 2
    p.grad = torch.ones(3)
    ours.step()
    assert len(seen) == 4  # removed hooks are not called


def test_pre_hook_may_replace_the_arguments_and_must_return_a_pair():
    p = torch.nn.Parameter(torch.ones(3))
    opt = adamlab.Adam([p], lr=0.1)

    def closure():
        p.grad = torch.full((3,), 2.0)
        return 7.0

    handle = opt.register_step_pre_hook(lambda o, args, kwargs: ((args[0],), {"closure": closure}))
    assert opt.step() == 7.0  # the hook's closure ran
    handle.remove()
    opt.register_step_pre_hook(lambda o, args, kwargs: "nonsense")
    with pytest.raises(RuntimeError, match="must return None or a tuple of \\(new_args, new_kwargs\\)"):
        opt.step()


def test_profiler_sees_the_step_label():
    p = torch.nn.Parameter(torch.ones(3))
    opt = adamlab.Adam([p])
    p.grad = torch.ones(3)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        opt.step()
    assert "Optimizer.step#Adam.step" in {e.key for e in prof.key_averages()}


def test_lr_scheduler_sees_the_optimizer_step():
    p = torch.nn.Parameter(torch.ones(3))
    opt = adamlab.Adam([p], lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns if the scheduler steps before the optimizer did
        for _ in range(3):
            p.grad = torch.ones(3)
            opt.step()
            sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.125)
