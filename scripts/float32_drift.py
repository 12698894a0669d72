"""How far each float32 Adam path drifts from the float64 trajectory (issue 14, "float32 drift").

A ReLU MLP (784-128-10) on the first rows of real MNIST (``$ADAMLAB_DATA/mnist``; a synthetic mixture of
Gaussians stands in with ``--synthetic`` or where MNIST is not found) is trained with minibatch Adam
(lr 1e-3, the paper's defaults, §6.2) for ``--steps`` steps, from one float32 initialisation, by:

- ``float64``: adamlab's reference path in float64 (model and optimizer), the yardstick;
- ``adamlab fused``: adamlab.Adam's fused C kernel in float32 (the build in use, see ``--isa``);
- ``adamlab reference``: adamlab.Adam(impl="reference") in float32;
- ``torch fused``: torch.optim.Adam(fused=True) in float32;
- ``torch default``: torch.optim.Adam() in float32 (its for-loop on CPU).

Every float32 path runs the same float32 model (forward and backward), the same minibatches in the same
order; they differ only in the optimizer's arithmetic. The distance of a path at step t is the relative L2
distance of its parameters from the float64 run's, ‖θ₃₂ − θ₆₄‖ / ‖θ₆₄‖, and the difference of its
training loss from the float64 run's. Reported: both at a few steps and their maximum over the run.

Over many steps the trajectories of a ReLU network are chaotic: a ReLU that switches on one side and not on
the other moves every path apart at once, so the distances jump by orders of magnitude at such events, for
all float32 paths alike, and which one happens to stay near the float64 run is luck. The arithmetic itself is
therefore also measured without the model (``one_step_error``): one Adam step at t = 10 on 10^6 coordinates
with realistic θ, g, m, v in float32, each path against the paper's Algorithm 1 evaluated in float64 on the
same float32 inputs; reported as the mean and largest error of θ_t in units of the last place of θ
(ulp), and of the update relative to its size.

Run: ``python scripts/float32_drift.py [--steps 1000] [--isa auto] [--out drift.json]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import torch

import adamlab

PATHS = ("float64", "adamlab fused", "adamlab reference", "torch fused", "torch default")


def make_optimizer(name: str, params: list[torch.nn.Parameter], lr: float, averaging: bool) -> torch.optim.Optimizer:
    """The optimizer of path ``name``; with ``averaging``, adamlab's paths also keep the average θ̄ (§7.2)."""
    if name in ("float64", "adamlab reference"):
        return adamlab.Adam(params, lr=lr, impl="reference", averaging=averaging)
    if name == "adamlab fused":
        return adamlab.Adam(params, lr=lr, impl="fused", averaging=averaging)
    if name == "torch fused":
        return torch.optim.Adam(params, lr=lr, fused=True)
    if name == "torch default":
        return torch.optim.Adam(params, lr=lr, foreach=False)
    raise ValueError(f"unknown path {name!r}; choose from {PATHS}")


def load_rows(rows: int, synthetic: bool) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The first ``rows`` MNIST training rows (float64, pixels / 255) and labels, or a synthetic stand-in."""
    if not synthetic:
        try:
            from adamlab.data.mnist import load_mnist

            x, y = load_mnist("train", download=False)
            return torch.from_numpy(x[:rows]).double(), torch.from_numpy(y[:rows]), f"MNIST, first {rows} rows"
        except (OSError, RuntimeError, ValueError):
            pass
    gen = torch.Generator().manual_seed(1)
    centres = torch.randn(10, 784, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 10, (rows,), generator=gen)
    x = centres[y] + 2.0 * torch.randn(rows, 784, generator=gen, dtype=torch.float64)
    return x, y, f"synthetic: 10 Gaussian clusters in 784 dimensions, {rows} rows"


def make_model(dtype: torch.dtype, hidden: int, seed: int) -> torch.nn.Sequential:
    """784-hidden-10 ReLU MLP, initialised in float32 (torch's default init) and then cast: every path starts
    from the same values."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(784, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10))
    return model.to(dtype)


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().double().reshape(-1) for p in model.parameters()])


def _flat_average(model: torch.nn.Module, opt: torch.optim.Optimizer) -> torch.Tensor | None:
    """adamlab's averaged parameters θ̄ (state "param_avg"), flattened; None where the path keeps none."""
    parts = [opt.state[p].get("param_avg") for p in model.parameters()]
    if any(a is None for a in parts):
        return None
    return torch.cat([a.double().reshape(-1) for a in parts if a is not None])


def measure(
    steps: int = 1000,
    *,
    rows: int = 2048,
    batch: int = 128,
    hidden: int = 128,
    seed: int = 0,
    lr: float = 1e-3,
    averaging: bool = False,
    synthetic: bool = False,
    paths: Sequence[str] = PATHS,
    checkpoints: Sequence[int] = (10, 100, 300, 1000),
) -> dict[str, Any]:
    """Train every path in lockstep for ``steps`` steps; the distances from the float64 run (see the module
    docstring). Returns {"data", "steps", "paths": {path: {"param_rel": {t: d}, "loss_abs": {t: d},
    "max_param_rel", "max_loss_abs", "final_loss"}}}; with ``averaging`` also "max_average_rel", the largest
    relative distance of adamlab's averaged parameters θ̄ from the float64 run's."""
    if "float64" not in paths:
        raise ValueError("paths must include 'float64', the yardstick")
    x64, y, data = load_rows(rows, synthetic)
    gen = torch.Generator().manual_seed(seed + 1)
    order = [torch.randint(0, rows, (batch,), generator=gen) for _ in range(steps)]
    runs = {}
    for name in paths:
        dtype = torch.float64 if name == "float64" else torch.float32
        model = make_model(dtype, hidden, seed)
        runs[name] = (model, make_optimizer(name, list(model.parameters()), lr, averaging), x64.to(dtype))
    marks = {t for t in checkpoints if t <= steps} | {steps}
    out: dict[str, Any] = {"data": data, "steps": steps, "batch": batch, "hidden": hidden, "lr": lr}
    out["averaging"] = averaging
    out["paths"] = {}
    for name in paths:
        out["paths"][name] = {"param_rel": {}, "loss_abs": {}, "max_param_rel": 0.0, "max_loss_abs": 0.0}
    loss_fn = torch.nn.functional.cross_entropy
    for t in range(1, steps + 1):
        idx = order[t - 1]
        losses = {}
        for name, (model, opt, x) in runs.items():
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            losses[name] = float(loss.detach())
        ref = _flat(runs["float64"][0])
        ref_avg = _flat_average(*runs["float64"][:2]) if averaging else None
        for name in paths:
            if name == "float64":
                continue
            row = out["paths"][name]
            rel = float((_flat(runs[name][0]) - ref).norm() / ref.norm())
            dloss = abs(losses[name] - losses["float64"])
            row["max_param_rel"] = max(row["max_param_rel"], rel)
            row["max_loss_abs"] = max(row["max_loss_abs"], dloss)
            avg = _flat_average(*runs[name][:2]) if ref_avg is not None else None
            if avg is not None and ref_avg is not None:
                avg_rel = float((avg - ref_avg).norm() / ref_avg.norm())
                row["max_average_rel"] = max(row.get("max_average_rel", 0.0), avg_rel)
            if t in marks:
                row["param_rel"][t] = rel
                row["loss_abs"][t] = dloss
        if t == steps:
            for name in paths:
                out["paths"][name]["final_loss"] = losses[name]
    return out


def one_step_error(
    n: int = 1_000_000, t: int = 10, seed: int = 0, paths: Sequence[str] = PATHS[1:]
) -> dict[str, dict[str, float]]:
    """One Adam step (lr 1e-3, β 0.9/0.999, ε 1e-8) at step t of each float32 path from the same float32
    θ, g, m, v, against the paper's Algorithm 1 in float64 on those inputs. Per path: ``mean_ulp`` and
    ``max_ulp``, the error of θ_t in units of the last place of the larger of |θ_{t-1}|, |θ_t|;
    ``mean_rel_update``, the error relative to the exact update |Δθ|."""
    lr, b1, b2, eps = 1e-3, 0.9, 0.999, 1e-8
    gen = torch.Generator().manual_seed(seed)
    theta = torch.randn(n, generator=gen) * 0.1
    scale = 10.0 ** (torch.rand(n, generator=gen) * 4 - 3)  # gradients from 1e-3 to 10
    g = torch.randn(n, generator=gen) * scale
    m = torch.randn(n, generator=gen) * scale * 0.3
    v = (torch.randn(n, generator=gen) * scale) ** 2 * (1 - b2**t) + 1e-20
    d = [x.double() for x in (theta, g, m, v)]
    m1 = b1 * d[2] + (1 - b1) * d[1]
    v1 = b2 * d[3] + (1 - b2) * d[1] ** 2
    exact = d[0] - lr * (m1 / (1 - b1**t)) / ((v1 / (1 - b2**t)).sqrt() + eps)
    big = torch.maximum(exact.abs(), d[0].abs()).float()  # ulp of the larger of θ_{t-1}, θ_t: no cancellation
    ulp = torch.nextafter(big, torch.tensor(float("inf"))).double() - big.double()
    update = (exact - d[0]).abs()
    out = {}
    for name in paths:
        p = torch.nn.Parameter(theta.clone())
        opt = make_optimizer(name, [p], lr, averaging=False)
        opt.state[p] = {  # type: ignore[index]
            "step": torch.tensor(float(t - 1), dtype=torch.float32),
            "exp_avg": m.clone(),
            "exp_avg_sq": v.clone(),
        }
        p.grad = g.clone()
        opt.step()
        err = (p.detach().double() - exact).abs()
        out[name] = {
            "mean_ulp": float((err / ulp).mean()),
            "max_ulp": float((err / ulp).max()),
            "mean_rel_update": float((err / update).mean()),
        }
    return out


def format_table(result: dict[str, Any]) -> str:
    marks = sorted(next(iter(r["param_rel"] for n, r in result["paths"].items() if n != "float64")))
    lines = [
        f"{result['data']}; MLP 784-{result['hidden']}-10, batch {result['batch']}, Adam lr {result['lr']:g}"
        f"{' with averaging' if result['averaging'] else ''}, "
        f"{result['steps']} steps. Distance from the float64 run: ‖θ32 − θ64‖/‖θ64‖ (and |loss32 − loss64|).",
        "",
        "| path | " + " | ".join(f"step {t}" for t in marks) + " | max over the run |",
        "|---|" + "--:|" * (len(marks) + 1),
    ]
    for name, row in result["paths"].items():
        if name == "float64":
            continue
        cells = [f"{row['param_rel'][t]:.2e} ({row['loss_abs'][t]:.1e})" for t in marks]
        average = f"; θ̄ {row['max_average_rel']:.2e}" if "max_average_rel" in row else ""
        lines.append(
            f"| {name} | " + " | ".join(cells) + f" | {row['max_param_rel']:.2e} ({row['max_loss_abs']:.1e}){average} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--averaging", action="store_true", help="adamlab's paths keep the average θ̄ (§7.2)")
    parser.add_argument("--synthetic", action="store_true", help="a synthetic data set instead of MNIST")
    parser.add_argument("--isa", default="auto", choices=["auto", "scalar", "avx2", "avx512"])
    parser.add_argument("--out", default=None, metavar="FILE.json")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be positive")
    from adamlab.kernels import build

    torch.set_num_threads(1)
    build.set_isa(args.isa)
    if args.lr <= 0:
        parser.error("--lr must be positive")
    result = measure(
        args.steps, rows=args.rows, seed=args.seed, lr=args.lr, averaging=args.averaging, synthetic=args.synthetic
    )
    result["kernel_isa"] = build.isa()
    result["one_step"] = one_step_error()
    print(format_table(result))
    if args.out:
        from adamlab.files import write_json

        write_json(args.out, json.loads(json.dumps(result)))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
