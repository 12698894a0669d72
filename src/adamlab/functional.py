"""The functional API: one step of Adam or AdaMax over lists of tensors, behind one signature.

``adam(params, grads, states, hp, *, impl)`` and ``adamax(...)`` update ``params`` and ``states`` in place
and return the number of non-finite gradient entries per tensor (their coordinates were left unchanged:
parameter and state). ``states[i]`` is the state dict of ``params[i]`` as :func:`init_state` makes it (the
keys torch.optim uses: ``step``, ``exp_avg``, ``exp_avg_sq``/``exp_inf``, ``max_exp_avg_sq``, ``param_avg``);
``hp`` an :class:`~adamlab.hyperparameters.AdamHyperparameters` (or AdaMax's). The implementations:

- ``"reference"``: each tensor on its own, literally as the paper writes it (any device, dtype, autograd);
- ``"foreach"``: torch's multi-tensor operations over all tensors (the path for CUDA, MPS and XPU);
- ``"fused"``: adamlab's C kernel (contiguous float32/float64 CPU tensors, and bfloat16/float16 for Adam
  without averaging; one pass over memory);
- ``"torch"``: torch's own fused (or foreach) Adam, where its semantics are adamlab's (Adam without the
  paper's extra options; see :func:`torch_supports`): the tensors with non-finite gradients take the reference
  path first, so non-finite entries never enter the state.

The classes ``adamlab.Adam``/``AdaMax`` gather tensors, keep state and cache the fused plan around these.

>>> import torch
>>> from adamlab import functional
>>> from adamlab.hyperparameters import AdamHyperparameters
>>> p = torch.ones(3); hp = AdamHyperparameters(lr=0.1)
>>> state = functional.init_state(p, hp)
>>> functional.adam([p], [torch.ones(3)], [state], hp, impl="reference")
[0]
>>> p                                    # θ_1 = θ_0 − α·m̂/(√v̂ + ε) = 1 − 0.1·1/(1 + 1e-8)
tensor([0.9000, 0.9000, 0.9000])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from adamlab.hyperparameters import AdaMaxHyperparameters, AdamHyperparameters
from adamlab.kernels.fused import FUSED_DTYPES, FusedPlan, is_plain, why_not_fused
from adamlab.optim import quantised, reference

IMPLS = ("reference", "foreach", "fused", "torch")
State = dict[str, Any]


def init_state(p: torch.Tensor, hp: Any, position: int = 0) -> State:
    """A parameter's state before its first step: t = 0 (a float32 CPU scalar tensor, as torch.optim keeps
    it) and zeros for m, v (u), and v_max and θ̄ where the options use them. Under ``state_precision``
    bf16/int8, a float32 tensor of at least 4096 elements gets quantised state instead
    (:func:`adamlab.optim.quantised.init_state`; ``position``, its index among the optimizer's parameters,
    seeds its stochastic rounding)."""
    if quantised.takes_quantised_state(p, hp):
        return quantised.init_state(p, hp, position)
    state: State = {"step": torch.tensor(0.0, dtype=torch.float32)}
    for key in hp.state_keys:
        state[key] = torch.zeros_like(p, memory_format=torch.preserve_format)
    return state


def torch_supports(hp: Any, params: Sequence[torch.Tensor]) -> bool:
    """Whether torch's own fused/foreach Adam computes adamlab's update for ``hp``: Adam (or AdamW) with bias
    correction, ε as in Algorithm 1, constant α and β1, no averaging, and ε > 0 (torch divides 0/0 where adamlab
    steps 0)."""
    return (
        isinstance(hp, AdamHyperparameters)
        and hp.bias_correction
        and hp.eps_mode == "paper"
        and hp.lr_decay is None
        and hp.beta1_decay is None
        and not hp.averaging
        and hp.eps > 0
        and all(p.dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16) for p in params)
    )


def _fused(params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], states: Sequence[State], hp: Any) -> list:
    """adamlab's C kernel, one call per dtype: float32/float64 (``FusedPlan``), bfloat16/float16 for Adam
    without averaging (``adamlab.kernels.half``: float32 arithmetic in registers, state in the parameter dtype)."""
    keys = hp.state_keys
    for i, (p, g, s) in enumerate(zip(params, grads, states)):
        why = why_not_fused(p, g, s, keys, hp)
        if why is not None:
            raise RuntimeError(f"impl='fused': tensor {i} {why}")
    counts: list[int] = [0] * len(params)
    for dtype in {p.dtype for p in params}:
        members = [i for i, p in enumerate(params) if p.dtype == dtype]
        ps, gs, sts = [params[i] for i in members], [grads[i] for i in members], [states[i] for i in members]
        if dtype in FUSED_DTYPES:
            result: Sequence[int] = FusedPlan(hp.algorithm, keys, ps, sts).step(hp, gs)
        else:
            from adamlab.kernels.half import adam_step_half

            vmax = [s["max_exp_avg_sq"] for s in sts] if hp.amsgrad else None
            exp_avgs, exp_avg_sqs = [s["exp_avg"] for s in sts], [s["exp_avg_sq"] for s in sts]
            result = adam_step_half(ps, gs, exp_avgs, exp_avg_sqs, vmax, [s["step"] for s in sts], hp)
        for i, c in zip(members, result):
            counts[i] = c
    return counts


def _torch_adam(
    params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], states: Sequence[State], hp: Any
) -> list:
    from torch.optim.adam import adam as torch_adam

    if not torch_supports(hp, params):
        raise ValueError(
            "impl='torch' needs options torch's Adam computes alike (see adamlab.functional.torch_supports)"
        )
    counts = [0] * len(params)
    finite = reference._split_nonfinite(grads)
    for i, ok in enumerate(finite):
        if not ok:
            counts[i] = reference.adam_step(params[i], grads[i], states[i], hp)
    by_device: dict[torch.device, list[int]] = {}
    for i, ok in enumerate(finite):
        if ok:
            by_device.setdefault(params[i].device, []).append(i)
    for device, members in by_device.items():
        sts = [states[i] for i in members]
        # torch's fused kernels take the step counters on the parameters' device; adamlab keeps them on the
        # CPU (as torch.optim does for its default paths): one small copy each way per tensor.
        steps = [s["step"] if device.type == "cpu" else s["step"].to(device) for s in sts]
        torch_adam(
            [params[i] for i in members],
            [grads[i] for i in members],
            [s["exp_avg"] for s in sts],
            [s["exp_avg_sq"] for s in sts],
            [s["max_exp_avg_sq"] for s in sts] if hp.amsgrad else [],
            steps,
            fused=True,
            decoupled_weight_decay=hp.decoupled_weight_decay,
            amsgrad=hp.amsgrad,
            beta1=hp.beta1,
            beta2=hp.beta2,
            lr=hp.lr,
            weight_decay=hp.weight_decay,
            eps=hp.eps,
            maximize=hp.maximize,
        )
        for s, step in zip(sts, steps):
            if step is not s["step"]:
                s["step"].copy_(step)
    return counts


def quantised_kernel() -> Any:
    """``adamlab.kernels.quantized`` where it exists and its kernel is built, else None (then quantised state
    steps on the torch reference, :func:`adamlab.optim.quantised.step`, which computes the same bits)."""
    try:
        from adamlab.kernels import quantized
    except ImportError:
        return None
    try:
        return quantized if quantized.available() else None
    except Exception:  # a kernel that fails to load is a kernel that is not there
        return None


def _quantised(
    params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], states: Sequence[State], hp: Any, impl: str
) -> list[int]:
    """Tensors with quantised state (``state_precision`` bf16/int8): impl "fused" (and the optimizers' "auto")
    takes the quantised kernel (``adamlab.kernels.quantized.adam_step_quantised``) for plain contiguous CPU
    tensors where it is built, one call per format and block size; every other case the torch reference."""
    counts = [0] * len(params)
    kernel = quantised_kernel() if impl == "fused" else None
    batches: dict[tuple[str, int], list[int]] = {}
    for i, (p, g, s) in enumerate(zip(params, grads, states)):
        quantised.upgrade_int8_codes(s)  # a version-1 int8 state put in without load_state_dict
        tensors = [p, g, *(v for v in s.values() if isinstance(v, torch.Tensor) and v.dim() > 0)]
        if p.dtype != torch.float32:
            raise TypeError(f"tensor {i} has quantised state but is {p.dtype}; quantised state is for float32")
        if kernel is not None and g.dtype == torch.float32 and all(map(is_plain, tensors)):
            batches.setdefault((quantised.precision_of(s), int(s["state_block_size"])), []).append(i)
        else:
            counts[i] = quantised.step(p, g, s, hp)
    for (precision, block), members in batches.items():
        assert kernel is not None
        sts = [states[i] for i in members]
        second = "exp_inf" if hp.algorithm == "adamax" else "exp_avg_sq"
        result = kernel.adam_step_quantised(
            precision,
            [params[i] for i in members],
            [grads[i] for i in members],
            [s["exp_avg"] for s in sts],
            [s[second] for s in sts],
            [s["exp_avg_absmax"] for s in sts] if precision == "int8" else None,
            [s[second + "_absmax"] for s in sts] if precision == "int8" else None,
            [s["step"] for s in sts],
            [int(s["state_seed"]) for s in sts],
            hp,
            block_size=block,
            adamax=hp.algorithm == "adamax",
            threads=torch.get_num_threads(),
        )
        for i, c in zip(members, result):
            counts[i] = int(c)
    return counts


def _run(
    algorithm: str,
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    states: Sequence[State],
    hp: Any,
    impl: str,
) -> list[int]:
    if not len(params) == len(grads) == len(states):
        raise ValueError(
            f"params, grads and states must be equally long, got {len(params)}, {len(grads)}, {len(states)}"
        )
    if hp.algorithm != algorithm:
        raise TypeError(f"{algorithm}() needs {algorithm.title()}'s hyper-parameters, got {type(hp).__name__}")
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    packed = [i for i, s in enumerate(states) if quantised.is_quantised(s)]
    if packed:  # quantised state: its own step (any impl), the others as usual
        counts = _quantised(
            [params[i] for i in packed], [grads[i] for i in packed], [states[i] for i in packed], hp, impl
        )
        rest = sorted(set(range(len(params))) - set(packed))
        out = [0] * len(params)
        for i, c in zip(packed, counts):
            out[i] = c
        if rest:
            others = _run(
                algorithm, [params[i] for i in rest], [grads[i] for i in rest], [states[i] for i in rest], hp, impl
            )
            for i, c in zip(rest, others):
                out[i] = c
        return out
    if impl == "reference":
        step_one = reference.adam_step if algorithm == "adam" else reference.adamax_step
        return [step_one(p, g, s, hp) for p, g, s in zip(params, grads, states)]
    if impl == "foreach":
        run = reference.adam_foreach if algorithm == "adam" else reference.adamax_foreach
        return run(params, grads, states, hp)
    if impl == "fused":
        return _fused(params, grads, states, hp)
    if impl == "torch":
        return _torch_adam(params, grads, states, hp)
    raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")


def adam(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    states: Sequence[State],
    hp: AdamHyperparameters,
    *,
    impl: str = "reference",
) -> list[int]:
    """One step of Adam (Algorithm 1, §2, with the variants of :class:`adamlab.Adam`) for every tensor;
    the number of non-finite gradient entries per tensor. Runs under ``torch.no_grad()`` unless the caller
    wants autograd through the step (``impl="reference"`` only)."""
    return _run("adam", params, grads, states, hp, impl)


def adamax(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    states: Sequence[State],
    hp: AdaMaxHyperparameters,
    *,
    impl: str = "reference",
) -> list[int]:
    """One step of AdaMax (Algorithm 2, §7.1) for every tensor; the number of non-finite gradient entries per
    tensor. ``impl`` as for :func:`adam` (``"torch"`` is Adam's only)."""
    if impl == "torch":
        raise ValueError("impl='torch' is for Adam only; AdaMax on a device takes impl='foreach'")
    return _run("adamax", params, grads, states, hp, impl)


__all__ = ["IMPLS", "adam", "adamax", "init_state", "torch_supports"]
