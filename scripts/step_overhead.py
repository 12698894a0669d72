"""Where a fused step's time goes around the kernel (docs/performance.md, "The step around the kernel").

On the benchmark's transformer layout, interleaved round-robin like ``adamlab bench step``, medians:

- ``roofline``: the roofline loop over flat buffers (the speed limit);
- ``kernel call``: the fused kernel alone, called as the cached plan calls it (no checks);
- ``step``: ``adamlab.Adam.step()`` as shipped (the C++ bridge's checks, adamlab's step wrapper);
- ``step, Python checks``: the same with the bridge switched off (the plan checked in Python);
- ``step, torch's wrapper``: the same as ``step``, inside torch.optim's own step wrapper (which enters the
  profiler's ``record_function`` on every step) instead of adamlab's.

Run: ``python scripts/step_overhead.py [--threads 1 2] [--rounds 60] [--layout small] [--isa avx2]`` (about a
minute per thread count).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.optim import Optimizer

import adamlab
from adamlab.bench import LAYOUTS, _make_params, _Roofline
from adamlab.kernels import build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--layout", default="transformer", choices=sorted(LAYOUTS))
    parser.add_argument("--isa", default="auto", choices=["auto", *build.ISAS], help="the kernel build to run")
    args = parser.parse_args()
    if args.isa != "auto" and args.isa not in build.supported_isas():
        parser.error(f"--isa {args.isa}: this CPU runs {', '.join(build.supported_isas())}")
    build.set_isa(args.isa)
    if build.bridge(wait=True) is None:
        raise SystemExit(f"the step bridge is unavailable: {build.bridge_error()}")
    sizes = LAYOUTS[args.layout][1]
    params = _make_params(sizes)
    opt = adamlab.Adam(params)
    opt.step()
    plan = opt._plans[0]
    hp = opt._hyperparameters(0, opt.param_groups[0])
    plan.try_step(opt.param_groups[0]["params"], hp)  # fills plan.grad_ptrs
    roofline = _Roofline(sum(sizes), params)
    bridged = build.bridge()
    torch_wrapped = Optimizer.profile_hook_step(type(opt).step.__wrapped__)

    def python_checks() -> None:
        build._bridge = None  # as where the bridge cannot be built
        try:
            opt.step()
        finally:
            build._bridge = bridged

    contenders = {
        "roofline": roofline.step,
        "kernel call": lambda: plan._run(hp, plan.grad_ptrs),
        "step": opt.step,
        "step, Python checks": python_checks,
        "step, torch's wrapper": lambda: torch_wrapped(opt),
    }
    print(
        f"{args.layout}: {len(sizes)} tensors, {sum(sizes):,} elements; {args.rounds} rounds of 5 steps each; "
        f"kernel build {build.isa()}"
    )
    for nthreads in args.threads:
        torch.set_num_threads(nthreads)
        times: dict[str, list[float]] = {name: [] for name in contenders}
        names = list(contenders)
        for f in contenders.values():
            f()
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                for _ in range(5):
                    start = time.perf_counter()
                    contenders[name]()
                    times[name].append(time.perf_counter() - start)
        base = statistics.median(times["roofline"])
        print(f"\n{nthreads} thread(s)\n\n| | median | of roofline | above the kernel call |\n|---|--:|--:|--:|")
        kernel = statistics.median(times["kernel call"])
        for name, ts in times.items():
            t = statistics.median(ts)
            print(f"| {name} | {t * 1e3:.3f} ms | {base / t:.3f} | {(t - kernel) * 1e6:+.0f} µs |")


if __name__ == "__main__":
    main()
