"""What Adam and AdaMax share as torch optimizers: options, state, dispatch to the fused kernel or the
reference path, non-finite gradients, temporal averaging (§7.2) and diagnostics (§2.1)."""

from __future__ import annotations

import contextlib
import functools
import sys
import warnings
from collections.abc import Callable, Iterator
from itertools import chain
from typing import Any, ClassVar

import torch
from torch.autograd.profiler import record_function
from torch.optim import Optimizer
from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks

from adamlab import formulas as F
from adamlab.kernels import build
from adamlab.kernels.fused import FUSED_DTYPES, FusedPlan
from adamlab.validation import check_hyperparameters

IMPLS = ("auto", "fused", "reference")


def torch_compat_impl(
    impl: str, foreach: bool | None, fused: bool | None, capturable: bool, differentiable: bool
) -> str:
    """Map torch.optim's implementation switches onto ``impl``, so code written for torch runs unchanged."""
    if capturable or differentiable:
        raise ValueError("capturable=True and differentiable=True are not supported by adamlab's optimizers")
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if fused:
        if impl == "reference":
            raise ValueError("fused=True contradicts impl='reference'")
        return "fused"
    del foreach  # the fused kernel is already multi-tensor; foreach has nothing to choose
    return impl


def _is_plain(t: torch.Tensor) -> bool:
    """A dense, contiguous CPU tensor that is not a tensor subclass (DTensor, …)."""
    return (
        t.is_cpu and t.layout == torch.strided and t.is_contiguous() and type(t) in (torch.Tensor, torch.nn.Parameter)
    )


def _grad(p: torch.Tensor) -> torch.Tensor:
    """p.grad, known to be set (for the type checker)."""
    assert p.grad is not None
    return p.grad


def _position(params: list[torch.Tensor], p: torch.Tensor) -> int:
    return next(i for i, q in enumerate(params) if q is p)


def _nonfinite_report(index: int, members: Any, counts: Any, params: list[torch.Tensor]) -> list[str]:
    """Name each parameter that had non-finite gradient entries (for the FloatingPointError)."""
    return [
        f"parameter {_position(params, p)} of param group {index} ({c} entries)"
        for (_, p), c in zip(members, counts)
        if c
    ]


# ---------------------------------------------------------------------- distributed support (docs/distributed.md)
# FSDP2 (and tensor parallelism) hand the optimizer DTensors. The update is element-wise, so when a parameter,
# its gradient and its state tensors are DTensors laid out alike (same mesh, placements and shape, none of them
# a pending reduction), stepping each rank's local shards is the global step: the fused kernel (or, with
# impl="reference", the reference path) takes the local tensors. Other DTensors take the reference path as
# DTensors.


def _dtensor_class() -> type | None:
    """DTensor, if torch.distributed.tensor was imported (no DTensor can exist otherwise); importing it here
    would cost every ``import adamlab`` a second."""
    return getattr(sys.modules.get("torch.distributed.tensor"), "DTensor", None)


def _local_shards(
    p: torch.Tensor, grad: torch.Tensor, state: dict[str, Any], keys: list[str]
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]] | None:
    """The local tensors of a DTensor parameter, its gradient and its state, if the element-wise update may run
    on them; None otherwise (not a DTensor, layouts differ, or a Partial placement)."""
    dtensor = _dtensor_class()
    if dtensor is None or not isinstance(p, dtensor):
        return None
    tensors = [grad, *(state[k] for k in keys)]
    layout = (p.device_mesh, tuple(p.placements), p.shape)  # type: ignore[attr-defined]
    if any(pl.is_partial() for pl in p.placements) or not all(  # type: ignore[attr-defined]
        isinstance(t, dtensor) and (t.device_mesh, tuple(t.placements), t.shape) == layout  # type: ignore[attr-defined]
        for t in tensors
    ):
        return None
    local_p, local_g, *local_state = (t.to_local() for t in (p, *tensors))  # type: ignore[attr-defined]
    return local_p, local_g, dict(zip(keys, local_state))


def _sum_over_shards(params: list[torch.Tensor], counts: Any) -> list[int]:
    """Each rank counted the non-finite gradient entries of its own shards: sum the counts over the mesh
    dimensions the parameters are sharded on, so that every rank reports (and raises) alike. One small
    all-reduce per mesh layout and sharded dimension. (DTensor's own ``int()`` of a sum gives the local count.)"""
    import torch.distributed as dist

    totals = list(counts)
    layouts: dict[tuple[Any, ...], list[int]] = {}
    for i, p in enumerate(params):
        layouts.setdefault((p.device_mesh, tuple(p.placements)), []).append(i)  # type: ignore[attr-defined]
    for (mesh, placements), indices in layouts.items():
        sharded = [dim for dim, pl in enumerate(placements) if pl.is_shard()]
        if not sharded:
            continue
        local = torch.tensor([totals[i] for i in indices], dtype=torch.int64)
        for dim in sharded:
            dist.all_reduce(local, group=mesh.get_group(dim))
        for i, total in zip(indices, local.tolist()):
            totals[i] = total
    return totals


def _gathered(state: dict[str, Any]) -> dict[str, Any]:
    """The state with every DTensor gathered in full (a collective: every rank must call)."""
    dtensor = _dtensor_class()
    if dtensor is None:
        return state
    return {k: v.full_tensor() if isinstance(v, dtensor) else v for k, v in state.items()}  # type: ignore[attr-defined]


def _hooked_step(step: Callable[..., Any]) -> Callable[..., Any]:
    """What ``torch.optim.Optimizer`` wraps every ``step`` in, done here so that a step costs no more than its
    work: the global and per-optimizer step pre- and post-hooks (``register_step_pre_hook``, …) with torch's
    calling convention, and the profiler label ``Optimizer.step#<class>.step``, entered only while a profiler
    is recording. (torch's wrapper enters it on every step; on a step that has just streamed ~100 MB through
    the caches, its cold code path costs 2-3 % of a transformer-sized step: see docs/performance.md.)
    ``hooked = True`` tells ``Optimizer`` not to wrap it again."""

    @functools.wraps(step)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        self = args[0]
        profiling = torch._C._autograd._profiler_enabled()
        with record_function(f"Optimizer.step#{type(self).__name__}.step") if profiling else contextlib.nullcontext():
            for pre_hook in chain(_global_optimizer_pre_hooks.values(), self._optimizer_step_pre_hooks.values()):
                result = pre_hook(self, args, kwargs)
                if result is not None:
                    if isinstance(result, tuple) and len(result) == 2:
                        args, kwargs = result
                    else:
                        raise RuntimeError(
                            f"{step} must return None or a tuple of (new_args, new_kwargs), but got {result}."
                        )
            out = step(*args, **kwargs)
            self._optimizer_step_code()
            for post_hook in chain(self._optimizer_step_post_hooks.values(), _global_optimizer_post_hooks.values()):
                post_hook(self, args, kwargs)
            return out

    wrapper.hooked = True  # type: ignore[attr-defined]
    return wrapper


class AdamFamily(Optimizer):
    """Base of :class:`adamlab.Adam` and :class:`adamlab.AdaMax` (not for direct use)."""

    algorithm: ClassVar[str]
    #: State keys, as torch.optim names them: first moment, second moment (v or u).
    moment_keys: ClassVar[tuple[str, str]]

    def _reference_step(self, p: torch.Tensor, grad: torch.Tensor, state: dict, group: dict) -> int:
        """One reference-path step for one tensor; returns the number of non-finite gradient entries."""
        raise NotImplementedError

    def __init__(self, params: Any, defaults: dict[str, Any]) -> None:
        self._check_group(defaults)  # fail on bad options before anything else (also checked per group)
        if defaults["impl"] == "fused":
            self._require_kernel()
        super().__init__(params, defaults)

    # ------------------------------------------------------------------ groups and state

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self._plans: dict[int, FusedPlan] = {}
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            for i, p in enumerate(group["params"]):
                if not p.is_floating_point():
                    kind = "complex" if p.is_complex() else "integer"
                    raise TypeError(
                        f"{type(self).__name__} optimizes real floating-point parameters; parameter {i} of "
                        f"param group {len(self.param_groups) - 1} is {kind} ({p.dtype})"
                    )
            self._check_group(group)
        except (TypeError, ValueError):
            self.param_groups.pop()
            raise

    def _check_group(self, group: dict[str, Any]) -> None:
        """Raise ValueError/TypeError naming the first bad option of a param group (or of the defaults)."""
        check_hyperparameters(
            lr=group["lr"],
            betas=group["betas"],
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            eps_mode=group.get("eps_mode", "paper"),
            lr_decay=group["lr_decay"],
            beta1_decay=group["beta1_decay"],
            averaging_beta=group["averaging_beta"],
        )
        if group["impl"] not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, got {group['impl']!r}")

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._plans = {}
        for group in self.param_groups:
            for key, value in self.defaults.items():
                group.setdefault(key, value)
            for p in group["params"]:
                p_state = self.state.get(p)
                if p_state and "step" in p_state:
                    # One float32 CPU counter per parameter, as torch.optim keeps it (exact to 2**24 steps).
                    p_state["step"] = torch.as_tensor(p_state["step"], dtype=torch.float32, device="cpu")

    def _init_state(self, p: torch.Tensor, group: dict[str, Any], state: dict[str, Any]) -> None:
        state["step"] = torch.tensor(0.0, dtype=torch.float32)
        for key in self._state_keys(group):
            state[key] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _state_keys(self, group: dict[str, Any]) -> list[str]:
        keys = list(self.moment_keys)
        if group.get("amsgrad", False):
            keys.append("max_exp_avg_sq")
        if group["averaging"]:
            keys.append("param_avg")
        return keys

    # ------------------------------------------------------------------ the step

    @_hooked_step
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Take one step for every parameter that has a gradient; ``closure`` re-evaluates the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        bad: list[str] = []
        for index, group in enumerate(self.param_groups):
            bad.extend(self._step_group(index, group))
        if bad:
            raise FloatingPointError(
                f"{type(self).__name__}: non-finite gradient entries in " + ", ".join(bad) + ". Those "
                "coordinates were left unchanged (parameter and state); all others took the step."
            )
        return loss

    def _require_kernel(self) -> None:
        try:
            build.load()
        except build.KernelUnavailableError as exc:
            raise RuntimeError(f"impl='fused' needs the fused CPU kernel, which is unavailable: {exc}") from exc

    def _use_kernel(self, impl: str) -> bool:
        if impl == "reference":
            return False
        if build.available():
            return True
        if impl == "fused":
            self._require_kernel()
        if not getattr(self, "_warned_no_kernel", False):
            warnings.warn(
                "adamlab: the fused CPU kernel could not be built (no C compiler?); using the slower reference "
                "path. Set impl='reference' to silence this.",
                RuntimeWarning,
                stacklevel=3,
            )
            self._warned_no_kernel = True
        return False

    def _step_group(self, index: int, group: dict[str, Any]) -> list[str]:
        # This runs every step. The common case (a cached plan that still describes the group) takes the C++
        # bridge's checks, else a few C-level passes over the tensors in Python.
        plans: dict[int, FusedPlan] = self.__dict__.setdefault("_plans", {})
        plan = plans.get(index)
        # The plan's state keys must be the group's (amsgrad/averaging decide which arrays the kernel touches).
        if plan is not None and plan.keys != self._state_keys(group):
            plan = None
        if plan is not None and group["impl"] != "reference":
            bad = plan.fast_step(group)
            if bad == 0:
                return []
            if bad is not None:
                return _nonfinite_report(index, enumerate(plan.params), plan.nonfinite, group["params"])
        all_grads = [p.grad for p in group["params"]]
        if any(g is None for g in all_grads):  # (not `None in`: that compares tensors with ==)
            params = [p for p, g in zip(group["params"], all_grads) if g is not None]
            grads = [g for g in all_grads if g is not None]
        else:
            params, grads = group["params"], all_grads
        if not params:
            return []
        use_kernel = self._use_kernel(group["impl"])
        if use_kernel and plan is not None and plan.matches(params):
            counts = plan.step(group, grads)  # the kernel alone: no autograd
            if counts is not None:
                if not any(counts):
                    return []
                return _nonfinite_report(index, enumerate(plan.params), counts, group["params"])
        plans.pop(index, None)
        with torch.no_grad():
            return self._step_group_slow(index, group, params, use_kernel)

    def _step_group_slow(
        self, index: int, group: dict[str, Any], params: list[torch.Tensor], use_kernel: bool
    ) -> list[str]:
        """Check every tensor, initialise new state, then step: the fused kernel for each dtype bucket of
        plain CPU float32/float64 tensors, the reference path for the rest. Caches a plan when the whole
        group went to the kernel as one bucket."""
        state_keys = self._state_keys(group)
        state_of = self.state
        buckets: dict[torch.dtype, list[torch.Tensor]] = {}
        # distributed: DTensor parameters stepped on their local shards (parameter, its local tensors)
        shards: dict[torch.dtype, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]]] = {}
        reference: list[torch.Tensor] = []
        reference_shards: dict[int, tuple[torch.Tensor, torch.Tensor, dict]] = {}  # distributed: id(p) -> locals
        for p in params:
            grad = _grad(p)
            if grad.is_sparse:
                raise TypeError(
                    f"{type(self).__name__} does not support sparse gradients (parameter "
                    f"{_position(group['params'], p)} of param group {index}); use torch.optim.SparseAdam, "
                    "or a dense embedding"
                )
            state = state_of[p]
            if not state:
                self._init_state(p, group, state)
            missing = [k for k in state_keys if k not in state]
            if missing:
                raise RuntimeError(
                    f"{type(self).__name__}: parameter {_position(group['params'], p)} of param group {index} has "
                    f"no {', '.join(missing)} in its state: amsgrad or averaging was switched on after its first "
                    "step. Set these options before the first step (or load a state that has them)."
                )
            wrong = [k for k in state_keys if state[k].shape != p.shape]
            if wrong:
                raise RuntimeError(
                    f"{type(self).__name__}: parameter {_position(group['params'], p)} of param group {index} has "
                    f"shape {tuple(p.shape)} but its state {wrong[0]!r} has shape {tuple(state[wrong[0]].shape)} "
                    "(was p.data given another shape?). Reset its state (del opt.state[p]) or restore the shape."
                )
            local = _local_shards(p, grad, state, state_keys)  # distributed
            if (
                use_kernel
                and local is not None
                and p.dtype in FUSED_DTYPES
                and grad.dtype == p.dtype
                and _is_plain(local[0])
                and _is_plain(local[1])
                and all(_is_plain(t) and t.dtype == p.dtype for t in local[2].values())
            ):
                shards.setdefault(p.dtype, []).append((p, *local))
            elif (
                use_kernel
                and p.dtype in FUSED_DTYPES
                and grad.dtype == p.dtype
                and _is_plain(p)
                and _is_plain(grad)
                and all(_is_plain(state[k]) and state[k].dtype == p.dtype for k in state_keys)
            ):
                buckets.setdefault(p.dtype, []).append(p)
            else:
                if group["impl"] == "fused":
                    raise RuntimeError(
                        "impl='fused' needs dense contiguous float32/float64 CPU tensors; parameter "
                        f"{_position(group['params'], p)} of param group {index} is {p.dtype} on {p.device} "
                        f"({type(p).__name__}). Use impl='auto'."
                    )
                reference.append(p)
                if local is not None:
                    reference_shards[id(p)] = local
        bad: list[str] = []
        for members in buckets.values():
            plan = FusedPlan(self.algorithm, state_keys, members, [state_of[p] for p in members])
            counts = plan.step(group, [_grad(p) for p in members])
            if counts is None:  # cannot happen: every gradient was checked above
                raise RuntimeError("internal error: a checked gradient was refused by the fused kernel")
            bad += _nonfinite_report(index, enumerate(members), counts, group["params"])
            if len(buckets) == 1 and not reference and not shards:
                self._plans[index] = plan
        for entries in shards.values():  # distributed: a plan over the local shards, rebuilt every step
            dts = [p for p, _, _, _ in entries]
            local_states = [{**ls, "step": state_of[p]["step"]} for p, _, _, ls in entries]
            plan = FusedPlan(self.algorithm, state_keys, [lp for _, lp, _, _ in entries], local_states)
            counts = plan.step(group, [lg for _, _, lg, _ in entries])
            if counts is None:  # cannot happen: every gradient was checked above
                raise RuntimeError("internal error: a checked gradient was refused by the fused kernel")
            bad += _nonfinite_report(index, enumerate(dts), _sum_over_shards(dts, counts), group["params"])
        sharded: list[tuple[torch.Tensor, int]] = []  # distributed: DTensors' local counts, summed below
        for p in reference:
            local = reference_shards.get(id(p))
            if local is not None:  # distributed: the reference step on the local shards, as the kernel's
                lp, lg, ls = local
                sharded.append((p, self._reference_step(lp, lg, {**ls, "step": state_of[p]["step"]}, group)))
                continue
            count = self._reference_step(p, _grad(p), state_of[p], group)
            if count:
                bad.append(f"parameter {_position(group['params'], p)} of param group {index} ({count} entries)")
        if sharded:
            dts = [p for p, _ in sharded]
            totals = _sum_over_shards(dts, [c for _, c in sharded])
            bad += _nonfinite_report(index, enumerate(dts), totals, group["params"])
        return bad

    # ------------------------------------------------------------------ temporal averaging (§7.2)

    def _averaging_beta(self, group: dict[str, Any]) -> float:
        return group["betas"][1] if group["averaging_beta"] is None else group["averaging_beta"]

    @contextlib.contextmanager
    def averaged_parameters(self) -> Iterator[None]:
        """Swap the bias-corrected temporal averages θ̂_t = θ̄_t/(1 − β^t) (§7.2) into the parameters.

        Inside the ``with`` block the model holds θ̂ (e.g. to evaluate); on leaving it, even by an exception,
        the parameters are restored exactly. Parameters never stepped keep their values.

        >>> with opt.averaged_parameters():   # doctest: +SKIP
        ...     evaluate(model)
        """
        saved: list[tuple[torch.Tensor, torch.Tensor]] = []
        try:
            with torch.no_grad():
                for group in self.param_groups:
                    if not group["averaging"]:
                        raise RuntimeError("averaged_parameters() needs averaging=True in every param group")
                    beta = self._averaging_beta(group)
                    for p in group["params"]:
                        state = self.state.get(p)
                        if not state or float(state["step"]) == 0:
                            continue
                        saved.append((p, p.detach().clone()))
                        corr = F.average_correction(beta, float(state["step"]))
                        p.copy_(state["param_avg"] * corr)
            yield
        finally:
            with torch.no_grad():
                for p, value in saved:
                    p.copy_(value)

    # ------------------------------------------------------------------ diagnostics (§2.1)

    def _effective_ratio(self, state: dict[str, Any], group: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(|Δ_t|/α_t, |m̂|/√v̂) per coordinate from the state; overridden by AdaMax."""
        raise NotImplementedError

    @torch.no_grad()
    def diagnostics(self, max_coordinates: int = 1_000_000, seed: int = 0) -> dict[str, dict[str, float]]:
        """The §2.1 view of the last step, over all coordinates: the distribution of the effective step
        relative to its learning rate, |Δ_t|/α_t (Adam: |m̂|/(√v̂ + ε); AdaMax: |m̂|/u), and of the
        signal-to-noise ratio |m̂|/√v̂ (AdaMax: |m̂|/u, ε = 0). Returns ``{"step_over_lr": {...},
        "snr": {...}}`` with mean, q50, q90, q99, max and the number of coordinates. At most
        ``max_coordinates`` coordinates, drawn at random with ``seed``, enter the quantiles."""
        ratios, snrs = [], []
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state.get(p)
                if state and float(state["step"]) > 0:
                    r, s = self._effective_ratio(_gathered(state), group)  # distributed: DTensors in full
                    ratios.append(r.detach().reshape(-1).double().cpu())
                    snrs.append(s.detach().reshape(-1).double().cpu())
        if not ratios:
            raise RuntimeError("diagnostics() needs at least one step")
        gen = torch.Generator().manual_seed(seed)
        return {
            "step_over_lr": _summary(torch.cat(ratios), max_coordinates, gen),
            "snr": _summary(torch.cat(snrs), max_coordinates, gen),
        }


def _summary(x: torch.Tensor, max_coordinates: int, gen: torch.Generator) -> dict[str, float]:
    x = x[torch.isfinite(x)]
    n = x.numel()
    if n == 0:
        return {"count": 0}
    sample = x if n <= max_coordinates else x[torch.randperm(n, generator=gen)[:max_coordinates]]
    q = torch.quantile(sample, torch.tensor([0.5, 0.9, 0.99], dtype=torch.float64))
    return {
        "count": n,
        "mean": float(x.mean()),
        "q50": float(q[0]),
        "q90": float(q[1]),
        "q99": float(q[2]),
        "max": float(x.max()),
    }


def bias_corrected_moments(
    state: dict[str, Any], group: dict[str, Any], first_key: str, second_key: str, correct_second: bool
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """m̂ and the (bias-corrected, if ``correct_second``) second moment of a parameter's state, and t."""
    t = float(state["step"])
    m, s = state[first_key], state[second_key]
    if group["bias_correction"]:
        m = m / F.bias_correction(group["betas"][0], t)
        if correct_second:
            s = s / F.bias_correction(group["betas"][1], t)
    return m, s, t


__all__ = ["IMPLS", "AdamFamily", "bias_corrected_moments", "torch_compat_impl"]
