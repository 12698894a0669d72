r"""The torch side of SFO: a model, a loss and minibatches as ``f_df(theta, ref) -> (loss, grad)``.

SFO (``adamlab.baselines.sfo``) works on one flat float64 vector θ. :class:`ModuleObjective` flattens a
model's parameters in ``model.named_parameters()`` order, and evaluates one minibatch with
``torch.func.functional_call`` (the model's own tensors are never modified). Subfunction ``i`` is

:math:`f_i(\theta) = \frac{n_i}{n}\,\mathrm{loss}(\mathrm{model}_\theta(X_i), y_i) + \frac{1}{N}\,
\mathrm{penalty}(\theta)`,

with :math:`n_i` the minibatch's size, :math:`n` the data set's size and :math:`N` the number of minibatches,
so that :math:`\sum_i f_i` is exactly the full training cost (mean loss + penalty) when ``loss`` is a mean
over its minibatch. The model's mode is the caller's: ``model.train()`` with dropout gives the noisy
objective of the Adam paper's Figure 2b, ``model.eval()`` the deterministic one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Penalty = Callable[[dict[str, torch.Tensor]], torch.Tensor]


class ModuleObjective:
    """``f_df`` for :class:`~adamlab.baselines.SFO` from a torch model (see the module docstring).

    Args:
        model: the network; its parameters give θ's layout and dtype for the forward pass.
        loss: ``loss(outputs, targets)``, a mean over the minibatch (e.g. ``F.cross_entropy``).
        minibatches: ``[(inputs, targets), ...]``, one per subfunction; the reference of subfunction i is i.
        penalty: optional ``penalty(params) -> scalar`` added once to the full objective (e.g. L2).
        generator: if given, passed to the model as ``model(inputs, generator)`` (the lab's models draw their
            dropout masks from it).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        loss: Loss,
        minibatches: Sequence[tuple[torch.Tensor, torch.Tensor]],
        penalty: Penalty | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not callable(loss):
            raise TypeError("loss must be callable as loss(outputs, targets) -> scalar tensor")
        batches = list(minibatches)
        if not batches:
            raise ValueError("minibatches must hold at least one (inputs, targets) pair")
        for i, b in enumerate(batches):
            if not (isinstance(b, (tuple, list)) and len(b) == 2 and len(b[0]) == len(b[1]) and len(b[0]) > 0):
                raise ValueError(f"minibatches[{i}] must be a non-empty (inputs, targets) pair of equal length")
        self.model, self.loss, self.penalty, self.minibatches = model, loss, penalty, batches
        self.generator = generator
        self.names = [name for name, p in model.named_parameters() if p.requires_grad]
        params = dict(model.named_parameters())
        self.shapes = [params[n].shape for n in self.names]
        self.sizes = [params[n].numel() for n in self.names]
        self.dtype = params[self.names[0]].dtype
        self.total = sum(len(b[0]) for b in batches)

    @property
    def references(self) -> list[int]:
        return list(range(len(self.minibatches)))

    def theta0(self) -> NDArray[np.float64]:
        """The model's current parameters as one float64 vector."""
        params = dict(self.model.named_parameters())
        return np.concatenate([params[n].detach().double().reshape(-1).numpy() for n in self.names])

    def unflatten(self, theta: NDArray[np.float64], requires_grad: bool = False) -> dict[str, torch.Tensor]:
        flat = torch.from_numpy(np.ascontiguousarray(theta, dtype=np.float64).reshape(-1)).to(self.dtype)
        out = {}
        for name, shape, part in zip(self.names, self.shapes, torch.split(flat, self.sizes)):
            out[name] = part.reshape(shape).requires_grad_(requires_grad)
        return out

    def load_into_model(self, theta: NDArray[np.float64]) -> None:
        """Copy θ into the model's parameters (e.g. after optimisation)."""
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, value in self.unflatten(theta).items():
                params[name].copy_(value)

    def __call__(self, theta: NDArray[np.float64], ref: Any) -> tuple[float, NDArray[np.float64]]:
        inputs, targets = self.minibatches[int(ref)]
        params = self.unflatten(theta, requires_grad=True)
        args = (inputs,) if self.generator is None else (inputs, self.generator)
        out = torch.func.functional_call(self.model, params, args)
        value = self.loss(out, targets) * (len(inputs) / self.total)
        if self.penalty is not None:
            value = value + self.penalty(params) / len(self.minibatches)
        grads = torch.autograd.grad(value, [params[n] for n in self.names])
        flat = torch.cat([g.reshape(-1) for g in grads]).double().numpy()
        return float(value.detach()), flat


def module_objective(
    model: torch.nn.Module,
    loss: Loss,
    minibatches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    penalty: Penalty | None = None,
    generator: torch.Generator | None = None,
) -> tuple[ModuleObjective, NDArray[np.float64], list[int]]:
    """``(f_df, theta0, references)`` ready for ``SFO(f_df, theta0, references)``."""
    objective = ModuleObjective(model, loss, minibatches, penalty, generator)
    return objective, objective.theta0(), objective.references
