"""The command line: listing, errors that name the valid choices, and a tiny experiment end to end."""

from __future__ import annotations

import os

import pytest

from adamlab.cli import build_parser, main
from adamlab.lab.experiments import EXPERIMENTS, spec_experiment
from test_lab_helpers import tiny_spec


@pytest.fixture
def tiny_experiment(monkeypatch):
    exp = spec_experiment(
        "tiny",
        "a tiny synthetic experiment",
        lambda *, quick, seed, seeds=None: tiny_spec(epochs=2, seeds=tuple(range(seed, seed + (seeds or 1)))),
    )
    monkeypatch.setitem(EXPERIMENTS, "tiny", exp)
    return exp


def test_list(capsys):
    assert main(["reproduce", "--list"]) == 0
    out = capsys.readouterr().out
    assert "fig1" in out and "theory" in out
    # every experiment with its size, and an estimate or what is not measured yet
    assert "148 runs, 18850 epochs, 3 seeds" in out, "fig1 full: 9+9+18 / 3×(9+9+9+18) grid runs + 11×2 seeds"
    assert out.count("estimate") >= 2 * 5


def test_reproduce_with_seeds_jobs_and_status(tmp_path, capsys, tiny_experiment):
    out = tmp_path / "tiny"
    argv = ["reproduce", "tiny", "--out", str(out), "--seeds", "2", "--jobs", "2", "--device", "cpu", "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "report:" in printed
    assert (out / "p" / "runs" / "adam" / "lr=0.1_seed1.json").is_file() or (
        out / "p" / "runs" / "adam" / "lr=0.01_seed1.json"
    ).is_file()
    assert main(["status", str(out)]) == 0
    assert "complete" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--seeds", "0"], "argument --seeds: must be >= 1"),
        (["--jobs", "0"], "argument --jobs: must be >= 1"),
        (["--shard", "3/2"], "argument --shard: shard K/N needs 1 <= K <= N"),
        (["--device", "tpu"], "argument --device: must be one of cpu, cuda, mps"),
    ],
)
def test_bad_sweep_options_are_explained(capsys, tmp_path, argv, expected, tiny_experiment):
    with pytest.raises(SystemExit) as exc:
        main(["reproduce", "tiny", "--out", str(tmp_path / "o"), *argv])
    assert exc.value.code == 2
    assert expected in capsys.readouterr().err


def test_bad_out_and_data_are_explained(capsys, tmp_path, monkeypatch, tiny_experiment):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(SystemExit) as exc:
        main(["reproduce", "tiny", "--out", str(a_file)])
    assert exc.value.code == 2 and "argument --out: " in capsys.readouterr().err
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if not os.access(locked, os.W_OK):  # (root may write anyway)
            with pytest.raises(SystemExit):
                main(["reproduce", "tiny", "--out", str(locked / "sub")])
            assert "cannot write to" in capsys.readouterr().err
    finally:
        locked.chmod(0o700)
    monkeypatch.setenv("ADAMLAB_DATA", str(tmp_path))
    with pytest.raises(SystemExit) as exc:
        main(["reproduce", "tiny", "--out", str(tmp_path / "o"), "--data", str(tmp_path / "nope")])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert f"argument --data: no such directory: {tmp_path / 'nope'}" in err and "ADAMLAB_DATA" in err
    assert main(["reproduce", "tiny", "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    assert f"data: {tmp_path} (from $ADAMLAB_DATA)" in capsys.readouterr().out


def test_status_of_a_directory_that_is_not_a_run(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["status", str(tmp_path)])
    assert exc.value.code == 2 and "no spec.json" in capsys.readouterr().err


def test_unknown_experiment_exits_2_and_lists_the_valid_ones(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["reproduce", "fig9"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown experiment 'fig9'; valid experiments: fig1" in err and "theory" in err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["reproduce", "fig1", "--fast"],
            "unrecognized arguments: --fast; valid options: --data, --device, --help, --jobs, --list",
        ),
        (["reproduce", "fig1", "--seed", "x"], "invalid int value: 'x'"),
        (["reproduce"], "needs an experiment NAME (valid: fig1"),
        (["bench"], "the following arguments are required: BENCHMARK"),
        (["bench", "stpe"], "invalid choice: 'stpe' (choose from 'step'"),
        (["frobnicate"], "invalid choice: 'frobnicate' (choose from"),
    ],
)
def test_bad_options_and_values_are_explained(capsys, argv, expected):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert expected in capsys.readouterr().err


def test_reproduce_and_report_a_tiny_experiment(tmp_path, capsys, tiny_experiment):
    out = tmp_path / "tiny"
    assert main(["reproduce", "tiny", "--out", str(out), "--seed", "4", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"report:  {out / 'report.md'}" in printed and "tiny.png" in printed
    assert (out / "experiment.json").is_file() and (out / "p" / "runs" / "adam" / "lr=0.1_seed4.json").is_file()
    (out / "report.md").unlink()
    assert main(["report", str(tmp_path)]) == 0, "a folder of runs: each is reported"
    assert (out / "report.md").is_file()
    assert main(["reproduce", "tiny", "--out", str(out), "--seed", "5", "--no-progress"]) == 1
    assert "holds a run of 'tiny'" in capsys.readouterr().err


def test_report_of_an_empty_folder(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["report", str(tmp_path)])
    assert exc.value.code == 2
    assert "no saved experiment" in capsys.readouterr().err


def test_parser_defaults():
    args = build_parser().parse_args(["reproduce", "fig1"])
    assert (args.quick, args.out, args.data, args.seed, args.no_progress) == (False, None, None, 0, False)
    assert build_parser().parse_args(["report"]).dir == "runs"


def test_build_says_what_is_in_use(capsys, monkeypatch):
    from adamlab.kernels import build

    if not build.available():
        pytest.skip("the fused C kernel cannot be built here")
    assert main(["build"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("fused kernel: ready (") and str(build.cache_dir()) in out[0]
    assert out[1].startswith("step bridge: ready (" if build._cxx_compiler() else "step bridge: unavailable")

    def unavailable():
        raise build.KernelUnavailableError("no C compiler found")

    monkeypatch.setattr(build, "build_all", unavailable)
    assert main(["build"]) == 1
    assert "the fused kernel cannot be built here; the optimizers take the reference path: no C compiler" in (
        capsys.readouterr().out
    )
