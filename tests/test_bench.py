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
    assert bench.LAYOUTS["bf16"][1] == sizes and bench.LAYOUTS["fp16"][1] == sizes
    assert bench.HALF_LAYOUTS == {
        "bf16": torch.bfloat16,
        "fp16": torch.float16,
        "bf16-flat": torch.bfloat16,
        "fp16-flat": torch.float16,
    }
    # the half layouts beyond the L3: 5e7 elements, 14 B each moved: 700 MB
    assert bench.LAYOUTS["bf16-flat"][1] == bench.LAYOUTS["fp16-flat"][1] == [50_000_000]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One quick run through the command-line entry point (``python -m adamlab.bench``), JSON written."""
    out = tmp_path_factory.mktemp("bench") / "step.json"
    threads = torch.get_num_threads()
    assert bench.main(["--quick", "--quiet", "--no-optional", "--threads", "1", "2", "--out", str(out)]) == 0
    assert torch.get_num_threads() == threads  # restored
    return json.loads(out.read_text())


def test_every_contender_ran_on_every_layout_and_thread_count(quick_run):
    rows = {(r["layout"], r["threads"], r["contender"]): r for r in quick_run["results"]}
    for layout, (_, sizes) in bench.QUICK_LAYOUTS.items():
        info = quick_run["layouts"][layout]
        assert info["tensors"] == len(sizes) and info["elements"] == sum(sizes)
        for threads in (1, 2):
            for name in bench.contender_names():
                if name in bench.OPTIONAL:
                    assert (layout, threads, name) not in rows  # --no-optional
                    continue
                if layout in bench.HALF_LAYOUTS and name not in bench.HALF_CONTENDERS:
                    assert (layout, threads, name) not in rows  # float32 only
                    continue
                if name in bench.STATE_ONLY and layout not in bench.STATE_LAYOUTS:
                    assert (layout, threads, name) not in rows  # the quantised state: flat and transformer
                    continue
                if name == bench.ROOFLINE_TENSORS and len(sizes) == 1:
                    assert (layout, threads, name) not in rows  # the same as the roofline there
                    continue
                row = rows[(layout, threads, name)]
                assert row["steps"] >= 2
                assert 0 < row["median_s"] < 10
                assert math.isclose(row["updates_per_s"], sum(sizes) / row["median_s"])
                per_update = 14 if layout in bench.HALF_LAYOUTS else 28
                if name in bench.STATE_CONTENDERS or name == bench.STATE_OPTIMIZER:
                    per_update = 20 if "bf16" in name else 16  # read θ, g, m, v; write θ, m, v
                assert row["moved_bytes_per_param"] == per_update
                assert math.isclose(row["gb_per_s"], per_update * row["updates_per_s"] / 1e9)
                assert row["frac_roofline"] > 0 and row["vs_torch_fused"] > 0
                assert row["peak_extra_bytes"] >= 0
                element = 2 if layout in bench.HALF_LAYOUTS else 4
                assert row["peak_extra_frac"] == pytest.approx(row["peak_extra_bytes"] / (element * sum(sizes)))
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
    assert set(quick_run["skipped"]) == set(bench.OPTIONAL)  # --no-optional: each named, with the reason
    assert all(why for why in quick_run["skipped"].values())


def test_state_targets_are_computed_from_the_rows(quick_run):
    """Issue 16's targets: int8 state's update rate over the fp32 roofline's (≥ 1.3), from the medians."""
    rows = {(r["layout"], r["threads"], r["contender"]): r for r in quick_run["results"]}
    checked = [t for t in quick_run["targets"] if "int8 state" in t["contender"]]
    assert {(t["layout"], t["contender"]) for t in checked} == {
        (layout, name)
        for layout in ("flat", "transformer")
        for name in ("adamlab Adam int8 state", "adamlab AdaMax int8 state")
    }
    for t in checked:
        roof = rows[(t["layout"], t["threads"], bench.ROOFLINE)]["median_s"]
        mine = rows[(t["layout"], t["threads"], t["contender"])]["median_s"]
        assert t["field"] == "frac_roofline" and t["threshold"] == 1.3
        assert t["value"] == pytest.approx(roof / mine)
        assert t["met"] is (roof / mine >= 1.3)
    half_flat = {
        (t["layout"], t["field"], t["threshold"]) for t in quick_run["targets"] if t["layout"].endswith("-flat")
    }
    assert half_flat == {
        (layout, field, threshold)
        for layout in ("bf16-flat", "fp16-flat")
        for field, threshold in (("frac_roofline", 0.9), ("vs_torch_fused", 1.2))
    }


def _expected_state_bytes(name, sizes, block=256):
    """State bytes per parameter from the formats' definitions (docs/quantised-state.md; torch's fp32 state),
    per tensor: its one-element step (4 B) and m, v: fp32 8 B an element; bf16 4; int8 2, plus two float32
    scales per block. The optimizer keeps tensors under 4096 elements in fp32."""
    total = 0
    for n in sizes:
        blocks = -(-n // block)
        int8 = 2 * n + 8 * blocks + 4
        if name in ("adamlab Adam int8 state", "adamlab AdaMax int8 state"):
            total += int8
        elif name == bench.STATE_OPTIMIZER:
            total += int8 if n >= 4096 else 8 * n + 4
        elif name == "adamlab Adam bf16 state":
            total += 4 * n + 4
        elif name in (bench.ROOFLINE, bench.ROOFLINE_TENSORS):
            total += 8 * n
        else:  # torch's and adamlab's fp32 optimizers
            total += 8 * n + 4
    return total / sum(sizes)


@pytest.mark.parametrize("layout", ["flat", "transformer"])
def test_state_bytes_come_from_the_state_tensors(quick_run, layout):
    sizes = bench.QUICK_LAYOUTS[layout][1]
    rows = [r for r in quick_run["results"] if r["layout"] == layout]
    names = {r["contender"] for r in rows}
    assert set(bench.STATE_CONTENDERS) | {bench.STATE_OPTIMIZER, bench.TORCH_FUSED, bench.ROOFLINE} <= names
    for r in rows:
        want = _expected_state_bytes(r["contender"], sizes)
        if r["contender"] == bench.ROOFLINE and len(sizes) > 1:
            want = 8.0  # flat buffers of the layout's size
        assert r["state_bytes_per_param"] == pytest.approx(want, rel=1e-12), r["contender"]
    table = bench.format_table(quick_run)
    assert "state B/param" in table


def test_state_bytes_count_a_shared_table_once():
    """A tensor shared by several states (bitsandbytes' quantisation map) counts once; views of one storage too."""
    shared = torch.zeros(256)
    codes = torch.zeros(1000, dtype=torch.uint8)

    class Holder:
        def state_tensors(self):
            return [codes, codes[:10], shared, shared]

    assert bench.state_bytes_per_param(Holder(), 1000) == pytest.approx((1000 + 4 * 256) / 1000)


def test_quantised_rows_are_checked_before_timing(quick_run):
    assert quick_run["machine"]["state_verified"] == dict.fromkeys([*bench.STATE_CONTENDERS, bench.STATE_OPTIMIZER], 0)


def test_a_wrong_quantised_kernel_is_not_timed(monkeypatch, capsys):
    """The quantised-state check fails when the kernel's entry computes something else (here: θ's first entry
    moved after the step): those rows are skipped with the reason, the others still run."""
    from adamlab.kernels import quantized

    real = quantized.adam_step_quantised

    def wrong(precision, params, *args, **kwargs):
        out = real(precision, params, *args, **kwargs)
        params[0].view(-1)[0] += 1.0
        return out

    monkeypatch.setattr(quantized, "adam_step_quantised", wrong)
    with pytest.raises(RuntimeError, match="disagrees with the reference path"):
        bench.verify_state(build.isa(), "adamlab Adam bf16 state")
    result = bench.run_step_benchmark(
        quick=True,
        layouts=["transformer"],
        threads=(1,),
        contenders=[bench.ROOFLINE, "adamlab Adam", "adamlab Adam int8 state"],
        repeats=1,
        memory=False,
    )
    assert "disagrees with the reference path" in result["skipped"]["adamlab Adam int8 state"]
    assert {r["contender"] for r in result["results"]} == {bench.ROOFLINE, "adamlab Adam"}
    assert "skipping adamlab Adam int8 state: the kernel's" in capsys.readouterr().err
    assert "Skipped adamlab Adam int8 state: the kernel's" in bench.format_table(result)


def test_an_absent_optional_contender_is_skipped_with_the_reason(monkeypatch, capsys):
    monkeypatch.setitem(bench.OPTIONAL, bench.BITSANDBYTES, "no_such_module_for_adamlab")
    assert bench.optional_skipped()[bench.BITSANDBYTES] == "no_such_module_for_adamlab is not installed"
    assert bench.BITSANDBYTES not in bench.contender_names()
    result = bench.run_step_benchmark(
        quick=True,
        layouts=["flat"],
        threads=(1,),
        contenders=[bench.ROOFLINE, bench.BITSANDBYTES],
        repeats=1,
        memory=False,
    )
    assert result["skipped"] == {bench.BITSANDBYTES: "no_such_module_for_adamlab is not installed"}
    assert {r["contender"] for r in result["results"]} == {bench.ROOFLINE}
    assert not any(t["field"] == "vs_bitsandbytes" for t in result["targets"])
    assert "skipping bitsandbytes Adam8bit: no_such_module_for_adamlab is not installed" in capsys.readouterr().err
    # named on the command line: not "unknown", but skipped with the reason
    argv = ["--quick", "--layouts", "small", "--threads", "1", "--repeats", "1", "--no-memory", "--quiet"]
    assert bench.main([*argv, "--contenders", bench.ROOFLINE, bench.BITSANDBYTES]) == 0
    assert "Skipped bitsandbytes Adam8bit: no_such_module_for_adamlab is not installed." in capsys.readouterr().out


def test_a_wrong_eight_bit_contender_is_not_timed():
    """The check against torch.optim.Adam catches an optimizer that computes something else (10 % larger lr)
    and passes one that matches it."""
    assert bench.verify_eight_bit(lambda ps: torch.optim.Adam(ps, lr=1e-3)) < 1e-6
    with pytest.raises(RuntimeError, match=r"differs from torch\.optim\.Adam's by 10"):
        bench.verify_eight_bit(lambda ps: torch.optim.Adam(ps, lr=1.1e-3))


@pytest.mark.parametrize(
    ("name", "module"),
    [
        (bench.BITSANDBYTES, "bitsandbytes"),
        pytest.param(bench.TORCHAO, "torchao", marks=pytest.mark.slow),  # torch.compile per shape
    ],
)
def test_eight_bit_contender_where_installed(name, module):
    """An 8-bit contender, where installed: checked against torch.optim.Adam, timed beside adamlab's int8 state,
    the ratio and its ≥ 10× target computed from the two medians, its state bytes from its state tensors."""
    pytest.importorskip(module)
    result = bench.run_step_benchmark(
        quick=True,
        layouts=["transformer"],
        threads=(1,),
        contenders=[bench.ROOFLINE, "adamlab Adam int8 state", name],
        repeats=2,
        memory=False,
        progress=False,
    )
    assert name not in result["skipped"]
    assert 0 <= result["machine"]["eight_bit_verified"][name] <= bench.EIGHT_BIT_TOLERANCE
    rows = {r["contender"]: r for r in result["results"]}
    theirs, mine = rows[name], rows["adamlab Adam int8 state"]
    field = bench.EIGHT_BIT[name]
    assert mine[field] == pytest.approx(theirs["median_s"] / mine["median_s"])
    assert theirs["gb_per_s"] is None and theirs["moved_bytes_per_param"] is None
    sizes = bench.QUICK_LAYOUTS["transformer"][1]
    eight_bit = sum(n for n in sizes if n >= 4096 and (name == bench.BITSANDBYTES or n % 256 == 0))
    # 1 B an element for each moment where quantised, 8 where fp32; plus scales and maps: 2-8 B/param
    assert (2 * eight_bit + 8 * (sum(sizes) - eight_bit)) / sum(sizes) < theirs["state_bytes_per_param"]
    assert theirs["state_bytes_per_param"] < (2.2 * eight_bit + 8.1 * (sum(sizes) - eight_bit)) / sum(sizes) + 0.2
    targets = {t["layout"]: t for t in result["targets"] if t["field"] == field}
    assert set(targets) == {"flat", "transformer"} and targets["flat"]["met"] is None  # flat: not run here
    target = targets["transformer"]
    assert (target["contender"], target["threshold"]) == ("adamlab Adam int8 state", 10.0)
    assert target["value"] == mine[field] and target["met"] is (mine[field] >= 10)
    if name in bench.COMPILED:
        assert [w["contender"] for w in result["warmups"]] == [name]


def test_peak_memory_sees_a_temporary():
    """The memory probe counts what a step allocates and frees: here one 4 MB temporary, torch-side."""
    x = torch.zeros(1_000_000)
    mem = bench.peak_extra_bytes(lambda: x.add_(x * 2))
    if mem["torch"] is None:
        pytest.skip("the profiler gives no memory events here")
    assert mem["torch"] >= 4_000_000
    assert mem["total"] >= mem["torch"]


@pytest.mark.parametrize(
    ("layout", "dtype"),
    [("bf16", "bfloat16"), ("fp16", "float16"), ("bf16-flat", "bfloat16"), ("fp16-flat", "float16")],
)
def test_half_layouts_run_in_their_dtype(quick_run, layout, dtype):
    info = quick_run["layouts"][layout]
    assert info["dtype"] == dtype and info["bytes_per_update"] == 14
    assert info["param_bytes"] == 2 * info["elements"]


def test_verification_checks_half_precision_bit_for_bit(quick_run):
    verified = quick_run["machine"]["kernel_isa_verified"]
    assert verified["Adam bfloat16: entries not bit-equal to torch fused"] == 0
    assert verified["Adam float16: entries not bit-equal to torch fused"] == 0


def test_table_names_every_contender(quick_run):
    table = bench.format_table(quick_run)
    for name in bench.contender_names():
        assert f"| {name} |" in table or f"Skipped {name}: " in table
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


def test_run_records_the_cpu_and_the_verified_build(quick_run):
    machine = quick_run["machine"]
    assert machine["kernel_isa_requested"] == "auto"
    assert machine["kernel_isa"] == build.supported_isas()[-1]  # auto: the best this CPU runs
    assert machine["kernel_isas_supported"] == build.supported_isas()
    assert machine["cpu_features"] == build.cpu_features()
    assert set(machine["kernel_isa_verified"]) == {
        "Adam",
        "Adam amsgrad+decoupled wd+averaging",
        "AdaMax",
        "AdaMax L2 wd",
        "Adam bfloat16: entries not bit-equal to torch fused",
        "Adam float16: entries not bit-equal to torch fused",
    }
    assert all(0 <= e < 1e-4 for e in machine["kernel_isa_verified"].values())
    assert f"kernel build: {machine['kernel_isa']}" in bench.format_table(quick_run)


@pytest.mark.parametrize("isa", build.ISAS)
def test_isa_option_runs_that_build(isa, monkeypatch):
    """``--isa X`` verifies and times build X (every adamlab step in the run goes through it), then restores
    the build in use; a build this CPU cannot run is refused up front."""
    if isa not in build.supported_isas():
        with pytest.raises(ValueError, match=f"cannot run the {isa} build"):
            bench.run_step_benchmark(quick=True, isa=isa, progress=False)
        return
    seen = []
    real_step = bench._contenders()["adamlab Adam"]

    def spy(ps):
        opt = real_step(ps)
        step = opt.step

        def wrapped(*args, **kwargs):
            seen.append(build.isa())
            return step(*args, **kwargs)

        opt.step = wrapped
        return opt

    monkeypatch.setattr(bench, "_contenders", lambda: {**dict.fromkeys(["adamlab Adam"], spy)})
    before = build.isa()
    result = bench.run_step_benchmark(
        quick=True,
        isa=isa,
        layouts=["small"],
        threads=(1,),
        contenders=["adamlab Adam"],
        repeats=1,
        memory=False,
        progress=False,
    )
    assert result["machine"]["kernel_isa"] == isa
    assert seen and set(seen) == {isa}
    assert build.isa() == before


def test_verify_build_catches_a_wrong_kernel(monkeypatch):
    """The pre-timing check fails when the fused path computes something else (here: its lr doubled)."""
    import adamlab

    assert max(bench.verify_build(build.isa()).values()) < 1e-5
    real = adamlab.Adam.__init__

    def doubled(self, params, lr=1e-3, *args, impl="auto", **kwargs):
        real(self, params, lr * (2 if impl == "fused" else 1), *args, impl=impl, **kwargs)

    monkeypatch.setattr(adamlab.Adam, "__init__", doubled)
    with pytest.raises(RuntimeError, match="disagrees with the reference path on Adam"):
        bench.verify_build(build.isa())


def test_verify_build_catches_a_wrong_half_precision_kernel(monkeypatch):
    """The half-precision check fails when the kernel's bf16/fp16 step computes something else (here: its lr
    doubled)."""
    from adamlab.hyperparameters import AdamHyperparameters
    from adamlab.kernels import half

    monkeypatch.setattr(half, "AdamHyperparameters", lambda: AdamHyperparameters(lr=2e-3))
    with pytest.raises(RuntimeError, match="disagrees with torch's fused Adam on Adam bfloat16"):
        bench.verify_build(build.isa())


def test_isa_option_refuses_a_build_the_cpu_cannot_run(monkeypatch, capsys):
    monkeypatch.setattr(build, "supported_isas", lambda: ["scalar"])
    with pytest.raises(SystemExit):
        bench.main(["--quick", "--isa", "avx2"])
    assert "--isa avx2: this CPU cannot run that build; it runs scalar (or auto)" in capsys.readouterr().err


def test_contenders_option(capsys):
    """``--contenders`` runs just those (names as in the table); an unknown name is refused, naming the choices."""
    parser = argparse.ArgumentParser(prog="adamlab")
    bench.add_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", "step", "--contenders", "adamlab Adam", "roofline"])
    assert args.contenders == ["adamlab Adam", "roofline"]
    with pytest.raises(SystemExit):
        bench.main(["--quick", "--contenders", "adamlab Adam", "SGD"])
    assert "--contenders: unknown 'SGD'; choose from" in capsys.readouterr().err


def test_deepspeed_targets_only_where_it_ran():
    rows = [
        {"layout": "small", "threads": 1, "contender": c, "median_s": s}
        for c, s in (("roofline", 1.0), ("adamlab Adam", 2.0), ("adamlab AdaMax", 4.0), (bench.TORCH_FUSED, 6.0))
    ]
    result = {"results": [dict(r) for r in rows]}
    bench._add_ratios(result["results"])
    assert not any(t["field"] == "vs_deepspeed" for t in bench.check_targets(result))
    result = {
        "results": [*map(dict, rows), {"layout": "small", "threads": 1, "contender": bench.DEEPSPEED, "median_s": 3.0}]
    }
    bench._add_ratios(result["results"])
    checks = {(t["contender"], t["layout"]): t for t in bench.check_targets(result) if t["field"] == "vs_deepspeed"}
    assert checks[("adamlab Adam", "small")]["value"] == pytest.approx(1.5) and checks[("adamlab Adam", "small")]["met"]
    assert checks[("adamlab AdaMax", "small")]["value"] == pytest.approx(0.75)
    assert checks[("adamlab AdaMax", "small")]["met"] is False
    assert checks[("adamlab Adam", "flat")]["met"] is None  # not run


def test_an_eight_bit_target_is_not_judged_where_no_8bit_state_was_kept():
    """torchao keeps fp32 state for a tensor whose size is not a multiple of 256 (the flat layout's 5e7): there
    its row is no 8-bit step, and the ≥ 10× target says so instead of a verdict."""
    rows = [
        {"layout": "flat", "threads": 1, "contender": c, "median_s": t, "state_bytes_per_param": b}
        for c, t, b in (
            ("roofline", 1.0, 8.0),
            ("adamlab Adam int8 state", 1.0, 2.03),
            (bench.TORCHAO, 2.0, 8.0),
            (bench.BITSANDBYTES, 30.0, 4.07),  # partly 8-bit (small tensors in fp32): judged
            (bench.DEEPSPEED, 1.5, 8.0),
        )
    ]
    bench._add_ratios(rows)
    bench.check_targets({"results": rows})
    checks = {(t["field"], t["layout"]): t for t in bench.check_targets({"results": rows})}
    torchao = checks[("vs_torchao", "flat")]
    assert torchao["value"] == pytest.approx(2.0) and torchao["met"] is None
    assert torchao["note"] == "not judged: torchao AdamW8bit kept 8.00 B/param of state here (no 8-bit state)"
    assert checks[("vs_bitsandbytes", "flat")]["value"] == pytest.approx(30.0)
    assert checks[("vs_bitsandbytes", "flat")]["met"] is True and "note" not in checks[("vs_bitsandbytes", "flat")]
    assert len(bench.DEEPSPEED_TARGETS) == 6  # not grown by the calls
