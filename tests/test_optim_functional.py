"""The hyper-parameter types, the functional API and the clear errors of issue 14."""

from __future__ import annotations

import pytest
import torch

import adamlab
import adamlab.numpy
from adamlab import functional
from adamlab.hyperparameters import FLAG_BITS, AdaMaxHyperparameters, AdamHyperparameters, check_kernel_source
from adamlab.kernels import build

needs_kernel = pytest.mark.skipif(not build.available(), reason="the fused kernel cannot be built here")


def test_the_kernel_source_agrees_with_the_python_tables(tmp_path):
    check_kernel_source()  # the real adam_kernels.c
    source = (build.SOURCE).read_text()
    drifted = tmp_path / "k.c"
    drifted.write_text(source.replace("#define FLAG_AVERAGING 64", "#define FLAG_AVERAGING 256"))
    with pytest.raises(RuntimeError, match="FLAG_"):
        check_kernel_source(drifted)
    drifted.write_text(source.replace("HP_EPS, HP_WD", "HP_WD, HP_EPS"))
    with pytest.raises(RuntimeError, match="HP_"):
        check_kernel_source(drifted)


def test_flags_and_kernel_array_by_hand():
    hp = AdamHyperparameters(lr=0.5, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.1, amsgrad=True, eps_mode="hat")
    assert hp.flags == FLAG_BITS["AMSGRAD"] | FLAG_BITS["EPS_HAT"] | FLAG_BITS["BIAS_CORRECTION"]
    assert list(hp.kernel_array()) == [0.5, 0.8, 0.9, 1e-6, 0.1, 1.0, 0.9]  # λ = 1 without decay; β̄ = β2
    hp = AdaMaxHyperparameters(averaging=True, averaging_beta=0.7, beta1_decay=0.99, maximize=True)
    assert hp.flags == sum(FLAG_BITS[k] for k in ("AVERAGING", "BETA1_DECAY", "MAXIMIZE", "BIAS_CORRECTION"))
    assert list(hp.kernel_array())[5:] == [0.99, 0.7]
    assert hp.state_keys == ("exp_avg", "exp_inf", "param_avg")


def test_tensor_hyperparameters_become_floats_and_bad_ones_are_named():
    hp = AdamHyperparameters(lr=torch.tensor(0.25), betas=(torch.tensor(0.5), torch.tensor(0.75)))
    assert (hp.lr, hp.betas) == (0.25, (0.5, 0.75))
    with pytest.raises(TypeError, match="unexpected keyword argument 'momentum'"):
        adamlab.numpy.Adam(momentum=0.9)


@pytest.mark.parametrize("impl", ["reference", "foreach", pytest.param("fused", marks=needs_kernel)])
def test_functional_adam_equals_the_class(impl):
    """The same update through adamlab.functional and through adamlab.Adam (the class's own reference path)."""
    torch.manual_seed(0)
    hp = AdamHyperparameters(lr=0.01, amsgrad=True, averaging=True, weight_decay=0.1, decoupled_weight_decay=True)
    xs = [torch.randn(5, 3, dtype=torch.float64), torch.randn(4, dtype=torch.float64)]
    ps = [torch.nn.Parameter(x.clone()) for x in xs]
    opt = adamlab.Adam(ps, impl="reference", **{k: getattr(hp, k) for k in hp.option_names()})
    states = [functional.init_state(x, hp) for x in xs]
    for _ in range(5):
        grads = [torch.randn_like(x) for x in xs]
        for p, g in zip(ps, grads):
            p.grad = g.clone()
        opt.step()
        assert functional.adam(xs, grads, states, hp, impl=impl) == [0, 0]
    for x, p, s in zip(xs, ps, states):
        torch.testing.assert_close(x, p.detach(), rtol=1e-12, atol=1e-14)
        for key, value in opt.state[p].items():
            torch.testing.assert_close(s[key], value, rtol=1e-12, atol=1e-14)


def test_functional_refuses_mismatched_arguments():
    hp = AdaMaxHyperparameters()
    x = torch.zeros(2)
    with pytest.raises(TypeError, match="adam\\(\\) needs Adam's hyper-parameters, got AdaMaxHyperparameters"):
        functional.adam([x], [x], [functional.init_state(x, hp)], hp)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="impl must be one of"):
        functional.adamax([x], [x], [functional.init_state(x, hp)], hp, impl="cuda")
    with pytest.raises(ValueError, match="equally long"):
        functional.adamax([x], [], [], hp)


def test_torch_route_equals_torch_fused_adam_on_cpu():
    """impl="torch" is torch's own fused Adam: equal to torch.optim.Adam(fused=True) on the same tensors."""
    torch.manual_seed(0)
    hp = AdamHyperparameters(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True, amsgrad=True)
    xs = [torch.randn(6), torch.randn(3, 2)]
    ps = [torch.nn.Parameter(x.clone()) for x in xs]
    ref = torch.optim.AdamW(ps, lr=0.01, weight_decay=0.1, amsgrad=True, fused=True)
    states = [functional.init_state(x, hp) for x in xs]
    for _ in range(4):
        grads = [torch.randn_like(x) for x in xs]
        for p, g in zip(ps, grads):
            p.grad = g.clone()
        ref.step()
        functional.adam(xs, grads, states, hp, impl="torch")
    torch.testing.assert_close(xs, [p.detach() for p in ps], rtol=0, atol=0)
    assert functional.torch_supports(hp, xs) and not functional.torch_supports(AdamHyperparameters(eps=0.0), xs)


def test_loading_another_optimizers_state_says_what_was_loaded():
    p = torch.nn.Parameter(torch.ones(3))
    sgd = torch.optim.SGD([p], lr=0.1, momentum=0.9)
    p.grad = torch.ones(3)
    sgd.step()
    opt = adamlab.Adam([p])
    with pytest.raises(ValueError, match=r"has keys \['momentum_buffer'\] \(this looks like SGD's state\)"):
        opt.load_state_dict(sgd.state_dict())
    ada = adamlab.AdaMax([p])
    ada.step()
    with pytest.raises(ValueError, match=r"AdaMax's.*but Adam keeps \['exp_avg', 'exp_avg_sq', 'step'\]"):
        opt.load_state_dict(ada.state_dict())
    assert not opt.state  # nothing was loaded


@needs_kernel
def test_fused_names_non_contiguity():
    conv = torch.nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
    opt = adamlab.Adam(conv.parameters(), impl="fused")
    conv(torch.randn(1, 3, 5, 5).to(memory_format=torch.channels_last)).sum().backward()
    with pytest.raises(RuntimeError, match="parameter 0 of param group 0 has the parameter channels_last"):
        opt.step()


def test_a_new_option_is_declared_once():
    """docs/optimizers.md, "How to add an option", step 1: a field on the hyper-parameter type makes a keyword
    option, a param-group key checked by name, and (kernel=False) keeps groups that set it off the kernel."""
    from dataclasses import dataclass

    from adamlab.hyperparameters import option

    @dataclass(frozen=True)
    class WithNesterov(AdamHyperparameters):
        nesterov: bool = option(False, "Nesterov momentum (a demonstration)", kernel=False)

    class NesterovAdam(adamlab.Adam):
        hyperparameters = WithNesterov

    p, q = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    on, off = NesterovAdam([p], nesterov=True), NesterovAdam([q])
    assert on.param_groups[0]["nesterov"] is True and off.state_dict()["param_groups"][0]["nesterov"] is False
    for opt, x in ((on, p), (off, q)):
        x.grad = torch.ones(3)
        opt.step()
    assert not on._plans and (bool(off._plans) == build.available())  # only the default may take the kernel
    with pytest.raises(RuntimeError, match="uses an option the fused kernel does not implement"):
        r = torch.nn.Parameter(torch.ones(3))
        r.grad = torch.ones(3)
        NesterovAdam([r], nesterov=True, impl="fused").step()
    with pytest.raises(TypeError, match="unexpected keyword argument 'nesterof'"):
        NesterovAdam([p], nesterof=True)
