"""Specs (pure data, JSON both ways, validated) and the models (dropout, sparse input, loss)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from adamlab.lab.datasets import TrainingData
from adamlab.lab.models import (
    MLP,
    LogisticRegression,
    build_model,
    dropout,
    init_parameters,
    l2_penalty,
    mean_nll,
    training_loss,
)
from adamlab.lab.spec import ModelSpec, OptimizerSpec, PanelSpec, setting_id


def test_grid_settings_and_their_names():
    opt = OptimizerSpec("sgd", "SGD", "sgd", {"nesterov": True}, {"lr": (0.1, 0.01), "momentum": (0.9, 0.99)})
    settings = opt.settings()
    assert settings[0] == {"lr": 0.1, "momentum": 0.9} and len(settings) == 4
    assert opt.kwargs(settings[-1]) == {"nesterov": True, "lr": 0.01, "momentum": 0.99}
    assert setting_id({"momentum": 0.9, "lr": 0.001}) == "lr=0.001_momentum=0.9"
    assert setting_id({}) == "default"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input_dropout": 1.0}, "input_dropout must lie in"),
        ({"l2": -1.0}, "l2 must be >= 0"),
        ({"hidden": (3,)}, "no hidden layers"),
    ],
)
def test_model_spec_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModelSpec(**kwargs)


def test_models_and_objectives_are_registered_by_name():
    from adamlab.lab.models import MODELS, OBJECTIVES, Objective, build_model, register_model, register_objective

    with pytest.raises(ValueError, match=r"unknown model kind 'nope'; known: .*logistic, mlp"):
        build_model(ModelSpec(kind="nope"), 4, 3)
    with pytest.raises(ValueError, match=r"unknown objective 'nope'; known: .*nll"):
        training_loss(
            build_model(ModelSpec(), 4, 3), torch.zeros(2, 4), torch.zeros(2, dtype=torch.long), 0.0, objective="nope"
        )

    def squares(model, x, y, generator):  # a regression objective: mean of ½‖f(x)‖²
        return 0.5 * model(x, generator).pow(2).sum(dim=1).mean()

    try:
        register_model("twice", lambda spec, n_in, n_cls: torch.nn.Linear(n_in, spec.options["width"]))
        register_objective("squares", Objective(squares))
        model = build_model(ModelSpec(kind="twice", options={"width": 5}), 4, 3)
        assert isinstance(model, torch.nn.Linear) and model.out_features == 5
        x = torch.randn(3, 4)
        model.forward = lambda x, generator=None: torch.nn.Linear.forward(model, x)
        expected = 0.5 * (x @ model.weight.T + model.bias).pow(2).sum() / 3
        assert float(training_loss(model, x, torch.zeros(3), 0.0, objective="squares")) == pytest.approx(
            float(expected)
        )
    finally:
        MODELS.pop("twice", None)
        OBJECTIVES.pop("squares", None)


def test_panel_validation():
    from adamlab.lab.spec import DatasetSpec

    opt = OptimizerSpec("a", "A", "adam")
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        PanelSpec("p", "t", DatasetSpec("x"), ModelSpec(), (opt,), epochs=0)
    with pytest.raises(ValueError, match="unique"):
        PanelSpec("p", "t", DatasetSpec("x"), ModelSpec(), (opt, opt), epochs=1)


def test_dropout_is_inverted_and_sparse_dropout_touches_stored_values_only():
    g = torch.Generator().manual_seed(0)
    x = torch.ones(200, 50)
    y = dropout(x, 0.5, g)
    assert set(y.unique().tolist()) <= {0.0, 2.0}
    assert abs(float((y == 0).float().mean()) - 0.5) < 0.03
    s = torch.eye(40).to_sparse()
    ys = dropout(s, 0.5, g)
    assert ys.is_sparse and ys._nnz() == 40
    assert set(ys.values().unique().tolist()) <= {0.0, 2.0}
    assert dropout(x, 0.0, g) is x


def test_sparse_and_dense_inputs_give_the_same_logits_and_gradients():
    torch.manual_seed(0)
    dense = (torch.rand(16, 30) < 0.2).float()
    for model in (LogisticRegression(30, 3), MLP(30, (8,), 2)):
        out_d = model(dense)
        out_d.sum().backward()
        grads_d = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        out_s = model(dense.to_sparse())
        out_s.sum().backward()
        torch.testing.assert_close(out_s, out_d)
        for p, g in zip(model.parameters(), grads_d, strict=True):
            torch.testing.assert_close(p.grad, g)


def test_dropout_is_off_in_evaluation_mode():
    model = LogisticRegression(10, 2, input_dropout=0.9)
    x = torch.rand(5, 10)
    model.eval()
    torch.testing.assert_close(model(x), model(x))


def test_loss_nll_and_l2():
    model = build_model(ModelSpec("logistic", l2=0.5), 4, 2)
    assert model.linear.out_features == 1, "two classes: a single logit"
    init_parameters(model, 0.0, torch.Generator())
    x, y = torch.rand(6, 4), torch.tensor([0, 1, 0, 1, 1, 0])
    with torch.no_grad():
        assert float(mean_nll(model(x), y)) == pytest.approx(np.log(2))
        model.linear.weight.fill_(1.0)
        model.linear.bias.fill_(3.0)
        assert float(l2_penalty(model, 0.5)) == pytest.approx(0.25 * 4), "biases are not penalised"
        assert float(training_loss(model, x, y, 0.5)) == pytest.approx(float(mean_nll(model(x), y)) + 1.0)
    multi = build_model(ModelSpec("mlp", hidden=(5, 4)), 4, 10)
    assert multi(x).shape == (6, 10)


def test_init_is_reproducible_from_a_seed():
    a, b = LogisticRegression(20, 3), LogisticRegression(20, 3)
    init_parameters(a, 0.01, torch.Generator().manual_seed(7))
    init_parameters(b, 0.01, torch.Generator().manual_seed(7))
    torch.testing.assert_close(a.linear.weight, b.linear.weight)
    assert float(a.linear.bias.detach().abs().sum()) == 0.0
    assert 0.005 < float(a.linear.weight.detach().std()) < 0.015


def test_training_data_batches_dense_and_sparse():
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    data = TrainingData(x, np.array([0, 1, 0, 1, 0, 1]), 2)
    xb, yb = data.batch(torch.tensor([4, 1]))
    torch.testing.assert_close(xb, torch.tensor([[8.0, 9.0], [2.0, 3.0]]))
    assert yb.tolist() == [0, 1]
    sparse = TrainingData(sp.csr_matrix(x), data.y, 2)
    sb, _ = sparse.batch(torch.tensor([4, 1]))
    assert sb.is_sparse
    torch.testing.assert_close(sb.to_dense(), xb)
    assert sum(len(c[1]) for c in sparse.chunks(size=4)) == 6
    with pytest.raises(ValueError, match="rows"):
        TrainingData(x, np.zeros(5), 2)
