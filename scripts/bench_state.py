"""Speed of the quantised-state step (issue 16) against the fp32 step and the fp32 roofline, interleaved.

Contenders, on ``adamlab bench step``'s flat (5e7 elements) and transformer (196 tensors, ~1e7) layouts, at 1
and 2 threads, run round-robin in one process (``adamlab.bench._measure``: the same warm-up, batch sizing and
rotation as ``adamlab bench step``):

* ``roofline, tensors``: the fp32 roofline loop (``adamlab_roofline_multi``) over the layout's tensors where
  they lie: Adam's memory pattern (28 B a parameter) with trivial arithmetic, the fp32 step's speed limit;
* ``adamlab Adam fp32``: ``adamlab.Adam(impl="fused")``;
* ``adamlab Adam int8``, ``adamlab Adam bf16``, ``adamlab AdaMax int8``: ``adamlab.kernels.quantized``;
* ``bitsandbytes Adam8bit`` where bitsandbytes is installed (``--no-optional`` leaves it out).

Every row gives the update rate (parameters per second) as a ratio to the roofline's rate in the same layout and
thread count (issue 16's target: int8 ≥ 1.3×), the state bytes per parameter, the bytes moved per parameter
and step, and the load average measured before and after that layout × thread count (the machine is shared).
The JSON (written atomically, adamlab.files) also holds the CPU model, its SIMD features and the kernel's
instruction-set build. Run::

    python scripts/bench_state.py --out docs/results/bench-state.json [--isa avx2] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from adamlab import bench, machine
from adamlab.files import write_json
from adamlab.hyperparameters import AdaMaxHyperparameters, AdamHyperparameters
from adamlab.kernels import build
from adamlab.kernels import quantized as Q

ROOFLINE = bench.ROOFLINE_TENSORS
FP32 = "adamlab Adam fp32"
#: contender -> (algorithm, precision) of the quantised steppers.
QUANTISED = {
    "adamlab Adam int8": ("adam", "int8"),
    "adamlab Adam bf16": ("adam", "bf16"),
    "adamlab AdaMax int8": ("adamax", "int8"),
}


class QuantisedStepper:
    """The state of one quantised optimizer over ``params`` (their ``.grad`` as gradients), stepped through
    :func:`adamlab.kernels.quantized.adam_step_quantised` directly."""

    def __init__(self, params: list[torch.nn.Parameter], algorithm: str, precision: str, block: int) -> None:
        self.precision, self.block = precision, block
        self.adamax = algorithm == "adamax"
        self.hp = AdaMaxHyperparameters() if self.adamax else AdamHyperparameters()
        first, second = Q.STATE_DTYPES[precision]
        self.params = [p.detach() for p in params]
        self.grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        self.m = [torch.zeros(p.numel(), dtype=first) for p in params]
        self.v = [torch.zeros(p.numel(), dtype=second) for p in params]
        int8 = precision == "int8"
        self.sm = [torch.zeros(-(-p.numel() // block)) for p in params] if int8 else None
        self.sv = [torch.zeros(-(-p.numel() // block)) for p in params] if int8 else None
        self.steps = [torch.zeros(()) for _ in params]
        self.seeds = list(range(len(params)))

    def step(self) -> None:
        Q.adam_step_quantised(
            self.precision,
            self.params,
            self.grads,
            self.m,
            self.v,
            self.sm,
            self.sv,
            self.steps,
            self.seeds,
            self.hp,
            block_size=self.block,
            adamax=self.adamax,
        )


#: Optional contenders (where importable): name -> (factory of a step function over the parameters, state bytes
#: per parameter). bitsandbytes' Adam8bit keeps tensors under 4096 elements in fp32, as adamlab does.
def optional_contenders() -> dict[str, tuple[Callable[[list[torch.nn.Parameter]], Callable[[], Any]], float]]:
    found: dict[str, tuple[Callable[[list[torch.nn.Parameter]], Callable[[], Any]], float]] = {}
    try:
        import bitsandbytes as bnb  # type: ignore[import-not-found]
    except Exception:  # not installed, or it fails to load here: not measured
        return found
    found["bitsandbytes Adam8bit"] = (lambda params: bnb.optim.Adam8bit(params).step, 2 + 8 / 256)
    return found


def state_bytes(precision: str, block: int) -> float:
    """Bytes of optimizer state per parameter: m and v, and for int8 their two float32 scales per block."""
    return Q.STATE_BYTES[precision] + (8 / block if precision == "int8" else 0.0)


def run(
    layouts: list[str],
    threads: list[int],
    rounds: int,
    per_round: float,
    block: int,
    quick: bool,
    with_optional: bool = True,
) -> dict:
    import adamlab

    table = bench.QUICK_LAYOUTS if quick else bench.LAYOUTS
    optional = optional_contenders() if with_optional else {}
    say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    result: dict[str, Any] = {
        "machine": {
            "processor": machine.cpu_model(),
            "cpu_features": machine.cpu_features(),
            "cpus": os.cpu_count(),
            "kernel_isa": build.isa(),
            "kernel_isas_supported": build.supported_isas(),
            "kernel_threads": build.threading_model(),
            "torch": torch.__version__,
        },
        "method": {
            "rounds": rounds,
            "round_seconds": per_round,
            "statistic": "median step time over all rounds, after warm-up; contenders interleaved",
            "block_size": block,
            "ratio": "roofline's median step time / the contender's (update rate as a multiple of the roofline's)",
        },
        "results": [],
    }
    for layout in layouts:
        sizes = table[layout][1]
        total = sum(sizes)
        params = bench._make_params(sizes)
        steppers: dict[str, Callable[[], Any]] = {
            ROOFLINE: bench._RooflineTensors(params).step,
            FP32: adamlab.Adam(params, impl="fused").step,
        }
        for name, (algorithm, precision) in QUANTISED.items():
            steppers[name] = QuantisedStepper(params, algorithm, precision, block).step
        for name, (factory, _) in optional.items():
            steppers[name] = factory(params)
        for nthreads in threads:
            torch.set_num_threads(nthreads)
            load_before = list(os.getloadavg())
            times = bench._measure(steppers, rounds, per_round, say, f"{layout} × {nthreads} thread(s)")
            load_after = list(os.getloadavg())
            roof = statistics.median(times[ROOFLINE])
            for name, ts in times.items():
                precision = QUANTISED[name][1] if name in QUANTISED else "fp32"
                median = statistics.median(ts)
                moved = None if name in optional else Q.MOVED_BYTES[precision]
                result["results"].append(
                    {
                        "layout": layout,
                        "threads": nthreads,
                        "contender": name,
                        "precision": "int8" if name in optional else precision,
                        "median_s": median,
                        "updates_per_s": total / median,
                        "ratio_to_roofline": roof / median,
                        "state_bytes_per_param": optional[name][1]
                        if name in optional
                        else state_bytes(precision, block),
                        "moved_bytes_per_param": moved,
                        "gb_per_s": None if moved is None else moved * total / median / 1e9,
                        "load_average_before": load_before,
                        "load_average_after": load_after,
                    }
                )
        del steppers, params
    return result


def format_table(result: dict) -> str:
    m = result["machine"]
    lines = [
        f"{m['processor']}, {m['cpus']} CPUs, kernel build {m['kernel_isa']} ({m['kernel_threads']} threads); "
        f"features: {' '.join(f for f in m['cpu_features'] if f.startswith(('avx', 'fma')))}",
        "",
        "| layout | threads | contender | step | × roofline | state B/param | moved B/param | load avg (1 min) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["results"]:
        lines.append(
            f"| {r['layout']} | {r['threads']} | {r['contender']} | {r['median_s'] * 1e3:.2f} ms | "
            f"{r['ratio_to_roofline']:.3g} | {r['state_bytes_per_param']:.2f} | {r['moved_bytes_per_param'] or '?'} | "
            f"{r['load_average_before'][0]:.2f} → {r['load_average_after'][0]:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layouts", nargs="+", default=["flat", "transformer"], choices=sorted(bench.LAYOUTS))
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--round-seconds", type=float, default=0.1)
    parser.add_argument("--block-size", type=int, default=Q.DEFAULT_BLOCK_SIZE)
    parser.add_argument("--isa", default="auto", help="the kernel build: auto, " + ", ".join(build.ISAS))
    parser.add_argument("--quick", action="store_true", help="tiny layouts (a smoke test: the numbers mean little)")
    parser.add_argument("--out", help="write the results as JSON here (atomically)")
    parser.add_argument("--no-optional", action="store_true", help="leave out bitsandbytes even where installed")
    args = parser.parse_args(argv)
    if any(t < 1 for t in args.threads):
        parser.error("--threads: positive counts expected")
    try:
        build.set_isa(args.isa)
    except (ValueError, build.KernelUnavailableError) as exc:
        parser.error(f"--isa: {exc}")
    started = time.perf_counter()
    result = run(
        args.layouts,
        args.threads,
        args.rounds,
        args.round_seconds,
        args.block_size,
        args.quick,
        not args.no_optional,
    )
    result["seconds"] = time.perf_counter() - started
    print(format_table(result))
    if args.out:
        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
