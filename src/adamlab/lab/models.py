"""The models of the paper's experiments (§6) and their loss.

* :class:`LogisticRegression` — multi-class logistic regression (Figure 1), optionally with dropout on the
  input features (Figure 1 right: 50%). With two classes it has a single logit and a sigmoid.
* :class:`MLP` — fully connected ReLU network with input and hidden dropout (Figure 2).

Inputs may be dense ``(batch, features)`` tensors or sparse COO tensors of that shape (bag-of-words): a
sparse input is multiplied with :func:`torch.sparse.mm` and its dropout is drawn on the stored (non-zero)
entries only — dropping a zero feature changes nothing, so this is the same distribution at a fraction of
the cost.

Dropout draws from an explicit :class:`torch.Generator` passed to ``forward`` so that the runner can save and
restore its state (a resumed run is identical to an uninterrupted one); without one it uses torch's global
generator.

The loss is :func:`training_loss` = mean negative log-likelihood (nats per example) + (λ/2)·Σ‖W‖² over the
weight matrices (the paper's "L2-regularised" objective; λ = ``ModelSpec.l2``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from adamlab.lab.spec import ModelSpec

__all__ = [
    "MLP",
    "MODELS",
    "OBJECTIVES",
    "LogisticRegression",
    "Objective",
    "build_model",
    "describe_model",
    "dropout",
    "get_objective",
    "init_parameters",
    "l2_penalty",
    "mean_nll",
    "predicted_class",
    "register_model",
    "register_objective",
    "training_loss",
]


def dropout(x: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Inverted dropout: zero each entry with probability ``p``, scale survivors by 1/(1 − p).

    For a sparse COO ``x`` only its stored values are dropped (the zeros stay zero either way).
    """
    if p == 0.0:
        return x
    if x.is_sparse:
        x = x.coalesce()
        values = dropout(x.values(), p, generator)
        return torch.sparse_coo_tensor(x.indices(), values, x.shape, is_coalesced=True, check_invariants=False)
    keep = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device) >= p
    return x * keep / (1.0 - p)


def _affine(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    if x.is_sparse:
        return torch.sparse.mm(x, layer.weight.t()) + layer.bias
    return layer(x)


def _out_features(n_classes: int) -> int:
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes}")
    return 1 if n_classes == 2 else n_classes


class LogisticRegression(nn.Module):
    """Logistic regression: logits = W·dropout(x) + b; one logit when ``n_classes == 2``."""

    def __init__(self, n_features: int, n_classes: int, *, input_dropout: float = 0.0) -> None:
        super().__init__()
        self.input_dropout = input_dropout
        self.linear = nn.Linear(n_features, _out_features(n_classes))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.training:
            x = dropout(x, self.input_dropout, generator)
        return _affine(x, self.linear)


class MLP(nn.Module):
    """Fully connected ReLU network: dropout(x) → [Linear → ReLU → dropout]* → Linear."""

    def __init__(
        self,
        n_features: int,
        hidden: tuple[int, ...],
        n_classes: int,
        *,
        input_dropout: float = 0.0,
        hidden_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("an MLP needs at least one hidden layer")
        self.input_dropout = input_dropout
        self.hidden_dropout = hidden_dropout
        sizes = (n_features, *hidden)
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        self.out = nn.Linear(sizes[-1], _out_features(n_classes))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.training:
            x = dropout(x, self.input_dropout, generator)
        for i, layer in enumerate(self.hidden):
            x = torch.relu(_affine(x, cast(nn.Linear, layer)) if i == 0 else layer(x))
            if self.training:
                x = dropout(x, self.hidden_dropout, generator)
        return self.out(x)


#: ``builder(spec, n_features, n_classes) -> nn.Module``: the models a :class:`~adamlab.lab.spec.ModelSpec`
#: can name (its ``kind``). A model's ``forward(x, generator=None)`` takes a minibatch and the dropout
#: generator and returns what its objective expects (logits for ``"nll"``).
ModelBuilder = Callable[[ModelSpec, int, int], nn.Module]


def _logistic(spec: ModelSpec, n_features: int, n_classes: int) -> nn.Module:
    return LogisticRegression(n_features, n_classes, input_dropout=spec.input_dropout)


def _mlp(spec: ModelSpec, n_features: int, n_classes: int) -> nn.Module:
    return MLP(
        n_features,
        spec.hidden,
        n_classes,
        input_dropout=spec.input_dropout,
        hidden_dropout=spec.hidden_dropout,
    )


MODELS: dict[str, ModelBuilder] = {"logistic": _logistic, "mlp": _mlp}


def register_model(kind: str, builder: ModelBuilder) -> None:
    """Make ``builder`` available to specs as ``ModelSpec(kind=kind)`` (no change to the runner needed)."""
    MODELS[kind] = builder


def build_model(spec: ModelSpec, n_features: int, n_classes: int) -> nn.Module:
    """The model a :class:`~adamlab.lab.spec.ModelSpec` describes (weights not yet initialised by seed)."""
    if spec.kind not in MODELS:
        raise ValueError(f"unknown model kind {spec.kind!r}; known: {', '.join(sorted(MODELS))}")
    return MODELS[spec.kind](spec, n_features, n_classes)


def init_parameters(model: nn.Module, std: float, generator: torch.Generator) -> None:
    """Weights ~ N(0, std²) from ``generator``, biases 0 (the paper gives no scheme; this is our choice).

    A model with its own scheme defines ``initialize(generator, std)``, which is called instead (it must draw
    from ``generator`` only, so that the initial weights are a function of the seed)."""
    own = getattr(model, "initialize", None)
    if callable(own):
        own(generator, std)
        return
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            else:
                p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * std)


def describe_model(spec: ModelSpec, n_features: int | None = None, n_classes: int | None = None) -> str:
    """The model of a spec in words, for reports: its kind and layers, its dropout, the L2 penalty and its
    initial weights — as they are, from the model itself: a model with its own initialisation
    (``initialize``) says which by its ``init_description``; the others are drawn N(0, init_std²), biases 0
    (:func:`init_parameters`). With ``n_features`` (the data's) the model is built to ask for its
    initialisation, and with ``n_classes`` too its parameters are counted; without, or if it cannot be built,
    the spec alone is used."""
    model = None
    if n_features is not None:
        try:
            model = build_model(spec, int(n_features), int(n_classes) if n_classes is not None else 2)
        except Exception:  # a report must not fail on a model that cannot be built here
            model = None
    what = spec.kind + (f" {'-'.join(map(str, spec.hidden))} hidden" if spec.hidden else "")
    if spec.options:
        what += " (" + ", ".join(f"{k} {v}" for k, v in sorted(spec.options.items())) + ")"
    if model is not None and n_classes is not None:
        what += f", {sum(p.numel() for p in model.parameters()):,} parameters"
    drops = [(name, p) for name, p in (("input", spec.input_dropout), ("hidden", spec.hidden_dropout)) if p > 0]
    dropout_text = " and ".join(f"{p:g} {name}" for name, p in drops) + " dropout" if drops else "no dropout"
    own = getattr(model, "initialize", None) if model is not None else None
    if callable(own):
        init = getattr(model, "init_description", None) or f"{type(model).__name__}'s own initialisation"
    elif model is not None:
        init = f"N(0, {spec.init_std:g}²), biases 0"
    else:
        init = f"N(0, {spec.init_std:g}²), biases 0, unless the model draws its own (it could not be built here)"
    penalty = f" + L2 penalty λ/2·‖W‖² with λ = {spec.l2:g}" if spec.l2 > 0 else ", no L2 penalty"
    return (
        f"{what}; {dropout_text}; objective {spec.objective}{penalty}; "
        f"initial weights {init}, the same for every optimiser"
    )


def mean_nll(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood in nats: softmax cross-entropy, or the logistic loss for one logit."""
    if logits.shape[-1] == 1:
        return F.binary_cross_entropy_with_logits(logits[:, 0], y.to(logits.dtype))
    return F.cross_entropy(logits, y)


def l2_penalty(model: nn.Module, coefficient: float) -> torch.Tensor:
    """(λ/2)·Σ‖W‖² over the weight matrices (biases are not penalised)."""
    if coefficient == 0.0:
        return torch.zeros(())
    total = sum((p.pow(2).sum() for name, p in model.named_parameters() if not name.endswith("bias")), torch.zeros(()))
    return 0.5 * coefficient * total


#: ``fn(model, x, y, generator) -> tensor``: a minibatch objective (or, for ``loss_and_outputs``, a pair).
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Generator | None], torch.Tensor]
LossAndOutputsFn = Callable[
    [nn.Module, torch.Tensor, torch.Tensor, torch.Generator | None], tuple[torch.Tensor, torch.Tensor]
]


@dataclass(frozen=True)
class Objective:
    """A training objective: ``loss(model, x, y, generator)`` is the mean over the minibatch of the
    per-example loss (without the L2 penalty); ``classifier``: whether accuracy is meaningful (the model's
    output is class scores).

    ``loss_and_outputs(model, x, y, generator) -> (mean loss, outputs)``, optional: the same mean loss
    together with the model's outputs of that one forward pass (a classifier's class scores), so that an
    evaluation gets the loss and the accuracy from one pass over the data (:meth:`evaluate`)."""

    loss: LossFn
    classifier: bool = False
    loss_and_outputs: LossAndOutputsFn | None = None

    def evaluate(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(mean loss, outputs)`` of one minibatch; ``outputs`` are the class scores of a classifier (else
        ``None``). One forward pass when the objective has ``loss_and_outputs``; an objective registered
        with ``loss`` alone costs a second pass for a classifier's scores."""
        if self.loss_and_outputs is not None:
            loss, outputs = self.loss_and_outputs(model, x, y, generator)
            return loss, outputs if self.classifier else None
        loss = self.loss(model, x, y, generator)
        return loss, model(x) if self.classifier else None


def _nll_and_logits(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    logits = model(x, generator)
    return mean_nll(logits, y), logits


def _nll(model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return _nll_and_logits(model, x, y, generator)[0]


def predicted_class(scores: torch.Tensor) -> torch.Tensor:
    """A classifier's predicted labels from its scores: argmax over classes, or logit > 0 for one logit."""
    return (scores[:, 0] > 0).long() if scores.shape[1] == 1 else scores.argmax(dim=1)


#: The objectives a :class:`~adamlab.lab.spec.ModelSpec` can name; a VAE registers its negative ELBO.
OBJECTIVES: dict[str, Objective] = {"nll": Objective(_nll, classifier=True, loss_and_outputs=_nll_and_logits)}


def register_objective(name: str, objective: Objective) -> None:
    """Make ``objective`` available to specs as ``ModelSpec(objective=name)``."""
    OBJECTIVES[name] = objective


def get_objective(name: str) -> Objective:
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; known: {', '.join(sorted(OBJECTIVES))}")
    return OBJECTIVES[name]


def training_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    l2: float,
    generator: torch.Generator | None = None,
    nll_scale: float = 1.0,
    objective: str = "nll",
) -> torch.Tensor:
    """The minibatch objective: mean objective (NLL by default) + (λ/2)·Σ‖W‖². ``nll_scale`` weights the
    objective term (a rank's share of the minibatch under data parallelism, see :mod:`adamlab.lab.parallel`)."""
    return get_objective(objective).loss(model, x, y, generator) * nll_scale + l2_penalty(model, l2)
