"""Data-parallel lab runs (what `torchrun -m adamlab reproduce …` does): 2 ranks equal one process."""

from __future__ import annotations

import math
import os
import socket
import sys
from pathlib import Path

import torch.multiprocessing as mp

from adamlab.lab import results as R
from adamlab.lab.runner import run_spec

TESTS = str(Path(__file__).parent)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, out: str) -> None:
    # What torchrun sets up for each process; parallel.init_from_env() reads it.
    os.environ.update(
        {"RANK": str(rank), "WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    )
    sys.path.insert(0, TESTS)
    import torch.distributed as dist

    from adamlab.lab import parallel

    from test_lab_helpers import tiny_spec  # isort: skip (the tests folder, put on the path above)

    assert parallel.init_from_env()
    try:
        for sparse in (False, True):
            run_spec(tiny_spec(sparse=sparse, epochs=3), Path(out) / str(sparse), progress=False)
    finally:
        dist.destroy_process_group()


def _final_costs(out: Path) -> dict[str, float]:
    costs = {}
    for path in sorted(out.glob("p/runs/*/*.json")):
        costs[f"{path.parent.name}/{path.name}"] = R.read_json(path)["history"][-1]["train_cost"]
    return costs


def test_two_ranks_reproduce_the_single_process_run(tmp_path):
    from test_lab_helpers import tiny_spec

    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_rank_main, args=(r, 2, port, str(tmp_path / "ddp"))) for r in range(2)]
    for p in procs:
        p.start()
    for sparse in (False, True):  # meanwhile, the same runs in this one process
        run_spec(tiny_spec(sparse=sparse, epochs=3), tmp_path / "single" / str(sparse), progress=False)
    for p in procs:
        p.join(timeout=180)
    for p in procs:
        if p.is_alive():
            p.kill()
        assert p.exitcode == 0
    for sparse in (False, True):
        single, parallel_out = tmp_path / "single" / str(sparse), tmp_path / "ddp" / str(sparse)
        a, b = _final_costs(single), _final_costs(parallel_out)
        assert a.keys() == b.keys() and len(a) == 4
        for key in a:  # the same minibatches, gradients averaged over 2 ranks: equal up to summation order
            assert math.isclose(a[key], b[key], rel_tol=1e-5), (sparse, key)
        record = R.read_json(next(parallel_out.glob("p/runs/adam/*.json")))
        assert record["data_parallel_ranks"] == 2 and record["complete"]
        assert (parallel_out / "p" / "grid.json").is_file()
        assert not list(parallel_out.rglob("*.ckpt.pt"))  # finished runs leave no checkpoint
