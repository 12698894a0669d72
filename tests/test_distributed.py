"""adamlab.Adam and AdaMax under torch.distributed: DDP, ZeroRedundancyOptimizer and FSDP2 on gloo process groups
of 2 and 3 ranks (CPU, localhost) against a single-process run with the same global batch, and checkpoints
(torch.distributed.checkpoint; ZeRO's consolidated state dict) saved on one number of ranks and resumed, in new
processes, on the same or another number of ranks (3, 2 and 1).

Cost: every process pays for importing torch, which takes seconds on a busy two-core machine, so the ranks are
forked from one forkserver that imports everything once, and all scenarios of one world size run in one process
group (dist_workers.run_jobs). Three groups are started: A (2 ranks: every scenario, checkpoints after
SAVE_AT steps), B (3 ranks: every scenario, checkpoints, resumes of A's checkpoints), C (2 ranks: resumes of
A's and B's checkpoints); the single-process runs and the 1-rank resumes run in the test process.

"Save, kill, resume": the processes that saved a checkpoint have exited, and their process group is gone,
before new processes (a new group) load it; nothing but the files on disk carries over.

Tolerance: the ranks' gradients are averaged by all-reduce (DDP, ZeRO) or reduce-scatter (FSDP2), which sums
in another order than the single process's mean over the whole batch, so float32 parameters differ in the last
bits, and Adam's division by √v̂ amplifies that a little over the steps: after 12 steps (lr 0.02, parameters
of order 0.1 to 1) the largest difference measured is 1e-7 for plain Adam and AdaMax and 2.1e-6 for the
combination of options. The tests allow TOL = 1e-5 (absolute, float32), far below one step (about lr). A run
resumed on the number of ranks it was saved on is compared bit for bit with the run that was not interrupted.
"""

from __future__ import annotations

import multiprocessing
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()) or (
    "forkserver" not in multiprocessing.get_all_start_methods()
):
    pytest.skip("needs torch.distributed with gloo, and the forkserver start method (POSIX)", allow_module_level=True)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # torch.distributed.optim's torch.jit.script
    import dist_workers as W

TOL = 1e-5
SAVE_AT = 5  # checkpoints are taken after this many of the W.STEPS steps
STRATEGIES = ("ddp", "zero", "fsdp")
IMPLS = ("fused", "reference")
RUNS = [(s, c, i) for s in STRATEGIES for c in W.CONFIGS for i in IMPLS]
# (strategy, config, impl) of the runs that are checkpointed and resumed.
CHECKPOINTED = [
    ("ddp", "adam_combo", "fused"),
    ("zero", "adam_combo", "fused"),
    ("fsdp", "adam_combo", "fused"),
    ("fsdp", "adamax", "reference"),
]
GROUP_TIMEOUT_S = 180  # a process group that has not finished by then is killed and the test fails


def _tag(strategy: str, config: str, impl: str, prefix: str = "") -> str:
    return f"{prefix}{strategy}/{config}/{impl}"


def _ckpt(root: Path, world: int, strategy: str, config: str, impl: str) -> str:
    return str(root / f"w{world}-{strategy}-{config}-{impl}")


def _train_jobs(world: int, root: Path) -> list[dict[str, Any]]:
    jobs = []
    for strategy, config, impl in RUNS:
        job = {"tag": _tag(strategy, config, impl), "strategy": strategy, "config": config, "impl": impl}
        if (strategy, config, impl) in CHECKPOINTED:
            job.update(save_at=SAVE_AT, save_to=_ckpt(root, world, strategy, config, impl))
        jobs.append(job)
    for impl in IMPLS:
        jobs.append({"tag": f"nonfinite/{impl}", "kind": "nonfinite", "config": "adam_combo", "impl": impl})
    return jobs


def _resume_jobs(saved_on: int, root: Path, strategy_on_resume: dict[str, str] | None = None) -> list[dict]:
    """Resume each checkpoint saved on ``saved_on`` ranks with the same strategy (or, for a 1-rank resume, a
    plain model and optimizer)."""
    jobs = []
    for strategy, config, impl in CHECKPOINTED:
        jobs.append(
            {
                "tag": _tag(strategy, config, impl, prefix=f"from{saved_on}/"),
                "strategy": (strategy_on_resume or {}).get(strategy, strategy),
                "config": config,
                "impl": impl,
                "resume_from": _ckpt(root, saved_on, strategy, config, impl),
                "resume_at": SAVE_AT,
            }
        )
    return jobs


def _launch(world: int, jobs: list[dict[str, Any]], workdir: Path) -> dict[str, Any]:
    """Run ``jobs`` on a fresh gloo group of ``world`` processes; return rank 0's results."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["dist_workers"])  # takes effect when the forkserver starts (the first launch)
    workdir.mkdir(parents=True, exist_ok=True)
    out = str(workdir / f"results-w{world}.pt")
    init_method = f"file://{workdir / f'store-w{world}'}"
    procs = [ctx.Process(target=W.worker, args=(r, world, init_method, jobs, out), daemon=True) for r in range(world)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + GROUP_TIMEOUT_S
    try:
        while any(p.is_alive() for p in procs):
            if any(p.exitcode not in (None, 0) for p in procs) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        for p in procs:  # stragglers: a failed rank leaves the others waiting in a collective
            if p.is_alive():
                p.kill()
            p.join(timeout=10)
    errors = sorted(workdir.glob(f"results-w{world}.pt.error*"))
    if errors:
        pytest.fail("a rank failed:\n" + "\n".join(e.read_text() for e in errors), pytrace=False)
    codes = [p.exitcode for p in procs]
    if codes != [0] * world:
        why = "timed out" if time.monotonic() > deadline else "failed"
        pytest.fail(f"the {world}-rank group {why} (limit {GROUP_TIMEOUT_S} s, exit codes {codes})", pytrace=False)
    results = torch.load(out, weights_only=False)
    results["_wall_s"] = time.monotonic() - (deadline - GROUP_TIMEOUT_S)
    return results


# ------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("distributed")


@pytest.fixture(scope="module")
def single() -> dict[str, Any]:
    """The single-process runs (in this process) every distributed run is compared with."""
    jobs = [
        {"tag": _tag("single", c, i), "strategy": "single", "config": c, "impl": i} for c in W.CONFIGS for i in IMPLS
    ]
    return W.run_jobs(jobs)


@pytest.fixture(scope="module")
def group_a(root) -> dict[str, Any]:
    return _launch(2, _train_jobs(2, root), root / "a")


@pytest.fixture(scope="module")
def group_b(root, group_a) -> dict[str, Any]:
    return _launch(3, _train_jobs(3, root) + _resume_jobs(2, root), root / "b")


@pytest.fixture(scope="module")
def group_c(root, group_a, group_b) -> dict[str, Any]:
    return _launch(2, _resume_jobs(2, root) + _resume_jobs(3, root), root / "c")


@pytest.fixture(scope="module")
def one_rank(root, group_a, group_b) -> dict[str, Any]:
    """Resumes on one process without a process group: plain model and optimizer."""
    plain = dict.fromkeys(STRATEGIES, "single")
    return W.run_jobs(_resume_jobs(2, root, plain) + _resume_jobs(3, root, plain))


@pytest.fixture(scope="module")
def groups(group_a, group_b) -> dict[int, dict[str, Any]]:
    return {2: group_a, 3: group_b}


# ------------------------------------------------------------------------------------------------- checks


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def _assert_close(result: dict[str, Any], expected: dict[str, Any], tol: float) -> None:
    assert _max_diff(result["params"], expected["params"]) <= tol
    assert _max_diff({"": result["output"]}, {"": expected["output"]}) <= tol
    assert ("averaged" in result) == ("averaged" in expected)
    if "averaged" in expected:
        assert _max_diff(result["averaged"], expected["averaged"]) <= tol
        assert _max_diff({"": result["averaged_output"]}, {"": expected["averaged_output"]}) <= tol
    assert result["steps"] == expected["steps"] == [float(W.STEPS)]


def _assert_equal(result: dict[str, Any], expected: dict[str, Any]) -> None:
    assert torch.equal(result["output"], expected["output"])
    for key in ("params", "averaged"):
        assert (key in result) == (key in expected)
        if key in expected:
            for name, value in expected[key].items():
                assert torch.equal(result[key][name], value), (key, name)
    assert result["steps"] == expected["steps"]


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize(("strategy", "config", "impl"), RUNS, ids=["/".join(r) for r in RUNS])
def test_matches_single_process(groups, single, world, strategy, config, impl):
    """N steps on ``world`` ranks give the parameters (and temporal averages) of N single-process steps."""
    result = groups[world][_tag(strategy, config, impl)]
    _assert_close(result, single[_tag("single", config, impl)], TOL)
    # ZeRO shards the state (each rank holds some parameters' state); DDP and FSDP2 hold every parameter's
    # (FSDP2: its shard of it) on every rank.
    if strategy == "zero":
        assert len(result["state_entries"]) == world and max(result["state_entries"]) < 6
    else:
        assert result["state_entries"] == [6] * world
    if "averaged" in result:  # averaged_parameters() restored every rank's parameters exactly
        for name, value in result["params"].items():
            assert torch.equal(result["params_after_averaging"][name], value), name
        assert torch.equal(result["output_after_averaging"], result["output"])


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize(("strategy", "config", "impl"), RUNS, ids=["/".join(r) for r in RUNS])
def test_fast_path(groups, world, strategy, config, impl):
    """impl="fused" would raise where the kernel does not apply; the reference path is never taken with it
    (FSDP2 included: the kernel steps the DTensors' local shards)."""
    reference_tensors = groups[world][_tag(strategy, config, impl)]["paths"]["reference_tensors"]
    if impl == "fused":
        assert reference_tensors == 0
    else:
        assert reference_tensors > 0


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("config", list(W.CONFIGS))
def test_diagnostics_match_single_process(groups, single, world, config):
    """diagnostics() over an FSDP2 model covers every coordinate, as the single process does."""
    got = groups[world][_tag("fsdp", config, "fused")]["diagnostics"]
    want = single[_tag("single", config, "fused")]["diagnostics"]
    for kind in ("step_over_lr", "snr"):
        assert got[kind]["count"] == want[kind]["count"]
        assert got[kind]["mean"] == pytest.approx(want[kind]["mean"], rel=1e-3, abs=1e-5)


@pytest.mark.parametrize(("strategy", "config", "impl"), CHECKPOINTED, ids=["/".join(r) for r in CHECKPOINTED])
def test_resume_same_world_size_is_bit_identical(group_a, group_c, strategy, config, impl):
    """Saved on 2 ranks after SAVE_AT steps, the processes gone, resumed on 2 new ranks: the same trajectory as
    the run that went on, to the bit."""
    _assert_equal(group_c[_tag(strategy, config, impl, "from2/")], group_a[_tag(strategy, config, impl)])


@pytest.mark.parametrize(("saved_on", "resumed_on"), [(2, 3), (3, 2), (2, 1), (3, 1)])
@pytest.mark.parametrize(("strategy", "config", "impl"), CHECKPOINTED, ids=["/".join(r) for r in CHECKPOINTED])
def test_resume_on_another_world_size(groups, group_c, one_rank, single, saved_on, resumed_on, strategy, config, impl):
    """A checkpoint saved on one number of ranks and resumed on another (1: a plain model and optimizer in one
    process, no process group) continues the single-process trajectory, to TOL."""
    resumed = {3: groups[3], 2: group_c, 1: one_rank}[resumed_on][_tag(strategy, config, impl, f"from{saved_on}/")]
    _assert_close(resumed, single[_tag("single", config, impl)], TOL)
    _assert_close(resumed, groups[saved_on][_tag(strategy, config, impl)], TOL)


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("impl", IMPLS)
def test_nonfinite_gradient_in_one_shard_raises_on_every_rank(groups, world, impl):
    """FSDP2, a NaN in one rank's gradient shard: every rank raises the same FloatingPointError (1 entry), the
    NaN's coordinate keeps its value, the others move."""
    result = groups[world][f"nonfinite/{impl}"]
    messages = result["messages"]
    assert messages[0] is not None and "(1 entries)" in messages[0]
    assert messages == [messages[0]] * world
    assert result["kept"]
    assert result["moved"] == 10 * W.D_IN - 1
