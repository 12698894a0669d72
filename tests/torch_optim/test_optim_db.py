"""PyTorch's optimizer test database (``optim_db``, shipped in the torch wheel as
``torch.testing._internal.common_optimizers``) run against adamlab's classes: the drop-in measuring stick.

For each of torch's entries for Adam, AdamW and Adamax, the entry's own configurations (its
``optim_inputs_func``, with the global ``foreach``/``fused``/``differentiable`` variants torch adds) and error
inputs drive adamlab.Adam, adamlab.AdamW and adamlab.AdaMax, through the properties torch's own
``test/test_optim.py`` checks its optimizers for (CPU).
These tests are written here, for adamlab; torch's test file itself is not copied into this project.
Every property is checked against an independent result: torch.optim itself on the same inputs, the
same optimizer on an equivalent problem (real views of complex numbers, float vs tensor lr), autograd's
finite differences (gradcheck), or the direction of the loss.

Measured (torch 2.13.0+cpu): on adamlab as of commit 0ac6e8c (before issue 14's fixes) 60 passed, 47 failed,
20 xfailed; after them all pass except the 20 listed xfails (about 50 s on a busy 2-core machine).

Where torch's error inputs check torch's exact wording of a message adamlab words differently (it names the
argument and the allowed range in its own words), the wording check is an xfail with the reason; the error
type is still checked.
"""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch.nn import Parameter

import adamlab

common = pytest.importorskip("torch.testing._internal.common_optimizers", reason="needs expecttest")


SWAP = {"Adam": adamlab.Adam, "AdamW": adamlab.AdamW, "Adamax": adamlab.AdaMax}
INFOS = {info.optim_cls.__name__: info for info in common.optim_db if info.optim_cls.__name__ in SWAP}
NAMES = sorted(SWAP)


def _inputs(name: str, skip: tuple[str, ...] = ()) -> list[dict]:
    """The entry's configurations (kwargs), with the global foreach/fused/differentiable variants."""
    info = INFOS[name]
    inputs = common._get_optim_inputs_including_global_cliquey_kwargs("cpu", torch.float32, info, skip=skip)
    return [copy.deepcopy(i.kwargs) for i in inputs if not i.kwargs.get("capturable")]


def _cls(name: str):
    return SWAP[name]


def _quadratic(weight, bias, inpt):
    return (weight.mv(inpt) + bias).pow(2).sum()


# ---------------------------------------------------------------------- the update goes the right way


@pytest.mark.parametrize("with_scheduler", [False, True])
@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("name", NAMES)
def test_loss_goes_the_right_direction(name, contiguous, with_scheduler):
    info = INFOS[name]
    for schedulers in info.scheduler_inputs if with_scheduler else [[]]:
        for kwargs in _inputs(name, skip=("differentiable",)):
            torch.manual_seed(0)
            shape_w, shape_b = ((10, 5), (10,)) if contiguous else ((10, 5, 2), (10, 2))
            weight = Parameter(torch.randn(shape_w) if contiguous else torch.randn(shape_w)[..., 0])
            bias = Parameter(torch.randn(shape_b) if contiguous else torch.randn(shape_b)[..., 0])
            inpt = torch.randn(5)
            opt = _cls(name)([weight, bias], **kwargs)
            scheds = [s(opt) for s in schedulers]
            initial = _quadratic(weight, bias, inpt).item()
            for _ in range(20):
                opt.zero_grad()
                loss = _quadratic(weight, bias, inpt)
                loss.backward()
                opt.step()
                for s in scheds:
                    s.step(loss) if isinstance(s, torch.optim.lr_scheduler.ReduceLROnPlateau) else s.step()
            final = _quadratic(weight, bias, inpt).item()
            assert (final > initial) if kwargs.get("maximize") else (final < initial), kwargs


# ---------------------------------------------------------------------- the same as torch.optim


@pytest.mark.parametrize("name", NAMES)
def test_matches_torch_optim_on_each_configuration(name):
    """The oracle: torch.optim's own class on the same configuration and gradients (Adamax with eps=1e-8, its
    default, which adamlab's AdaMax takes explicitly)."""
    torch_cls = INFOS[name].optim_cls
    for kwargs in _inputs(name, skip=("differentiable",)):
        ours_kw = dict(kwargs)
        if name == "Adamax":
            ours_kw.setdefault("eps", 1e-8)
        torch.manual_seed(0)
        a = [Parameter(torch.randn(4, 3, dtype=torch.float64)), Parameter(torch.randn(3, dtype=torch.float64))]
        b = [Parameter(x.detach().clone()) for x in a]
        opt_a, opt_b = _cls(name)(a, **ours_kw), torch_cls(b, **kwargs)
        for _ in range(7):
            for x, y in zip(a, b):
                g = torch.randn_like(x)
                x.grad, y.grad = g, g.clone()
            opt_a.step()
            opt_b.step()
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-12, msg=lambda m, kw=kwargs: f"{kw}: {m}")


# ---------------------------------------------------------------------- tensor hyper-parameters


@pytest.mark.parametrize("name", NAMES)
def test_tensor_lr_and_betas_step_as_floats(name):
    for kwargs in _inputs(name, skip=("differentiable",)):
        kwargs.pop("lr", None)
        torch.manual_seed(0)
        a = [Parameter(torch.randn(10, 5)), Parameter(torch.randn(10))]
        b = [Parameter(x.detach().clone()) for x in a]
        opt_a = _cls(name)(a, lr=1e-3, betas=(0.9, 0.99), **kwargs)
        opt_b = _cls(name)(b, lr=torch.tensor(1e-3), betas=(torch.tensor(0.9), torch.tensor(0.99)), **kwargs)
        inpt = torch.randn(5)
        for _ in range(5):
            for opt, (w, bias) in ((opt_a, a), (opt_b, b)):
                opt.zero_grad()
                _quadratic(w, bias, inpt).backward()
                opt.step()
        torch.testing.assert_close(a, b)  # a tensor lr is float32: 1e-3 differs from it by 5e-11


# ---------------------------------------------------------------------- complex parameters


@pytest.mark.parametrize("name", NAMES)
def test_complex_parameters_step_as_their_real_views(name):
    for kwargs in _inputs(name, skip=("differentiable", "fused")):
        torch.manual_seed(0)
        complex_params = [
            torch.randn(10, 5, dtype=torch.complex64, requires_grad=True),
            torch.randn(10, dtype=torch.complex64, requires_grad=True),
            torch.randn(10, 5, requires_grad=True),  # a real one among them
        ]
        real_params = [
            (torch.view_as_real(p) if p.is_complex() else p).detach().clone().requires_grad_() for p in complex_params
        ]
        opt_c, opt_r = _cls(name)(complex_params, **kwargs), _cls(name)(real_params, **kwargs)
        for _ in range(3):
            for pc, pr in zip(complex_params, real_params):
                g = torch.randn_like(pr)
                pr.grad = g
                pc.grad = torch.view_as_complex(g.clone()) if pc.is_complex() else g.clone()
            opt_c.step()
            opt_r.step()
        as_real = [torch.view_as_real(p) if p.is_complex() else p for p in complex_params]
        torch.testing.assert_close(as_real, real_params, rtol=0, atol=0)
        for pc, pr in zip(complex_params, real_params):
            for key, value in opt_c.state[pc].items():
                value = torch.view_as_real(value) if value.is_complex() else value
                torch.testing.assert_close(value, opt_r.state[pr][key], rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_complex_pair_equals_real_and_imaginary_parameters(name):
    """A complex pair stepped as one parameter equals its real and imaginary parts as two parameters (Adam
    is element-wise); the gradient of |Rosenbrock| is autograd's on both sides."""

    def rosenbrock(t):
        x, y = t
        return (1 - x) ** 2 + 100 * (y - x**2) ** 2

    for kwargs in _inputs(name, skip=("differentiable", "fused")):
        torch.manual_seed(2024)
        a1 = torch.randn(2, dtype=torch.complex64, requires_grad=True)
        re, im = (a1.real.detach().clone().requires_grad_(), a1.imag.detach().clone().requires_grad_())
        opt1, opt2 = _cls(name)([a1], **kwargs), _cls(name)([re, im], **kwargs)
        for _ in range(3):
            opt1.zero_grad()
            opt2.zero_grad()
            rosenbrock(a1).abs().backward()
            rosenbrock(torch.complex(re, im)).abs().backward()
            opt1.step()
            opt2.step()
            torch.testing.assert_close(a1.real, re)
            torch.testing.assert_close(a1.imag, im)


# ---------------------------------------------------------------------- the implementations agree


def _model(dtype):
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Sigmoid(), torch.nn.Linear(3, 1), torch.nn.Sigmoid()).to(
        dtype
    )


def _compare_flag(name, flag, dtype, **tol):
    """flag=False vs flag=True on a small network plus an empty parameter, 7 steps with a step without
    gradients and a layer frozen for two steps; parameters and state must agree."""
    for kwargs in [k for k in _inputs(name, skip=("differentiable", "fused")) if "foreach" not in k]:
        runs = []
        for value in (False, True):
            model = _model(dtype)
            empty = torch.empty((), dtype=dtype, requires_grad=True)
            empty.grad = torch.rand_like(empty)
            opt = _cls(name)([*model.parameters(), empty], **kwargs, **{flag: value})
            inpt = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], dtype=dtype).reshape(3, 2)
            for i in range(7):
                opt.zero_grad()
                if i == 3:
                    model[2].requires_grad_(False)
                if i == 5:
                    model[2].requires_grad_(True)
                if i != 2:
                    model(inpt).sum().backward()
                opt.step()
            runs.append((list(model.parameters()), opt))
        (pa, oa), (pb, ob) = runs
        torch.testing.assert_close(pa, pb, **tol)
        for x, y in zip(pa, pb):
            for key in oa.state[x]:
                torch.testing.assert_close(oa.state[x][key], ob.state[y][key], **tol)


@pytest.mark.parametrize("name", NAMES)
def test_foreach_matches_forloop(name):
    _compare_flag(name, "foreach", torch.float64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_fused_matches_forloop(name, dtype):
    _compare_flag(name, "fused", dtype)


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_fused_refuses_meta_parameters_then_steps_once_materialised(name):
    with torch.device("meta"):
        model = _model(torch.float32)
    opt = _cls(name)(model.parameters(), fused=True)
    with torch.device("meta"):
        for p in model.parameters():
            p.grad = torch.rand_like(p)
    with pytest.raises(RuntimeError, match="is on meta"):
        opt.step()
    opt.zero_grad(set_to_none=True)
    model.to_empty(device="cpu")
    for p in model.parameters():
        p.grad = torch.rand_like(p)
    opt.step()  # (to_empty may give the module new parameter objects: then the optimizer's have no gradient)
    stepped = [p for p in opt.param_groups[0]["params"] if p.grad is not None]
    assert all(float(opt.state[p]["step"]) == 1 and p.device.type == "cpu" for p in stepped)


@pytest.mark.parametrize("name", NAMES)
def test_meta_parameters_step(name):
    """The default path steps meta tensors (shapes only), as torch.optim does."""
    p = torch.empty(3, 2, device="meta", requires_grad=True)
    p.grad = torch.empty(3, 2, device="meta")
    opt = _cls(name)([p])
    opt.step()
    assert opt.state[p]["exp_avg"].device.type == "meta" and float(opt.state[p]["step"]) == 1


# ---------------------------------------------------------------------- param groups


@pytest.mark.parametrize("name", NAMES)
def test_param_groups(name):
    for kwargs in _inputs(name, skip=("differentiable",)):
        kwargs.setdefault("lr", 1e-3)
        torch.manual_seed(0)
        weight, bias, irrelevant = Parameter(torch.randn(10, 5)), Parameter(torch.randn(10)), Parameter(torch.randn(2))
        before = irrelevant.detach().clone()
        no_decay = {**kwargs, "weight_decay": 0.0}
        opt = _cls(name)(
            [dict(params=[weight], **kwargs), dict(params=[bias], **no_decay), dict(params=[irrelevant])], lr=1e-28
        )
        inpt = torch.randn(5)
        initial = _quadratic(weight, bias, inpt).item()
        for _ in range(20):
            opt.zero_grad()
            _quadratic(weight, bias, inpt).backward()
            irrelevant.grad = torch.rand_like(irrelevant)
            opt.step()
        final = _quadratic(weight, bias, inpt).item()
        assert (final > initial) if kwargs.get("maximize") else (final < initial)
        if name != "AdamW":  # AdamW decays every parameter by α·λ even at α = 1e-28: below float32's resolution
            assert torch.equal(irrelevant, before)


@pytest.mark.parametrize("name", NAMES)
def test_zero_gradients_leave_parameters_unchanged(name):
    for kwargs in _inputs(name):
        if kwargs.get("weight_decay", 0):
            continue
        if name == "AdamW":
            kwargs["lr"] = 1e-5
        param = torch.randn(5, 1, requires_grad=True)
        old = param.detach().clone()
        params = [param.clone()] if kwargs.get("differentiable") else [param]
        opt = _cls(name)(params, **kwargs)
        params[0].grad = torch.zeros_like(params[0])
        opt.step()
        torch.testing.assert_close(params[0], old, msg=str(kwargs))


# ---------------------------------------------------------------------- differentiable=True


@pytest.mark.parametrize("name", NAMES)
def test_differentiable_step_passes_gradcheck(name):
    """Autograd through one step: d(θ_1)/d(θ_0, g, m, v) by backpropagation equals finite differences."""
    for kwargs in [k for k in _inputs(name) if k.get("differentiable")]:
        kwargs = {**kwargs, "lr": 0.1}
        second = "exp_inf" if name == "Adamax" else "exp_avg_sq"

        def one_step(p, grad, m, second_moment, kwargs=kwargs, second=second):
            p = p.clone()
            p.grad = grad
            opt = _cls(name)([p], **kwargs)
            state = {"step": torch.tensor(10.0), "exp_avg": m.clone(), second: second_moment.clone()}
            if kwargs.get("amsgrad"):
                state["max_exp_avg_sq"] = second_moment.clone() * 0.5
            opt.state[p] = state
            opt.step()
            return (p, *(state[k] for k in ("exp_avg", second)))

        torch.manual_seed(0)
        inputs = (
            torch.rand(6, dtype=torch.float64, requires_grad=True),
            torch.rand(6, dtype=torch.float64, requires_grad=True) + 0.5,
            torch.rand(6, dtype=torch.float64, requires_grad=True),
            torch.rand(6, dtype=torch.float64, requires_grad=True) + 0.1,
        )
        assert torch.autograd.gradcheck(one_step, inputs), kwargs


# ---------------------------------------------------------------------- state_dict


def _prime(name, kwargs, params, steps, inpt):
    opt = _cls(name)(params, **kwargs)
    weight, bias = (p[1] if isinstance(p, tuple) else p for p in params)
    for _ in range(steps):
        opt.zero_grad()
        _quadratic(weight, bias, inpt).backward()
        opt.step()
    return opt


@pytest.mark.parametrize("named", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_is_deterministic(name, named):
    for kwargs in _inputs(name, skip=("differentiable",)):
        torch.manual_seed(0)
        weight, bias, inpt = Parameter(torch.randn(2, 3)), Parameter(torch.randn(2)), torch.randn(3)
        params = [("w", weight), ("b", bias)] if named else [weight, bias]
        opt = _prime(name, kwargs, params, 10, inpt)
        weight_c, bias_c = Parameter(weight.detach().clone()), Parameter(bias.detach().clone())
        opt_c = _cls(name)([weight_c, bias_c], **kwargs)
        opt_c.load_state_dict(copy.deepcopy(opt.state_dict()))
        for _ in range(10):
            for o, w, b in ((opt, weight, bias), (opt_c, weight_c, bias_c)):
                o.zero_grad()
                _quadratic(w, b, inpt).backward()
                o.step()
            torch.testing.assert_close((weight, bias), (weight_c, bias_c), rtol=0, atol=0)
        sd, sd_c = opt.state_dict(), opt_c.state_dict()
        for group in (*sd["param_groups"], *sd_c["param_groups"]):
            group.pop("param_names", None)
        torch.testing.assert_close(sd["state"], sd_c["state"], rtol=0, atol=0)
        assert sd["param_groups"] == sd_c["param_groups"]


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_save_load_weights_only_and_older_state_dicts(name):
    info = INFOS[name]
    for kwargs in _inputs(name, skip=("differentiable",)):
        torch.manual_seed(0)
        weight, bias, inpt = Parameter(torch.randn(2, 3)), Parameter(torch.randn(2)), torch.randn(3)
        opt = _prime(name, kwargs, [weight, bias], 3, inpt)
        sd = opt.state_dict()
        buffer = io.BytesIO()
        torch.save(sd, buffer)
        buffer.seek(0)
        loaded = torch.load(buffer, weights_only=True)
        torch.testing.assert_close(loaded["state"], sd["state"], rtol=0, atol=0)
        assert loaded["param_groups"] == sd["param_groups"]
        old = copy.deepcopy(sd)
        for group in old["param_groups"]:
            for flag in info.not_og_supported_flags:
                group.pop(flag, None)
        for p_state in old["state"].values():
            p_state["step"] = p_state["step"].item()  # older checkpoints: a Python number
        opt.load_state_dict(old)
        assert opt.param_groups[0]["maximize"] == kwargs.get("maximize", False)
        weight.grad, bias.grad = torch.ones_like(weight), torch.ones_like(bias)
        opt.step()
        assert opt.state[weight]["step"].dtype == torch.float32 and float(opt.state[weight]["step"]) == 4


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_is_unchanged_by_a_load(name):
    """The regression of issue 14: load_state_dict added a 'differentiable' key to every group."""
    p = Parameter(torch.randn(3))
    opt = _cls(name)([p])
    p.grad = torch.ones(3)
    opt.step()
    before = copy.deepcopy(opt.state_dict())
    opt.load_state_dict(copy.deepcopy(before))
    assert opt.state_dict()["param_groups"] == before["param_groups"]


# ---------------------------------------------------------------------- hooks, printing, deepcopy


@pytest.mark.parametrize("name", NAMES)
def test_hooks_printing_deepcopy_and_state(name):
    for kwargs in _inputs(name):
        params = [Parameter(torch.randn(2, 3)) for _ in range(2)]
        if kwargs.get("differentiable"):
            params = [p.clone() for p in params]
        for p in params:
            p.grad = torch.rand_like(p)
        opt = _cls(name)(params, **kwargs)
        assert type(opt).__name__ in repr(opt)
        log: list[str] = []
        pre = opt.register_step_pre_hook(lambda *_, log=log: log.append("pre"))
        post = opt.register_step_post_hook(lambda *_, log=log: log.append("post"))
        opt.step()
        pre.remove()
        post.remove()
        opt.step()
        assert log == ["pre", "post"]
        assert all(len(s) > 0 for s in opt.state.values())
        if not kwargs.get("differentiable"):
            public = {k for k in opt.__dict__ if not k.startswith("_")}
            assert public == {k for k in copy.deepcopy(opt).__dict__ if not k.startswith("_")}
        opt.register_load_state_dict_pre_hook(lambda o, sd: sd["param_groups"][0].__setitem__("lr", 0.002))
        opt.load_state_dict(opt.state_dict())
        assert opt.param_groups[0]["lr"] == 0.002


# ---------------------------------------------------------------------- errors

# torch's error inputs whose exact wording is torch's own; adamlab raises the same type with its own message.
TORCH_WORDING = {
    "Invalid beta parameter at index": "adamlab says 'betas[i] must lie in [0, 1), got …'",
    "Invalid weight_decay value": "adamlab says 'weight_decay must be >= 0, got …'",
    "Tensor lr must be 1-element": "adamlab says 'lr as a tensor must have exactly one element, got n elements'",
    "betas must be either both floats or both Tensors": "adamlab says 'betas must be both numbers or both tensors'",
}
# torch's refusals of what adamlab supports.
ADAMLAB_ACCEPTS = {
    "as a Tensor is not supported for capturable=False and foreach=True": (
        "adamlab's foreach path takes tensor lr/betas (it reads them as floats); torch's cannot"
    ),
}


def _error_cases():
    cases = []
    for name in NAMES:
        for i, e in enumerate(INFOS[name].optim_error_inputs_func(device="cpu", dtype=torch.float32)):
            cases.append(pytest.param(name, i, id=f"{name}-{i}-{e.error_regex[:40]}"))
    return cases


def _raise_case(name, index):
    error = INFOS[name].optim_error_inputs_func(device="cpu", dtype=torch.float32)[index]
    inp = error.optimizer_error_input
    kwargs = dict(inp.kwargs)

    def act():
        opt = _cls(name)(inp.params, **kwargs)
        if error.error_on == common.OptimizerErrorEnum.STEP_ERROR:
            opt.step()

    return error, act


@pytest.mark.parametrize(("name", "index"), _error_cases())
def test_error_inputs_raise_the_same_type(name, index):
    error, act = _raise_case(name, index)
    accepted = next((why for text, why in ADAMLAB_ACCEPTS.items() if text in error.error_regex), None)
    if accepted:
        pytest.xfail(accepted)
    if issubclass(error.error_type, Warning):
        with pytest.warns(error.error_type):
            act()
    else:
        with pytest.raises(error.error_type):
            act()


@pytest.mark.parametrize(("name", "index"), _error_cases())
def test_error_inputs_torch_wording(name, index):
    error, act = _raise_case(name, index)
    why = next((w for text, w in {**TORCH_WORDING, **ADAMLAB_ACCEPTS}.items() if text in error.error_regex), None)
    if why:
        pytest.xfail(f"torch's exact wording: {why}")
    if issubclass(error.error_type, Warning):
        with pytest.warns(error.error_type, match=error.error_regex):
            act()
    else:
        with pytest.raises(error.error_type, match=error.error_regex):
            act()


def test_all_three_entries_are_found():
    assert set(INFOS) == set(SWAP), [i.optim_cls.__name__ for i in common.optim_db]
