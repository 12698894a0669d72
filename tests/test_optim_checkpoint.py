"""A restored optimizer stepped in lockstep with the original stays bit-identical."""

from __future__ import annotations

import copy

import pytest
import torch

from optim_cases import CASES, case_id


def _model():
    torch.manual_seed(7)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))


def _step(model, opt, gen):
    x = torch.randn(32, 8, generator=gen)
    opt.zero_grad(set_to_none=True)
    model(x).logsumexp(dim=1).mean().backward()
    opt.step()


@pytest.mark.parametrize("impl", ["fused", "reference"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_save_load_lockstep_is_bit_identical(case, impl, tmp_path):
    _, torch_cls, _, opts = case
    model = _model()
    opt = torch_cls(model.parameters(), lr=0.01, impl=impl, **opts)
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        _step(model, opt, gen)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, path)

    saved = torch.load(path, weights_only=True)
    twin = _model()
    twin.load_state_dict(saved["model"])
    twin_opt = torch_cls(twin.parameters(), lr=0.01, impl=impl, **opts)
    twin_opt.load_state_dict(saved["opt"])

    gen_a, gen_b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    for _ in range(7):
        _step(model, opt, gen_a)
        _step(twin, twin_opt, gen_b)
    for pa, pb in zip(model.parameters(), twin.parameters()):
        assert torch.equal(pa, pb)
        sa, sb = opt.state[pa], twin_opt.state[pb]
        assert sa.keys() == sb.keys()
        for key in sa:
            assert torch.equal(sa[key], sb[key]), key
    if opts.get("averaging"):
        with opt.averaged_parameters(), twin_opt.averaged_parameters():
            for pa, pb in zip(model.parameters(), twin.parameters()):
                assert torch.equal(pa, pb)


def test_state_dict_is_a_copy_and_loading_does_not_alias():
    import adamlab

    model = _model()
    opt = adamlab.Adam(model.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(0)
    _step(model, opt, gen)
    snapshot = copy.deepcopy(opt.state_dict())
    other = adamlab.Adam(_model().parameters(), lr=0.01)
    other.load_state_dict(snapshot)
    _step(model, opt, gen)  # stepping the original must not change what `other` loaded
    p_other = next(iter(other.state.values()))
    assert float(p_other["step"]) == 1
