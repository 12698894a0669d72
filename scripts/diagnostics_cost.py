"""Side by side, in one process: Adam.diagnostics() as of commit c49519c (quantiles over up to 1 M coordinates,
after a randperm of all of them) against now (a sample of 65,536 coordinates) on Figure 2a's network
(1.8 M parameters), alternating, the median CPU time of 7 calls each on one torch thread; prints both results.

Run: ``python scripts/diagnostics_cost.py``
"""

from __future__ import annotations

import os
import statistics
import time

import torch

import adamlab
from adamlab.lab.networks import dropout_mlp

QUANTILES = torch.tensor([0.5, 0.9, 0.99], dtype=torch.float64)


def old_summary(x: torch.Tensor, max_coordinates: int, gen: torch.Generator) -> dict[str, float]:
    """adamlab.optim.base._summary as of commit c49519c."""
    x = x[torch.isfinite(x)]
    n = x.numel()
    sample = x if n <= max_coordinates else x[torch.randperm(n, generator=gen)[:max_coordinates]]
    q = torch.quantile(sample, QUANTILES)
    return {
        "count": n,
        "mean": float(x.mean()),
        "q50": float(q[0]),
        "q90": float(q[1]),
        "q99": float(q[2]),
        "max": float(x.max()),
    }


@torch.no_grad()
def old_diagnostics(opt: adamlab.Adam, max_coordinates: int = 1_000_000, seed: int = 0) -> dict[str, dict]:
    """AdamFamily.diagnostics as of commit c49519c (one process, no DTensors)."""
    ratios, snrs = [], []
    for group in opt.param_groups:
        for p in group["params"]:
            r, s = opt._effective_ratio(opt.state[p], group)
            ratios.append(r.reshape(-1).double())
            snrs.append(s.reshape(-1).double())
    gen = torch.Generator().manual_seed(seed)
    return {
        "step_over_lr": old_summary(torch.cat(ratios), max_coordinates, gen),
        "snr": old_summary(torch.cat(snrs), max_coordinates, gen),
    }


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = dropout_mlp()
    opt = adamlab.Adam(model.parameters(), lr=1e-3)
    x, y = torch.randn(128, 784), torch.randint(0, 10, (128,))
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    before, now = [], []
    for _ in range(7):
        t = time.process_time()
        a = old_diagnostics(opt)
        before.append(time.process_time() - t)
        t = time.process_time()
        b = opt.diagnostics()
        now.append(time.process_time() - t)
    old_s, new_s = statistics.median(before), statistics.median(now)
    n = sum(p.numel() for p in model.parameters())
    print(f"{n:,} parameters; CPU s per call: before {old_s:.3f}, now {new_s:.3f}, ratio {old_s / new_s:.1f}x")
    for key in ("step_over_lr", "snr"):
        print(key, {s: (round(a[key][s], 4), round(b[key][s], 4)) for s in ("mean", "q50", "q90", "q99", "max")})
    print("load average", os.getloadavg())


if __name__ == "__main__":
    main()
