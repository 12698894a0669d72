"""The runner's full-training-set evaluation: the loss and the accuracy from one forward pass per chunk, the
same numbers as the two-pass evaluation it replaced, and as a hand computation with F.cross_entropy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from adamlab.lab.convnet import ConvNet
from adamlab.lab.datasets import TrainingData
from adamlab.lab.models import MLP, LogisticRegression, get_objective, init_parameters, l2_penalty
from adamlab.lab.networks import VAE
from adamlab.lab.runner import _generator, evaluate


def _data(n: int, d: int, classes: int, seed: int = 0) -> TrainingData:
    rng = np.random.default_rng(seed)
    X = rng.random((n, d), dtype=np.float32)  # in [0, 1]: valid Bernoulli targets for the VAE too
    y = rng.integers(0, classes, size=n)
    return TrainingData(X, y, classes, {"description": "random"})


@torch.no_grad()
def _two_pass_evaluate(model, data, l2, objective, seed):
    """The evaluation as it was before (commit c49519c): the objective's loss on a chunk, then a second forward
    pass of the same chunk for the accuracy."""
    model.eval()
    obj = get_objective(objective)
    gen = _generator(seed, "evaluate")
    total, correct = 0.0, 0
    for xb, yb in data.chunks():
        total += float(obj.loss(model, xb, yb, gen)) * len(yb)
        if obj.classifier:
            logits = model(xb)
            pred = (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(dim=1)
            correct += int((pred == yb).sum())
    mean = total / data.n_examples
    out = {"train_cost": mean + float(l2_penalty(model, l2)), f"train_{objective}": mean}
    if obj.classifier:
        out["train_accuracy"] = correct / data.n_examples
    return out


def _init(model, seed=3, std=0.3):
    init_parameters(model, std, torch.Generator().manual_seed(seed))
    return model


CASES = {
    # name: (model, data, objective, l2)
    "mlp, two chunks": (lambda: _init(MLP(12, (16,), 5)), lambda: _data(20_000, 12, 5), "nll", 1e-3),
    "logistic, one logit": (lambda: _init(LogisticRegression(12, 2)), lambda: _data(500, 12, 2), "nll", 0.0),
    "cnn": (
        lambda: _init(ConvNet(1, 8, 4, widths=(3, 3, 4), fc_units=8, input_dropout=0.2, fc_dropout=0.5)),
        lambda: _data(300, 64, 4),
        "nll",
        0.0,
    ),
    "vae": (lambda: _init(VAE(12, hidden=8, latent=3), std=0.1), lambda: _data(400, 12, 2), "negative_elbo", 0.0),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_pass_evaluation_gives_exactly_the_two_pass_numbers(case):
    make_model, make_data, objective, l2 = CASES[case]
    model, data = make_model(), make_data()
    new = evaluate(model, data, l2, objective, seed=7)
    old = _two_pass_evaluate(model, data, l2, objective, seed=7)
    assert new == old  # the same floats, bit for bit (tolerance 0)
    assert set(new) == (
        {"train_cost", "train_nll", "train_accuracy"} if objective == "nll" else {"train_cost", f"train_{objective}"}
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_forward_pass_per_chunk(case):
    make_model, make_data, objective, l2 = CASES[case]
    model, data = make_model(), make_data()
    calls = []
    model.register_forward_hook(lambda m, args, out: calls.append(len(args[0])))
    evaluate(model, data, l2, objective)
    # A ConvNet slices a large chunk itself (its own nested calls); the top-level calls are one per chunk.
    top = [c for c in calls if c in {len(yb) for _, yb in data.chunks()}]
    assert len(top) == len(data.chunks())


def test_evaluation_agrees_with_a_hand_computation_with_cross_entropy():
    model = _init(MLP(12, (16,), 5))
    data = _data(20_000, 12, 5)
    X, y = torch.from_numpy(data.X), torch.from_numpy(data.y)
    with torch.no_grad():
        model.eval()
        logits = model(X)
        nll = float(F.cross_entropy(logits.double(), y))
        accuracy = float((logits.argmax(dim=1) == y).double().mean())
        penalty = 0.5 * 1e-3 * sum(float(p.double().pow(2).sum()) for n, p in model.named_parameters() if "weight" in n)
    model.train()
    out = evaluate(model, data, 1e-3, "nll")
    assert out["train_nll"] == pytest.approx(nll, rel=1e-6)
    assert out["train_accuracy"] == accuracy
    assert out["train_cost"] == pytest.approx(nll + penalty, rel=1e-6)
    assert model.training, "the model's mode is restored"


def test_an_objective_registered_with_a_loss_alone_still_evaluates():
    from adamlab.lab.models import OBJECTIVES, Objective, mean_nll, register_objective

    def loss_only(model, x, y, generator):
        return mean_nll(model(x, generator), y)

    register_objective("nll_loss_only", Objective(loss_only, classifier=True))
    try:
        model, data = _init(MLP(12, (16,), 5)), _data(300, 12, 5)
        a = evaluate(model, data, 0.0, "nll_loss_only")
        b = evaluate(model, data, 0.0, "nll")
        assert a["train_nll_loss_only"] == b["train_nll"] and a["train_accuracy"] == b["train_accuracy"]
    finally:
        OBJECTIVES.pop("nll_loss_only")
