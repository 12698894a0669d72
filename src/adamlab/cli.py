"""The ``adamlab`` command line: a thin door onto :mod:`adamlab.lab` (no logic of its own).

::

    adamlab reproduce NAME [--quick] [--out DIR] [--data DIR] [--seed N] [--seeds N] [--jobs N]
                           [--shard K/N] [--device cpu|cuda|mps] [--no-progress]
    adamlab reproduce --list
    adamlab report [DIR] [--readme README.md]
    adamlab status DIR
    adamlab bench step [--quick] [--threads 1 2] [--out FILE.json]
    adamlab build

New commands are subparsers added in :func:`build_parser`, each calling one module function.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["build_parser", "main"]

QUICK_NOTE = (
    "QUICK RUN: fewer epochs and coarser grids than the paper's protocol; the plots and the report say so, and "
    "their verdicts are about this shortened run. Run without --quick for the full reproduction."
)


def _reproduce(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from adamlab.lab.experiments import EXPERIMENTS, default_out_dir, list_experiments, run_experiment

    if args.list:
        from adamlab.lab.status import estimate_text

        for name, description in list_experiments():
            print(f"{name:10s} {description}")
            for quick in (True, False):
                print(f"{'':10s}   {'--quick' if quick else 'full   '}  {estimate_text(name, quick)}")
        return 0
    valid = ", ".join(sorted(EXPERIMENTS))
    if args.name is None:
        parser.error(f"reproduce needs an experiment NAME (valid: {valid}) or --list")
    if args.name not in EXPERIMENTS:
        parser.error(f"unknown experiment {args.name!r}; valid experiments: {valid}")
    from adamlab.lab import parallel
    from adamlab.lab.runner import DEVICES, parse_shard

    out = Path(args.out) if args.out is not None else default_out_dir(args.name, args.quick)
    if args.seeds is not None and args.seeds < 1:
        parser.error(f"argument --seeds: must be >= 1, got {args.seeds}")
    if args.jobs < 1:
        parser.error(f"argument --jobs: must be >= 1, got {args.jobs}")
    if args.device is not None and args.device not in DEVICES:
        parser.error(f"argument --device: must be one of {', '.join(DEVICES)}, got {args.device!r}")
    try:
        shard = parse_shard(args.shard) if args.shard is not None else None
    except ValueError as exc:
        parser.error(f"argument --shard: {exc}")
    _check_out(out, parser)
    _say_data(args.data, parser)
    created = parallel.init_from_env()  # under torchrun: data-parallel training, rank 0 writes
    if args.quick and parallel.is_writer():
        print(QUICK_NOTE, flush=True)
    try:
        report = run_experiment(
            args.name,
            quick=args.quick,
            out_dir=out,
            data_dir=args.data,
            seed=args.seed,
            progress=not args.no_progress,
            seeds=args.seeds,
            jobs=args.jobs,
            shard=shard,
            device=args.device,
        )
        if not parallel.is_writer():
            return 0
    finally:
        if created:
            import torch.distributed as dist

            dist.destroy_process_group()
    if args.quick:
        print(QUICK_NOTE)
    print(f"results: {out}")
    print(f"report:  {report}")
    for plot in sorted(Path(report).parent.glob("*.png")):
        print(f"plot:    {plot}")
    return 0


def _check_out(out: Path, parser: argparse.ArgumentParser) -> None:
    """``--out`` must be a directory this process can write into (created if missing)."""
    if out.exists() and not out.is_dir():
        parser.error(f"argument --out: {out} is a file, not a directory; choose a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".adamlab-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        parser.error(f"argument --out: cannot write to {out}: {exc.strerror or exc}; choose a writable directory")


def _say_data(data: str | None, parser: argparse.ArgumentParser) -> None:
    """Say which data folder is used; a ``--data`` that does not exist is an error (never a silent fallback)."""
    import os

    from adamlab.data.locate import CACHE_ENV, DATA_ENV, cache_dir

    env = os.environ.get(DATA_ENV)
    if data is not None:
        if not Path(data).is_dir():
            also = f" (${DATA_ENV}={env} is not used when --data is given)" if env else ""
            parser.error(f"argument --data: no such directory: {data}{also}")
        print(f"data: {data} (from --data)", flush=True)
    elif env:
        print(f"data: {env} (from ${DATA_ENV})", flush=True)
    else:
        print(f"data: {cache_dir()} (the download cache, ${CACHE_ENV}; --data DIR names another)", flush=True)


def _status(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from adamlab.lab.results import SPEC_FILE
    from adamlab.lab.status import status_text

    out = Path(args.dir)
    if not (out / SPEC_FILE).is_file() and not (out / "quick" / SPEC_FILE).is_file():
        parser.error(f"no {SPEC_FILE} in {out} or {out / 'quick'}: not the output directory of `adamlab reproduce`")
    print(status_text(out))
    return 0


def _report(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from adamlab.lab.experiments import report_experiment
    from adamlab.lab.results import MANIFEST_FILE

    root = Path(args.dir)
    dirs = [root] if (root / MANIFEST_FILE).is_file() else sorted(p.parent for p in root.glob(f"*/{MANIFEST_FILE}"))
    if not dirs:
        parser.error(f"no saved experiment in {root} (nor in its subdirectories); run `adamlab reproduce` first")
    for d in dirs:
        print(f"report: {report_experiment(d)}")
    if args.readme is not None:
        from adamlab.lab.report import sync_readme

        readme = Path(args.readme)
        if not readme.is_file():
            parser.error(f"argument --readme: no such file: {readme}")
        stale = sync_readme(readme)
        print(f"readme: {readme} ({'updated: ' + ', '.join(stale) if stale else 'already up to date'})")
    return 0


def _build(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from adamlab.kernels import build

    try:
        lines = build.build_all()
    except build.KernelUnavailableError as exc:
        print(f"adamlab: the fused kernel cannot be built here; the optimizers take the reference path: {exc}")
        return 1
    print("\n".join(lines))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: one subparser per command, its handler in ``func``."""
    parser = argparse.ArgumentParser(
        prog="adamlab", description="Adam (Kingma & Ba, 2015): the paper's experiments, reproduced."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    rp = commands.add_parser(
        "reproduce",
        help="run one of the paper's experiments and write its plots and report",
        description="Run an experiment (resuming a previous run in the same --out), then write its report.",
    )
    rp.add_argument("name", nargs="?", metavar="NAME", help="the experiment (see --list)")
    rp.add_argument("--list", action="store_true", help="list the experiments and exit")
    rp.add_argument("--quick", action="store_true", help="a shortened run (minutes): fewer epochs, coarser grids")
    rp.add_argument("--out", metavar="DIR", help="output directory (default: runs/NAME, or runs/NAME-quick)")
    rp.add_argument("--data", metavar="DIR", help="data root (default: $ADAMLAB_DATA, then the download cache)")
    rp.add_argument("--seed", type=int, default=0, metavar="N", help="the run seed (default: 0)")
    rp.add_argument(
        "--seeds", type=int, metavar="N", help="seeds from --seed on (default: the experiment's; fig1: 2 quick, 3 full)"
    )
    rp.add_argument("--jobs", type=int, default=1, metavar="N", help="worker processes, one run each (default: 1)")
    rp.add_argument(
        "--shard",
        metavar="K/N",
        help="run the K-th of N slices of the sweep (N processes or machines sharing --out; see docs/lab.md)",
    )
    rp.add_argument(
        "--device", metavar="DEV", help="cpu, cuda or mps (default: the best available: cuda, then mps, then cpu)"
    )
    rp.add_argument("--no-progress", action="store_true", help="no progress bars")
    rp.set_defaults(func=_reproduce, parser=rp)

    rep = commands.add_parser(
        "report",
        help="rewrite the plots and report of saved results (never re-trains)",
        description="Write plots and report.md from an experiment's saved results.",
    )
    rep.add_argument("dir", nargs="?", default="runs", metavar="DIR", help="a run's directory, or a folder of runs")
    rep.add_argument(
        "--readme",
        metavar="FILE",
        help="also regenerate FILE's blocks marked <!-- adamlab report: DIR --> from their results (e.g. README.md)",
    )
    rep.set_defaults(func=_report, parser=rep)
    st = commands.add_parser(
        "status",
        help="what is done, running and left in a results directory, and the time left",
        description="Count the runs of an experiment's results directory that are done, running (locked by a live "
        "process) and left, per panel, and estimate the time left from the measured seconds per epoch.",
    )
    st.add_argument("dir", metavar="DIR", help="a results directory (the --out of `adamlab reproduce`)")
    st.set_defaults(func=_status, parser=st)
    bp = commands.add_parser(
        "build",
        help="build the fused CPU kernel and the step bridge now (otherwise built on first use)",
        description="Build (or find in the cache) the fused CPU kernel and its C++ step bridge, and say which "
        "are in use. Exit status 1 if the kernel cannot be built (the optimizers then take the reference path).",
    )
    bp.set_defaults(func=_build, parser=bp)
    from adamlab.bench import add_cli

    add_cli(commands)  # adamlab bench step …
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``adamlab`` console script; returns the exit status."""
    from adamlab.data import DataError
    from adamlab.lab.results import ResultsError

    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        options = sorted(s for action in args.parser._actions for s in action.option_strings)
        args.parser.error(f"unrecognized arguments: {' '.join(unknown)}; valid options: {', '.join(options)}")
    try:
        return args.func(args, args.parser)
    except DataError as exc:
        print(f"adamlab: error: {exc}\nOn the command line: --data DIR names the data directory.", file=sys.stderr)
        return 1
    except ResultsError as exc:
        print(f"adamlab: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nadamlab: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
