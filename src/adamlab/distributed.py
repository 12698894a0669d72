"""Helpers for adamlab's optimizers under ``torch.distributed`` (see docs/distributed.md).

The optimizers themselves need nothing from here: under DDP they see plain tensors, under FSDP2 they step the
DTensors' local shards with the fused kernel, and ZeroRedundancyOptimizer builds one per rank. What needs
help is evaluating under the temporal averages θ̂ (``averaged_parameters``):

* ZeroRedundancyOptimizer keeps each parameter's state, θ̄ included, on one rank only, so giving every rank
  every average is a collective.
* FSDP2 leaves a module's gathered (unsharded) parameters in place after a forward pass that has no backward
  (by default the root module's), and its next forward reuses them: averages written into the shards would
  not be seen by an evaluation, and an evaluation's gathered averages would be used by the next training step.
  Resharding before and after the swap avoids both.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist


def _zero_class() -> Any:
    try:
        from torch.distributed.optim import ZeroRedundancyOptimizer
    except ImportError:  # torch built without distributed support
        return None
    return ZeroRedundancyOptimizer


def reshard(module: torch.nn.Module | None) -> None:
    """Reshard every FSDP2 module in ``module`` (drop gathered parameters, so the next forward gathers the
    shards afresh); nothing for other modules or None."""
    if module is None:
        return
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:
        return
    for m in module.modules():
        if isinstance(m, FSDPModule):
            m.reshard()


@contextlib.contextmanager
def averaged_parameters(optimizer: Any, module: torch.nn.Module | None = None) -> Iterator[None]:
    """``optimizer.averaged_parameters()`` that also works under ZeroRedundancyOptimizer and FSDP2.

    ``optimizer``: an adamlab optimizer (plain, DDP or FSDP2 parameters) or a
    ``ZeroRedundancyOptimizer(..., optimizer_class=adamlab.Adam/AdaMax, averaging=True)``. ``module``: the model;
    with FSDP2 pass it, so that its FSDP modules are resharded on entering and on leaving the block (see the
    module docstring); it is not needed otherwise.

    Under ZeRO every rank must enter the block (it is a collective): each rank swaps in the averages of the
    parameters it owns, and one all-reduce per dtype (a sum with zeros from the other ranks, so exact) gives
    every rank every average. On leaving the block every rank restores its parameters exactly.

    >>> with adamlab.distributed.averaged_parameters(opt, model):   # doctest: +SKIP
    ...     evaluate(model)
    """
    zero_class = _zero_class()
    if zero_class is None or not isinstance(optimizer, zero_class):
        reshard(module)
        try:
            with optimizer.averaged_parameters():
                yield
        finally:
            reshard(module)
        return
    # Checked on the global param groups (the same on every rank) before any collective, so that every rank
    # raises rather than some of them waiting in the all-reduce.
    if not all(group.get("averaging", False) for group in optimizer.param_groups):
        raise RuntimeError("averaged_parameters() needs averaging=True in every param group")
    local = optimizer.optim
    params = [p for group in optimizer.param_groups for p in group["params"]]
    owned = {id(p) for group in local.param_groups for p in group["params"]}
    saved: list[torch.Tensor] = []
    try:
        with torch.no_grad():
            saved = [p.detach().clone() for p in params]
            with local.averaged_parameters():
                contributions = [p.detach().clone() if id(p) in owned else torch.zeros_like(p) for p in params]
            by_dtype: dict[torch.dtype, list[int]] = {}
            for i, p in enumerate(params):
                by_dtype.setdefault(p.dtype, []).append(i)
            for indices in by_dtype.values():
                flat = torch.cat([contributions[i].reshape(-1) for i in indices])
                dist.all_reduce(flat, group=optimizer.process_group)
                offset = 0
                for i in indices:
                    n = params[i].numel()
                    params[i].copy_(flat[offset : offset + n].view_as(params[i]))
                    offset += n
        yield
    finally:
        with torch.no_grad():
            for p, value in zip(params, saved):
                p.copy_(value)


__all__ = ["averaged_parameters", "reshard"]
