"""Figure 2a of the paper (§6.2): a multilayer network with dropout on MNIST, five optimisers.

The network is :func:`adamlab.lab.networks.dropout_mlp`'s: 784-1000-1000-10, ReLU, 20% input and 50% hidden
dropout (Hinton et al. 2012, whom the paper cites for dropout), trained on the mean cross-entropy with
minibatches of 128. Choices where the paper is silent (recorded in ``spec.json`` and the report):

* **Loss and curve**: the training cost is the mean cross-entropy (NLL, nats) on the whole training set,
  evaluated without dropout after every epoch; no L2 penalty (dropout regularises; the paper gives no
  coefficient for 2a). The y axis is logarithmic, as in the paper (≈ 1e-2 to 1e-1 over 200 epochs).
* **Initialisation**: W ~ N(0, 0.01²), b = 0, drawn once per seed and shared by every optimiser.
* **Optimisers**: Adam (adamlab's, constant α, β = (0.9, 0.999), ε = 1e-8), and torch.optim's Adagrad,
  RMSprop, SGD with Nesterov momentum, Adadelta, each with its defaults apart from the searched values.
* **Grids** (full run; the paper searched "a dense grid" it does not give): the learning rate on half-decade
  steps around each optimiser's usual range (:data:`FULL_GRID`), and SGD's momentum over {0.9, 0.99}. AdaDelta
  (Zeiler 2012) has no learning rate in its paper; torch's ``lr`` scales its step (1 = Zeiler's rule), so the
  grid is around 1.
* **Seeds**: the grid is searched with the first seed; the other seeds (full: 3 in all, quick: 2) are trained
  at each optimiser's chosen setting, and the claim is decided over all of them.
* **Quick run** (:data:`QUICK_GRID`): 5,000 training digits drawn once (data seed 0), 10 epochs, two learning
  rates per optimiser, SGD's momentum fixed at 0.9. Adam's and RMSProp's two rates are the best two of a coarse
  search over {1e-4, 3e-4, 1e-3, 3e-3} at this length on these digits (seed 0); the others' bracket their
  usual values (AdaGrad 1e-2, SGD-Nesterov 0.1, AdaDelta 1). Every output says so.
"""

from __future__ import annotations

from adamlab.lab.networks import HIDDEN_DROPOUT, INIT_STD, INPUT_DROPOUT, MLP_HIDDEN, MLP_L2
from adamlab.lab.spec import (
    ClaimSpec,
    DatasetSpec,
    ExperimentSpec,
    ModelSpec,
    OptimizerSpec,
    PanelSpec,
    PlotSpec,
)

__all__ = ["FULL_EPOCHS", "FULL_GRID", "QUICK_EPOCHS", "QUICK_EXAMPLES", "QUICK_GRID", "build_spec"]

#: The paper's x axis: 200 passes over the data.
FULL_EPOCHS = 200
QUICK_EPOCHS = 10
QUICK_EXAMPLES = 5000

#: (key, legend label, lab optimizer name, fixed keyword arguments); the paper's legend order.
OPTIMIZERS: tuple[tuple[str, str, str, dict[str, object]], ...] = (
    ("adagrad", "AdaGrad", "adagrad", {}),
    ("rmsprop", "RMSProp", "rmsprop", {}),
    ("sgd_nesterov", "SGDNesterov", "sgd", {"momentum": 0.9, "nesterov": True}),
    ("adadelta", "AdaDelta", "adadelta", {}),
    ("adam", "Adam", "adam", {}),
)

FULL_GRID: dict[str, dict[str, tuple[float, ...]]] = {
    "adagrad": {"lr": (3e-3, 1e-2, 3e-2, 1e-1)},
    "rmsprop": {"lr": (1e-4, 3e-4, 1e-3, 3e-3)},
    "sgd_nesterov": {"lr": (1e-2, 3e-2, 1e-1, 3e-1), "momentum": (0.9, 0.99)},
    "adadelta": {"lr": (0.3, 1.0, 3.0)},
    "adam": {"lr": (1e-4, 3e-4, 1e-3, 3e-3)},
}
QUICK_GRID: dict[str, dict[str, tuple[float, ...]]] = {
    "adagrad": {"lr": (1e-2, 3e-2)},
    "rmsprop": {"lr": (3e-4, 1e-3)},
    "sgd_nesterov": {"lr": (3e-2, 1e-1)},
    "adadelta": {"lr": (1.0, 3.0)},
    "adam": {"lr": (1e-3, 3e-3)},
}

PAPER = (
    "a neural network with two fully connected hidden layers of 1000 ReLU units each, dropout noise, "
    "minibatches of 128, on MNIST; training cost on a log axis (about 1e-2 to 1e-1) against 200 iterations "
    "over the entire dataset, for AdaGrad, RMSProp, SGD with Nesterov momentum, AdaDelta and Adam. Adam "
    "shows better convergence than the other methods."
)


def build_spec(*, quick: bool = False, seed: int = 0, seeds: int | None = None) -> ExperimentSpec:
    """The Figure 2a spec. ``seeds``: how many seeds (from ``seed`` on; default 3, quick 2)."""
    n_seeds = seeds if seeds is not None else (2 if quick else 3)
    if n_seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {n_seeds}")
    grid = QUICK_GRID if quick else FULL_GRID
    epochs = QUICK_EPOCHS if quick else FULL_EPOCHS
    options = {"split": "train", **({"subsample": QUICK_EXAMPLES, "data_seed": 0} if quick else {})}
    panel = PanelSpec(
        name="mnist_mlp",
        title="MNIST multilayer network with dropout (784-1000-1000-10)",
        dataset=DatasetSpec("mnist", options),
        model=ModelSpec(
            "mlp",
            hidden=MLP_HIDDEN,
            input_dropout=INPUT_DROPOUT,
            hidden_dropout=HIDDEN_DROPOUT,
            l2=MLP_L2,
            init_std=INIT_STD,
        ),
        optimizers=tuple(OptimizerSpec(k, label, name, dict(fixed), grid[k]) for k, label, name, fixed in OPTIMIZERS),
        epochs=epochs,
        plot=PlotSpec(xlabel="iterations over entire dataset", ylabel="training cost", xlim=(0, 200), yscale="log"),
        paper=PAPER,
    )
    claims = tuple(
        ClaimSpec("mnist_mlp", "faster", "adam", other, f"Adam converges faster than {label}", 0.01)
        for other, label, _, _ in OPTIMIZERS
        if other != "adam"
    )
    notes = [
        "Training cost = mean cross-entropy on the whole training set, without dropout, after every epoch "
        "(no L2 penalty); 20% input and 50% hidden dropout during training (Hinton et al. 2012); weights "
        "N(0, 0.01²), biases 0, the same for every optimiser; learning rates (and SGD's momentum) chosen on "
        "a grid with the first seed, the other seeds trained at the chosen settings.",
    ]
    if quick:
        notes.insert(
            0,
            f"QUICK RUN: {QUICK_EXAMPLES:,} of MNIST's 60,000 training digits, {QUICK_EPOCHS} epochs (paper: "
            "200), two learning rates per optimiser and SGD's momentum fixed at 0.9. The verdicts below are "
            "about these shortened runs.",
        )
    return ExperimentSpec(
        name="fig2a",
        title="Figure 2a: multilayer network with dropout on MNIST — training cost vs epochs",
        panels=(panel,),
        seeds=tuple(range(seed, seed + n_seeds)),
        claims=claims,
        quick=quick,
        notes=tuple(notes),
    )
