"""Call the fused C kernel for a list of CPU tensors of one dtype (see ``adam_kernels.c``).

The caller (``adamlab.optim.base``) has checked that every tensor is a dense, contiguous CPU tensor of one
floating dtype (float32 or float64) and that each step counter is a float32 CPU scalar tensor.
"""

from __future__ import annotations

import ctypes
import operator
from array import array

import torch

from adamlab.kernels import build

FLAG_MAXIMIZE = 1
FLAG_DECOUPLED = 2
FLAG_BIAS_CORRECTION = 4
FLAG_EPS_HAT = 8
FLAG_LR_SQRT = 16
FLAG_AMSGRAD = 32
FLAG_AVERAGING = 64
FLAG_BETA1_DECAY = 128

FUSED_DTYPES = (torch.float32, torch.float64)


def group_flags(group: dict) -> int:
    """The kernel's option bits for one param group."""
    flags = 0
    if group["maximize"]:
        flags |= FLAG_MAXIMIZE
    if group["decoupled_weight_decay"]:
        flags |= FLAG_DECOUPLED
    if group["bias_correction"]:
        flags |= FLAG_BIAS_CORRECTION
    if group.get("eps_mode", "paper") == "hat":
        flags |= FLAG_EPS_HAT
    if group["lr_decay"] == "sqrt":
        flags |= FLAG_LR_SQRT
    if group.get("amsgrad", False):
        flags |= FLAG_AMSGRAD
    if group["averaging"]:
        flags |= FLAG_AVERAGING
    if group["beta1_decay"] is not None:
        flags |= FLAG_BETA1_DECAY
    return flags


def group_hyperparameters(group: dict) -> array:
    """lr, β1, β2, ε, weight decay, λ (β1 decay), averaging β: the kernel's HP_* order."""
    beta1, beta2 = group["betas"]
    lam = group["beta1_decay"]
    avg_beta = group["averaging_beta"]
    return array(
        "d",
        (
            group["lr"],
            beta1,
            beta2,
            group["eps"],
            group["weight_decay"],
            1.0 if lam is None else lam,
            beta2 if avg_beta is None else avg_beta,
        ),
    )


def _address(a: array | None) -> int | None:
    return a.buffer_info()[0] if a is not None else None


def _pointers(tensors: list[torch.Tensor] | None) -> array | None:
    # array.array rather than numpy: building it and taking its address costs a few hundred ns, which
    # matters at small sizes (the per-step overhead is what the 1e5 benchmark measures).
    return array("Q", map(torch.Tensor.data_ptr, tensors)) if tensors is not None else None


class FusedPlan:
    """The pointer arrays of one param group's fused step, built once and reused while nothing changed.

    Gathering and checking ~200 tensors in Python costs more per step than the arithmetic of a small model,
    so the plan keeps what does not change between steps (the parameters', states' and step counters'
    addresses, their sizes) and each step re-checks only cheaply: the same parameters have gradients, the
    parameters still own the same memory and size (``p.data = …`` changes them), the state tensors are the
    same objects, and every gradient is dense and contiguous. :meth:`fast_step` has the C++ bridge
    (``bridge.cpp``) do these checks, where it is built; :meth:`matches` and :meth:`step` do them in Python.
    Anything else makes the caller rebuild the plan. (A state dict replaced as a whole, ``opt.state[p] = {…}``,
    is not seen: replace state through ``load_state_dict``, which drops every plan.) The plan holds references
    to every tensor it points to, so no address in it can dangle. Gradients' addresses are read every step
    (``zero_grad(set_to_none=True)`` gives new gradient tensors).
    """

    def __init__(self, algorithm: str, keys: list[str], params: list[torch.Tensor], states: list[dict]) -> None:
        self.algorithm = algorithm
        self.keys = keys  # first moment, second moment[, max_exp_avg_sq][, param_avg]
        self.params = params
        self.states = states
        self.checked_keys = [*keys, "step"]
        self.state_tensors = [[s[k] for s in states] for k in self.checked_keys]
        self.param_ptrs = _pointers(params)
        self.numel = array("q", [p.numel() for p in params])
        self.is_double = int(params[0].dtype == torch.float64)
        self.state_ptrs = [_pointers(ts) for ts in self.state_tensors]
        self.nonfinite = array("q", bytes(8 * len(params)))
        self.grad_ptrs = array("Q", bytes(8 * len(params)))  # filled by the bridge
        self.bridge_args: tuple | None = None

    def matches(self, params: list[torch.Tensor]) -> bool:
        """Whether the plan still describes ``params`` (those of the group that have a gradient) and their
        state. Every check iterates in C (``map``), not in Python frames: this runs on every step."""
        if len(params) != len(self.params) or not all(map(operator.is_, params, self.params)):
            return False
        if _pointers(params) != self.param_ptrs or array("q", map(torch.Tensor.numel, params)) != self.numel:
            return False  # new storage (``p.data = …``), or a view of another size on the old one
        for key, tensors in zip(self.checked_keys, self.state_tensors):
            if not all(map(operator.is_, map(operator.itemgetter(key), self.states), tensors)):
                return False
        return True

    def step(self, group: dict, grads: list[torch.Tensor]) -> array | None:
        """Run one step; None (nothing done) if a gradient is not dense and contiguous. Returns the number of
        non-finite gradient entries per tensor (their coordinates were left unchanged)."""
        try:
            if not all(map(torch.Tensor.is_contiguous, grads)):  # raises for sparse and other layouts
                return None
        except (RuntimeError, NotImplementedError):
            return None
        self._run(group, array("Q", map(torch.Tensor.data_ptr, grads)))
        return self.nonfinite

    def fast_step(self, group: dict) -> int | None:
        """:meth:`matches` and :meth:`step` at once, in one call of the C++ bridge (``bridge.cpp``), when it
        is built: its checks, then the kernel. Returns the number of non-finite gradient entries of the step
        (per tensor in ``self.nonfinite``), or None: nothing was done (the bridge is not available, the plan no
        longer describes the group, or a gradient is missing or not one the kernel takes; the caller's general
        path decides)."""
        bridge = build.bridge()
        if bridge is None:
            return None
        args = self.bridge_args or self._bridge_args()
        bad = bridge.step(
            group["params"], *args, group_hyperparameters(group), group_flags(group), torch.get_num_threads()
        )
        return bad if bad >= 0 else None

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
        where the plan's keys (the group's amsgrad and averaging) have none."""
        address = dict(zip(self.checked_keys, (_address(a) or 0 for a in self.state_ptrs)))
        first, second = self.keys[:2]
        return (
            address[first],
            address[second],
            address.get("max_exp_avg_sq", 0),
            address.get("param_avg", 0),
            address["step"],
        )

    def _run(self, group: dict, grad_ptrs: array) -> int:
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
        hp = group_hyperparameters(group)
        tail = (steps, _address(hp), group_flags(group), torch.get_num_threads(), _address(self.nonfinite))
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
