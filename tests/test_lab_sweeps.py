"""Sweeps at scale: --jobs workers, --shard slices run as separate processes, per-run locks, status, devices."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from adamlab.lab import results as R
from adamlab.lab.runner import lock_holder, parse_shard, resolve_device, run_spec, try_lock, unit_states, unlock
from adamlab.lab.status import status_text
from test_lab_helpers import tiny_spec

TESTS = Path(__file__).resolve().parent


def _spec():
    # three seeds: the grid with seed 0, the chosen settings with seeds 1 and 2 (two stages)
    return tiny_spec(epochs=3, seeds=(0, 1, 2), search_seeds=1)


def _results(out: Path) -> dict[str, list]:
    """Every run file's setting, seed and curve (what a run produced), keyed by its path under ``out``."""
    found = {}
    for path in sorted(out.rglob("runs/*/*.json")):
        record = json.loads(path.read_text())
        found[str(path.relative_to(out))] = [(h["epoch"], h["train_cost"], h["diagnostics"]) for h in record["history"]]
    return found


def _process(code: str, out: Path, *args: str) -> subprocess.Popen:
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        from pathlib import Path
        from adamlab.lab.runner import run_spec
        from test_lab_helpers import tiny_spec
        spec = tiny_spec(epochs=3, seeds=(0, 1, 2), search_seeds=1)
        out = Path({str(out)!r})
        """
    ) + textwrap.dedent(code)
    return subprocess.Popen([sys.executable, "-c", script, *args], env={**os.environ, "PYTHONHASHSEED": "0"})


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("one")
    run_spec(_spec(), out, progress=False)
    return out


def test_two_stages_train_the_grid_with_one_seed_and_the_choice_with_all(one_process):
    runs = _results(one_process)
    # grid: adam 2 settings + sgd 1 + adagrad 1, seed 0; then each optimiser's choice with seeds 1, 2
    assert len(runs) == 4 + 3 * 2
    grid = R.read_grid(one_process, "p")["optimizers"]
    chosen = grid["adam"]["best"]
    assert f"p/runs/adam/{chosen}_seed2.json" in runs
    other = next(s for s in ("lr=0.01", "lr=0.1") if s != chosen)
    assert f"p/runs/adam/{other}_seed0.json" in runs and f"p/runs/adam/{other}_seed1.json" not in runs


@pytest.mark.slow  # separate processes (each imports torch)
def test_jobs_give_the_results_of_one_process(one_process, tmp_path):
    run_spec(_spec(), tmp_path, progress=False, jobs=2)
    assert _results(tmp_path) == _results(one_process)
    assert not list(tmp_path.rglob("*.lock")) and not list(tmp_path.rglob("*.ckpt.pt"))


@pytest.mark.slow  # separate processes (each imports torch)
def test_shards_in_separate_processes_merge_to_the_one_process_results(one_process, tmp_path):
    shards = [
        _process("run_spec(spec, out, progress=False, shard=(int(sys.argv[1]), 2))\n", tmp_path, str(k)) for k in (1, 2)
    ]
    assert [p.wait(timeout=600) for p in shards] == [0, 0]
    assert _results(tmp_path) == _results(one_process)
    assert R.read_grid(tmp_path, "p") == R.read_grid(one_process, "p")
    states = unit_states(_spec(), tmp_path)
    assert len(states["done"]) == 10 and not (states["left"] or states["running"] or states["unplanned"])


@pytest.mark.slow  # separate processes (each imports torch)
def test_two_processes_on_one_directory_never_train_the_same_run(tmp_path):
    log = tmp_path / "epochs.log"
    code = f"""
    import os
    def note(path, epoch, entry):
        with open({str(log)!r}, "a") as f:
            f.write(f"{{os.getpid()}} {{path.parent.name}}/{{path.name}} {{epoch}}\\n")
    run_spec(spec, out, progress=False, on_epoch=note)
    """
    procs = [_process(code, tmp_path / "out") for _ in range(2)]
    assert [p.wait(timeout=600) for p in procs] == [0, 0]
    lines = [line.split() for line in log.read_text().splitlines()]
    trained = [(name, epoch) for _, name, epoch in lines]
    assert len(trained) == len(set(trained)) == 10 * 3, "every epoch of every run trained exactly once"
    assert len(_results(tmp_path / "out")) == 10


def test_a_lock_is_held_by_a_live_process_and_taken_over_from_a_dead_one(tmp_path):
    run_file = tmp_path / "p" / "runs" / "adam" / "lr=0.1_seed0.json"
    assert try_lock(run_file) and lock_holder(run_file)["pid"] == os.getpid()
    holder = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from adamlab.lab.runner import try_lock; print(try_lock(sys.argv[1]))",
            str(run_file),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert holder.stdout.strip() == "False", "another process may not take a live lock"
    unlock(run_file)
    # a lock left by a process that is gone is stale: taken over
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run_file.with_name("lr=0.1_seed0.lock").write_text(json.dumps({"host": os.uname().nodename, "pid": dead.pid}))
    assert lock_holder(run_file) is None and try_lock(run_file)
    unlock(run_file)


def test_status_counts_done_running_and_left(one_process, tmp_path):
    text = status_text(one_process)
    assert "done   10" in text and "complete" in text
    spec = _spec()
    R.write_json(tmp_path / R.SPEC_FILE, spec.to_dict())
    text = status_text(tmp_path)
    # nothing trained: 4 grid runs left, and 3 optimisers × 2 extra seeds not yet planned
    assert "left   10" in text and "0 of 10 runs done" in text and "no epoch measured yet" in text


def test_parse_shard_and_devices():
    assert parse_shard("2/4") == (2, 4)
    for bad in ("0/4", "5/4", "x", "1/2/3"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="device must be one of cpu, cuda, mps"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")


def test_training_on_an_explicit_cpu_device_gives_the_default_results(one_process, tmp_path):
    run_spec(_spec(), tmp_path, progress=False, device="cpu")
    assert _results(tmp_path) == _results(one_process)
    record = R.read_json(next(tmp_path.rglob("runs/*/*.json")))
    assert record["device"] == "cpu"


@pytest.mark.slow  # separate processes (each imports torch)
def test_kill_9_then_resume_gives_the_numbers_of_an_uninterrupted_run(one_process, tmp_path):
    # The process kills itself with SIGKILL right after saving epoch 2 of its third run: no cleanup at all (its
    # lock and checkpoint stay behind). The same spec run again takes the stale lock and resumes at epoch 3.
    code = """
    import os, signal
    seen = []
    def kill(path, epoch, entry):
        seen.append(epoch)
        if len(seen) == 3 + 3 + 2:
            os.kill(os.getpid(), signal.SIGKILL)
    run_spec(spec, out, progress=False, on_epoch=kill, checkpoint_every_s=0)  # a checkpoint every epoch
    """
    proc = _process(code, tmp_path)
    assert proc.wait(timeout=600) == -9
    assert list(tmp_path.rglob("*.lock")) and list(tmp_path.rglob("*.ckpt.pt"))
    run_spec(_spec(), tmp_path, progress=False)
    assert _results(tmp_path) == _results(one_process)
    resumed = [json.loads(p.read_text()).get("resumed_at_epoch") for p in tmp_path.rglob("runs/*/*.json")]
    assert [2] in resumed and not list(tmp_path.rglob("*.lock"))
