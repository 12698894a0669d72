"""Data-parallel lab runs under ``torchrun``: one process group, each rank a slice of every minibatch,
gradients averaged by torch's DistributedDataParallel, and rank 0 alone writing files.

``torchrun --nproc-per-node 2 -m adamlab reproduce fig1 …`` runs every training run of the experiment on all
ranks at once. Each minibatch of 128 examples (the same permutation on every rank) is split by rank; the local
loss is Σ_{i ∈ rank} nll_i · W/B + L2, so that DDP's average of the W local gradients is exactly the gradient
of the minibatch's mean loss, as in one process (up to the order of floating-point sums). Dropout masks come
from one generator per rank: with dropout a data-parallel run is statistically, not bitwise, the same as a
single-process one (and deterministic for a given seed and number of ranks).

Without torchrun (no ``WORLD_SIZE`` > 1 in the environment) every function here is a no-op for one process.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def init_from_env() -> bool:
    """Join the process group torchrun describes (gloo, CPU) if there is one; returns whether this call
    created it (so the caller also ends it)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() and not dist.is_initialized():
        dist.init_process_group("gloo")
        return True
    return False


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_writer() -> bool:
    """Only rank 0 writes results, checkpoints, plots and reports (and shows progress)."""
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def on_writer(fn: Callable[..., T], *args: Any) -> T | None:
    """Run ``fn(*args)`` on rank 0 only, then let every rank continue once it is done (files are then
    visible to all)."""
    result = fn(*args) if is_writer() else None
    barrier()
    return result


def shard(index: torch.Tensor) -> torch.Tensor:
    """This rank's slice of a minibatch's example indices (rank r takes every W-th from r)."""
    w = world_size()
    return index if w == 1 else index[rank() :: w]


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model as trained: itself in one process, DistributedDataParallel (averaging gradients) under
    torchrun. Parameters, state_dict and the optimiser stay those of ``model``."""
    if world_size() == 1:
        return model
    # The gradient of a (1, d) weight from a sparse product comes with strides (1, 1), which DDP reports as
    # unlike its bucket's (d, 1); for a dimension of size 1 the two layouts are the same memory.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    return torch.nn.parallel.DistributedDataParallel(model)


def local_loss_scale(local_examples: int, batch_examples: int) -> float:
    """The factor turning this rank's mean loss into its share of the minibatch's mean (see module doc)."""
    return local_examples * world_size() / batch_examples


def stream_name(stream: str) -> str:
    """Per-rank random streams (dropout) under torchrun; the single-process stream name otherwise."""
    return stream if world_size() == 1 else f"{stream}/rank{rank()}of{world_size()}"


__all__ = [
    "barrier",
    "init_from_env",
    "is_writer",
    "local_loss_scale",
    "on_writer",
    "rank",
    "shard",
    "stream_name",
    "world_size",
    "wrap",
]
