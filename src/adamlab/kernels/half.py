"""Adam on bfloat16 and float16 parameters in the fused C kernel (``adamlab_adam_step_half``).

θ, g, m, v (and AMSGrad's v_max) stay in the parameter's dtype, as torch keeps them; the arithmetic runs in
float32 in registers, in the order of torch's fused CPU Adam, so that a step matches
``torch.optim.Adam(fused=True)`` on the same tensors (see ``ADAM_HALF_LOOP`` in adam_kernels.c). One pass over
memory: 2 bytes read and written per stored value, 14 bytes a parameter (read θ, g, m, v; write θ, m, v).

:func:`adam_step_half` is the one call; the optimizer classes route half-precision groups to it.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

import torch

from adamlab.hyperparameters import AdamHyperparameters
from adamlab.kernels import build

#: The kernel's code for each half-precision dtype.
HALF_TYPES = {torch.bfloat16: 0, torch.float16: 1}


def _pointers(tensors: Sequence[torch.Tensor]) -> array:
    return array("Q", [t.data_ptr() for t in tensors])


def _address(a: array) -> int:
    return a.buffer_info()[0]


def adam_step_half(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    exp_avgs: Sequence[torch.Tensor],
    exp_avg_sqs: Sequence[torch.Tensor],
    max_exp_avg_sqs: Sequence[torch.Tensor] | None,
    steps: Sequence[torch.Tensor],
    hp: AdamHyperparameters,
    nthreads: int | None = None,
) -> list[int]:
    """One Adam step, in place, for half-precision tensors of one dtype (bfloat16 or float16).

    Every tensor is a contiguous CPU tensor of the parameters' dtype and size; ``max_exp_avg_sqs`` is given
    exactly when ``hp.amsgrad``; ``steps`` are float32 scalar tensors (incremented here). Returns the number
    of non-finite gradient entries per tensor (those coordinates are left unchanged). ValueError names the
    argument that is not as described."""
    if hp.averaging:
        raise ValueError("hp.averaging: the half-precision kernel keeps no average; use the reference path")
    if not params:
        return []
    dtype = params[0].dtype
    if dtype not in HALF_TYPES:
        raise ValueError(f"params: bfloat16 or float16 tensors expected, got {dtype}")
    if bool(hp.amsgrad) != (max_exp_avg_sqs is not None):
        raise ValueError("max_exp_avg_sqs: give them exactly when hp.amsgrad is set")
    lists = {"params": params, "grads": grads, "exp_avgs": exp_avgs, "exp_avg_sqs": exp_avg_sqs}
    if max_exp_avg_sqs is not None:
        lists["max_exp_avg_sqs"] = max_exp_avg_sqs
    for name, tensors in lists.items():
        if len(tensors) != len(params):
            raise ValueError(f"{name}: {len(tensors)} tensors for {len(params)} parameters")
        for t, p in zip(tensors, params):
            if t.dtype != dtype or t.device.type != "cpu" or not t.is_contiguous() or t.numel() != p.numel():
                raise ValueError(f"{name}: contiguous CPU {dtype} tensors of the parameters' sizes expected")
    if len(steps) != len(params) or any(s.dtype != torch.float32 or s.numel() != 1 for s in steps):
        raise ValueError("steps: one float32 scalar tensor per parameter expected")
    numel = array("q", [p.numel() for p in params])
    nonfinite = array("q", bytes(8 * len(params)))
    pointers = [_pointers(ts) for ts in (params, grads, exp_avgs, exp_avg_sqs)]
    vmax = _pointers(max_exp_avg_sqs) if max_exp_avg_sqs is not None else None
    step_ptrs = _pointers(steps)
    hp_array = hp.kernel_array()
    bad = build.load().adamlab_adam_step_half(
        HALF_TYPES[dtype],
        len(params),
        _address(numel),
        *[_address(a) for a in pointers],
        _address(vmax) if vmax is not None else 0,
        _address(step_ptrs),
        _address(hp_array),
        hp.flags,
        torch.get_num_threads() if nthreads is None else nthreads,
        _address(nonfinite),
    )
    if bad < 0:
        raise ValueError(f"the half-precision kernel refused the request (code {bad})")
    return list(nonfinite)


class HalfAdam:
    """Adam over a list of half-precision parameters through :func:`adam_step_half`, with its own state
    (exp_avg, exp_avg_sq and step per parameter, as torch keeps them): the benchmark's contender until the
    optimizer classes route half-precision groups to the kernel. ``step()`` takes each parameter's ``.grad``."""

    def __init__(self, params: Sequence[torch.Tensor], hp: AdamHyperparameters | None = None) -> None:
        self.params = list(params)
        self.hp = hp or AdamHyperparameters()
        self.exp_avgs = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sqs = [torch.zeros_like(p) for p in self.params]
        self.max_exp_avg_sqs = [torch.zeros_like(p) for p in self.params] if self.hp.amsgrad else None
        self.steps = [torch.tensor(0.0) for _ in self.params]

    def step(self) -> list[int]:
        grads = [p.grad for p in self.params]
        if any(g is None for g in grads):
            raise ValueError("params: every parameter needs a .grad")
        data = [p.detach() for p in self.params]
        return adam_step_half(
            data,
            [g for g in grads if g is not None],
            self.exp_avgs,
            self.exp_avg_sqs,
            self.max_exp_avg_sqs,
            self.steps,
            self.hp,
        )


class HalfRoofline:
    """The half-precision step's memory pattern (14 bytes a parameter) with trivial arithmetic over 2-byte
    tensors where they lie, through the kernel's driver: the speed limit of a half-precision step."""

    def __init__(self, params: Sequence[torch.Tensor]) -> None:
        ps = [p.detach() for p in params]
        if any(p.element_size() != 2 or not p.is_contiguous() or p.device.type != "cpu" for p in ps):
            raise ValueError("params: contiguous CPU tensors of a 2-byte dtype expected")
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
        self.tensors = (ps, grads, [torch.zeros_like(p) for p in ps], [torch.zeros_like(p) for p in ps])
        self.numel = array("q", [p.numel() for p in ps])
        self.pointers = [_pointers(ts) for ts in self.tensors]

    def step(self) -> None:
        build.load().adamlab_roofline_half_multi(
            len(self.numel), _address(self.numel), *[_address(a) for a in self.pointers], torch.get_num_threads()
        )
