"""Figure 2b of the paper (§6.2): Adam against SFO on MNIST, per pass over the data and in wall-clock time.

The paper trains the deterministic version of Figure 2a's network — 784-1000-1000-10, ReLU, cross-entropy
plus L2 weight decay, no dropout — with Adam and with the sum-of-functions optimizer (SFO; Sohl-Dickstein,
Poole & Ganguli 2014), plotting training cost against iterations and against wall-clock time, and says:
Adam makes faster progress in both; SFO is 5–10× slower per iteration (curvature updates) and its memory grows
linearly with the number of minibatches; SFO fails to converge on cost functions with dropout noise.

adamlab's SFO is :class:`adamlab.baselines.SFO` (written from the SFO paper, see ``docs/sfo.md``). In the lab
it is an **epoch driver** (:class:`SFODriver`, registered as optimiser ``"sfo"``): every epoch is one SFO
pass, i.e. N subfunction evaluations, the N subfunctions being a fixed split of the training set into N
minibatches (the split is the run's first shuffled order, so it depends on the seed). Each f_i is
(n_i/n)·(the lab's minibatch objective), so Σ f_i is exactly the training cost the lab plots.

Choices where the papers are silent (recorded in ``spec.json`` and the report):

* **L2**: λ = 1e-4 on the weights, (λ/2)·Σ‖W‖² (the lab's "l2"; the same λ as Figure 1's MNIST panel).
* **Minibatches of SFO**: N = 25 for the 60,000 digits (the SFO authors' advice of about √n/10 minibatches);
  Adam uses the lab's 128. Adam's α on a grid; SFO has no hyper-parameter to tune.
* **Initialisation**: W ~ N(0, 0.01²), b = 0, drawn once per seed, the same for Adam and SFO.
* **"Iteration"**: the paper's x axis is iterations over the entire dataset, so "SFO is 5–10× slower per
  iteration" is judged as time per pass (SFO's seconds per epoch over Adam's); time per update step (one SFO
  evaluation of n/N examples against one Adam step on 128) is reported beside.
* **Dropout panel**: Figure 2a's dropout MLP (20% input, 50% hidden, no L2), SFO and Adam (α chosen on its
  grid); "fails to converge" is judged as SFO ending well above Adam on that objective (the lab's
  ``faster`` claim, tolerance 50%) and SFO's cost no longer falling over the second half of the run.
* **Memory**: a task builds SFO on the network for three numbers of minibatches and records the bytes its
  arrays hold (:meth:`SFO.memory_bytes`, checked against tracemalloc), then fits a line.
"""

from __future__ import annotations

import math
import os
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adamlab.baselines import SFO
from adamlab.lab.networks import HIDDEN_DROPOUT, INIT_STD, INPUT_DROPOUT, MLP_HIDDEN
from adamlab.lab.spec import (
    ClaimSpec,
    DatasetSpec,
    ExperimentSpec,
    ModelSpec,
    OptimizerSpec,
    PanelSpec,
    PlotSpec,
    TaskSpec,
)

__all__ = ["SFODriver", "build_spec", "memory_task", "register", "write_report"]

L2 = 1e-4
FULL_EPOCHS = 20
QUICK_EPOCHS = 5
QUICK_EXAMPLES = 6000
FULL_MINIBATCHES = 25
QUICK_MINIBATCHES = 10
FULL_ADAM_GRID = (1e-4, 3e-4, 1e-3)
QUICK_ADAM_GRID = (3e-4, 1e-3)
FULL_MEMORY_SIZES = (10, 25, 50)
QUICK_MEMORY_SIZES = (5, 10, 20)
OPTIMIZER = "sfo"
PROBE = "sfo"
TASK = "fig2b_sfo_memory"

PAPER_DETERMINISTIC = (
    "the multilayer network of Figure 2a without dropout (cross-entropy with L2 weight decay), on MNIST; "
    "training cost against iterations and against wall-clock time, Adam and SFO. Adam makes faster progress "
    "in both; SFO is 5-10x slower per iteration, and its memory grows linearly with the number of minibatches."
)
PAPER_DROPOUT = "SFO fails to converge on cost functions with stochastic regularization such as dropout."


# -- SFO as a lab epoch driver -------------------------------------------------------------------------------------


def _flat_grad(params: Sequence[torch.Tensor]) -> np.ndarray:
    """The parameters' gradients as one float64 vector (zeros where a parameter got none)."""
    grads = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
    return torch.cat(grads).double().cpu().numpy()


class SFODriver:
    """The lab's optimiser ``"sfo"``: ``train_epoch(ctx)`` runs one SFO pass (N evaluations) over a fixed split
    of the training set into ``minibatches`` parts, then writes θ into the model. Options other than
    ``minibatches`` go to :class:`~adamlab.baselines.SFO`. ``state_dict``/``load_state_dict`` hold SFO's
    whole state (as tensors) and the split, so an interrupted run resumes exactly."""

    def __init__(self, params: Any, *, minibatches: int = FULL_MINIBATCHES, **sfo_options: Any) -> None:
        if isinstance(minibatches, bool) or not isinstance(minibatches, int) or minibatches < 1:
            raise ValueError(f"minibatches must be a positive integer, got {minibatches!r}")
        self.params = [p for p in params if p.requires_grad]
        self.minibatches = minibatches
        self.sfo_options = sfo_options
        self.sfo: SFO | None = None
        self.parts: list[torch.Tensor] = []
        self._pending: dict[str, Any] | None = None
        self._ctx: Any = None

    def _vector(self) -> np.ndarray:
        return torch.nn.utils.parameters_to_vector(self.params).detach().double().cpu().numpy()

    def _load(self, theta: np.ndarray) -> None:
        p0 = self.params[0]
        vec = torch.from_numpy(np.ascontiguousarray(theta, dtype=np.float64)).to(dtype=p0.dtype, device=p0.device)
        torch.nn.utils.vector_to_parameters(vec, self.params)

    def _f_df(self, theta: np.ndarray, ref: int) -> tuple[float, np.ndarray]:
        """f_i = (n_i/n)·(mean objective on part i + L2 penalty), and its gradient, at θ."""
        self._load(theta)
        for p in self.params:
            p.grad = None
        index = self.parts[ref]
        loss = self._ctx.loss(index) * (len(index) / self._ctx.data.n_examples)
        loss.backward()
        return float(loss.detach()), _flat_grad(self.params)

    def train_epoch(self, ctx: Any) -> None:
        self._ctx = ctx
        if self.sfo is None:
            if self._pending is None:
                self.parts = list(torch.tensor_split(ctx.order.cpu(), self.minibatches))
            self.sfo = SFO(self._f_df, self._vector(), list(range(self.minibatches)), **self.sfo_options)
            if self._pending is not None:
                self.sfo.load_state_dict(self._pending)
                self._pending = None
        # The epoch's wall-clock time is the runner's ``train_seconds`` (one concept for every optimiser).
        try:
            with torch.enable_grad():
                theta = self.sfo.optimize(math.floor(self.sfo.passes + 1e-9) + 1)
        except FloatingPointError:  # a non-finite loss or gradient: NaN weights, so the runner stops the run as
            theta = np.full(self.sfo.M, np.nan)  # diverged (as it does for a torch optimiser's NaN loss)
        self._load(theta)

    def stats(self) -> dict[str, float]:
        """SFO's counters after the last epoch (the probe ``"sfo"``)."""
        if self.sfo is None:
            return {}
        s = self.sfo
        return {
            "memory_bytes": float(s.memory_bytes()),
            "evaluations": float(s.evaluations),
            "rejected_steps": float(s.rejected_steps),
            "subspace_dim": float(s.K),
            "collapses": float(s.collapses),
            "active": float(len(s.active)),
        }

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"parts": list(self.parts)}
        if self.sfo is not None:
            raw = self.sfo.state_dict()
            state["sfo"] = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in raw.items()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.parts = list(state["parts"])  # (a checkpoint of an earlier version may also hold "train_seconds")
        sfo = state.get("sfo")
        self._pending = (
            None if sfo is None else {k: v.cpu().numpy() if torch.is_tensor(v) else v for k, v in sfo.items()}
        )
        self.sfo = None


def _probe(model: Any, optimizer: Any, data: Any) -> dict[str, float]:
    return optimizer.stats() if isinstance(optimizer, SFODriver) else {}


# -- memory against the number of minibatches ----------------------------------------------------------------


def memory_task(settings: dict[str, Any], seed: int, progress: bool) -> dict[str, Any]:
    """SFO's memory on the 784-1000-1000-10 network (``settings``: ``features``, ``hidden``, ``classes`` to
    change it) for each number of minibatches in ``settings["minibatches"]``: the bytes its arrays hold after
    one pass (SFO allocates its basis once, at its largest size), measured by :meth:`SFO.memory_bytes` and by
    tracemalloc; then a least-squares line."""
    from adamlab.lab.models import MLP

    sizes = [int(n) for n in settings["minibatches"]]
    torch.manual_seed(seed)
    features, classes = int(settings.get("features", 784)), int(settings.get("classes", 10))
    model = MLP(features, tuple(settings.get("hidden", MLP_HIDDEN)), classes)
    params = [p for p in model.parameters()]
    theta0 = torch.nn.utils.parameters_to_vector(params).detach().double().numpy()
    x = torch.rand(4, features, generator=torch.Generator().manual_seed(seed))
    y = torch.arange(4) % classes

    def f_df(theta: np.ndarray, ref: int) -> tuple[float, np.ndarray]:  # a tiny minibatch: memory, not speed
        torch.nn.utils.vector_to_parameters(torch.from_numpy(theta).float(), params)
        for p in params:
            p.grad = None
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return float(loss.detach()), _flat_grad(params)

    own, traced = [], []
    for n in sizes:
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        opt = SFO(f_df, theta0, list(range(n)))
        opt.optimize(1)
        traced.append(tracemalloc.get_traced_memory()[0] - base)
        tracemalloc.stop()
        own.append(opt.memory_bytes())
        del opt
    slope, intercept = np.polyfit(sizes, own, 1)
    fit = slope * np.array(sizes) + intercept
    return {
        "parameters": int(theta0.size),
        "minibatches": sizes,
        "bytes": own,
        "tracemalloc_bytes": traced,
        "slope_bytes_per_minibatch": float(slope),
        "intercept_bytes": float(intercept),
        "max_residual_fraction": float(np.max(np.abs(np.array(own) - fit)) / max(own)),
    }


def register() -> None:
    """Make the optimiser ``"sfo"``, its probe and the memory task (and its cost) known to the lab (idempotent)."""
    from adamlab.lab.runner import register_optimizer, register_probe, register_task
    from adamlab.lab.status import register_task_cost

    register_optimizer(OPTIMIZER, SFODriver)
    register_probe(PROBE, _probe)
    register_task(TASK, memory_task)
    register_task_cost(TASK, memory_task_cost)


def memory_task_cost(settings: dict[str, Any]) -> float:
    """Σ n² over the task's numbers of minibatches n: one SFO pass over n subfunctions, each evaluation
    updating a basis of about 2n columns, is taken to cost ∝ n² (``reproduce --list`` scales a measured run
    of the task by it). Measured: (5, 10, 20) took 16 s (quick run), which predicts 16 × 3225/525 ≈ 100 s for
    (10, 25, 50); the full run's three seeds took 85–114 s."""
    return float(sum(int(n) ** 2 for n in settings.get("minibatches", ())))


# -- the spec ----------------------------------------------------------------------------------------------


def build_spec(*, quick: bool = False, seed: int = 0, seeds: int | None = None) -> ExperimentSpec:
    """The Figure 2b spec. ``seeds``: how many seeds (from ``seed`` on; default 3, quick 2)."""
    n_seeds = seeds if seeds is not None else (2 if quick else 3)
    if isinstance(n_seeds, bool) or not isinstance(n_seeds, int) or n_seeds < 1:
        raise ValueError(f"seeds must be a positive integer, got {n_seeds!r}")
    epochs = QUICK_EPOCHS if quick else FULL_EPOCHS
    n_parts = QUICK_MINIBATCHES if quick else FULL_MINIBATCHES
    options = {"split": "train", **({"subsample": QUICK_EXAMPLES, "data_seed": 0} if quick else {})}
    lr = QUICK_ADAM_GRID if quick else FULL_ADAM_GRID
    optimizers = (
        OptimizerSpec("adam", "Adam", "adam", {}, {"lr": lr}),
        OptimizerSpec("sfo", "SFO", OPTIMIZER, {"minibatches": n_parts}, {}),
    )
    plot = PlotSpec(xlabel="iterations over entire dataset", ylabel="training cost", yscale="log")
    deterministic = PanelSpec(
        name="mlp",
        title="MNIST multilayer network, deterministic (784-1000-1000-10, cross-entropy + L2)",
        dataset=DatasetSpec("mnist", options),
        model=ModelSpec("mlp", hidden=MLP_HIDDEN, l2=L2, init_std=INIT_STD),
        optimizers=optimizers,
        epochs=epochs,
        plot=plot,
        paper=PAPER_DETERMINISTIC,
        probes=(PROBE,),
    )
    dropout = PanelSpec(
        name="mlp_dropout",
        title="The same network with dropout (20% input, 50% hidden)",
        dataset=DatasetSpec("mnist", options),
        model=ModelSpec(
            "mlp", hidden=MLP_HIDDEN, input_dropout=INPUT_DROPOUT, hidden_dropout=HIDDEN_DROPOUT, init_std=INIT_STD
        ),
        optimizers=optimizers,
        epochs=epochs,
        plot=plot,
        paper=PAPER_DROPOUT,
        probes=(PROBE,),
    )
    claims = (
        ClaimSpec("mlp", "faster", "adam", "sfo", "Adam makes faster progress than SFO per pass over the data", 0.01),
        ClaimSpec(
            "mlp_dropout",
            "faster",
            "adam",
            "sfo",
            "With dropout noise Adam ends at least 50% lower than SFO (the paper: SFO fails to converge)",
            0.5,
        ),
    )
    notes = [
        f"SFO: adamlab.baselines.SFO (from the SFO paper, docs/sfo.md), {n_parts} fixed minibatches, one pass per "
        f"epoch; Adam: minibatches of 128, α on {list(lr)}. L2 λ = {L2:g} on the weights (deterministic panel); "
        "weights N(0, 0.01²), biases 0, the same for both. Training cost = mean cross-entropy (+ L2) on the "
        "whole training set, without dropout, after every epoch.",
    ]
    if quick:
        notes.insert(
            0,
            f"QUICK RUN: {QUICK_EXAMPLES:,} of MNIST's 60,000 training digits, {QUICK_EPOCHS} passes, SFO on "
            f"{QUICK_MINIBATCHES} minibatches (full: {FULL_MINIBATCHES}), memory at {list(QUICK_MEMORY_SIZES)} "
            "minibatches. The verdicts below are about these shortened runs.",
        )
    memory = TaskSpec("sfo_memory", TASK, {"minibatches": list(QUICK_MEMORY_SIZES if quick else FULL_MEMORY_SIZES)})
    return ExperimentSpec(
        name="fig2b",
        title="Figure 2b: Adam vs SFO on MNIST — training cost per pass and in wall-clock time",
        panels=(deterministic, dropout),
        seeds=tuple(range(seed, seed + n_seeds)),
        claims=claims,
        quick=quick,
        notes=tuple(notes),
        tasks=(memory,),
    )


def write_report(out_dir: str | os.PathLike[str]) -> Path:
    """The lab's report, then Figure 2b's own section (:mod:`adamlab.lab.experiments.fig2b_report`)."""
    from adamlab.lab.experiments.fig2b_report import write_report as write

    return write(out_dir)


register()  # importing the experiment's module registers what it adds (as the runner expects, docs/lab.md)
