"""``adamlab reproduce theory``: the convergence theory of §4–§5, executable, as a lab experiment of three tasks.

1. ``logistic`` — online logistic regression with sparse features (the setting §4's remark on sparse
   gradients favours): Adam with the theory's schedule (α_t = α/√t, β1,t = β1·λ^(t−1), ε = 0), AdaGrad and
   projected SGD, each with its best α of a small grid (as §6 reports the best of a grid); R(T)/T against T,
   and Theorem 4.1's three terms beside Adam's measured regret.
2. ``counterexample`` — Reddi, Kale & Kumar (2018): f_t(x) = C·x if t mod 3 = 1 else −x on [−1, 1] (C = 3,
   β1 = 0, β2 = 1/(1 + C²)), and their 1010/−10 period-101 sequence with β1 = 0.9, β2 = 0.99, online and
   stochastic (1010 with probability 0.01). Adam drifts to +1 with R(T)/T bounded away from 0; AMSGrad
   (Reddi et al.'s: ``Adam(amsgrad=True, bias_correction=False)``), AdaGrad and SGD go to −1. The proof's
   assumption Γ_t = √v̂_t/α_t − √v̂_{t−1}/α_{t−1} ≥ 0 is checked at every step.
3. ``limits`` — §5: Adam with β1 = 0, α_t = α/√t and bias correction approaches AdaGrad's trajectory as
   β2 → 1; the gap max_t ‖θ_t^Adam − θ_t^AdaGrad‖∞ against 1 − β2 (and without bias correction, which does not).

Each is a task of the lab (:class:`~adamlab.lab.spec.TaskSpec`, registered here as ``"theory.<name>"``), trained
by the lab's runner (resume, locks, ``--jobs``, ``--shard``, ``adamlab status``) into ``tasks/<name>_seed<S>.json``;
:func:`write_report` (in :mod:`~adamlab.lab.experiments.theory_report`) rebuilds the plots and ``report.md`` from
those files alone. Everything is deterministic given the seed. The library (problems, regret, the bound) is
:mod:`adamlab.theory`.

The regret-vs-bound crossing of the C = 3 counterexample is found at every round t ≤ ``T_cross`` (a run with a
checkpoint at each round), not at log-spaced checkpoints only.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from adamlab.lab.runner import register_task
from adamlab.lab.spec import ExperimentSpec, TaskSpec
from adamlab.numpy import Adam
from adamlab.progress import progress as progress_bar
from adamlab.theory.baselines import AdaGrad, OnlineGradientDescent
from adamlab.theory.bound import check_preconditions, theorem41_bound
from adamlab.theory.problems import (
    reddi_counterexample,
    reddi_periodic,
    reddi_stochastic,
    sparse_logistic,
    stack_linear,
)
from adamlab.theory.regret import OnlineRun, log_checkpoints, run_online

EXPERIMENTS = ("logistic", "counterexample", "limits")

SETTINGS: dict[str, dict[str, dict]] = {
    "full": {
        "logistic": {
            "T": 20000,
            "dim": 500,
            "active": 8,
            "zipf": 1.1,
            "radius": 1.0,
            "checkpoints": 25,
            "beta1": 0.9,
            "beta2": 0.999,
            "lam": 1 - 1e-8,
            "grid": {
                "Adam": [0.01, 0.03, 0.1, 0.3, 1.0],
                "AdaGrad": [0.03, 0.1, 0.3, 1.0],
                "SGD": [0.03, 0.1, 0.3, 1.0],
            },
        },
        "counterexample": {
            "C": 3.0,
            "T_c": 100000,
            "T_periodic": 300000,
            "stochastic_runs": 8,
            "alpha": 1.0,
            "checkpoints": 150,
            "sweep_T": 10000,
            "sweep_alphas": [0.01, 0.1, 1.0, 10.0],
            "T_cross": 1000,
        },
        "limits": {
            "T": 2000,
            "dim": 50,
            "active": 5,
            "alpha": 0.3,
            "one_minus_beta2": [1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7],
        },
    },
    "quick": {
        "logistic": {
            "T": 2000,
            "dim": 100,
            "active": 5,
            "zipf": 1.1,
            "radius": 1.0,
            "checkpoints": 12,
            "beta1": 0.9,
            "beta2": 0.999,
            "lam": 1 - 1e-8,
            "grid": {"Adam": [0.03, 0.3], "AdaGrad": [0.1, 0.3], "SGD": [0.1, 0.3]},
        },
        "counterexample": {
            "C": 3.0,
            "T_c": 3000,
            "T_periodic": 20000,
            "stochastic_runs": 4,
            "alpha": 1.0,
            "checkpoints": 60,
            "sweep_T": 2000,
            "sweep_alphas": [0.1, 1.0, 10.0],
            "T_cross": 1000,
        },
        "limits": {"T": 300, "dim": 20, "active": 4, "alpha": 0.3, "one_minus_beta2": [1e-1, 1e-3, 1e-5]},
    },
}


# ---------------------------------------------------------------------------------------------- helpers


def _slope(T: np.ndarray, y: np.ndarray, t_min: float) -> float:
    """Least-squares slope of log y against log T over T ≥ t_min and y > 0 (NaN with < 3 points)."""
    T, y = np.asarray(T, float), np.asarray(y, float)
    keep = (t_min <= T) & (y > 0)
    if keep.sum() < 3:
        return float("nan")
    return float(np.polyfit(np.log(T[keep]), np.log(y[keep]), 1)[0])


def _violations(run: OnlineRun, coord: int, period: int | None) -> dict:
    """Where Γ_{t,i} = √v̂_{t,i}/α_t − √v̂_{t−1,i}/α_{t−1} < 0 along the run, for coordinate ``coord``."""
    if run.gamma is None:
        return {"defined": False}
    g = run.gamma[:, coord]
    bad = np.flatnonzero(g < 0) + 1  # rounds t (1-based)
    out: dict[str, Any] = {
        "defined": True,
        "count": int(bad.size),
        "steps": int(run.T - 1),
        "fraction": float(bad.size / max(run.T - 1, 1)),
        "first": int(bad[0]) if bad.size else None,
        "min_gamma": float(np.nanmin(g)) if run.T > 1 else None,
    }
    if period:
        counts = Counter(int(r) for r in bad % period)
        out["residues"] = {str(r): counts[r] for r in sorted(counts)}
        out["period"] = period
    return out


def _late(run: OnlineRun, regret: np.ndarray) -> tuple[float, np.ndarray]:
    """The regret rate over the second half, (R(T) − R(T/2))/(T − T/2), and the mean of θ_t over
    t ∈ (T/2, T] per coordinate: what Adam's drift costs per step once the transient is over."""
    h = int(np.searchsorted(run.checkpoints, run.T // 2))
    Th = run.checkpoints[h]
    rate = (regret[-1] - regret[h]) / (run.T - Th)
    return rate, run.recorded("trajectory")[Th:].mean(axis=0)


def _halving(T: int, n: int) -> np.ndarray:
    """Log-spaced checkpoints that include T/2 (for :func:`_late`)."""
    return np.union1d(log_checkpoints(T, n), [max(T // 2, 1)])


def _progress(iterable, desc: str, enabled: bool):
    return progress_bar(iterable, desc=desc, enabled=enabled, leave=False)


# ------------------------------------------------------------------------------------------ experiment 1


def experiment_logistic(cfg: dict, seed: int, progress: bool) -> dict:
    """Online sparse logistic regression: R(T)/T of Adam (theory's schedule), AdaGrad, SGD; Theorem 4.1."""
    P = sparse_logistic(cfg["T"], cfg["dim"], active=cfg["active"], zipf=cfg["zipf"], radius=cfg["radius"], seed=seed)
    cps = log_checkpoints(cfg["T"], cfg["checkpoints"])
    for Tk in _progress(cps, "θ* in hindsight", progress):
        P.best_fixed_point(int(Tk))
    make: dict[str, Any] = {
        "Adam": lambda a: Adam(
            lr=a, betas=(cfg["beta1"], cfg["beta2"]), eps=0.0, lr_decay="sqrt", beta1_decay=cfg["lam"]
        ),
        "AdaGrad": lambda a: AdaGrad(lr=a, eps=0.0),
        "SGD": lambda a: OnlineGradientDescent(lr=a, lr_decay="sqrt"),
    }
    out: dict = {"problem": repr(P), "optimizers": {}}
    for name, grid in cfg["grid"].items():
        table: list[dict] = []
        best: tuple[Any, Any] | None = None
        for a in grid:
            opt = make[name](a)
            run = run_online(P, opt, checkpoints=cps, name=f"{name} α={a:g}", progress=progress)
            table.append({"alpha": a, "avg_regret": float(run.average_regret[-1]), "seconds": run.seconds})
            if best is None or run.regret[-1] < best[1].regret[-1]:
                best = (opt, run)
        assert best is not None  # the grid is not empty
        opt, run = best
        entry = {
            "alpha": opt.lr,
            "optimizer": run.optimizer,
            "grid": table,
            "T": run.checkpoints,
            "avg_regret": run.average_regret,
            "regret": run.regret,
            "final_avg_regret": float(run.average_regret[-1]),
            "slope": _slope(run.checkpoints, run.average_regret, cfg["T"] / 100),
            "dist_to_best": float(np.linalg.norm(run.x_final - run.x_star[-1])),
        }
        if name == "Adam":
            bounds = theorem41_bound(run, opt)
            entry["bound"] = [b.as_dict() for b in bounds]
        out["optimizers"][name] = entry
    return out


# ------------------------------------------------------------------------------------------ experiment 2


def _reddi_optimizers(alpha: float, beta1: float, beta2: float, sgd_alpha: float) -> dict:
    """Adam (Algorithm 1, bias-corrected, ε = 0, α/√t), Reddi et al.'s AMSGrad (max of v, no bias
    correction), AdaGrad (ε = 0) and projected SGD with Zinkevich's α = D/G∞."""
    common: dict[str, Any] = {"lr": alpha, "betas": (beta1, beta2), "eps": 0.0, "lr_decay": "sqrt"}
    return {
        "Adam": Adam(**common),
        "AMSGrad": Adam(**common, amsgrad=True, bias_correction=False),
        "AdaGrad": AdaGrad(lr=alpha, eps=0.0),
        "SGD": OnlineGradientDescent(lr=sgd_alpha, lr_decay="sqrt"),
    }


def experiment_counterexample(cfg: dict, seed: int, progress: bool) -> dict:
    """Reddi et al.'s counterexamples: drift of Adam to +1, regret, and where the proof's assumption fails."""
    online, stochastic = _reddi_1010(cfg, seed, progress)
    return {
        "C": cfg["C"],
        "reddi_C": _reddi_C(cfg, progress),
        "reddi_1010": online,
        "reddi_1010_stochastic": stochastic,
        "adam_alpha_sweep": _adam_alpha_sweep(cfg),
    }


def _reddi_C(cfg: dict, progress: bool) -> dict:
    """f_t = C·x if t mod 3 = 1 else −x, β1 = 0, β2 = 1/(1 + C²); Theorem 4.1 evaluated for Adam."""
    C, alpha = cfg["C"], cfg["alpha"]
    beta2 = 1.0 / (1.0 + C * C)
    P = reddi_counterexample(cfg["T_c"], C)
    cps = _halving(cfg["T_c"], cfg["checkpoints"])
    res: dict = {"problem": repr(P), "C": C, "beta1": 0.0, "beta2": beta2, "x_star": -1.0, "optimizers": {}}
    for name, opt in _reddi_optimizers(alpha, 0.0, beta2, 2.0 / C).items():
        run = run_online(P, opt, checkpoints=cps, record_gamma=True, record_trajectory=True, progress=progress)
        rate, x_late = _late(run, run.regret)
        entry = {
            "optimizer": run.optimizer,
            "x_final": float(run.x_final[0]),
            "final_avg_regret": float(run.average_regret[-1]),
            "late_regret_rate": float(rate),
            "x_mean_late": float(x_late[0]),
            "T": run.checkpoints,
            "avg_regret": run.average_regret,
            "x": run.x_played[:, 0],
            "x_first": run.recorded("trajectory")[:60, 0],
            "gamma_first": run.gamma[:60, 0] if run.gamma is not None else None,
            "proof_assumption": _violations(run, 0, 3),
            "seconds": run.seconds,
        }
        if name == "Adam":  # β1 = 0: every precondition of Theorem 4.1 holds; evaluate it
            bounds = theorem41_bound(run, opt)
            tot = np.array([b.total for b in bounds])
            below = np.flatnonzero(run.regret <= tot)
            last_below = below[-1] if below.size else -1
            entry["bound_total"] = tot
            entry["bound"] = bounds[-1].as_dict()
            entry["regret_final"] = float(run.regret[-1])
            # the first checkpoint from which on the measured regret stays above the bound (None: it never does)
            stays = last_below + 1 < len(tot)
            entry["bound_exceeded_from"] = int(run.checkpoints[last_below + 1]) if stays else None
        res["optimizers"][name] = entry
    res["limit_avg_regret_adam_at_plus1"] = 2 * (C - 2) / 3
    res["crossing"] = bound_crossing(C, alpha, int(cfg.get("T_cross", 1000)))
    return res


def bound_crossing(C: float, alpha: float, T: int) -> dict[str, Any]:
    """Where Adam's regret on f_t = C·x if t mod 3 = 1 else −x (β1 = 0, β2 = 1/(1+C²), α/√t, ε = 0) crosses
    Theorem 4.1's bound, checked at every round t ≤ T: the first round with R(t) > bound, the rounds after it
    with R(t) ≤ bound again (and their residues mod 3), and the round from which R(t) stays above (``None``
    if it never passes the bound, or does not stay above by T)."""
    P = reddi_counterexample(T, C)
    opt = Adam(lr=alpha, betas=(0.0, 1.0 / (1.0 + C * C)), eps=0.0, lr_decay="sqrt")
    run = run_online(P, opt, checkpoints=np.arange(1, T + 1))
    bound = np.array([b.total for b in theorem41_bound(run, opt)])
    t = run.checkpoints
    above = run.regret > bound
    if not above.any():
        return {"T": T, "first_above": None, "below_after": [], "residues_mod3": [], "above_from": None}
    first = int(t[np.argmax(above)])
    below = t[(~above) & (t > first)]
    stays = not (below.size and int(below[-1]) == T)
    return {
        "T": T,
        "first_above": first,
        "below_after": [int(x) for x in below],
        "residues_mod3": sorted({int(x) % 3 for x in below}),
        "last_below": int(below[-1]) if below.size else None,
        "above_from": (int(below[-1]) + 1 if below.size else first) if stays else None,
    }


def _reddi_1010(cfg: dict, seed: int, progress: bool) -> tuple[dict, dict]:
    """1010/−10 with period 101, online (coordinate 0) and K stochastic draws (coordinates 1..K) in one stacked
    run; β1 = 0.9 (constant, as Reddi et al. ran it), β2 = 0.99."""
    T, K, alpha = cfg["T_periodic"], cfg["stochastic_runs"], cfg["alpha"]
    online = reddi_periodic(T)
    stoch = reddi_stochastic(T, runs=K, seed=seed)
    P = stack_linear("reddi-1010: online + stochastic draws", [online, stoch])
    cps = _halving(T, cfg["checkpoints"])
    res_on: dict = {"problem": repr(online), "beta1": 0.9, "beta2": 0.99, "x_star": -1.0, "optimizers": {}}
    res_st: dict = {"problem": repr(stoch), "runs": K, "beta1": 0.9, "beta2": 0.99, "optimizers": {}}
    for name, opt in _reddi_optimizers(alpha, 0.9, 0.99, 2.0 / 1010.0).items():
        run = run_online(P, opt, checkpoints=cps, record_gamma=True, record_trajectory=True, progress=progress)
        rate0, xlate0 = _late(run, run.recorded("regret_terms")[:, 0])
        entry = {
            "optimizer": run.optimizer,
            "x_final": float(run.x_final[0]),
            "final_avg_regret": float(run.recorded("regret_terms")[-1, 0] / T),
            "late_regret_rate": float(rate0),
            "x_mean_late": float(xlate0[0]),
            "T": run.checkpoints,
            "avg_regret": run.recorded("regret_terms")[:, 0] / run.checkpoints,
            "x": run.x_played[:, 0],
            "gamma_first": run.gamma[:303, 0] if run.gamma is not None else None,
            "proof_assumption": _violations(run, 0, 101),
            "seconds": run.seconds,
        }
        if name == "Adam":
            try:
                check_preconditions(opt)
                entry["bound_refused"] = None
            except ValueError as err:
                entry["bound_refused"] = str(err)
        res_on["optimizers"][name] = entry
        xs, regs = run.x_played[:, 1:], run.recorded("regret_terms")[:, 1:] / run.checkpoints[:, None]
        x_late = _late(run, run.regret)[1][1:]
        res_st["optimizers"][name] = {
            "x_mean_late": x_late,
            # E f_t(θ) − E f_t(−1) = (0.01·1010 − 0.99·10)·(θ + 1) = 0.2·(θ + 1), averaged over t ∈ (T/2, T]
            "expected_excess_late": float(np.mean(0.2 * (x_late + 1.0))),
            "optimizer": run.optimizer,
            "x_final": xs[-1],
            "x_final_mean": float(xs[-1].mean()),
            "x_final_min": float(xs[-1].min()),
            "x_final_max": float(xs[-1].max()),
            "final_avg_regret": regs[-1],
            "final_avg_regret_mean": float(regs[-1].mean()),
            "T": run.checkpoints,
            "x_mean": xs.mean(axis=1),
            "x_min": xs.min(axis=1),
            "x_max": xs.max(axis=1),
            "avg_regret_mean": regs.mean(axis=1),
            "violations_mean_fraction": float(run.recorded("violations")[1:].mean() / max(T - 1, 1)),
        }
    res_on["limit_avg_regret_adam_at_plus1"] = 20.0 / 101.0
    return res_on, res_st


def _adam_alpha_sweep(cfg: dict) -> dict:
    """Adam over a sweep of α on both deterministic sequences: the drift is not a matter of step size."""
    C = cfg["C"]
    sweep: dict = {"T": cfg["sweep_T"], "C": [], "1010": []}
    for key, prob, b1, b2 in (
        ("C", reddi_counterexample(cfg["sweep_T"], C), 0.0, 1.0 / (1.0 + C * C)),
        ("1010", reddi_periodic(cfg["sweep_T"]), 0.9, 0.99),
    ):
        for a in cfg["sweep_alphas"]:
            run = run_online(prob, Adam(lr=a, betas=(b1, b2), eps=0.0, lr_decay="sqrt"), checkpoints=[cfg["sweep_T"]])
            sweep[key].append(
                {"alpha": a, "x_final": float(run.x_final[0]), "avg_regret": float(run.average_regret[-1])}
            )
    return sweep


# ------------------------------------------------------------------------------------------ experiment 3


def experiment_limits(cfg: dict, seed: int, progress: bool) -> dict:
    """§5: Adam(β1 = 0, α/√t, bias-corrected) → AdaGrad as β2 → 1; the trajectory gap against 1 − β2."""
    T, a = cfg["T"], cfg["alpha"]
    P = sparse_logistic(T, cfg["dim"], active=cfg["active"], seed=seed + 1)
    ada = run_online(P, AdaGrad(lr=a, eps=0.0), checkpoints=[T], record_trajectory=True)
    rows = []
    for omb in _progress(cfg["one_minus_beta2"], "β2 → 1", progress):
        row = {"one_minus_beta2": omb}
        for bc in (True, False):
            opt = Adam(lr=a, betas=(0.0, 1.0 - omb), eps=0.0, lr_decay="sqrt", bias_correction=bc)
            run = run_online(P, opt, checkpoints=[T], record_trajectory=True)
            diff = np.abs(run.recorded("trajectory") - ada.recorded("trajectory")).max(axis=1)
            key = "bias_corrected" if bc else "no_bias_correction"
            row[key] = {"max_gap": float(diff.max()), "final_gap": float(diff[-1])}
        rows.append(row)
    omb = np.array([r["one_minus_beta2"] for r in rows])
    gap = np.array([r["bias_corrected"]["max_gap"] for r in rows])
    small = omb <= 1e-2
    slope = float(np.polyfit(np.log(omb[small]), np.log(gap[small]), 1)[0]) if small.sum() >= 2 else float("nan")
    return {"problem": repr(P), "alpha": a, "T": T, "rows": rows, "slope": slope}


# ------------------------------------------------------------------------------------------ the lab spec


_RUNNERS = {"logistic": experiment_logistic, "counterexample": experiment_counterexample, "limits": experiment_limits}
for _name, _fn in _RUNNERS.items():
    register_task(f"theory.{_name}", _fn)


def build_spec(*, quick: bool = False, seed: int = 0, seeds: int | None = None) -> ExperimentSpec:
    """The theory experiment as a lab spec: three tasks (no training panels), one seed by default."""
    mode = "quick" if quick else "full"
    n = 1 if seeds is None else seeds
    if n < 1:
        raise ValueError(f"seeds must be >= 1, got {n}")
    return ExperimentSpec(
        name="theory",
        title="The theory, executable: regret, Theorem 4.1, and the counterexample to its proof",
        tasks=tuple(TaskSpec(name, f"theory.{name}", SETTINGS[mode][name]) for name in EXPERIMENTS),
        seeds=tuple(range(seed, seed + n)),
        quick=quick,
        report="theory",
        notes=(f"Mode: {mode}.",),
    )


def write_report(out_dir: Path) -> Path:
    """Plots and ``report.md`` from the saved task results (:mod:`~adamlab.lab.experiments.theory_report`)."""
    from adamlab.lab.experiments.theory_report import write_report as write

    return write(Path(out_dir))


def readme_block(out_dir: Path, link_base: str | None = None) -> str:
    """The README's theory block from the saved task results (:mod:`~adamlab.lab.experiments.theory_report`)."""
    from adamlab.lab.experiments.theory_report import readme_block as block

    return block(Path(out_dir), link_base)
