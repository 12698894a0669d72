"""Smoke test of ``adamlab bench step`` at tiny sizes: structure and coverage, never speed."""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch

from adamlab import bench
from adamlab.kernels import build

pytestmark = pytest.mark.skipif(not build.available(), reason="the fused C kernel cannot be built here")


def test_transformer_layout_is_the_documented_one():
    sizes = bench.LAYOUTS["transformer"][1]
    assert len(sizes) == 196
    assert sum(sizes) == 9_996_224
    assert (min(sizes), max(sizes)) == (224, 258_048)
    small = bench.LAYOUTS["small"][1]
    assert len(small) == 40 and sum(small) == 100_272
    assert bench.LAYOUTS["flat"][1] == [50_000_000]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One quick run through the command-line entry point (``python -m adamlab.bench``), JSON written."""
    out = tmp_path_factory.mktemp("bench") / "step.json"
    threads = torch.get_num_threads()
    assert bench.main(["--quick", "--quiet", "--threads", "1", "2", "--out", str(out)]) == 0
    assert torch.get_num_threads() == threads  # restored
    return json.loads(out.read_text())


def test_every_contender_ran_on_every_layout_and_thread_count(quick_run):
    rows = {(r["layout"], r["threads"], r["contender"]): r for r in quick_run["results"]}
    for layout, (_, sizes) in bench.QUICK_LAYOUTS.items():
        info = quick_run["layouts"][layout]
        assert info["tensors"] == len(sizes) and info["elements"] == sum(sizes)
        for threads in (1, 2):
            for name in bench.contender_names():
                if name == bench.ROOFLINE_TENSORS and len(sizes) == 1:
                    assert (layout, threads, name) not in rows  # the same as the roofline there
                    continue
                row = rows[(layout, threads, name)]
                assert row["steps"] >= 2
                assert 0 < row["median_s"] < 10
                assert math.isclose(row["updates_per_s"], sum(sizes) / row["median_s"])
                assert math.isclose(row["gb_per_s"], 28 * row["updates_per_s"] / 1e9)
                assert row["frac_roofline"] > 0 and row["vs_torch_fused"] > 0
                assert row["peak_extra_bytes"] >= 0
                assert row["peak_extra_frac"] == pytest.approx(row["peak_extra_bytes"] / (4 * sum(sizes)))
            roof = rows[(layout, threads, bench.ROOFLINE)]
            assert roof["frac_roofline"] == pytest.approx(1.0)
            assert rows[(layout, threads, bench.TORCH_FUSED)]["vs_torch_fused"] == pytest.approx(1.0)


def test_run_metadata_and_targets(quick_run):
    assert quick_run["quick"] is True
    assert quick_run["machine"]["kernel_threads"] in ("openmp", "pthreads")
    bridge = quick_run["machine"]["step_bridge"]
    assert bridge == "ready" if build._cxx_compiler() else bridge.startswith("unavailable: ")
    assert quick_run["method"]["bytes_per_update"] == 28
    fields = {(t["layout"], t["contender"], t["field"]) for t in quick_run["targets"]}
    assert fields == {(layout, contender, field) for layout, contender, field, _ in bench.TARGETS}
    for t in quick_run["targets"]:
        assert t["threads"] in (1, 2)
        assert isinstance(t["met"], bool)


def test_peak_memory_sees_a_temporary():
    """The memory probe counts what a step allocates and frees: here one 4 MB temporary, torch-side."""
    x = torch.zeros(1_000_000)
    mem = bench.peak_extra_bytes(lambda: x.add_(x * 2))
    if mem["torch"] is None:
        pytest.skip("the profiler gives no memory events here")
    assert mem["torch"] >= 4_000_000
    assert mem["total"] >= mem["torch"]


def test_table_names_every_contender(quick_run):
    table = bench.format_table(quick_run)
    for name in bench.contender_names():
        assert f"| {name} |" in table
    assert "Targets:" in table


def test_cli_wiring():
    parser = argparse.ArgumentParser(prog="adamlab")
    commands = parser.add_subparsers(dest="command", required=True)
    bench.add_cli(commands)
    args = parser.parse_args(["bench", "step", "--quick", "--threads", "1", "2", "--out", "x.json"])
    assert args.func is bench.run_cli
    assert args.quick and args.threads == [1, 2] and args.out == "x.json"
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "step", "--layouts", "nope"])


def test_unknown_layout_or_contender_is_refused():
    with pytest.raises(ValueError, match="unknown layout"):
        bench.run_step_benchmark(quick=True, layouts=["nope"], progress=False)
    with pytest.raises(ValueError, match="unknown contender"):
        bench.run_step_benchmark(quick=True, contenders=["nope"], progress=False)
