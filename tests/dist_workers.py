"""What tests/test_distributed.py runs: one training recipe, run single-process (in the test process) or by
every rank of a gloo process group (in processes the test starts), with DDP, ZeroRedundancyOptimizer or FSDP2,
optionally saving a checkpoint at a step or resuming from one.

A *job* is a dict: ``tag`` (its name in the results), ``strategy`` ("single", "ddp", "zero", "fsdp"),
``config`` (a key of CONFIGS), ``impl``, optionally ``save_at`` and ``save_to`` (checkpoint after that many
steps, then carry on), ``resume_from`` and ``resume_at`` (load that checkpoint, taken after ``resume_at`` steps,
and run the remaining steps). Every rank runs the same jobs in the same order; rank 0 writes the results.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
import warnings
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.optim import ZeroRedundancyOptimizer
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

import adamlab
import adamlab.distributed
from adamlab.optim import reference

STEPS = 12  # steps per run
GLOBAL_BATCH = 12  # divisible by every world size used (1, 2, 3): each rank takes an equal slice
D_IN = 6

# name -> (optimizer class, options). lr is large enough for the parameters to move far in 12 steps.
CONFIGS: dict[str, tuple[type, dict[str, Any]]] = {
    "adam": (adamlab.Adam, {"lr": 0.02}),
    "adam_combo": (
        adamlab.Adam,
        {
            "lr": 0.02,
            "amsgrad": True,
            "weight_decay": 0.05,
            "decoupled_weight_decay": True,
            "averaging": True,
            "averaging_beta": 0.9,
            "lr_decay": "sqrt",
            "beta1_decay": 0.99,
            "eps_mode": "hat",
        },
    ),
    "adamax": (adamlab.AdaMax, {"lr": 0.02, "weight_decay": 0.01, "averaging": True}),
}


def make_model() -> torch.nn.Module:
    """Uneven widths on purpose: FSDP2 over 3 ranks gives shards of 4, 4 and 2 rows, and empty shards."""
    torch.manual_seed(1234)
    return torch.nn.Sequential(
        torch.nn.Linear(D_IN, 10),
        torch.nn.Tanh(),
        torch.nn.Linear(10, 5),
        torch.nn.Tanh(),
        torch.nn.Linear(5, 1),
    )


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch of a step, the same for every rank and world size."""
    gen = torch.Generator().manual_seed(1000 + step)
    return torch.randn(GLOBAL_BATCH, D_IN, generator=gen), torch.randn(GLOBAL_BATCH, 1, generator=gen)


def _rank_world() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def build(strategy: str, config: str, impl: str) -> tuple[torch.nn.Module, Any]:
    """The model (wrapped for the strategy) and its optimizer."""
    cls, options = CONFIGS[config]
    model = make_model()
    if strategy == "single":
        return model, cls(model.parameters(), impl=impl, **options)
    if strategy == "ddp":
        model = DistributedDataParallel(model)
        return model, cls(model.parameters(), impl=impl, **options)
    if strategy == "zero":
        model = DistributedDataParallel(model)
        # parameters_as_bucket_view: the parameters become views of one flat buffer; the kernel takes them as is.
        opt = ZeroRedundancyOptimizer(
            model.parameters(), optimizer_class=cls, parameters_as_bucket_view=True, impl=impl, **options
        )
        return model, opt
    if strategy == "fsdp":
        mesh = init_device_mesh("cpu", (dist.get_world_size(),))
        fully_shard(model[0], mesh=mesh)
        fully_shard(model[2], mesh=mesh)
        fully_shard(model, mesh=mesh)  # the root owns the last layer (kept gathered after a forward-only pass)
        return model, cls(model.parameters(), impl=impl, **options)
    raise ValueError(strategy)


def train_step(model: torch.nn.Module, opt: Any, step: int) -> None:
    rank, world = _rank_world()
    x, y = batch(step)
    lo, hi = rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world
    opt.zero_grad(set_to_none=True)
    torch.nn.functional.mse_loss(model(x[lo:hi]), y[lo:hi]).backward()
    opt.step()


def _inner(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter in full (FSDP2's DTensors gathered: a collective), by its unwrapped name."""
    adamlab.distributed.reshard(model)  # FSDP2: registers the shards again (a forward may have left them gathered)
    out = {}
    for name, p in _inner(model).named_parameters():
        full = p.full_tensor() if isinstance(p, DTensor) else p
        out[name] = full.detach().clone()
    return out


def evaluate(model: torch.nn.Module) -> torch.Tensor:
    """The model's output on a fixed batch; every rank feeds the whole batch (FSDP2 gathers the parameters)."""
    with torch.no_grad():
        return model(torch.randn(8, D_IN, generator=torch.Generator().manual_seed(99))).detach().clone()


def results_of(model: torch.nn.Module, opt: Any, config: str) -> dict[str, Any]:
    result: dict[str, Any] = {"params": snapshot(model), "output": evaluate(model)}
    if CONFIGS[config][1].get("averaging"):
        # Evaluations first: snapshot() reshards FSDP2 modules, which would hide a stale gathered parameter.
        with adamlab.distributed.averaged_parameters(opt, model):
            result["averaged_output"] = evaluate(model)  # what evaluating under the averages gives
            result["averaged"] = snapshot(model)
        result["output_after_averaging"] = evaluate(model)
        result["params_after_averaging"] = snapshot(model)  # restored exactly
    local = opt.optim if isinstance(opt, ZeroRedundancyOptimizer) else opt
    result["steps"] = sorted({float(s["step"]) for s in local.state.values()})
    entries: list[Any] = [len(local.state)]  # parameters with state, on each rank
    if dist.is_initialized():
        entries = [None] * dist.get_world_size()
        dist.all_gather_object(entries, len(local.state))
    result["state_entries"] = entries
    if not isinstance(opt, ZeroRedundancyOptimizer):
        result["diagnostics"] = opt.diagnostics()  # over all coordinates (FSDP2: a collective)
    return result


# ---------------------------------------------------------------------------------------------- checkpoints


def save_checkpoint(strategy: str, model: torch.nn.Module, opt: Any, path: str) -> None:
    """DCP for DDP and FSDP2 (sharded: each rank writes its shards); ZeRO: consolidate on rank 0, torch.save."""
    if strategy == "zero":
        opt.consolidate_state_dict(to=0)
        if dist.get_rank() == 0:
            os.makedirs(path, exist_ok=True)
            torch.save({"model": _inner(model).state_dict(), "optim": opt.state_dict()}, os.path.join(path, "zero.pt"))
        dist.barrier()
        return
    model_sd, optim_sd = get_state_dict(model, opt)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=path)


def load_checkpoint(strategy: str, model: torch.nn.Module, opt: Any, path: str) -> None:
    """The inverse of save_checkpoint, onto freshly built objects, on any number of ranks (1 without a group)."""
    if strategy == "zero" or os.path.exists(os.path.join(path, "zero.pt")):
        saved = torch.load(os.path.join(path, "zero.pt"), weights_only=True)
        _inner(model).load_state_dict(saved["model"])
        opt.load_state_dict(saved["optim"])  # a plain optimizer takes ZeRO's consolidated state dict as it is
        return
    model_sd, optim_sd = get_state_dict(model, opt)  # initialises the optimizer state (a step with lr = 0)
    state = {"model": model_sd, "optim": optim_sd}
    with warnings.catch_warnings():
        # Without a process group DCP loads in this one process, as meant here, and says so.
        warnings.filterwarnings("ignore", "torch.distributed is disabled", UserWarning)
        dcp.load(state, checkpoint_id=path)
    set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])


# ---------------------------------------------------------------------------------------------- jobs


def count_reference_steps() -> dict[str, int]:
    """Count the tensors stepped by the reference path (the rest go to the fused kernel) by wrapping
    ``adamlab.optim.reference``'s step functions. Only in spawned workers: the patch lasts as long as the process."""
    counts = {"reference_tensors": 0}
    for name in ("adam_step", "adamax_step"):
        step = getattr(reference, name)

        def counting(p, grad, state, group, _step=step):
            counts["reference_tensors"] += 1
            return _step(p, grad, state, group)

        setattr(reference, name, counting)
    return counts


def nonfinite_job(job: dict[str, Any]) -> dict[str, Any]:
    """FSDP2: one NaN in the gradient shard of rank 0 only. The kernel steps local shards, and every rank must
    still raise the same FloatingPointError (the counts are summed over the shards); the NaN coordinate keeps
    its value and every other coordinate takes the step."""
    model, opt = build("fsdp", job["config"], job["impl"])
    x, y = batch(0)
    torch.nn.functional.mse_loss(model(x), y).backward()
    weight = model[0].weight
    before = weight.full_tensor().clone()
    if dist.get_rank() == 0:
        weight.grad.to_local()[0, 0] = float("nan")
    try:
        opt.step()
        message = None
    except FloatingPointError as exc:
        message = str(exc)
    messages: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(messages, message)
    after = weight.full_tensor()
    return {"messages": messages, "kept": bool(after[0, 0] == before[0, 0]), "moved": int((after != before).sum())}


def run_job(job: dict[str, Any], counts: dict[str, int]) -> dict[str, Any]:
    if job.get("kind") == "nonfinite":
        return nonfinite_job(job)
    start_counts = dict(counts)
    model, opt = build(job["strategy"], job["config"], job["impl"])
    first = 0
    if job.get("resume_from"):
        load_checkpoint(job["strategy"], model, opt, job["resume_from"])
        first = job["resume_at"]
    for step in range(first, STEPS):
        if job.get("save_at") == step:
            save_checkpoint(job["strategy"], model, opt, job["save_to"])
        train_step(model, opt, step)
    result = results_of(model, opt, job["config"])
    result["paths"] = {k: counts[k] - start_counts[k] for k in counts}
    return result


def run_jobs(jobs: list[dict[str, Any]], counts: dict[str, int] | None = None) -> dict[str, Any]:
    counts = {} if counts is None else counts
    results = {}
    for job in jobs:
        t0 = time.perf_counter()
        results[job["tag"]] = run_job(job, counts)
        results[job["tag"]]["seconds"] = time.perf_counter() - t0
    return results


def worker(rank: int, world: int, init_method: str, jobs: list[dict[str, Any]], out: str) -> None:
    """A spawned rank: join the group, run the jobs, rank 0 saves the results; any error goes to a file."""
    try:
        torch.set_num_threads(1)  # ranks share two cores; the kernel's thread count follows this
        dist.init_process_group(
            "gloo", init_method=init_method, rank=rank, world_size=world, timeout=timedelta(seconds=60)
        )
        results = run_jobs(jobs, count_reference_steps())
        if rank == 0:
            torch.save(results, out + ".tmp")
            os.replace(out + ".tmp", out)
        dist.barrier()
        dist.destroy_process_group()
    except BaseException:
        with open(f"{out}.error{rank}", "w") as f:
            f.write(traceback.format_exc())
        sys.stderr.write(traceback.format_exc())
        sys.stderr.flush()
        os._exit(1)  # do not wait for the other ranks
