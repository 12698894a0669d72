"""Every instruction-set build of the fused kernel (scalar, AVX2 + FMA, AVX-512) against the reference path.

The kernel library holds one build of its loops per instruction set and picks the best the CPU runs; here
each build the CPU can run is selected in turn (``build.using_isa``) and checked, for every option of Adam
and AdaMax (tests/optim_cases.py), against adamlab's reference path (per-tensor torch ops, scalars from
formulas.py) run in float64: tensor sizes around the vector widths (1, 7, 8, 9, 15, 16, 17, 33, …) so that
every tail is taken, exact zeros in the gradients (the ε = 0 case), and one tensor large enough to be split
between two threads. A build the CPU cannot run is skipped with that reason.
"""

from __future__ import annotations

import pytest
import torch

import adamlab
from adamlab.kernels import build
from optim_cases import CASES, case_id

pytestmark = pytest.mark.skipif(not build.available(), reason="the fused C kernel cannot be built here")

SIZES = [1, 7, 8, 9, 15, 16, 17, 33, 100, 257, 4099, 140_001]
STEPS = 6


def _require(isa: str) -> None:
    if isa not in build.supported_isas():
        needs = ", ".join(build.ISA_NEEDS[isa])
        pytest.skip(f"this CPU cannot run the {isa} build (it needs {needs}; CPU has {build.cpu_features()})")


def _problem(dtype: torch.dtype, seed: int = 0) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
    """Initial parameters and STEPS gradients per tensor, ~1/8 of the gradient entries exactly 0."""
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(n, generator=gen, dtype=torch.float64) for n in SIZES]
    grads = []
    for _ in range(STEPS):
        step = []
        for n in SIZES:
            g = torch.randn(n, generator=gen, dtype=torch.float64)
            g[torch.rand(n, generator=gen) < 0.125] = 0.0
            step.append(g)
        grads.append(step)
    return [p.to(dtype) for p in params], [[g.to(dtype) for g in gs] for gs in grads]


def _run(cls, options: dict, impl: str, dtype: torch.dtype, params0, grads) -> tuple[list, list[dict]]:
    params = [torch.nn.Parameter(p.clone().to(dtype)) for p in params0]
    opt = cls(params, lr=1e-2, impl=impl, **options)
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = g.to(dtype).clone()
        opt.step()
    states = [{k: v.detach().clone() for k, v in opt.state[p].items() if torch.is_tensor(v)} for p in params]
    return [p.detach().clone() for p in params], states


def _compare(got, want, rtol: float, atol: float, what: str) -> None:
    got_params, got_states = got
    want_params, want_states = want
    for k, (a, b) in enumerate(zip(got_params, want_params)):
        torch.testing.assert_close(a.double(), b.double(), rtol=rtol, atol=atol, msg=f"{what}: θ of tensor {k}")
    for k, (a, b) in enumerate(zip(got_states, want_states)):
        assert a.keys() == b.keys(), what
        for key in a:
            torch.testing.assert_close(
                a[key].double(), b[key].double(), rtol=rtol, atol=atol, msg=f"{what}: {key} of tensor {k}"
            )


@pytest.fixture(scope="module")
def problems():
    return {dtype: _problem(dtype) for dtype in (torch.float32, torch.float64)}


@pytest.fixture(scope="module")
def references(problems):
    """The float64 reference path's result per case, computed once for all builds."""
    cache: dict[str, tuple] = {}

    def get(case) -> tuple:
        if case_id(case) not in cache:
            _, cls, _, options = case
            cache[case_id(case)] = _run(cls, options, "reference", torch.float64, *problems[torch.float64])
        return cache[case_id(case)]

    return get


@pytest.fixture(autouse=True)
def _two_threads():
    saved = torch.get_num_threads()
    torch.set_num_threads(2)  # the 140,001-element tensor is split between two threads
    yield
    torch.set_num_threads(saved)


@pytest.mark.parametrize("isa", build.ISAS)
@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_every_build_matches_the_reference_path(isa, case, problems, references):
    _require(isa)
    _, cls, _, options = case
    want = references(case)
    with build.using_isa(isa) as used:
        assert used == isa and build.isa() == isa
        got64 = _run(cls, options, "fused", torch.float64, *problems[torch.float64])
        got32 = _run(cls, options, "fused", torch.float32, *problems[torch.float32])
    _compare(got64, want, rtol=1e-12, atol=1e-14, what=f"{isa} float64 {case_id(case)}")
    # float32 from the same (float32-rounded) start: a few float32 roundings per step off the float64 path.
    _compare(got32, want, rtol=2e-5, atol=2e-6, what=f"{isa} float32 {case_id(case)}")


@pytest.mark.parametrize("isa", build.ISAS)
@pytest.mark.parametrize("cls", [adamlab.Adam, adamlab.AdaMax])
def test_every_build_leaves_non_finite_coordinates_unchanged(isa, cls):
    """A NaN and an ∞ in the gradient (one in a vector's body, one in a tail): those coordinates keep θ and
    their state, are counted (the step raises), and every other coordinate takes the reference step."""
    _require(isa)
    gen = torch.Generator().manual_seed(1)
    p0 = torch.randn(37, generator=gen)
    g = torch.randn(37, generator=gen)
    bad = torch.zeros(37, dtype=torch.bool)
    bad[[3, 35]] = True
    g_bad = g.clone()
    g_bad[3], g_bad[35] = float("nan"), float("-inf")
    want_p = torch.nn.Parameter(p0.clone())
    want = cls([want_p], lr=0.1, impl="reference")
    want_p.grad = g.clone()
    want.step()
    with build.using_isa(isa):
        p = torch.nn.Parameter(p0.clone())
        opt = cls([p], lr=0.1, impl="fused")
        p.grad = g_bad
        with pytest.raises(FloatingPointError, match="non-finite"):
            opt.step()
    assert torch.equal(p.detach()[bad], p0[bad])
    for key, value in opt.state[p].items():
        if torch.is_tensor(value) and value.shape == p0.shape:
            assert torch.equal(value[bad], torch.zeros(2)), key
            torch.testing.assert_close(value[~bad], want.state[want_p][key][~bad], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(p.detach()[~bad], want_p.detach()[~bad], rtol=1e-6, atol=1e-7)


def test_isa_selection_is_validated_and_restored():
    before = build.isa()
    assert before == build.supported_isas()[-1]  # auto picks the best build the CPU runs
    with pytest.raises(ValueError, match="isa must be one of auto, scalar, avx2, avx512; got 'sse9'"):
        build.set_isa("sse9")
    for isa in build.ISAS:
        if isa not in build.supported_isas():
            with pytest.raises(build.KernelUnavailableError, match=f"cannot run the {isa} build"):
                build.set_isa(isa)
    with build.using_isa("scalar"):
        assert build.isa() == "scalar"
    assert build.isa() == before
    assert build.set_isa("auto") == before


def test_environment_variable_chooses_the_build(tmp_path):
    """ADAMLAB_ISA in a fresh process: a valid build is used; an unknown name is refused, naming the choices."""
    import os
    import subprocess
    import sys

    code = "from adamlab.kernels import build; build.load(); print(build.isa())"
    env = {**os.environ, "ADAMLAB_ISA": "scalar"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "scalar"
    env["ADAMLAB_ISA"] = "mmx"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode != 0
    assert "ADAMLAB_ISA must be one of auto, scalar, avx2, avx512; got 'mmx'" in done.stderr
