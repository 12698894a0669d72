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
* **Grid search**: per panel and optimiser, the setting with the lowest smoothed final training cost (the
  mean of the last k epochs, :func:`adamlab.lab.claims.smoothed_final`, averaged over the grid seeds) is
  chosen; a run whose minibatch loss or cost became NaN/inf is stopped and counts as diverged (never chosen).
* **Seeds, two stages**: every grid point is trained with the spec's grid seeds (the first seed by default);
  once a panel's grid is complete, its chosen settings are trained with the remaining seeds.
* **Units, workers, shards, locks**: every (panel, optimiser, setting, seed) run and every task is a unit
  with its own result file. ``jobs`` worker processes train units in parallel (one unit each); ``shard=(K, N)``
  trains the K-th of N slices of every stage, so N processes or machines sharing the output directory run
  one experiment; a lock file per unit (``<run>.lock``, taken atomically with ``O_CREAT|O_EXCL``, refreshed
  every epoch, reclaimed when its process is gone or it is older than :data:`STALE_LOCK_S`) makes sure no two
  processes train the same unit; a process waits for units that others are training when it needs them.
* **Devices**: ``device`` (``"cpu"``, ``"cuda"``, ``"mps"``; default the best available) — the training set
  is moved to it once; the initial weights are drawn on the CPU (the same on every device).
* **Probes and epoch drivers**: a panel's ``probes`` (keys of :data:`PROBES`) are measured after every epoch
  and stored under ``"probes"``; an optimiser object with a ``train_epoch(ctx)`` method (a baseline that is
  not a torch optimiser, e.g. SFO) trains each epoch itself from an :class:`EpochContext`.
* **Time**: every epoch records two wall-clock times: ``train_seconds``, the training loop alone (the
  minibatches' forward, backward and step, or the epoch driver), which is what a comparison of optimisers'
  speed reads (Figure 2b's wall-clock axis); and ``seconds``, the whole epoch (with the full-set evaluation,
  the diagnostics and probes), which is what a run costs and what ``adamlab status`` and ``reproduce --list``
  estimate from. ``train_cpu_seconds`` is the training loop's CPU time (``time.process_time``): on a machine
  shared with other jobs it measures the work done rather than the share of the cores the run obtained, so
  speed comparisons of runs made at different times prefer it. Epoch 0 (the initial evaluation) records 0.
* **Diagnostics**: after every epoch, an optimiser that has a ``diagnostics()`` method (adamlab's Adam and
  AdaMax) is asked for the distribution over coordinates of |Δ_t|/α_t and of the SNR |m̂|/√v̂ (§2.1); the lab
  never reads optimiser state by hand.
* **Resume**: a run whose file says ``complete`` is skipped; an unfinished run restarts from its checkpoint
  (model, optimiser state, both generators' states), so a resumed run produces the same numbers as an
  uninterrupted one. The run file is written after every epoch; the checkpoint after an epoch once
  :data:`CHECKPOINT_EVERY_S` (60 s) have passed since the last one, so a kill loses at most about a minute
  of training per run (the epochs after the checkpoint are trained again, to the same numbers), and the
  checkpoint's cost stays small against the training (it is 10–20 % of a short epoch otherwise). Runs are
  deterministic for a seed on one machine (same torch build and thread count).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import math
import os
import socket
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import adamlab
from adamlab.lab import parallel
from adamlab.lab import results as R
from adamlab.lab.claims import smoothed_final, smoothing_window
from adamlab.lab.datasets import TrainingData, load_dataset
from adamlab.lab.models import (
    build_model,
    get_objective,
    init_parameters,
    l2_penalty,
    predicted_class,
    training_loss,
)
from adamlab.lab.spec import ExperimentSpec, OptimizerSpec, PanelSpec, TaskSpec, setting_id
from adamlab.progress import progress as progress_bar

__all__ = [
    "CHECKPOINT_EVERY_S",
    "OPTIMIZERS",
    "PROBES",
    "STALE_LOCK_S",
    "TASKS",
    "EpochCallback",
    "EpochContext",
    "Unit",
    "best_device",
    "evaluate",
    "flush_denormals",
    "grid_search",
    "import_experiment_module",
    "make_optimizer",
    "parse_shard",
    "plan_units",
    "register_optimizer",
    "register_probe",
    "register_task",
    "resolve_device",
    "run_spec",
    "select_best",
    "train_run",
    "unit_states",
]

#: Called after every completed (and saved) epoch as ``callback(run_file, epoch, entry)`` (in-process runs).
EpochCallback = Callable[[Path, int, dict[str, Any]], None]

#: A lock not refreshed for this long (seconds) is taken to be left by a process that is gone.
STALE_LOCK_S = 1800.0
#: How often a process waiting for units trained elsewhere looks again (seconds).
POLL_S = 1.0
#: A run's checkpoint is saved after an epoch when at least this many seconds have passed since its last one
#: (or since the run started or resumed): a kill loses at most about this much training per run, and the
#: checkpoint's cost (0.07–0.17 s for Figures 2a–4's models, with fsync; far more for SFO's state) stays a
#: small fraction of the time trained. 0: after every epoch.
CHECKPOINT_EVERY_S = 60.0


def _adamlab_optimizer(name: str) -> Callable[..., torch.optim.Optimizer]:
    def make(params, **kwargs):
        return getattr(adamlab, name)(params, **kwargs)

    return make


#: Optimiser names usable in an :class:`~adamlab.lab.spec.OptimizerSpec`. The baselines are torch.optim's own
#: implementations; Adam and AdaMax are adamlab's (resolved when a run starts). :func:`register_optimizer` adds
#: one; an object with a ``train_epoch(ctx)`` method drives its own epochs (see :class:`EpochContext`).
OPTIMIZERS: dict[str, Callable[..., Any]] = {
    "adam": _adamlab_optimizer("Adam"),
    "adamax": _adamlab_optimizer("AdaMax"),
    "sgd": torch.optim.SGD,
    "adagrad": torch.optim.Adagrad,
    "rmsprop": torch.optim.RMSprop,
    "adadelta": torch.optim.Adadelta,
}

#: ``probe(model, optimizer, data) -> {name: number}``, measured after every epoch for the panels naming it.
PROBES: dict[str, Callable[[torch.nn.Module, Any, TrainingData], dict[str, float]]] = {}

#: ``task(settings, seed, progress) -> dict`` (JSON-ready): the work of a :class:`~adamlab.lab.spec.TaskSpec`.
TASKS: dict[str, Callable[[dict[str, Any], int, bool], dict[str, Any]]] = {}


def register_optimizer(name: str, factory: Callable[..., Any]) -> None:
    """Make ``factory(params, **kwargs)`` available to specs as ``OptimizerSpec(optimizer=name)``."""
    OPTIMIZERS[name] = factory


def register_probe(name: str, probe: Callable[[torch.nn.Module, Any, TrainingData], dict[str, float]]) -> None:
    """Make ``probe`` available to panels as ``PanelSpec(probes=(name,))``."""
    PROBES[name] = probe


def register_task(name: str, task: Callable[[dict[str, Any], int, bool], dict[str, Any]]) -> None:
    """Make ``task`` available to specs as ``TaskSpec(function=name)``."""
    TASKS[name] = task


def make_optimizer(name: str, params, **kwargs: Any) -> Any:
    """The optimiser ``name`` (a key of :data:`OPTIMIZERS`) over ``params`` with ``kwargs``."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(sorted(OPTIMIZERS))}")
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    return OPTIMIZERS[name](params, **kwargs)


# -- devices ---------------------------------------------------------------------------------------------------

DEVICES = ("cpu", "cuda", "mps")


def best_device() -> str:
    """``"cuda"`` if a CUDA device is usable, else ``"mps"`` (Apple), else ``"cpu"``."""
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def resolve_device(name: str | None) -> str:
    """``name`` checked against what this machine has (``None``: :func:`best_device`); a clear error otherwise."""
    if name is None:
        return best_device()
    if name not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}; got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for, but torch sees no CUDA device here; use --device cpu")
    if name == "mps" and best_device() != "mps":
        raise ValueError("device 'mps' asked for, but torch sees no Apple MPS device here; use --device cpu")
    return name


# -- generators, evaluation, probes ------------------------------------------------------------------------------


def _derived_seed(seed: int, stream: str) -> int:
    """Independent generator seeds from one run seed: ``stream`` names the use (init, shuffle, dropout)."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{stream}".encode()).digest()[:7], "little")


def _generator(seed: int, stream: str, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(_derived_seed(seed, stream))


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, data: TrainingData, l2: float, objective: str = "nll", seed: int = 0
) -> dict[str, float]:
    """Full-training-set objective in evaluation mode (no dropout): the mean objective (``train_nll`` for the
    NLL), + the L2 penalty (``train_cost``), and the accuracy for a classifier. An objective that samples (a
    VAE's ELBO) draws from a generator seeded by ``seed`` alone, the same at every epoch."""
    was_training = model.training
    model.eval()
    obj = get_objective(objective)
    device = str(next(model.parameters()).device.type)
    gen = _generator(seed, "evaluate", device)
    total = 0.0
    correct = 0
    for xb, yb in data.chunks():
        loss, scores = obj.evaluate(model, xb, yb, gen)  # one forward pass: the loss and the class scores
        total += float(loss) * len(yb)
        if scores is not None:
            correct += int((predicted_class(scores) == yb).sum())
    model.train(was_training)
    mean = total / data.n_examples
    out = {"train_cost": mean + float(l2_penalty(model, l2)), f"train_{objective}": mean}
    if obj.classifier:
        out["train_accuracy"] = correct / data.n_examples
    return out


def _diagnostics(optimizer: Any) -> dict[str, Any] | None:
    diag = getattr(optimizer, "diagnostics", None)
    if not callable(diag):
        return None
    try:
        return {name: dict(summary) for name, summary in diag().items()}
    except Exception as exc:  # a failing diagnostic must not end a long run; it is recorded instead
        return {"error": f"{type(exc).__name__}: {exc}"}


def _probes(panel: PanelSpec, model: torch.nn.Module, optimizer: Any, data: TrainingData) -> dict[str, Any] | None:
    if not panel.probes:
        return None
    out: dict[str, Any] = {}
    for name in panel.probes:
        if name not in PROBES:
            raise ValueError(f"unknown probe {name!r}; known: {', '.join(sorted(PROBES)) or '(none)'}")
        out[name] = PROBES[name](model, optimizer, data)
    return out


def _init_weights(panel: PanelSpec, data: TrainingData, seed: int, out: Path) -> Path:
    """The panel's initial weights for ``seed``, drawn (on the CPU) and saved once; every optimiser loads them."""
    path = R.init_path(out, panel.name, seed)

    def draw() -> None:
        if not path.is_file():
            model = build_model(panel.model, data.n_features, data.n_classes)
            init_parameters(model, panel.model.init_std, _generator(seed, "init"))
            R.save_torch(path, model.state_dict())

    # Every rank takes part in the barrier, whether or not it sees the file yet: a rank that found the file
    # (already written by rank 0) and skipped the barrier would pair rank 0's barrier with a later one.
    parallel.on_writer(draw)
    return path


def _file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


# -- one run -------------------------------------------------------------------------------------------------------


@dataclass
class EpochContext:
    """What an epoch driver (an optimiser object with ``train_epoch(ctx)``) gets for one epoch.

    ``order``: this epoch's permutation of the example indices (the standard loop's minibatch order; a driver
    may visit minibatches in its own order instead). ``loss(index)``: the training objective (with dropout
    and the L2 penalty) of the examples ``index`` as a differentiable scalar. ``minibatches()``: ``order`` cut
    into minibatches of ``batch_size``."""

    model: torch.nn.Module
    data: TrainingData
    order: torch.Tensor
    batch_size: int
    loss: Callable[[torch.Tensor], torch.Tensor]
    epoch: int

    def minibatches(self) -> list[torch.Tensor]:
        return [self.order[i : i + self.batch_size] for i in range(0, len(self.order), self.batch_size)]


class _Diverged(Exception):
    pass


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
    device: str = "cpu",
    heartbeat: Callable[[], None] | None = None,
    checkpoint_every_s: float = CHECKPOINT_EVERY_S,
) -> dict[str, Any]:
    """Train one run (resuming from its checkpoint if there is one) and return its record. The run file is
    written after every epoch; the checkpoint once ``checkpoint_every_s`` seconds have passed since the last
    one (see :data:`CHECKPOINT_EVERY_S`)."""
    ckpt_file = R.ckpt_path(run_file)
    model = build_model(panel.model, data.n_features, data.n_classes)
    model.load_state_dict(torch.load(init_file, weights_only=True))
    model.to(device)
    optimizer = make_optimizer(opt.optimizer, model.parameters(), **opt.kwargs(setting))
    shuffle = _generator(seed, "shuffle")  # the same permutation on every rank under torchrun
    noise = _generator(seed, parallel.stream_name("dropout"), device)
    l2 = panel.model.l2
    objective = panel.model.objective
    write = parallel.is_writer()

    def measure() -> dict[str, Any]:
        return evaluate(model, data, l2, objective, seed)

    start = 0
    if ckpt_file.is_file() and run_file.is_file():
        ckpt = torch.load(ckpt_file, weights_only=True, map_location=device)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        shuffle.set_state(ckpt["shuffle_rng"].cpu())
        noise.set_state(ckpt["dropout_rng"].cpu())
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
            "flush_denormals": device == "cpu",
            "data_parallel_ranks": parallel.world_size(),
            "device": device,
            "complete": False,
            "diverged": False,
            "history": [
                {
                    "epoch": 0,
                    **measure(),
                    "seconds": 0.0,
                    "train_seconds": 0.0,
                    "train_cpu_seconds": 0.0,
                    "diagnostics": None,
                    **({"probes": _probes(panel, model, optimizer, data)} if panel.probes else {}),
                }
            ],
        }
        if write:
            R.write_json(run_file, record)

    trained = parallel.wrap(model)  # DistributedDataParallel under torchrun, else the model itself
    model.train()
    n = data.n_examples
    driver = getattr(optimizer, "train_epoch", None)

    def batch_loss(index: torch.Tensor) -> torch.Tensor:
        xb, yb = data.batch(parallel.shard(index))
        # The minibatch's mean objective (this rank's share of it under torchrun) plus the L2 penalty.
        scale = parallel.local_loss_scale(len(yb), len(index))
        return training_loss(trained, xb, yb, l2, noise, nll_scale=scale, objective=objective)

    last_checkpoint = time.perf_counter()
    for epoch in range(start + 1, panel.epochs + 1):
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        order = torch.randperm(n, generator=shuffle)
        bad_step = None
        if callable(driver):
            driver(EpochContext(model, data, order, panel.batch_size, batch_loss, epoch))
        else:
            for step, i in enumerate(range(0, n, panel.batch_size)):
                loss = batch_loss(order[i : i + panel.batch_size])
                if not bool(torch.isfinite(loss)):  # a NaN/inf loss ends the run cleanly, as diverged
                    bad_step = step
                    break
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        train_seconds = time.perf_counter() - t0  # the training loop alone (minibatches, backward, step)
        train_cpu_seconds = time.process_time() - cpu0  # its CPU time: the work done, whatever the machine's load
        entry: dict[str, Any] = {"epoch": epoch, **measure()}
        # Adam's §2.1 diagnostics (|Δ_t|/α_t and |m̂|/√v̂ over coordinates), from the optimizer's own API.
        diagnostics = _diagnostics(optimizer)
        probes = _probes(panel, model, optimizer, data) if panel.probes else None
        entry["seconds"] = time.perf_counter() - t0  # the whole epoch: training, evaluation, diagnostics, probes
        entry["train_seconds"] = train_seconds
        entry["train_cpu_seconds"] = train_cpu_seconds
        entry["diagnostics"] = diagnostics
        if panel.probes:
            entry["probes"] = probes
        if bad_step is not None:
            entry["nonfinite_loss_at_step"] = bad_step
        record["history"].append(entry)
        diverged = bad_step is not None or not math.isfinite(entry["train_cost"])
        if not write:
            pass
        elif diverged or epoch == panel.epochs:
            record["complete"] = True
            record["diverged"] = diverged
            R.write_json(run_file, record)
            ckpt_file.unlink(missing_ok=True)
        else:
            R.write_json(run_file, record)
            if time.perf_counter() - last_checkpoint >= checkpoint_every_s:
                # A resumed run restarts from here; the run file's later epochs are then trained again.
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
                last_checkpoint = time.perf_counter()
        if heartbeat is not None:
            heartbeat()
        if on_epoch is not None and write:
            on_epoch(run_file, epoch, entry)
        if diverged:
            break
    parallel.barrier()  # the run's files are written before any rank looks at them
    return record


def _is_complete(run_file: Path, epochs: int | None = None) -> bool:
    if not run_file.is_file():
        return False
    try:
        record = R.read_json(run_file)
    except (OSError, ValueError):
        return False
    return bool(record.get("complete")) and (epochs is None or record.get("epochs") == epochs)


# -- locks ---------------------------------------------------------------------------------------------------------


def lock_path(run_file: str | os.PathLike[str]) -> Path:
    run_file = Path(run_file)
    return run_file.with_name(run_file.name.removesuffix(".json") + ".lock")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_holder(run_file: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Who holds the unit's lock (``{"host", "pid", "since"}``), or ``None`` if nobody does (no lock, or a
    stale one: its process is gone on this host, or it was not refreshed for :data:`STALE_LOCK_S`)."""
    path = lock_path(run_file)
    try:
        holder = R.read_json(path)
        age = time.time() - path.stat().st_mtime
    except (OSError, ValueError):
        return None
    if age > STALE_LOCK_S:
        return None
    if holder.get("host") == socket.gethostname() and not _pid_alive(int(holder.get("pid", -1))):
        return None
    return holder


def try_lock(run_file: str | os.PathLike[str]) -> bool:
    """Take the unit's lock (atomically: ``O_CREAT | O_EXCL``); ``False`` if another live process holds it.
    A stale lock is removed and taken."""
    path = lock_path(run_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = f'{{"host": "{socket.gethostname()}", "pid": {os.getpid()}, "since": {time.time():.0f}}}\n'
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if lock_holder(run_file) is not None:
                return False
            path.unlink(missing_ok=True)  # stale: its owner is gone
            continue
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return True
    return False


def unlock(run_file: str | os.PathLike[str]) -> None:
    lock_path(run_file).unlink(missing_ok=True)


def _touch(run_file: Path) -> Callable[[], None]:
    def beat() -> None:
        path = lock_path(run_file)
        if path.exists():
            os.utime(path)

    return beat


# -- units, plans, shards -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    """One unit of work: a training run (``panel``, ``optimizer``, ``setting``, ``seed``) or a task."""

    panel: str | None
    optimizer: str | None
    setting: tuple[tuple[str, Any], ...]
    seed: int
    task: str | None = None

    def path(self, out: Path) -> Path:
        if self.task is not None:
            return R.task_path(out, self.task, self.seed)
        assert self.panel is not None and self.optimizer is not None
        return R.run_path(out, self.panel, self.optimizer, dict(self.setting), self.seed)

    @property
    def label(self) -> str:
        if self.task is not None:
            return f"{self.task} seed {self.seed}"
        return f"{self.panel} {self.optimizer} {setting_id(dict(self.setting))} seed {self.seed}"


def _train_unit(panel: PanelSpec, opt: OptimizerSpec, setting: dict[str, Any], seed: int) -> Unit:
    return Unit(panel.name, opt.key, tuple(setting.items()), seed)


def plan_units(spec: ExperimentSpec, chosen: dict[str, dict[str, dict[str, Any]]] | None = None) -> list[Unit]:
    """Every unit of ``spec`` in a fixed order: the tasks, then per panel every grid point × grid seed, then
    (for the panels in ``chosen``: panel → optimiser → chosen setting) the chosen settings × extra seeds."""
    units = [Unit(None, None, (), seed, task.name) for task in spec.tasks for seed in spec.seeds]
    for panel in spec.panels:
        units += [
            _train_unit(panel, opt, setting, seed)
            for opt in panel.optimizers
            for setting in opt.settings()
            for seed in spec.grid_seeds
        ]
    for panel in spec.panels:
        if chosen is not None and panel.name in chosen:
            units += [
                _train_unit(panel, opt, chosen[panel.name][opt.key], seed)
                for opt in panel.optimizers
                for seed in spec.extra_seeds
            ]
    return units


def chosen_settings(spec: ExperimentSpec, out: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """panel → optimiser → chosen setting, for the panels whose grid search is done (from ``grid.json``)."""
    chosen = {}
    for panel in spec.panels:
        path = Path(out) / panel.name / "grid.json"
        if path.is_file():
            chosen[panel.name] = {k: g["best_setting"] for k, g in R.read_json(path)["optimizers"].items()}
    return chosen


def unit_states(spec: ExperimentSpec, out: Path) -> dict[str, list[Unit]]:
    """Every known unit of ``spec`` under ``out`` by state: ``"done"``, ``"running"`` (locked by a live
    process), ``"left"``; and ``"unplanned"``: placeholders for the extra-seed runs of panels whose grid search
    has not been done (their settings are not known yet)."""
    units = plan_units(spec, chosen_settings(spec, out))
    states: dict[str, list[Unit]] = {"done": [], "running": [], "left": [], "unplanned": []}
    for u in units:
        path = u.path(out)
        if _is_complete(path):
            states["done"].append(u)
        elif lock_holder(path) is not None:
            states["running"].append(u)
        else:
            states["left"].append(u)
    searched = chosen_settings(spec, out)
    for panel in spec.panels:
        if panel.name not in searched:
            states["unplanned"] += [
                Unit(panel.name, opt.key, (), seed) for opt in panel.optimizers for seed in spec.extra_seeds
            ]
    return states


def _stage2(spec: ExperimentSpec, panel: PanelSpec, best: dict[str, dict[str, Any]]) -> list[Unit]:
    return [_train_unit(panel, opt, best[opt.key], seed) for opt in panel.optimizers for seed in spec.extra_seeds]


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` → ``(K, N)`` with 1 ≤ K ≤ N; a clear error otherwise."""
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"shard must look like K/N (e.g. 2/4), got {text!r}") from None
    if not 1 <= k <= n:
        raise ValueError(f"shard K/N needs 1 <= K <= N, got {text!r}")
    return k, n


def _mine(units: list[Unit], shard: tuple[int, int] | None) -> list[Unit]:
    if shard is None:
        return units
    k, n = shard
    return [u for i, u in enumerate(units) if i % n == k - 1]


# -- grid search -----------------------------------------------------------------------------------------------------


def select_best(final_costs: dict[str, float | None]) -> str:
    """The key with the lowest final cost; ``None``/NaN/inf (diverged) never win; ties go to the first key."""

    def cost(k: str) -> float:
        v = final_costs[k]
        return v if v is not None and math.isfinite(v) else math.inf

    return min(final_costs, key=cost)


def _curve(record: dict[str, Any], key: str = "train_cost") -> list[float]:
    return [math.nan if h.get(key) is None else float(h[key]) for h in record["history"]]


def grid_search(spec: ExperimentSpec, panel: PanelSpec, out: Path) -> dict[str, Any]:
    """Read the panel's grid runs, choose each optimiser's best setting, write grid.json, grid.csv and curves.csv.

    The criterion is the smoothed final cost (mean of the last k epochs, :func:`~adamlab.lab.claims.
    smoothed_final`) averaged over the grid seeds. Returns ``{optimiser key: {"label", "rows", "best",
    "best_setting", "best_final_cost", "best_smoothed_cost", "best_at_grid_edge"}}`` (grid.json holds it under
    ``"optimizers"``, with the panel and data description); ``rows`` hold every grid point, per seed.
    """
    grid: dict[str, Any] = {}
    csv_rows = []
    seeds = spec.grid_seeds
    window = smoothing_window(panel.epochs)
    for opt in panel.optimizers:
        rows: list[dict[str, Any]] = []
        smoothed: dict[str, float | None] = {}
        for setting in opt.settings():
            sid = setting_id(setting)
            per_seed: dict[str, float | None] = {}
            per_seed_smooth: dict[str, float | None] = {}
            for seed in seeds:
                record = R.read_json(R.run_path(out, panel.name, opt.key, setting, seed))
                curve = _curve(record)
                per_seed[str(seed)] = None if record["diverged"] else curve[-1]
                per_seed_smooth[str(seed)] = None if record["diverged"] else smoothed_final(curve, window)
            finals = [v for v in per_seed.values() if v is not None]
            smooths = [v for v in per_seed_smooth.values() if v is not None]
            mean = float(np.mean(finals)) if len(finals) == len(seeds) else None
            mean_s = float(np.mean(smooths)) if len(smooths) == len(seeds) else None
            smoothed[sid] = mean_s
            rows.append(
                {
                    "setting": setting,
                    "setting_id": sid,
                    "final_cost": per_seed,
                    "mean_final_cost": mean,
                    "smoothed_cost": per_seed_smooth,
                    "mean_smoothed_cost": mean_s,
                    "diverged": mean is None,
                }
            )
            csv_rows.append([panel.name, opt.key, sid, *[per_seed[str(s)] for s in seeds], mean, mean_s])
        best = select_best(smoothed)
        row = next(r for r in rows if r["setting_id"] == best)
        best_setting = row["setting"]
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
            "best_final_cost": row["mean_final_cost"],
            "best_smoothed_cost": row["mean_smoothed_cost"],
            "smoothing_window": window,
            "best_at_grid_edge": at_edge,
        }
    data_file = out / panel.name / "data.json"
    data = R.read_json(data_file).get("description", "") if data_file.is_file() else panel.dataset.name
    R.write_json(
        out / panel.name / "grid.json",
        {"panel": panel.name, "data": data, "grid_seeds": list(seeds), "optimizers": grid},
    )
    R.write_csv(
        out / panel.name / "grid.csv",
        [
            "panel",
            "data",
            "optimizer",
            "setting",
            *[f"final_cost_seed{s}" for s in seeds],
            "mean_final_cost",
            f"mean_smoothed_cost_last{window}",
        ],
        ([row[0], data, *row[1:]] for row in csv_rows),
    )
    return grid


def write_curves(spec: ExperimentSpec, panel: PanelSpec, out: Path, grid: dict[str, Any]) -> None:
    """``<panel>/curves.csv``: per epoch, the mean and the min/max over seeds of each chosen setting's cost."""
    columns: dict[str, list[float]] = {}
    for opt in panel.optimizers:
        setting = grid[opt.key]["best_setting"]
        curves = []
        for seed in spec.seeds:
            path = R.run_path(out, panel.name, opt.key, setting, seed)
            if _is_complete(path):
                curves.append(_curve(R.read_json(path)))
        if not curves:
            continue
        length = max(len(c) for c in curves)
        padded = np.full((len(curves), length), np.nan)
        for i, c in enumerate(curves):
            padded[i, : len(c)] = c
        with np.errstate(invalid="ignore"):
            columns[opt.key] = list(padded.mean(axis=0))
            columns[f"{opt.key}_min"] = list(padded.min(axis=0))
            columns[f"{opt.key}_max"] = list(padded.max(axis=0))
    if not columns:
        return
    length = max(len(c) for c in columns.values())
    R.write_csv(
        out / panel.name / "curves.csv",
        ["epoch", *columns],
        ([e, *[c[e] if e < len(c) else None for c in columns.values()]] for e in range(length)),
    )


def _what_is_trained(spec: dict[str, Any]) -> dict[str, Any]:
    """The parts of a spec that determine its results (not titles, notes, claims, plot axes or extra seeds)."""
    seeds = spec["seeds"]
    search = spec.get("search_seeds")
    return {
        "grid_seeds": seeds if search is None else seeds[:search],
        "panels": [
            {
                **{k: p[k] for k in ("name", "dataset", "model", "epochs", "batch_size")},
                "optimizers": [{k: o[k] for k in ("key", "optimizer", "fixed", "grid")} for o in p["optimizers"]],
            }
            for p in spec["panels"]
        ],
        "tasks": spec.get("tasks", []),
    }


def _prepare_out(spec: ExperimentSpec, out: Path) -> None:
    """Write spec.json; an existing one must describe the same training (never mix results of two specs),
    while its descriptive parts (titles, notes, claims, axes, extra seeds) are updated to this spec's."""
    path = out / R.SPEC_FILE
    if path.is_file():
        old = R.read_json(path)
        if _what_is_trained(old) != _what_is_trained(spec.to_dict()):
            raise R.ResultsError(
                f"{out} holds results of a different spec of {spec.name!r} (e.g. quick vs full, another seed "
                "or grid); choose another --out directory or delete this one"
            )
        if old == spec.to_dict():
            return
    parallel.on_writer(R.write_json, path, spec.to_dict())


# -- executing units ---------------------------------------------------------------------------------------------

_DATA_CACHE: dict[tuple[str, str, str], TrainingData] = {}


def _data(panel: PanelSpec, data_dir: Any, device: str) -> TrainingData:
    """The panel's training set, loaded once per process and moved to ``device`` once."""
    key = (repr(sorted(panel.dataset.options.items())) + panel.dataset.name, str(data_dir), device)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()  # one set at a time: a panel's units run together
        _DATA_CACHE[key] = load_dataset(panel.dataset, data_dir).to(device)
    return _DATA_CACHE[key]


def _execute(
    spec: ExperimentSpec,
    unit: Unit,
    out: Path,
    data_dir: Any,
    device: str,
    on_epoch: EpochCallback | None = None,
    progress: bool = False,
    checkpoint_every_s: float = CHECKPOINT_EVERY_S,
) -> str:
    """Train (or resume) one unit under its lock. Returns ``"done"``, ``"skipped"`` (already complete) or
    ``"locked"`` (another process is training it)."""
    run_file = unit.path(out)
    if unit.task is None:
        panel = spec.panel(unit.panel or "")
        if _is_complete(run_file, panel.epochs):
            return "skipped"
    elif _is_complete(run_file):
        return "skipped"
    if parallel.world_size() == 1 and not try_lock(run_file):
        return "locked"
    try:
        if unit.task is not None:
            task = next(t for t in spec.tasks if t.name == unit.task)
            _run_task(task, unit.seed, run_file, progress)
            return "done"
        opt = panel.optimizer(unit.optimizer or "")
        data = _data(panel, data_dir, device)
        init = R.init_path(out, panel.name, unit.seed)
        train_run(
            panel,
            opt,
            dict(unit.setting),
            unit.seed,
            data,
            init,
            run_file,
            on_epoch=on_epoch,
            device=device,
            heartbeat=_touch(run_file),
            checkpoint_every_s=checkpoint_every_s,
        )
        return "done"
    finally:
        if parallel.world_size() == 1:
            unlock(run_file)


def _run_task(task: TaskSpec, seed: int, run_file: Path, progress: bool) -> None:
    if task.function not in TASKS:
        raise ValueError(f"unknown task function {task.function!r}; known: {', '.join(sorted(TASKS)) or '(none)'}")
    t0 = time.perf_counter()
    results = TASKS[task.function](dict(task.settings), seed, progress)
    record = {
        "task": task.name,
        "function": task.function,
        "settings": task.settings,
        "seed": seed,
        "seconds": time.perf_counter() - t0,
        "complete": True,
        "results": results,
    }
    parallel.on_writer(R.write_json, run_file, record)


_WORKER: dict[str, Any] = {}


def import_experiment_module(name: str) -> None:
    """Import ``adamlab.lab.experiments.<name>`` if it exists: an experiment's module registers its data sets,
    models, objectives, probes, optimisers and tasks when imported (e.g. fig4's VAE), so that a fresh process
    (a ``--jobs`` worker, a shard, ``adamlab report``) sees them as the process that built the spec did."""
    if importlib.util.find_spec(f"adamlab.lab.experiments.{name}") is not None:
        importlib.import_module(f"adamlab.lab.experiments.{name}")


def _worker_init(
    spec_json: str, out: str, data_dir: Any, device: str, threads: int | None, checkpoint_every_s: float
) -> None:
    if threads is not None:
        torch.set_num_threads(threads)
    flush_denormals(True)  # a worker process only trains
    spec = ExperimentSpec.from_json(spec_json)
    import_experiment_module(spec.name)  # a spawned worker starts with empty registries
    _WORKER.update(spec=spec, out=Path(out), data_dir=data_dir, device=device, checkpoint_every_s=checkpoint_every_s)


def _worker_run(unit: Unit) -> str:
    w = _WORKER
    return _execute(w["spec"], unit, w["out"], w["data_dir"], w["device"], checkpoint_every_s=w["checkpoint_every_s"])


class _Inline:
    """The executor for one job: each unit runs in this process when submitted (callbacks and progress work)."""

    def __init__(self, run: Callable[[Unit], str]) -> None:
        self._run = run

    def submit(self, unit: Unit) -> Future:
        f: Future = Future()
        f.set_result(self._run(unit))
        return f


# -- the whole spec ----------------------------------------------------------------------------------------------


def run_spec(
    spec: ExperimentSpec,
    out_dir: str | os.PathLike[str],
    *,
    data_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    on_epoch: EpochCallback | None = None,
    threads: int | None = 1,
    jobs: int = 1,
    shard: tuple[int, int] | None = None,
    device: str | None = "cpu",
    checkpoint_every_s: float = CHECKPOINT_EVERY_S,
) -> Path:
    """Train every unit of ``spec`` not yet complete under ``out_dir`` (in two stages, see the module doc), and
    grid-search each panel.

    Returns the output directory. ``data_dir`` is the data root (``None``: ``$ADAMLAB_DATA``, then the cache).
    ``threads``: torch's intra-op threads while training (in each worker), restored afterwards (``None``: leave
    as is). One by default: these models are too small to gain from more, on a busy machine more threads are
    much slower, and results then do not depend on the machine's core count. ``jobs``: worker processes, one
    unit each (``on_epoch`` is only called with one job). ``shard``: ``(K, N)`` trains the K-th of N slices of
    each stage. ``device``: ``"cpu"``, ``"cuda"``, ``"mps"`` or ``None`` for the best available.
    ``checkpoint_every_s``: a run's checkpoint is saved once this many seconds have passed since its last
    (:data:`CHECKPOINT_EVERY_S`; 0: after every epoch).
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if (
        isinstance(checkpoint_every_s, bool)
        or not isinstance(checkpoint_every_s, (int, float))
        or not checkpoint_every_s >= 0
    ):
        raise ValueError(f"checkpoint_every_s must be a number of seconds >= 0, got {checkpoint_every_s!r}")
    device = resolve_device(device)
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    flush_denormals(True)
    try:
        return _run_spec(
            spec, Path(out_dir), data_dir, progress, on_epoch, jobs, shard, device, threads, float(checkpoint_every_s)
        )
    finally:
        flush_denormals(False)
        torch.set_num_threads(previous_threads)


def flush_denormals(on: bool) -> bool:
    """Flush subnormal float32/float64 values to zero on the CPU (x86 FTZ + DAZ, through
    ``torch.set_flush_denormal``) while the lab trains; returns whether the CPU supports it.

    Why: an MLP trained with L2 on MNIST (Figures 2a, 2b) drives the first layer's weights from the always-blank
    border pixels, and Adam's m for them, into the subnormal range (5–11 % of those weights after 10 epochs), and
    every matrix product that touches a subnormal takes the processor's slow path: measured on this Intel Xeon,
    a forward pass of the 784-1000-1000 network with those weights took 35× longer (3.04 s vs 0.088 s for 20
    minibatches), so the epoch slowed from seconds to minutes as training went on. Values below 1.2e-38 become
    0 (runs with and without flushing are not bit-identical; the weights concerned see inputs that are always
    0). GPUs flush on their own
    terms; where the CPU cannot (not x86 with SSE3), the setting is a no-op and training is merely slower."""
    return bool(torch.set_flush_denormal(on))


def _run_spec(
    spec: ExperimentSpec,
    out: Path,
    data_dir: Any,
    progress: bool,
    on_epoch: EpochCallback | None,
    jobs: int,
    shard: tuple[int, int] | None,
    device: str,
    threads: int | None,
    checkpoint_every_s: float = CHECKPOINT_EVERY_S,
) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    _prepare_out(spec, out)
    import_experiment_module(spec.name)
    show = progress and parallel.is_writer()
    # Stage 1 (this process's slice): the tasks and every grid point with the grid seeds.
    todo: deque[Unit] = deque(_mine(plan_units(spec), shard))
    mine = set(todo)
    n_stage2 = sum(len(p.optimizers) for p in spec.panels) * len(spec.extra_seeds)
    total = len(todo) + (n_stage2 if shard is None else -(-n_stage2 // shard[1]))
    bar = progress_bar(total=total, desc=spec.name, unit="run", enabled=show)
    # Each panel's data description and initial weights, before any worker trains from them.
    for panel in spec.panels:
        inits = [R.init_path(out, panel.name, s) for s in spec.seeds]
        if (out / panel.name / "data.json").is_file() and all(p.is_file() for p in inits):
            continue
        data = _data(panel, data_dir, "cpu")
        info = {**data.info, "n_examples": data.n_examples, "n_features": data.n_features, "n_classes": data.n_classes}
        parallel.on_writer(R.write_json, out / panel.name / "data.json", info)
        for seed in spec.seeds:
            _init_weights(panel, data, seed, out)

    # The cheapest panels first (units × epochs × examples), so that panels complete one after another.
    sizes = {
        p.name: len(p.optimizers) * p.epochs * R.read_json(out / p.name / "data.json").get("n_examples", 1)
        for p in spec.panels
        if (out / p.name / "data.json").is_file()
    }
    todo = deque(sorted(todo, key=lambda u: -1 if u.panel is None else sizes.get(u.panel, 0)))

    def inline(unit: Unit) -> str:
        def show_epoch(path: Path, epoch: int, entry: dict[str, Any]) -> None:
            panel = spec.panel(unit.panel or "")
            bar.set_postfix_str(f"epoch {epoch}/{panel.epochs} cost {entry['train_cost']:.4f}")
            if on_epoch is not None:
                on_epoch(path, epoch, entry)

        bar.set_description(f"{spec.name} {unit.label}")
        return _execute(spec, unit, out, data_dir, device, show_epoch, show, checkpoint_every_s)

    if jobs == 1:
        executor: Any = _Inline(inline)
    else:
        import multiprocessing

        executor = ProcessPoolExecutor(
            max_workers=jobs,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_init,
            initargs=(spec.to_json(), str(out), data_dir, device, threads, checkpoint_every_s),
        )
    searched: set[str] = set()
    waiting: list[Unit] = []  # units another process was training when this one reached them
    running: dict[Future, Unit] = {}
    clean = False
    try:
        while True:
            # A searched panel's extra-seed runs go first, so that panels complete one after another.
            for unit in reversed(_search_ready(spec, out, searched, shard)):
                todo.appendleft(unit)
                mine.add(unit)
            while todo and len(running) < jobs:
                unit = todo.popleft()
                fut = executor.submit(unit) if jobs == 1 else executor.submit(_worker_run, unit)
                running[fut] = unit
            if running:
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for fut in done:
                    unit = running.pop(fut)
                    if fut.result() == "locked":
                        waiting.append(unit)
                    else:
                        bar.update(1)
                continue
            # Nothing to run now: what this process still needs from others (its locked units, and the grid
            # runs of the panels not yet searched, whoever trains them).
            for u in [u for u in waiting if _is_complete(u.path(out))]:
                waiting.remove(u)
                bar.update(1)
            needed = list(waiting)
            for panel in spec.panels:
                if panel.name not in searched:
                    needed += [u for u in plan_units(spec) if u.panel == panel.name and u not in needed]
            needed = [u for u in needed if not _is_complete(u.path(out))]
            if not needed:
                if len(searched) == len(spec.panels):
                    break
                continue
            # A unit nobody holds: its process died (or, without --shard, nobody else is on it): train it here.
            # With --shard, another shard's units are left to that shard.
            take = [u for u in needed if lock_holder(u.path(out)) is None and (shard is None or u in mine)]
            if take:
                waiting = [u for u in waiting if u not in take]
                todo.extend(take)
                continue
            time.sleep(POLL_S)
        clean = True
    finally:
        if isinstance(executor, ProcessPoolExecutor):
            executor.shutdown(wait=clean, cancel_futures=not clean)
        bar.close()
    for panel in spec.panels:
        if panel.name in searched:
            grid = R.read_grid(out, panel.name)["optimizers"]
            parallel.on_writer(write_curves, spec, panel, out, grid)
    return out


def _search_ready(spec: ExperimentSpec, out: Path, searched: set[str], shard: tuple[int, int] | None) -> list[Unit]:
    """Grid-search every panel whose stage-1 runs are all complete (once each); return this process's slice of
    their stage-2 runs (the chosen settings with the extra seeds)."""
    queued: list[Unit] = []
    for panel in spec.panels:
        if panel.name in searched:
            continue
        stage1 = [u for u in plan_units(spec) if u.panel == panel.name]
        if not all(_is_complete(u.path(out), panel.epochs) for u in stage1):
            continue
        grid = parallel.on_writer(grid_search, spec, panel, out)
        if grid is None:  # a non-writing rank under torchrun reads what rank 0 wrote
            grid = R.read_grid(out, panel.name)["optimizers"]
        best = {key: g["best_setting"] for key, g in grid.items()}
        queued += _mine(_stage2(spec, panel, best), shard)
        searched.add(panel.name)
    return queued
