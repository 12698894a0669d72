"""Check adamlab's optimizers on an accelerator (CUDA, XPU or MPS) in one run: parity with the NumPy oracle for
every option of the one case registry (tests/optim_cases.py), then the step time of adamlab.Adam's device
routes against torch.optim.Adam(fused=True), measured side by side.

    python scripts/device_check.py [--device cuda] [--steps 60] [--numel 25000000] [--json out.json]

Parity: float64 where the device has it (float32 on MPS), ``--steps`` steps on three tensors, every case; the
worst relative difference of the parameters to the oracle must be ≤ 1e-10 (float64) or ≤ 1e-4 (float32).
Timing: one parameter list of ``--numel`` float32 elements in tensors of 1M, interleaved rounds of the three
optimizers (adamlab default route, adamlab impl="foreach", torch fused), the median per step, and the ratios.
Exit status 1 if any parity check fails.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import adamlab
from adamlab.files import write_json
from optim_cases import CASES, case_id


def _sync(device: str) -> None:
    getattr(torch, device).synchronize()


def parity(device: str, steps: int, dtype: torch.dtype) -> list[dict]:
    rows = []
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    for case in CASES:
        _, torch_cls, numpy_cls, opts = case
        for impl in ("auto", "foreach"):
            rng = np.random.default_rng(0)
            thetas = [rng.standard_normal(s).astype(np_dtype) for s in ((7, 5), (13,), (1,))]
            params = [torch.nn.Parameter(torch.from_numpy(t.copy()).to(device)) for t in thetas]
            opt = torch_cls(params, lr=0.01, impl=impl, **opts)
            oracle = numpy_cls(lr=0.01, **opts)
            states = [oracle.init(t) for t in thetas]
            for step in range(steps):
                grads = [(0.5 * np.sin(step / 10) + rng.standard_normal(t.shape)).astype(np_dtype) for t in thetas]
                for p, g in zip(params, grads):
                    p.grad = torch.from_numpy(g.copy()).to(device)
                opt.step()
                for k, g in enumerate(grads):
                    thetas[k], states[k] = oracle.step(thetas[k], g, states[k])
            worst = max(
                float(np.max(np.abs(p.detach().cpu().numpy() - t) / np.maximum(np.abs(t), 1e-3)))
                for p, t in zip(params, thetas)
            )
            rows.append({"case": case_id(case), "impl": impl, "worst_relative": worst})
    return rows


def timing(device: str, numel: int, rounds: int = 15) -> dict:
    chunk = 1_000_000
    sizes = [chunk] * (numel // chunk)
    torch.manual_seed(0)
    makers = {
        "adamlab_auto": lambda ps: adamlab.Adam(ps, lr=1e-3),
        "adamlab_foreach": lambda ps: adamlab.Adam(ps, lr=1e-3, impl="foreach"),
        "torch_fused": lambda ps: torch.optim.Adam(ps, lr=1e-3, fused=True),
    }
    setups = {}
    for name, make in makers.items():
        ps = [torch.nn.Parameter(torch.randn(n, device=device)) for n in sizes]
        for p in ps:
            p.grad = torch.randn_like(p)
        opt = make(ps)
        for _ in range(3):
            opt.step()
        setups[name] = opt
    times: dict[str, list[float]] = {name: [] for name in setups}
    for _ in range(rounds):
        for name, opt in setups.items():
            _sync(device)
            start = time.perf_counter()
            for _ in range(5):
                opt.step()
            _sync(device)
            times[name].append((time.perf_counter() - start) / 5)
    median = {name: statistics.median(ts) for name, ts in times.items()}
    return {
        "numel": numel,
        "seconds_per_step": median,
        "ratio_to_torch_fused": {name: median[name] / median["torch_fused"] for name in median},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "xpu", "mps"])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--numel", type=int, default=25_000_000)
    parser.add_argument("--json", type=Path, default=None, help="write the results here (atomically)")
    args = parser.parse_args()
    backend = getattr(torch, args.device, None)
    if backend is None or not backend.is_available():
        print(f"--device {args.device}: no such device is available here", file=sys.stderr)
        return 2
    dtype = torch.float32 if args.device == "mps" else torch.float64
    limit = 1e-4 if dtype == torch.float32 else 1e-10
    rows = parity(args.device, args.steps, dtype)
    failed = [r for r in rows if not r["worst_relative"] <= limit]
    name = torch.cuda.get_device_name() if args.device == "cuda" else args.device
    print(f"{name}: parity with the NumPy oracle, {len(rows) - len(failed)}/{len(rows)} within {limit:g}")
    for r in failed:
        print(f"  FAIL {r['case']} impl={r['impl']}: {r['worst_relative']:.3g}")
    result = {"device": name, "parity": rows, "timing": timing(args.device, args.numel)}
    for opt_name, ratio in result["timing"]["ratio_to_torch_fused"].items():
        seconds = result["timing"]["seconds_per_step"][opt_name]
        print(f"  {opt_name:16s} {seconds * 1e3:8.3f} ms/step   ×{ratio:.2f} of torch fused")
    if args.json is not None:
        write_json(args.json, result)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
