"""The fused path's cached plan and its per-step checks, done by the C++ bridge (bridge.cpp) or in Python.

Every scenario that must make a cached plan give way (new parameter storage, a resized view, a replaced state
tensor, a missing or non-contiguous gradient, an edited parameter list) runs twice: with the bridge and with
the Python checks; each time the fused optimizer must agree with the reference path."""

from __future__ import annotations

import shutil
from array import array

import pytest
import torch

import adamlab
from adamlab.kernels import build

pytestmark = pytest.mark.skipif(not build.available(), reason="the fused C kernel cannot be built here")
HAVE_CXX = build._cxx_compiler() is not None


@pytest.fixture(params=["bridge", "python"])
def checks(request, monkeypatch):
    """Which per-step checks the cached plans take."""
    if request.param == "bridge":
        if not HAVE_CXX:
            pytest.skip("no C++ compiler: the bridge cannot be built here")
        assert build.bridge(wait=True) is not None, build.bridge_error()
    else:
        monkeypatch.setattr(build, "bridge", lambda wait=False: None)
    return request.param


def _twins(n=3, shape=(3, 4), dtype=torch.float64, **options):
    gen = torch.Generator().manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(*shape, generator=gen, dtype=dtype)) for _ in range(n)]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    fused = adamlab.Adam(a, lr=0.01, impl="fused", **options)
    reference = adamlab.Adam(b, lr=0.01, impl="reference", **options)
    return a, b, fused, reference


def _step(a, b, fa, fb, grads):
    for p, q, g in zip(a, b, grads):
        p.grad = None if g is None else g.clone()
        q.grad = None if g is None else g.clone()
    fa.step()
    fb.step()


def _grads(a, seed):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in a]


def _agree(a, b, fa, fb):
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
        for key in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(fa.state[p][key], fb.state[q][key], rtol=1e-12, atol=1e-14)


def _steps(a, b, fa, fb, count, seed=0):
    for i in range(count):
        _step(a, b, fa, fb, _grads(a, seed + i))


def test_plan_is_cached_and_reused(checks):
    a, b, fa, fb = _twins()
    _steps(a, b, fa, fb, 2)
    plan = fa._plans[0]
    _steps(a, b, fa, fb, 3, seed=10)
    assert fa._plans[0] is plan  # nothing changed: the same plan took every step
    _agree(a, b, fa, fb)


def test_new_storage_and_resized_views_rebuild_the_plan(checks):
    a, b, fa, fb = _twins()
    _steps(a, b, fa, fb, 2)
    plan = fa._plans[0]
    with torch.no_grad():
        for p in (a[0], b[0]):
            p.data = p.data.clone() + 1.0  # new storage
    _steps(a, b, fa, fb, 2, seed=5)
    assert fa._plans[0] is not plan
    _agree(a, b, fa, fb)
    # A smaller view of the same storage: same address, other size. Its state no longer fits: both paths
    # refuse, naming it (the fused one must not step the old size blindly).
    for p in (a[1], b[1]):
        p.data = p.data.view(-1)[:6].view(2, 3)
    g = torch.ones(2, 3, dtype=torch.float64)
    a[1].grad, b[1].grad = g.clone(), g.clone()
    for opt in (fa, fb):
        with pytest.raises(RuntimeError, match=r"parameter 1 of param group 0 has shape \(2, 3\) but its state"):
            opt.step()
    del fa.state[a[1]], fb.state[b[1]]  # as the message says: a fresh state for the new shape
    _steps(a, b, fa, fb, 2, seed=8)
    _agree(a, b, fa, fb)


def test_replaced_state_tensor_is_followed(checks):
    a, b, fa, fb = _twins()
    _steps(a, b, fa, fb, 3)
    fa.state[a[2]]["exp_avg"] = torch.zeros_like(a[2])  # a reset by replacing the tensor
    fb.state[b[2]]["exp_avg"] = torch.zeros_like(b[2])
    fa.state[a[0]]["step"] = torch.tensor(0.0)  # and a step counter
    fb.state[b[0]]["step"] = torch.tensor(0.0)
    _steps(a, b, fa, fb, 2, seed=7)
    _agree(a, b, fa, fb)


def test_missing_and_non_contiguous_gradients(checks):
    a, b, fa, fb = _twins()
    _steps(a, b, fa, fb, 2)
    grads = _grads(a, 3)
    _step(a, b, fa, fb, [grads[0], None, grads[2]])  # a parameter without a gradient this step
    _agree(a, b, fa, fb)
    assert float(fa.state[a[1]]["step"]) == 2
    _steps(a, b, fa, fb, 2, seed=20)  # all back
    fa.param_groups[0]["impl"] = "auto"  # auto steps a non-contiguous gradient on the reference path
    t = torch.randn(4, 3, dtype=torch.float64).t()
    _step(a, b, fa, fb, [t, t, grads[2]])
    assert not a[0].grad.is_contiguous()
    _agree(a, b, fa, fb)


def test_parameter_list_edited_in_place(checks):
    a, b, fa, fb = _twins()
    _steps(a, b, fa, fb, 2)
    fa.param_groups[0]["params"].reverse()
    fb.param_groups[0]["params"].reverse()
    _steps(a, b, fa, fb, 2, seed=3)
    _agree(a, b, fa, fb)
    fa.param_groups[0]["params"].pop()
    fb.param_groups[0]["params"].pop()
    _steps(a, b, fa, fb, 1, seed=9)
    _agree(a, b, fa, fb)


def test_nonfinite_gradients_are_reported_on_the_cached_path(checks):
    a, b, fa, fb = _twins()
    _steps(a, b, fa, fb, 2)
    grads = _grads(a, 4)
    grads[1][0, 0] = float("nan")
    grads[2][1, 1] = float("inf")
    before = [p.detach().clone() for p in a]
    for p, g in zip(a, grads):
        p.grad = g
    with pytest.raises(FloatingPointError, match="parameter 1 of param group 0 \\(1 entries\\), parameter 2"):
        fa.step()
    assert a[1][0, 0] == before[1][0, 0] and a[2][1, 1] == before[2][1, 1]
    assert a[0].ne(before[0]).all()


def test_float32_amsgrad_averaging_and_adamax(checks):
    for cls, options in ((adamlab.Adam, {"amsgrad": True, "averaging": True}), (adamlab.AdaMax, {"averaging": True})):
        gen = torch.Generator().manual_seed(1)
        a = [torch.nn.Parameter(torch.randn(n, generator=gen)) for n in (5, 17, 40)]
        b = [torch.nn.Parameter(p.detach().clone()) for p in a]
        fa, fb = cls(a, impl="fused", **options), cls(b, impl="reference", **options)
        for i in range(4):
            _step(a, b, fa, fb, _grads(a, i))
        for p, q in zip(a, b):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- the bridge itself


@pytest.mark.skipif(not HAVE_CXX, reason="no C++ compiler: the bridge cannot be built here")
def test_bridge_gather_codes_and_addresses():
    bridge = build.bridge(wait=True)
    assert bridge is not None, build.bridge_error()
    params = [torch.nn.Parameter(torch.randn(n)) for n in (3, 8)]
    states = tuple({"exp_avg": torch.zeros(p.shape), "step": torch.tensor(0.0)} for p in params)
    keys = ("exp_avg", "step")
    objects = tuple(s[k] for k in keys for s in states)

    def gather(ps=params, numel=None, is_double=0):
        out = array("Q", bytes(8 * len(params)))
        ptrs = array("Q", [p.data_ptr() for p in params])
        sizes = array("q", numel or [p.numel() for p in params])
        return bridge.gather(ps, tuple(params), ptrs, sizes, is_double, states, keys, objects, out), out

    assert gather()[0] == 2  # no gradients yet
    for p in params:
        p.grad = torch.randn(p.shape)
    code, out = gather()
    assert code == 0 and list(out) == [p.grad.data_ptr() for p in params]
    assert gather(ps=params[::-1])[0] == 1  # other parameters
    assert gather(ps=params[:1])[0] == 1
    assert gather(numel=[3, 7])[0] == 1  # other sizes
    assert gather(is_double=1)[0] == 1  # other dtype
    params[1].grad = torch.randn(8, 2).t()[0]  # a strided view: not contiguous
    assert gather()[0] == 2
    params[1].grad = torch.randn(8)
    states[0]["exp_avg"] = torch.zeros(3)  # a replaced state tensor
    assert gather()[0] == 1
    with pytest.raises(ValueError, match="grad_ptrs"):
        bridge.gather(
            params, tuple(params), array("Q", [0, 0]), array("q", [3, 8]), 0, states, keys, objects, bytearray(8)
        )
    with pytest.raises(TypeError):
        bridge.gather(tuple(params), tuple(params), array("Q", [0, 0]), array("q", [3, 8]), 0, states, keys, objects)


def test_bridge_off_and_bad_setting(monkeypatch):
    monkeypatch.setattr(build, "_bridge", None)
    monkeypatch.setattr(build, "_bridge_error", None)
    monkeypatch.setattr(build, "_bridge_thread", None)
    monkeypatch.setenv("ADAMLAB_BRIDGE", "off")
    assert build.bridge(wait=True) is None and build._bridge_thread is None  # never built
    monkeypatch.setenv("ADAMLAB_BRIDGE", "sometimes")
    with pytest.warns(RuntimeWarning, match="ADAMLAB_BRIDGE must be auto or off, not 'sometimes'"):
        assert build.bridge() is None
    assert "ADAMLAB_BRIDGE" in build.bridge_error()
    p = torch.nn.Parameter(torch.ones(3))
    opt = adamlab.Adam([p], lr=0.5)
    for _ in range(2):
        p.grad = torch.ones(3)
        opt.step()  # the Python checks
    assert torch.allclose(p.detach(), torch.zeros(3), atol=1e-6)


def test_bridge_build_failure_is_reported_not_raised(monkeypatch, tmp_path):
    monkeypatch.setattr(build, "_bridge", None)
    monkeypatch.setattr(build, "_bridge_error", None)
    monkeypatch.setattr(build, "_bridge_thread", None)
    monkeypatch.setattr(build, "_cxx_compiler", lambda: None)
    assert build.bridge(wait=True) is None
    assert "no C++ compiler" in build.bridge_error()
    lines = build.build_all()
    assert lines[0].startswith("fused kernel: ready") and "step bridge: unavailable" in lines[1]


@pytest.mark.skipif(shutil.which("c++") is None, reason="no c++")
def test_bridge_compile_error_is_reported(monkeypatch, tmp_path):
    bad = tmp_path / "bridge.cpp"
    bad.write_text("this is not C++\n")
    monkeypatch.setenv("ADAMLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(build, "BRIDGE_SOURCE", bad)
    with pytest.raises(build.KernelUnavailableError, match=r"building bridge\.cpp failed"):
        build._build_bridge()
    assert not list((tmp_path / "cache" / "kernels").glob("*.so"))  # no half-written library left


def test_a_build_removes_stale_half_written_libraries(monkeypatch, tmp_path):
    import os
    import time

    folder = tmp_path / "kernels"
    folder.mkdir()
    stale, fresh = folder / "tmpold.so", folder / "tmpnew.so"
    for path in (stale, fresh):
        path.write_bytes(b"half a library")
    old = time.time() - 2 * build.STALE_TEMPORARY_S
    os.utime(stale, (old, old))
    monkeypatch.setenv("ADAMLAB_CACHE", str(tmp_path))
    target = build._cached_build("probe", [b"x"], ["cc", "-shared", "-fPIC", "-x", "c", os.devnull], "a probe")
    assert target.exists() and target.parent == folder
    assert not stale.exists() and fresh.exists()  # a build running now may own the fresh one
