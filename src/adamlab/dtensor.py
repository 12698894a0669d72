"""DTensor (FSDP2, tensor parallelism) parameters, for adamlab's optimizers (see docs/distributed.md).

FSDP2 and tensor parallelism hand the optimizer DTensors. The update is element-wise, so when a parameter,
its gradient and its state tensors are DTensors laid out alike (same mesh, placements and shape, none of them a
pending reduction), stepping each rank's local shards is the global step: the optimizer steps the local
tensors (:func:`local_shards`), with the fused kernel where they fit it. Other DTensors take the reference
path as DTensors. Non-finite counts are summed over the shards (:func:`sum_over_shards`) so that every rank
reports and raises alike; :func:`gathered` gives a state in full (for diagnostics).
"""

from __future__ import annotations

import sys
from typing import Any

import torch


def dtensor_class() -> type | None:
    """DTensor, if torch.distributed.tensor was imported (no DTensor can exist otherwise); importing it here
    would cost every ``import adamlab`` a second."""
    return getattr(sys.modules.get("torch.distributed.tensor"), "DTensor", None)


def local_shards(
    p: torch.Tensor, grad: torch.Tensor, state: dict[str, Any], keys: list[str]
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]] | None:
    """The local tensors of a DTensor parameter, its gradient and its state, if the element-wise update may run
    on them; None otherwise (not a DTensor, layouts differ, or a Partial placement)."""
    dtensor = dtensor_class()
    if dtensor is None or not isinstance(p, dtensor):
        return None
    tensors = [grad, *(state[k] for k in keys)]
    layout = (p.device_mesh, tuple(p.placements), p.shape)  # type: ignore[attr-defined]
    if any(pl.is_partial() for pl in p.placements) or not all(  # type: ignore[attr-defined]
        isinstance(t, dtensor) and (t.device_mesh, tuple(t.placements), t.shape) == layout  # type: ignore[attr-defined]
        for t in tensors
    ):
        return None
    local_p, local_g, *local_state = (t.to_local() for t in (p, *tensors))  # type: ignore[attr-defined]
    return local_p, local_g, dict(zip(keys, local_state))


def sum_over_shards(params: list[torch.Tensor], counts: Any) -> list[int]:
    """Each rank counted the non-finite gradient entries of its own shards: sum the counts over the mesh
    dimensions the parameters are sharded on, so that every rank reports (and raises) alike. One small
    all-reduce per mesh layout and sharded dimension. (DTensor's own ``int()`` of a sum gives the local count.)"""
    import torch.distributed as dist

    totals = list(counts)
    layouts: dict[tuple[Any, ...], list[int]] = {}
    for i, p in enumerate(params):
        layouts.setdefault((p.device_mesh, tuple(p.placements)), []).append(i)  # type: ignore[attr-defined]
    for (mesh, placements), indices in layouts.items():
        sharded = [dim for dim, pl in enumerate(placements) if pl.is_shard()]
        if not sharded:
            continue
        local = torch.tensor([totals[i] for i in indices], dtype=torch.int64)
        for dim in sharded:
            dist.all_reduce(local, group=mesh.get_group(dim))
        for i, total in zip(indices, local.tolist()):
            totals[i] = total
    return totals


def gathered(state: dict[str, Any]) -> dict[str, Any]:
    """The state with every DTensor gathered in full (a collective: every rank must call)."""
    dtensor = dtensor_class()
    if dtensor is None:
        return state
    return {k: v.full_tensor() if isinstance(v, dtensor) else v for k, v in state.items()}  # type: ignore[attr-defined]


__all__ = ["dtensor_class", "gathered", "local_shards", "sum_over_shards"]
