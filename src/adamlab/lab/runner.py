"""Train an :class:`~adamlab.lab.spec.ExperimentSpec`: every (panel, optimiser, setting, seed) run, then the
grid search; results written per epoch, atomically, resumable.

The protocol (the paper's §6, with our choices where it is silent):

* **Same initial weights for every optimiser**: for each panel and seed the weights are drawn once from the
  seed (N(0, init_std²), biases 0), saved to ``init_seed<S>.pt`` and loaded by every run.
* **Same minibatches for every optimiser**: minibatches of ``batch_size`` (128) from a permutation per epoch
  drawn by a generator seeded from the run seed (the last minibatch of an epoch may be smaller); dropout masks
  come from a second seeded generator.
* **Training cost per epoch**: after every epoch (and at epoch 0, before training) the objective is evaluated
  on the *whole* training set, in evaluation mode (no dropout): mean negative log-likelihood + the L2 penalty.
  This is the curve the paper plots ("training cost", Figure 1) and the quantity the grid search minimises.
  The NLL alone and the accuracy are recorded too.
* **Grid search**: per panel and optimiser, the setting with the lowest final training cost (mean over seeds)
  is chosen; a run whose cost became NaN/inf is stopped and counts as diverged (never chosen).
* **Diagnostics**: after every epoch, an optimiser that has a ``diagnostics()`` method (adamlab's Adam and
  AdaMax) is asked for the distribution over coordinates of |Δ_t|/α_t and of the SNR |m̂|/√v̂ (§2.1); the lab
  never reads optimiser state by hand.
* **Resume**: a run whose file says ``complete`` is skipped; an unfinished run restarts from its checkpoint
  (model, optimiser state, both generators' states, saved after every epoch), so a resumed run produces the
  same numbers as an uninterrupted one. Runs are deterministic for a seed on one machine (same torch build and
  thread count).
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

import adamlab
from adamlab.lab import parallel
from adamlab.lab import results as R
from adamlab.lab.datasets import TrainingData, load_dataset
from adamlab.lab.models import build_model, init_parameters, l2_penalty, mean_nll, training_loss
from adamlab.lab.spec import ExperimentSpec, OptimizerSpec, PanelSpec, setting_id

__all__ = [
    "OPTIMIZERS",
    "EpochCallback",
    "evaluate",
    "grid_search",
    "make_optimizer",
    "run_spec",
    "select_best",
    "train_run",
]

#: Called after every completed (and saved) epoch as ``callback(run_file, epoch, entry)``.
EpochCallback = Callable[[Path, int, dict[str, Any]], None]


def _adamlab_optimizer(name: str) -> Callable[..., torch.optim.Optimizer]:
    def make(params, **kwargs):
        return getattr(adamlab, name)(params, **kwargs)

    return make


#: Optimiser names usable in an :class:`~adamlab.lab.spec.OptimizerSpec`. The baselines are torch.optim's own
#: implementations; Adam and AdaMax are adamlab's (resolved when a run starts).
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": _adamlab_optimizer("Adam"),
    "adamax": _adamlab_optimizer("AdaMax"),
    "sgd": torch.optim.SGD,
    "adagrad": torch.optim.Adagrad,
    "rmsprop": torch.optim.RMSprop,
    "adadelta": torch.optim.Adadelta,
}


def make_optimizer(name: str, params, **kwargs: Any) -> torch.optim.Optimizer:
    """The optimiser ``name`` (a key of :data:`OPTIMIZERS`) over ``params`` with ``kwargs``."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(sorted(OPTIMIZERS))}")
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    return OPTIMIZERS[name](params, **kwargs)


def _derived_seed(seed: int, stream: str) -> int:
    """Independent generator seeds from one run seed: ``stream`` names the use (init, shuffle, dropout)."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{stream}".encode()).digest()[:7], "little")


def _generator(seed: int, stream: str) -> torch.Generator:
    return torch.Generator().manual_seed(_derived_seed(seed, stream))


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: TrainingData, l2: float) -> dict[str, float]:
    """Full-training-set objective in evaluation mode (no dropout): NLL, NLL + L2 penalty, accuracy."""
    was_training = model.training
    model.eval()
    total_nll = 0.0
    correct = 0
    for xb, yb in data.chunks():
        logits = model(xb)
        total_nll += float(mean_nll(logits, yb)) * len(yb)
        pred = (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(dim=1)
        correct += int((pred == yb).sum())
    model.train(was_training)
    nll = total_nll / data.n_examples
    return {
        "train_cost": nll + float(l2_penalty(model, l2)),
        "train_nll": nll,
        "train_accuracy": correct / data.n_examples,
    }


def _diagnostics(optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
    diag = getattr(optimizer, "diagnostics", None)
    if not callable(diag):
        return None
    try:
        return {name: dict(summary) for name, summary in diag().items()}
    except Exception as exc:  # a failing diagnostic must not end a long run; it is recorded instead
        return {"error": f"{type(exc).__name__}: {exc}"}


def _init_weights(panel: PanelSpec, data: TrainingData, seed: int, out: Path) -> Path:
    """The panel's initial weights for ``seed``, drawn and saved once; every optimiser loads this file."""
    path = R.init_path(out, panel.name, seed)
    if not path.is_file():

        def draw() -> None:
            model = build_model(panel.model, data.n_features, data.n_classes)
            init_parameters(model, panel.model.init_std, _generator(seed, "init"))
            R.save_torch(path, model.state_dict())

        parallel.on_writer(draw)
    return path


def _file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def train_run(
    panel: PanelSpec,
    opt: OptimizerSpec,
    setting: dict[str, Any],
    seed: int,
    data: TrainingData,
    init_file: Path,
    run_file: Path,
    *,
    on_epoch: EpochCallback | None = None,
) -> dict[str, Any]:
    """Train one run (resuming from its checkpoint if there is one) and return its record."""
    ckpt_file = R.ckpt_path(run_file)
    model = build_model(panel.model, data.n_features, data.n_classes)
    model.load_state_dict(torch.load(init_file, weights_only=True))
    optimizer = make_optimizer(opt.optimizer, model.parameters(), **opt.kwargs(setting))
    shuffle = _generator(seed, "shuffle")  # the same permutation on every rank under torchrun
    noise = _generator(seed, parallel.stream_name("dropout"))
    l2 = panel.model.l2
    write = parallel.is_writer()

    start = 0
    if ckpt_file.is_file() and run_file.is_file():
        ckpt = torch.load(ckpt_file, weights_only=True)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        shuffle.set_state(ckpt["shuffle_rng"])
        noise.set_state(ckpt["dropout_rng"])
        start = int(ckpt["epoch"])
        record = R.read_json(run_file)
        record["history"] = record["history"][: start + 1]
        record["resumed_at_epoch"] = [*record.get("resumed_at_epoch", []), start]
    else:
        record = {
            "panel": panel.name,
            "optimizer": opt.key,
            "optimizer_class": opt.optimizer,
            "setting": setting,
            "setting_id": setting_id(setting),
            "kwargs": opt.kwargs(setting),
            "seed": seed,
            "epochs": panel.epochs,
            "batch_size": panel.batch_size,
            "init_sha256": _file_digest(init_file),
            "torch_threads": torch.get_num_threads(),
            "data_parallel_ranks": parallel.world_size(),
            "complete": False,
            "diverged": False,
            "history": [{"epoch": 0, **evaluate(model, data, l2), "seconds": 0.0, "diagnostics": None}],
        }
        if write:
            R.write_json(run_file, record)

    trained = parallel.wrap(model)  # DistributedDataParallel under torchrun, else the model itself
    model.train()
    n = data.n_examples
    for epoch in range(start + 1, panel.epochs + 1):
        t0 = time.perf_counter()
        order = torch.randperm(n, generator=shuffle)
        for i in range(0, n, panel.batch_size):
            batch = order[i : i + panel.batch_size]
            xb, yb = data.batch(parallel.shard(batch))
            # The minibatch's mean NLL (this rank's share of it under torchrun) plus the L2 penalty.
            scale = parallel.local_loss_scale(len(yb), len(batch))
            loss = training_loss(trained, xb, yb, l2, noise, nll_scale=scale)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        entry = {"epoch": epoch, **evaluate(model, data, l2)}
        entry["seconds"] = time.perf_counter() - t0
        # Adam's §2.1 diagnostics (|Δ_t|/α_t and |m̂|/√v̂ over coordinates), from the optimizer's own API.
        entry["diagnostics"] = _diagnostics(optimizer)
        record["history"].append(entry)
        diverged = not math.isfinite(entry["train_cost"])
        if not write:
            pass
        elif diverged or epoch == panel.epochs:
            record["complete"] = True
            record["diverged"] = diverged
            R.write_json(run_file, record)
            ckpt_file.unlink(missing_ok=True)
        else:
            R.write_json(run_file, record)
            R.save_torch(
                ckpt_file,
                {
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "shuffle_rng": shuffle.get_state(),
                    "dropout_rng": noise.get_state(),
                },
            )
        if on_epoch is not None and write:
            on_epoch(run_file, epoch, entry)
        if diverged:
            break
    parallel.barrier()  # the run's files are written before any rank looks at them
    return record


def _is_complete(run_file: Path, epochs: int) -> bool:
    if not run_file.is_file():
        return False
    try:
        record = R.read_json(run_file)
    except (OSError, ValueError):
        return False
    return bool(record.get("complete")) and record.get("epochs") == epochs


def select_best(final_costs: dict[str, float | None]) -> str:
    """The key with the lowest final cost; ``None``/NaN/inf (diverged) never win; ties go to the first key."""

    def cost(k: str) -> float:
        v = final_costs[k]
        return v if v is not None and math.isfinite(v) else math.inf

    return min(final_costs, key=cost)


def grid_search(spec: ExperimentSpec, panel: PanelSpec, out: Path) -> dict[str, Any]:
    """Read the panel's runs, choose each optimiser's best setting, write grid.json, grid.csv and curves.csv.

    Returns ``{optimiser key: {"label", "rows", "best", "best_setting", "best_final_cost",
    "best_at_grid_edge"}}`` (grid.json holds it under ``"optimizers"``, with the panel and data description).
    """
    grid: dict[str, Any] = {}
    csv_rows = []
    curves: dict[str, list[float]] = {}
    for opt in panel.optimizers:
        rows = []
        finals: dict[str, float | None] = {}
        for setting in opt.settings():
            sid = setting_id(setting)
            per_seed = {}
            for seed in spec.seeds:
                record = R.read_json(R.run_path(out, panel.name, opt.key, setting, seed))
                last = record["history"][-1]["train_cost"]
                per_seed[str(seed)] = None if record["diverged"] else last
            values = list(per_seed.values())
            mean = None if any(v is None for v in values) else float(np.mean(values))
            finals[sid] = mean
            rows.append({"setting": setting, "setting_id": sid, "final_cost": per_seed, "mean_final_cost": mean})
            csv_rows.append([panel.name, opt.key, sid, *[per_seed[str(s)] for s in spec.seeds], mean])
        best = select_best(finals)
        best_setting = next(r["setting"] for r in rows if r["setting_id"] == best)
        at_edge = [
            name
            for name, values in opt.grid.items()
            if len(values) > 1 and best_setting[name] in (min(values), max(values))
        ]
        grid[opt.key] = {
            "label": opt.label,
            "rows": rows,
            "best": best,
            "best_setting": best_setting,
            "best_final_cost": finals[best],
            "best_at_grid_edge": at_edge,
        }
        records = [R.read_json(R.run_path(out, panel.name, opt.key, best_setting, s)) for s in spec.seeds]
        curves[opt.key] = R.mean_curve(records)
    data_file = out / panel.name / "data.json"
    data = R.read_json(data_file).get("description", "") if data_file.is_file() else panel.dataset.name
    R.write_json(out / panel.name / "grid.json", {"panel": panel.name, "data": data, "optimizers": grid})
    R.write_csv(
        out / panel.name / "grid.csv",
        [
            "panel",
            "data",
            "optimizer",
            "setting",
            *[f"final_cost_seed{s}" for s in spec.seeds],
            "mean_final_cost",
        ],
        ([row[0], data, *row[1:]] for row in csv_rows),
    )
    length = max(len(c) for c in curves.values())
    R.write_csv(
        out / panel.name / "curves.csv",
        ["epoch", *curves],
        ([e, *[c[e] if e < len(c) else None for c in curves.values()]] for e in range(length)),
    )
    return grid


def _what_is_trained(spec: dict[str, Any]) -> dict[str, Any]:
    """The parts of a spec that determine its results (not titles, notes, claims or plot axes)."""
    return {
        "seeds": spec["seeds"],
        "panels": [
            {
                **{k: p[k] for k in ("name", "dataset", "model", "epochs", "batch_size")},
                "optimizers": [{k: o[k] for k in ("key", "optimizer", "fixed", "grid")} for o in p["optimizers"]],
            }
            for p in spec["panels"]
        ],
    }


def _prepare_out(spec: ExperimentSpec, out: Path) -> None:
    """Write spec.json; an existing one must describe the same training (never mix results of two specs),
    while its descriptive parts (titles, notes, claims, axes) are updated to this spec's."""
    path = out / R.SPEC_FILE
    if path.is_file() and _what_is_trained(R.read_json(path)) != _what_is_trained(spec.to_dict()):
        raise R.ResultsError(
            f"{out} holds results of a different spec of {spec.name!r} (e.g. quick vs full, another seed "
            "or grid); choose another --out directory or delete this one"
        )
    parallel.on_writer(R.write_json, path, spec.to_dict())


def run_spec(
    spec: ExperimentSpec,
    out_dir: str | os.PathLike[str],
    *,
    data_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    on_epoch: EpochCallback | None = None,
    threads: int | None = 1,
) -> Path:
    """Train every run of ``spec`` not yet complete under ``out_dir``, then grid-search each panel.

    Returns the output directory. ``data_dir`` is the data root (``None``: ``$ADAMLAB_DATA``, then the cache).
    ``threads``: torch's intra-op threads while training, restored afterwards (``None``: leave as is). One by
    default: these models are too small to gain from more, on a busy machine more threads are much slower,
    and results then do not depend on the machine's core count.
    """
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run_spec(spec, Path(out_dir), data_dir, progress, on_epoch)
    finally:
        torch.set_num_threads(previous_threads)


def _run_spec(
    spec: ExperimentSpec,
    out: Path,
    data_dir: str | os.PathLike[str] | None,
    progress: bool,
    on_epoch: EpochCallback | None,
) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    _prepare_out(spec, out)
    plan = [
        (panel, opt, setting, seed)
        for panel in spec.panels
        for opt in panel.optimizers
        for setting in opt.settings()
        for seed in spec.seeds
    ]
    bar = tqdm(
        total=len(plan), desc=spec.name, unit="run", disable=not (progress and parallel.is_writer()), dynamic_ncols=True
    )
    try:
        for panel in spec.panels:
            runs = [(o, st, sd) for p, o, st, sd in plan if p is panel]
            todo = [
                r for r in runs if not _is_complete(R.run_path(out, panel.name, r[0].key, r[1], r[2]), panel.epochs)
            ]
            bar.update(len(runs) - len(todo))
            if todo:
                data = load_dataset(panel.dataset, data_dir)
                info = {**data.info, "n_examples": data.n_examples, "n_features": data.n_features}
                parallel.on_writer(R.write_json, out / panel.name / "data.json", info)
                inits = {seed: _init_weights(panel, data, seed, out) for seed in spec.seeds}
            for opt, setting, seed in todo:
                run_file = R.run_path(out, panel.name, opt.key, setting, seed)
                bar.set_description(f"{spec.name} {panel.name} {opt.key} {setting_id(setting)} seed {seed}")

                def show(path: Path, epoch: int, entry: dict[str, Any], _e=panel.epochs) -> None:
                    bar.set_postfix_str(f"epoch {epoch}/{_e} cost {entry['train_cost']:.4f}")
                    if on_epoch is not None:
                        on_epoch(path, epoch, entry)

                train_run(panel, opt, setting, seed, data, inits[seed], run_file, on_epoch=show)
                bar.update(1)
            parallel.on_writer(grid_search, spec, panel, out)
    finally:
        bar.close()
    return out
