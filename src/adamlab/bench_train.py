"""``adamlab bench train NAME``: the lab's training epoch against a plain hand-written torch loop.

For an experiment's model (``fig2a``: the 784-1000-1000-10 dropout MLP; ``fig4``: the VAE; ``fig3``: the CNN),
both sides train the same model with the same optimiser (``adamlab.Adam``, α = 1e-3) on the same training set,
minibatches of the panel's size (128), on ``threads`` torch threads, and after every epoch evaluate the
objective on the whole training set (the lab's "training cost"):

* **lab**: :func:`adamlab.lab.runner.run_spec` on the experiment's first panel with one optimiser setting and
  one seed, into a temporary directory — everything the lab does per epoch counts: the minibatch loop, the
  full-set evaluation, Adam's §2.1 diagnostics, the run file and the checkpoint.
* **hand-written** (:class:`HandWritten`): ``for idx in randperm(n).split(128): loss = f(model(X[idx]),
  y[idx]); zero_grad; backward; step``, then the full-set objective under ``no_grad`` in chunks of 16,384 —
  nothing else.

The two alternate epoch by epoch in one process (:func:`interleaved_epochs`: the lab's epoch callback runs
one hand-written epoch), so that the load of a shared machine, which drifts over minutes, weighs on both
alike; ``rounds`` repeats this with fresh models, ``epochs`` epochs each, the first epoch of each side in
every round a warm-up that is not counted. The result is the ratio of the medians, lab / hand-written
(target ≤ 1.1), of the wall-clock time and of this process's CPU time (``time.process_time``; one thread, so
on a machine shared with other jobs it measures the work done rather than the share of the cores obtained),
with the CPU model (:func:`adamlab.machine.cpu_model`) and the load average before and after.

Run ``adamlab bench train fig2a`` (or ``fig4``, ``fig3``); ``--examples N`` trains on N examples only (a
subsample drawn with the data set's fixed data seed). Other experiments add themselves with
:func:`register_train_bench`.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import adamlab
from adamlab.files import write_json
from adamlab.machine import cpu_model

__all__ = [
    "TARGET_RATIO",
    "TRAIN_BENCHES",
    "HandWritten",
    "TrainBench",
    "add_train_cli",
    "handwritten_epochs",
    "interleaved_epochs",
    "register_train_bench",
    "run_train_benchmark",
]

#: The lab's epoch may take at most this many times the hand-written loop's.
TARGET_RATIO = 1.1
LEARNING_RATE = 1e-3
EVAL_CHUNK = 16384

Loss = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class TrainBench:
    """An experiment's model to time: ``spec()`` builds the experiment's (full) spec, whose first panel's
    model, data and batch size are used; ``loss(model, x, y, generator)`` is the hand-written loop's mean
    minibatch objective (the same quantity as the lab's objective)."""

    name: str
    description: str
    spec: Callable[[], Any]
    loss: Loss


def _cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return F.cross_entropy(model(x, generator), y)


def _elbo(model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return model(x, generator).mean()


def _fig2a_spec() -> Any:
    from adamlab.lab.experiments.fig2a import build_spec

    return build_spec()


def _fig4_spec() -> Any:
    from adamlab.lab.experiments.fig4 import build_spec

    return build_spec()


def _fig3_spec() -> Any:
    from adamlab.lab.experiments.fig3 import build_spec

    return build_spec()


TRAIN_BENCHES: dict[str, TrainBench] = {
    "fig2a": TrainBench("fig2a", "Figure 2a: MLP 784-1000-1000-10 with dropout", _fig2a_spec, _cross_entropy),
    "fig4": TrainBench("fig4", "Figure 4: VAE 784-500-(50+50), 50-500-784", _fig4_spec, _elbo),
    "fig3": TrainBench("fig3", "Figure 3: CNN c64-c64-c128-1000 with dropout", _fig3_spec, _cross_entropy),
}


def register_train_bench(bench: TrainBench) -> None:
    """Make ``adamlab bench train <bench.name>`` time another experiment's model."""
    TRAIN_BENCHES[bench.name] = bench


def _bench_panel(bench: TrainBench, epochs: int, examples: int | None, dataset: Any | None) -> Any:
    """The experiment's first panel with one optimiser (Adam, α = 1e-3), ``epochs`` epochs and, if given, the
    first ``examples`` examples or another data set."""
    from adamlab.lab.spec import OptimizerSpec

    panel = bench.spec().panels[0]
    data_spec = dataset if dataset is not None else panel.dataset
    if examples is not None:
        data_spec = dataclasses.replace(data_spec, options={**data_spec.options, "subsample": examples})
    adam = OptimizerSpec("adam", "Adam", "adam", {}, {"lr": (LEARNING_RATE,)})
    return dataclasses.replace(panel, dataset=data_spec, optimizers=(adam,), epochs=epochs, probes=())


def _clock() -> tuple[float, float]:
    """(wall-clock, this process's CPU time) in seconds."""
    return time.perf_counter(), time.process_time()


def _intervals(stamps: list[tuple[float, float]]) -> list[tuple[float, float]]:
    return [(b[0] - a[0], b[1] - a[1]) for a, b in itertools.pairwise(stamps)]


class HandWritten:
    """The plain loop of one experiment's model, one epoch per :meth:`epoch` call: ``for idx in
    randperm(n).split(batch): loss = f(model(X[idx]), y[idx]); zero_grad; backward; step``, then the objective
    over the whole set under ``no_grad`` in chunks of 16,384 — nothing else. Same initialisation scheme,
    optimiser (adamlab.Adam, α = 1e-3) and batch size as the lab's run."""

    def __init__(self, panel: Any, data: Any, loss: Loss, seed: int = 0) -> None:
        from adamlab.lab.models import build_model, init_parameters

        self.X = torch.from_numpy(data.X)
        self.y = torch.from_numpy(data.y)
        self.batch_size = panel.batch_size
        self.loss = loss
        self.model = build_model(panel.model, data.n_features, data.n_classes)
        init_parameters(self.model, panel.model.init_std, torch.Generator().manual_seed(seed))
        self.optimizer = adamlab.Adam(self.model.parameters(), lr=LEARNING_RATE)
        self.shuffle = torch.Generator().manual_seed(seed + 1)
        self.noise = torch.Generator().manual_seed(seed + 2)

    def epoch(self) -> float:
        """Train one epoch, then return the full-set objective."""
        model, X, y = self.model, self.X, self.y
        model.train()
        for idx in torch.randperm(len(y), generator=self.shuffle).split(self.batch_size):
            value = self.loss(model, X[idx], y[idx], self.noise)
            self.optimizer.zero_grad(set_to_none=True)
            value.backward()
            self.optimizer.step()
        model.eval()
        total = 0.0
        with torch.no_grad():
            for a in range(0, len(y), EVAL_CHUNK):
                xb, yb = X[a : a + EVAL_CHUNK], y[a : a + EVAL_CHUNK]
                total += float(self.loss(model, xb, yb, self.noise)) * len(yb)
        return total / len(y)


def handwritten_epochs(
    panel: Any, data: Any, loss: Loss, threads: int, seed: int = 0
) -> tuple[list[tuple[float, float]], float]:
    """(wall, CPU) seconds of each hand-written epoch after the first, and the final full-set objective (the
    hand-written loop alone, not interleaved with the lab)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        hand = HandWritten(panel, data, loss, seed)
        stamps, cost = [_clock()], float("nan")
        for _ in range(panel.epochs):
            cost = hand.epoch()
            stamps.append(_clock())
        return _intervals(stamps)[1:], cost
    finally:
        torch.set_num_threads(previous)


def interleaved_epochs(
    panel: Any, data: Any, loss: Loss, data_dir: str | os.PathLike[str] | None, threads: int
) -> tuple[list[tuple[float, float]], list[tuple[float, float]], float]:
    """The lab's epochs and the hand-written ones, alternating epoch by epoch in one process.

    The lab trains ``panel`` through :func:`adamlab.lab.runner.run_spec` (one setting, one seed, into a
    temporary directory); its epoch callback runs one hand-written epoch (:class:`HandWritten`) and stamps the
    clocks before and after. A lab epoch is the time from the end of one callback's hand-written epoch to the
    next callback (so everything the lab does per epoch counts: the minibatches, the full-set evaluation, the
    diagnostics, the run file and the checkpoint); a hand-written epoch is the time inside the callback. The
    two alternate every few seconds, so a change of the machine's load affects both alike. The first epoch of
    each (warm-up; the lab's includes its set-up) is not counted. Returns (lab, hand-written) (wall, CPU)
    seconds and the hand-written loop's final objective."""
    from adamlab.lab.runner import run_spec
    from adamlab.lab.spec import ExperimentSpec

    spec = ExperimentSpec(name="bench-train", title="bench", panels=(panel,), seeds=(0,))
    lab: list[tuple[float, float]] = []
    hand: list[tuple[float, float]] = []
    cost = [float("nan")]
    last: list[tuple[float, float]] = []
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        written = HandWritten(panel, data, loss)

        def on_epoch(*_: Any) -> None:
            now = _clock()
            if last:
                lab.append(_intervals([last[-1], now])[0])
            cost[0] = written.epoch()
            after = _clock()
            hand.append(_intervals([now, after])[0])
            last.append(after)

        with tempfile.TemporaryDirectory(prefix="adamlab-bench-train-") as tmp:
            run_spec(spec, tmp, data_dir=data_dir, progress=False, on_epoch=on_epoch, threads=threads)
    finally:
        torch.set_num_threads(previous)
    return lab, hand[1:], cost[0]


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on this platform
        return None


def run_train_benchmark(
    name: str,
    *,
    epochs: int = 3,
    rounds: int = 2,
    examples: int | None = None,
    threads: int = 1,
    data_dir: str | os.PathLike[str] | None = None,
    dataset: Any | None = None,
) -> dict[str, Any]:
    """Time the lab's epoch and the hand-written one for experiment ``name`` (see the module docstring).

    ``dataset``: a :class:`~adamlab.lab.spec.DatasetSpec` replacing the experiment's (tests use a synthetic
    one). Returns the per-epoch times of both, their medians, ``ratio`` = lab / hand-written and whether it
    meets :data:`TARGET_RATIO`."""
    from adamlab.lab.datasets import load_dataset

    if name not in TRAIN_BENCHES:
        raise ValueError(f"unknown model {name!r} for bench train; valid: {', '.join(sorted(TRAIN_BENCHES))}")
    for arg, value, low in (("epochs", epochs, 2), ("rounds", rounds, 1), ("threads", threads, 1)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{arg} must be an integer >= {low}, got {value!r}")
    if examples is not None and (not isinstance(examples, int) or examples < 1):
        raise ValueError(f"examples must be a positive integer or None, got {examples!r}")
    bench = TRAIN_BENCHES[name]
    panel = _bench_panel(bench, epochs, examples, dataset)
    data = load_dataset(panel.dataset, data_dir)
    if data.sparse:
        raise ValueError(f"bench train times dense data only; {panel.dataset.name!r} is sparse")
    load_before = _load()
    lab: list[tuple[float, float]] = []
    hand: list[tuple[float, float]] = []
    cost = float("nan")
    for _ in range(rounds):
        lab_times, hand_times, cost = interleaved_epochs(panel, data, bench.loss, data_dir, threads)
        lab += lab_times
        hand += hand_times
    medians = {
        f"median_{side}_{clock}_s": statistics.median(t[i] for t in times)
        for side, times in (("lab", lab), ("handwritten", hand))
        for i, clock in enumerate(("wall", "cpu"))
    }
    ratio = medians["median_lab_wall_s"] / medians["median_handwritten_wall_s"]
    cpu_ratio = medians["median_lab_cpu_s"] / medians["median_handwritten_cpu_s"]
    return {
        "benchmark": "train",
        "model": name,
        "description": bench.description,
        "data": data.info.get("description", panel.dataset.name),
        "examples": data.n_examples,
        "batch_size": panel.batch_size,
        "epochs_per_round": epochs,
        "rounds": rounds,
        "threads": threads,
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "load_average_before": load_before,
        "load_average_after": _load(),
        "lab_epoch_wall_s": [t[0] for t in lab],
        "lab_epoch_cpu_s": [t[1] for t in lab],
        "handwritten_epoch_wall_s": [t[0] for t in hand],
        "handwritten_epoch_cpu_s": [t[1] for t in hand],
        **medians,
        "ratio": ratio,
        "cpu_ratio": cpu_ratio,
        "target_ratio": TARGET_RATIO,
        "target_met": ratio <= TARGET_RATIO,
        "cpu_target_met": cpu_ratio <= TARGET_RATIO,
        "handwritten_final_cost": cost,
    }


def format_result(result: dict[str, Any]) -> str:
    """A few lines for the console."""
    load = result["load_average_before"], result["load_average_after"]

    def times(side: str, clock: str) -> str:
        median = result[f"median_{side}_{clock}_s"]
        each = ", ".join(f"{t:.2f}" for t in result[f"{side}_epoch_{clock}_s"])
        return f"median {median:.3f} s ({each})"

    def verdict(ratio: float) -> str:
        return f"{ratio:.3f} (target ≤ {result['target_ratio']}: " + (
            "met)" if ratio <= result["target_ratio"] else "NOT met)"
        )

    return "\n".join(
        [
            f"bench train {result['model']}: {result['description']}",
            f"  data: {result['data']}; batch {result['batch_size']}; {result['threads']} thread(s); "
            f"{result['rounds']} round(s) of {result['epochs_per_round']} epochs (first of each not counted)",
            f"  CPU: {result['cpu']}; load average (1, 5, 15 min) before {load[0]}, after {load[1]}",
            f"  lab epoch:          wall {times('lab', 'wall')}; CPU {times('lab', 'cpu')}",
            f"  hand-written epoch: wall {times('handwritten', 'wall')}; CPU {times('handwritten', 'cpu')}",
            f"  ratio lab / hand-written: wall {verdict(result['ratio'])}; CPU time {verdict(result['cpu_ratio'])}",
            "  (on a shared machine the wall-clock ratio is noisy; the CPU-time ratio is the work each does,",
            "  without the lab's waits for its file writes)",
        ]
    )


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", choices=sorted(TRAIN_BENCHES), help="the experiment whose model is timed")
    parser.add_argument("--epochs", type=_positive, default=3, help="epochs per round, ≥ 2 (first is warm-up)")
    parser.add_argument("--rounds", type=_positive, default=2, help="alternating rounds (default 2)")
    parser.add_argument("--examples", type=_positive, default=None, help="train on this many examples only")
    parser.add_argument("--threads", type=_positive, default=1, help="torch threads (default 1, as the lab)")
    parser.add_argument("--data", default=None, help="the data root (default $ADAMLAB_DATA)")
    parser.add_argument("--out", default=None, help="also write the result as JSON to this file")


def run_cli(args: argparse.Namespace, parser: argparse.ArgumentParser | None = None) -> int:
    if args.epochs < 2:
        message = "--epochs must be at least 2 (the first epoch of each round is a warm-up)"
        if parser is not None:
            parser.error(message)
        raise ValueError(message)
    result = run_train_benchmark(
        args.model,
        epochs=args.epochs,
        rounds=args.rounds,
        examples=args.examples,
        threads=args.threads,
        data_dir=args.data,
    )
    print(format_result(result))
    if args.out:
        write_json(Path(args.out), result)
        print(f"  written to {args.out}")
    return 0


def add_train_cli(commands: Any) -> argparse.ArgumentParser:
    """Add ``train`` to ``adamlab bench``'s subcommands (``commands``, an argparse subparsers object)."""
    train = commands.add_parser(
        "train",
        help="time the lab's training epoch against a hand-written torch loop",
        description="Time the lab's training epoch of an experiment's model against a plain hand-written torch "
        "loop of the same model and optimiser; print the ratio (target ≤ 1.1).",
    )
    add_arguments(train)
    train.set_defaults(func=run_cli, parser=train)
    return train


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m adamlab.bench_train fig2a [--epochs 3] [--rounds 2] [--examples N] [--out FILE.json]``."""
    parser = argparse.ArgumentParser(prog="python -m adamlab.bench_train", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run_cli(parser.parse_args(argv), parser)


if __name__ == "__main__":
    import sys

    sys.exit(main())
