"""Call the fused C kernel for a list of CPU tensors of one dtype (see ``adam_kernels.c``).

The caller (``adamlab.functional`` or ``adamlab.optim.base``) has checked that every tensor is a dense,
contiguous CPU tensor of one floating dtype (float32 or float64) and that each step counter is a float32 CPU
scalar tensor (:func:`why_not_fused` says why one is not). The kernel's options come from the hyper-parameter
type (``adamlab.hyperparameters``: ``hp.flags`` and ``hp.kernel_array()``).
"""

from __future__ import annotations

import ctypes
import functools
import operator
from array import array
from collections.abc import Sequence
from typing import Any

import torch

from adamlab.kernels import build

FUSED_DTYPES = (torch.float32, torch.float64)


def is_plain(t: torch.Tensor) -> bool:
    """A dense, contiguous CPU tensor that is not a tensor subclass (DTensor, …): what the kernel can take."""
    return (
        t.is_cpu and t.layout == torch.strided and t.is_contiguous() and type(t) in (torch.Tensor, torch.nn.Parameter)
    )


def why_not_fused(p: torch.Tensor, grad: torch.Tensor, state: dict, keys: Sequence[str], hp: Any = None) -> str | None:
    """None if the kernel can step this parameter; else what it lacks, in words (for impl="fused"'s error).
    With ``hp``, bfloat16/float16 parameters count as taken where the half-precision kernel
    (``adamlab.kernels.half``) steps them: Adam without averaging."""
    if p.dtype not in FUSED_DTYPES and not (hp is not None and half_kernel_takes(p, hp)):
        return f"is {p.dtype} (the kernel takes float32 and float64, and bfloat16/float16 for Adam without averaging)"
    if not p.is_cpu:
        return f"is on {p.device} (the kernel runs on the CPU)"
    if type(p) not in (torch.Tensor, torch.nn.Parameter):
        return f"is a {type(p).__name__}"
    named = [("the parameter", p), ("its gradient", grad), *((f"its state {k!r}", state[k]) for k in keys)]
    for name, t in named:
        if t.layout != torch.strided:
            return f"has {name} in layout {t.layout}"
        if not t.is_contiguous():
            channels_last = t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)
            kind = "channels_last" if channels_last else "non-contiguous"
            return f"has {name} {kind} (strides {t.stride()}); the kernel needs contiguous tensors"
        if t.dtype != p.dtype or not t.is_cpu or not is_plain(t):
            return f"has {name} of dtype {t.dtype} on {t.device} ({type(t).__name__}), unlike the parameter"
    return None


def _address(a: array | None) -> int | None:
    return a.buffer_info()[0] if a is not None else None


def _pointers(tensors: list[torch.Tensor] | None) -> array | None:
    # array.array rather than numpy: building it and taking its address costs a few hundred ns, which
    # matters at small sizes (the per-step overhead is what the 1e5 benchmark measures).
    return array("Q", map(torch.Tensor.data_ptr, tensors)) if tensors is not None else None


@functools.cache
def _check_kernel_tables() -> None:
    """Once per process, before the kernel's first use: its FLAG_* bits and HP_* order are the hyper-parameter
    types' (``adamlab.hyperparameters.check_kernel_source``), so a drifted build fails loudly, not silently."""
    from adamlab.hyperparameters import check_kernel_source

    check_kernel_source(build.SOURCE)


def half_kernel_takes(p: torch.Tensor, hp: Any) -> bool:
    """Whether ``adamlab.kernels.half`` steps this parameter's dtype with these options (layout aside)."""
    from adamlab.kernels.half import HALF_TYPES

    return (
        p.dtype in HALF_TYPES
        and hp.algorithm == "adam"
        and not hp.averaging
        and hp.in_kernel
        and build.available()
        and hasattr(build.load(), "adamlab_adam_step_half")
    )


class FusedPlan:
    """The pointer arrays of one param group's fused step, built once and reused while nothing changed.

    Gathering and checking ~200 tensors in Python costs more per step than the arithmetic of a small model,
    so the plan keeps what does not change between steps (the parameters', states' and step counters'
    addresses, their sizes) and :meth:`try_step` re-checks, every step, only what may have changed: the plan's
    state keys are the hyper-parameters' (amsgrad and averaging decide which arrays the kernel touches); the
    same parameters have gradients; they still own the same memory, size and dtype (``p.data = …`` changes
    them); the state tensors are the same objects; every gradient is a dense contiguous CPU tensor of the
    parameter's dtype and size. :meth:`try_step` is the one place that decides whether the plan still holds:
    the C++ bridge (``bridge.cpp``) does these checks where it is built, :meth:`matches` and
    :meth:`_gradients_fit` do the same ones in Python otherwise (or when the plan covers only the parameters
    that have a gradient). (A state dict replaced as a whole, ``opt.state[p] = {…}``, is not seen: replace state
    through ``load_state_dict``, which drops every plan.) The plan holds references to every tensor it points
    to, so no address in it can dangle. Gradients' addresses are read every step (``zero_grad(set_to_none=True)``
    gives new gradient tensors).
    """

    def __init__(self, algorithm: str, keys: Sequence[str], params: list[torch.Tensor], states: list[dict]) -> None:
        _check_kernel_tables()
        self.algorithm = algorithm
        self.keys = tuple(keys)  # first moment, second moment[, max_exp_avg_sq][, param_avg]
        self.params = params
        self.states = states
        self.checked_keys = [*keys, "step"]
        self.state_tensors = [[s[k] for s in states] for k in self.checked_keys]
        self.param_ptrs = _pointers(params)
        self.numel = array("q", [p.numel() for p in params])
        self.dtype = params[0].dtype
        self.is_double = int(self.dtype == torch.float64)
        self.state_ptrs = [_pointers(ts) for ts in self.state_tensors]
        self.nonfinite = array("q", bytes(8 * len(params)))
        self.grad_ptrs = array("Q", bytes(8 * len(params)))  # filled by the bridge
        self.bridge_args: tuple | None = None

    def try_step(self, group_params: list[torch.Tensor], hp: Any) -> int | None:
        """Step if the plan still holds for the group's parameters ``group_params`` and ``hp``; else None and
        nothing done (the caller rebuilds). Returns the number of non-finite gradient entries (per tensor in
        ``self.nonfinite``; their coordinates were left unchanged)."""
        if self.keys != hp.state_keys or not hp.in_kernel:
            return None
        bridge = build.bridge()
        if bridge is not None:
            args = self.bridge_args or self._bridge_args()
            bad = bridge.step(group_params, *args, hp.kernel_array(), hp.flags, torch.get_num_threads())
            if bad >= 0:
                return bad
        # In Python: also where the plan covers only the parameters that have a gradient (the bridge refuses).
        grads = [p.grad for p in group_params]
        params = group_params
        if any(g is None for g in grads):  # (not `None in`: that compares tensors with ==)
            params = [p for p in group_params if p.grad is not None]
            grads = [p.grad for p in params]
        if not self.matches(params) or not self._gradients_fit(grads):  # type: ignore[arg-type]
            return None
        return self._run(hp, array("Q", map(torch.Tensor.data_ptr, grads)))  # type: ignore[arg-type]

    def matches(self, params: list[torch.Tensor]) -> bool:
        """Whether the plan still describes ``params`` and their state (the Python half of :meth:`try_step`).
        Every check iterates in C (``map``), not in Python frames: this runs on every step."""
        if len(params) != len(self.params) or not all(map(operator.is_, params, self.params)):
            return False
        if _pointers(params) != self.param_ptrs or array("q", map(torch.Tensor.numel, params)) != self.numel:
            return False  # new storage (``p.data = …``), or a view of another size on the old one
        if not all(p.dtype == self.dtype and is_plain(p) for p in params):
            return False
        for key, tensors in zip(self.checked_keys, self.state_tensors):
            if not all(map(operator.is_, map(operator.itemgetter(key), self.states), tensors)):
                return False
        return True

    def _gradients_fit(self, grads: list[torch.Tensor]) -> bool:
        """Every gradient dense, contiguous, on the CPU, of the plan's dtype and its parameter's size."""
        try:
            return all(g.dtype == self.dtype and is_plain(g) for g in grads) and (
                array("q", map(torch.Tensor.numel, grads)) == self.numel
            )
        except (RuntimeError, NotImplementedError):  # is_contiguous raises for sparse and other layouts
            return False

    def step(self, hp: Any, grads: list[torch.Tensor]) -> array:
        """Run one step over the plan's parameters with ``grads`` (checked by the caller); the number of
        non-finite gradient entries per tensor."""
        self._run(hp, array("Q", map(torch.Tensor.data_ptr, grads)))
        return self.nonfinite

    def _bridge_args(self) -> tuple:
        """The bridge's arguments that stay fixed while the plan holds (see ``step`` in bridge.cpp)."""
        lib = build.load()
        adamax = self.algorithm == "adamax"
        kernel = ctypes.cast(lib.adamlab_adamax_step if adamax else lib.adamlab_adam_step, ctypes.c_void_p).value
        self.bridge_args = (
            tuple(self.params),
            self.param_ptrs,
            self.numel,
            self.is_double,
            tuple(self.states),
            tuple(self.checked_keys),
            tuple(t for tensors in self.state_tensors for t in tensors),
            self.grad_ptrs,
            kernel,
            int(adamax),
            (*self._state_arrays(), _address(self.nonfinite)),
        )
        return self.bridge_args

    def _state_arrays(self) -> tuple[int, int, int, int, int]:
        """Addresses of the pointer arrays of m, v (u), v_max, θ̄ and the step counters; 0 for v_max and θ̄
        where the plan's keys (amsgrad and averaging) have none."""
        address = dict(zip(self.checked_keys, (_address(a) or 0 for a in self.state_ptrs)))
        first, second = self.keys[:2]
        return (
            address[first],
            address[second],
            address.get("max_exp_avg_sq", 0),
            address.get("param_avg", 0),
            address["step"],
        )

    def _run(self, hp: Any, grad_ptrs: array) -> int:
        """Call the kernel; returns the total number of non-finite gradient entries (per tensor in
        ``self.nonfinite``)."""
        lib = build.load()
        m, v, vmax, avg, steps = self._state_arrays()
        common = (
            self.is_double,
            len(self.params),
            _address(self.numel),
            _address(self.param_ptrs),
            _address(grad_ptrs),
            m,
            v,
        )
        values = hp.kernel_array()
        tail = (steps, _address(values), hp.flags, torch.get_num_threads(), _address(self.nonfinite))
        if self.algorithm == "adam":
            return lib.adamlab_adam_step(*common, vmax, avg, *tail)
        return lib.adamlab_adamax_step(*common, avg, *tail)


def roofline(p: torch.Tensor, g: torch.Tensor, m: torch.Tensor, v: torch.Tensor, nthreads: int) -> None:
    """Adam's memory pattern with trivial arithmetic over four float32 tensors: the speed limit."""
    build.load().adamlab_roofline(p.numel(), p.data_ptr(), g.data_ptr(), m.data_ptr(), v.data_ptr(), nthreads)


class RooflinePlan:
    """Adam's memory pattern with trivial arithmetic over lists of float32 tensors where they lie, through
    the same driver (one call, thread split) as the step: what a layout of separate tensors itself costs.
    The tensors must stay alive and unmoved while the plan is used (the benchmark's own tensors)."""

    def __init__(
        self, p: list[torch.Tensor], g: list[torch.Tensor], m: list[torch.Tensor], v: list[torch.Tensor]
    ) -> None:
        for ts in (p, g, m, v):
            if len(ts) != len(p) or any(t.dtype != torch.float32 or not t.is_contiguous() for t in ts):
                raise ValueError("RooflinePlan needs four equally long lists of contiguous float32 tensors")
        self.tensors = (p, g, m, v)  # keep them alive
        self.numel = array("q", [t.numel() for t in p])
        self.pointers = [_pointers(ts) for ts in self.tensors]

    def run(self, nthreads: int) -> None:
        build.load().adamlab_roofline_multi(
            len(self.numel), _address(self.numel), *[_address(a) for a in self.pointers], nthreads
        )
