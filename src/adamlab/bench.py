"""``adamlab bench step``: the speed of one optimizer step on CPU, against the memory-bandwidth limit.

An fp32 Adam step reads θ, g, m, v and writes θ, m, v: 28 bytes per parameter, so on a CPU it is bound by
memory bandwidth. The yardstick is :func:`adamlab.kernels.fused.roofline`, a C loop with exactly that memory
pattern and trivial arithmetic, measured in the same run. Contenders:

=========================  ================================================================================
``roofline``               the C loop above over flat fp32 buffers of the layout's size (the speed limit)
``roofline, tensors``      the same loop over the layout's own tensors where they lie, through the kernel's
                           driver (one call per step): what a layout of separate tensors costs by itself
``adamlab Adam``           ``adamlab.Adam(params)``: the default (fused C kernel) step
``adamlab AdaMax``         ``adamlab.AdaMax(params)``: the default (fused C kernel) step
``adamlab Adam reference`` ``adamlab.Adam(params, impl="reference")``: per-tensor torch ops
``torch Adam``             ``torch.optim.Adam(params)``: torch's default, the for-loop on CPU
``torch Adam foreach``     ``torch.optim.Adam(params, foreach=True)``
``torch Adam fused``       ``torch.optim.Adam(params, fused=True)``
``torch AdamW fused``      ``torch.optim.AdamW(params, fused=True)``
``torch Adamax``           ``torch.optim.Adamax(params)``: torch's default, the for-loop on CPU
``torch Adamax foreach``   ``torch.optim.Adamax(params, foreach=True)`` (torch has no fused Adamax)
``DeepSpeed CPUAdam``      ``deepspeed.ops.adam.DeepSpeedCPUAdam(params, adamw_mode=False)``, only where
                           deepspeed is installed (its C++ op is JIT-built with ninja on first use)
=========================  ================================================================================

Quantised optimizer state (issue 16), on the flat and transformer layouts: ``adamlab Adam int8 state``,
``adamlab Adam bf16 state`` and ``adamlab AdaMax int8 state`` (the kernel's entry
:func:`adamlab.kernels.quantized.adam_step_quantised` called directly: :class:`_QuantisedState`), ``adamlab Adam
int8 state, optimizer`` (``adamlab.Adam(params, state_precision="int8", impl="fused")``), and, where installed,
``bitsandbytes Adam8bit`` and ``torchao AdamW8bit`` (weight_decay=0; compiled per tensor shape, so warmed up
and timed before the measurement). Each row gives its state bytes per parameter, from its state tensors
(:func:`state_bytes_per_param`): fp32 8, bf16 4, int8 2 + 8/B. adamlab's quantised rows are checked bit for bit
against the reference path before timing (:func:`verify_state`), the 8-bit contenders against torch.optim.Adam
(:func:`verify_eight_bit`); a row that fails, or an optional contender that is not installed, is skipped with
the reason (printed, and in the JSON's ``skipped``). Issue 16's targets: int8 state ≥ 1.3× the fp32
roofline's update rate; ≥ 10× each 8-bit contender.

Method: for each layout and thread count, every contender gets its own state (all share the parameters and
gradients, whose values do not change the work), takes warm-up steps, and then the contenders run
round-robin, in a rotated order each round, a few steps each, for several rounds; the figure for a
contender is the median of all its step times. Results are ratios to the roofline (``frac_roofline``) and to
torch's fused Adam (``vs_torch_fused``) from the same run, so that a noisy shared machine still gives
comparable numbers. GB/s counts 28 bytes per parameter (14 on the half-precision layouts; the quantised-state
rows their own 16 or 20; none for the 8-bit contenders, which make several passes).

The ``bf16`` and ``fp16`` layouts (the transformer's tensors in bfloat16 / float16: θ, g, m, v all in that
dtype; 80 MB, within this VM's 300 MiB L3) and ``bf16-flat``/``fp16-flat`` (one tensor of 5e7: 400 MB, beyond
it) have their own roofline, the same memory pattern in 2-byte values (14 B a parameter), and three
contenders: the roofline, ``adamlab Adam`` (the kernel's half-precision step, adamlab.kernels.half, called
directly) and ``torch Adam fused`` on the same dtype.

Peak extra memory: one more step of each contender under ``torch.profiler`` with ``profile_memory=True``
(every allocation by torch's CPU allocator, in order; the peak of the running sum) plus ``tracemalloc``
(Python-side allocations); their sum is reported, in bytes and as a fraction of the parameters' bytes.
The fused kernel allocates only its per-tensor scalars in C
(72 bytes a tensor), which neither probe sees.

Instruction sets: the kernel holds a build for each (scalar, AVX2 + FMA, AVX-512; see adamlab.kernels.build);
``--isa`` runs the adamlab contenders and the rooflines on a given build (default ``auto``, the best this CPU
runs), so that an AVX-512 machine measures the AVX2 build too. Before timing, the build is checked against
the reference path (:func:`verify_build`); a build that disagrees is not timed. The JSON records the CPU
model, its SIMD features and the build used.

Run ``adamlab bench step`` (or ``python -m adamlab.bench``); ``--quick`` runs tiny sizes in seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from adamlab import machine
from adamlab.files import write_json

BYTES_PER_UPDATE = 28  # fp32: read θ, g, m, v (16 B), write θ, m, v (12 B)
BYTES_PER_HALF_UPDATE = 14  # bf16: the same pattern in 2-byte values
ROOFLINE = "roofline"
ROOFLINE_TENSORS = "roofline, tensors"
TORCH_FUSED = "torch Adam fused"
DEEPSPEED = "DeepSpeed CPUAdam"
SLOW_STEP_S = 1.25  # a contender slower than this a step runs in fewer rounds (see _measure)


# ---------------------------------------------------------------------------------------------- layouts


def transformer_sizes(width: int, blocks: int, vocab: int, context: int) -> list[int]:
    """Parameter tensor sizes of a GPT-2-style decoder: token and position embeddings, ``blocks`` blocks of
    (LayerNorm w/b, qkv weight/bias, attention projection weight/bias, LayerNorm w/b, MLP up weight/bias,
    MLP down weight/bias) and a final LayerNorm w/b; the output head is tied to the token embedding."""
    d = width
    sizes = [vocab * d, context * d]
    for _ in range(blocks):
        sizes += [d, d, 3 * d * d, 3 * d, d * d, d, d, d, 4 * d * d, 4 * d, 4 * d * d, d]
    return [*sizes, d, d]


#: name -> (description, tensor sizes). "transformer": 196 tensors, 9,996,224 elements, 224 to 258,048 each.
LAYOUTS: dict[str, tuple[str, list[int]]] = {
    "flat": ("one flat tensor of 5e7 elements (200 MB fp32)", [50_000_000]),
    "transformer": (
        "transformer_sizes(width=224, blocks=16, vocab=1152, context=256): 196 tensors, ~1e7 elements",
        transformer_sizes(224, 16, 1152, 256),
    ),
    "small": (
        "transformer_sizes(width=48, blocks=3, vocab=256, context=64): 40 tensors, ~1e5 elements (cache-resident)",
        transformer_sizes(48, 3, 256, 64),
    ),
    "bf16": (
        "the transformer layout in bfloat16 (θ, g, m, v all bf16, as torch keeps them): 14 bytes a parameter",
        transformer_sizes(224, 16, 1152, 256),
    ),
    "fp16": (
        "the transformer layout in float16 (θ, g, m, v all fp16, as torch keeps them): 14 bytes a parameter",
        transformer_sizes(224, 16, 1152, 256),
    ),
    "bf16-flat": (
        "one flat bfloat16 tensor of 5e7 elements (700 MB at 14 B a parameter: beyond the L3)",
        [50_000_000],
    ),
    "fp16-flat": (
        "one flat float16 tensor of 5e7 elements (700 MB at 14 B a parameter: beyond the L3)",
        [50_000_000],
    ),
}

#: Layouts whose parameters are not float32, and their dtype. Their roofline is the half-precision loop
#: (14 B a parameter, over the layout's tensors); the contenders there are HALF_CONTENDERS.
HALF_LAYOUTS = {
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "bf16-flat": torch.bfloat16,
    "fp16-flat": torch.float16,
}
HALF_CONTENDERS = (ROOFLINE, "adamlab Adam", TORCH_FUSED)

#: The same three shapes at tiny sizes, for ``--quick`` (a smoke test: the numbers mean little).
QUICK_LAYOUTS: dict[str, tuple[str, list[int]]] = {
    "flat": ("one flat tensor of 2e5 elements", [200_000]),
    "transformer": ("transformer_sizes(width=32, blocks=2, vocab=128, context=32)", transformer_sizes(32, 2, 128, 32)),
    "small": ("transformer_sizes(width=8, blocks=1, vocab=32, context=8)", transformer_sizes(8, 1, 32, 8)),
    "bf16": (
        "transformer_sizes(width=32, blocks=2, vocab=128, context=32) in bfloat16",
        transformer_sizes(32, 2, 128, 32),
    ),
    "fp16": (
        "transformer_sizes(width=32, blocks=2, vocab=128, context=32) in float16",
        transformer_sizes(32, 2, 128, 32),
    ),
    "bf16-flat": ("one flat bfloat16 tensor of 2e5 elements", [200_000]),
    "fp16-flat": ("one flat float16 tensor of 2e5 elements", [200_000]),
}


# ---------------------------------------------------------------------------------------------- contenders


#: adamlab's quantised-state steps (issue 16): name -> (algorithm, state precision). Each is stepped through the
#: kernel's entry, :func:`adamlab.kernels.quantized.adam_step_quantised`, directly (:class:`_QuantisedState`):
#: the optimizer's own per-step work in Python costs ~1 ms a step over the transformer layout's 196 tensors
#: (measured: 7–16 % of its int8 step), which ``STATE_OPTIMIZER`` shows beside it.
STATE_CONTENDERS: dict[str, tuple[str, str]] = {
    "adamlab Adam int8 state": ("adam", "int8"),
    "adamlab Adam bf16 state": ("adam", "bf16"),
    "adamlab AdaMax int8 state": ("adamax", "int8"),
}
#: The same int8 step through the optimizer: ``adamlab.Adam(params, state_precision="int8", impl="fused")``.
STATE_OPTIMIZER = "adamlab Adam int8 state, optimizer"
BITSANDBYTES = "bitsandbytes Adam8bit"
TORCHAO = "torchao AdamW8bit"
#: Optional contenders: name -> the module they need (run only where it is installed; otherwise the run names
#: them as skipped, with the reason).
OPTIONAL: dict[str, str] = {DEEPSPEED: "deepspeed", BITSANDBYTES: "bitsandbytes", TORCHAO: "torchao"}
#: The 8-bit contenders, and the ratio field each row gets against them (this contender's time / the row's).
EIGHT_BIT: dict[str, str] = {BITSANDBYTES: "vs_bitsandbytes", TORCHAO: "vs_torchao"}
#: Contenders that compile per tensor shape on their first step (torch.compile): warmed up, and timed, before
#: the measurement, which then excludes the compilation.
COMPILED = (TORCHAO,)
#: The layouts the quantised-state and 8-bit contenders run on.
STATE_LAYOUTS = ("flat", "transformer")
STATE_ONLY = (*STATE_CONTENDERS, STATE_OPTIMIZER, *EIGHT_BIT)


def _contenders() -> dict[str, Callable[[list[torch.nn.Parameter]], Any]]:
    """Every contender's factory (parameters -> an object with ``step()``); the optional ones only where their
    module is installed (see :func:`optional_skipped`)."""
    import adamlab

    factories: dict[str, Callable[[list[torch.nn.Parameter]], Any]] = {
        "adamlab Adam": lambda ps: adamlab.Adam(ps),
        "adamlab AdaMax": lambda ps: adamlab.AdaMax(ps),
        "adamlab Adam reference": lambda ps: adamlab.Adam(ps, impl="reference"),
        "torch Adam": lambda ps: torch.optim.Adam(ps),
        "torch Adam foreach": lambda ps: torch.optim.Adam(ps, foreach=True),
        TORCH_FUSED: lambda ps: torch.optim.Adam(ps, fused=True),
        "torch AdamW fused": lambda ps: torch.optim.AdamW(ps, fused=True),
        "torch Adamax": lambda ps: torch.optim.Adamax(ps),
        "torch Adamax foreach": lambda ps: torch.optim.Adamax(ps, foreach=True),
    }
    for name, (algorithm, precision) in STATE_CONTENDERS.items():
        factories[name] = functools.partial(_QuantisedState, algorithm=algorithm, precision=precision)
    factories[STATE_OPTIMIZER] = lambda ps: adamlab.Adam(ps, state_precision="int8", impl="fused")
    optional = {DEEPSPEED: _deepspeed_adam, BITSANDBYTES: _bitsandbytes_adam8bit, TORCHAO: _torchao_adamw8bit}
    absent = optional_skipped()
    for name, factory in optional.items():
        if name not in absent:
            factories[name] = factory
    return factories


def optional_skipped() -> dict[str, str]:
    """The optional contenders that cannot run here: name -> why (their module is not installed)."""
    import importlib.util

    skipped = {}
    for name, module in OPTIONAL.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            skipped[name] = f"{module} is not installed"
    return skipped


def _deepspeed_adam(params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """DeepSpeed's CPU Adam (Adam, not AdamW: the same update as the others here)."""
    from deepspeed.ops.adam import DeepSpeedCPUAdam  # type: ignore[import-not-found]

    optimizer: torch.optim.Optimizer = DeepSpeedCPUAdam(params, lr=1e-3, adamw_mode=False)
    return optimizer


def _bitsandbytes_adam8bit(params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """bitsandbytes' Adam8bit: blockwise 8-bit m and v (its dynamic map), tensors under 4096 elements in fp32."""
    import bitsandbytes as bnb  # type: ignore[import-not-found]

    optimizer: torch.optim.Optimizer = bnb.optim.Adam8bit(params, lr=1e-3)
    return optimizer


def _torchao_adamw8bit(params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """torchao's AdamW8bit with weight_decay=0 (Adam's update): 8-bit m and v in blocks of 256 for tensors of at
    least 4096 elements whose size is a multiple of 256 (others keep fp32 state); its step is torch.compile'd
    per tensor shape."""
    from torchao.optim import AdamW8bit  # type: ignore[import-not-found]

    optimizer: torch.optim.Optimizer = AdamW8bit(params, lr=1e-3, weight_decay=0.0)
    return optimizer


class _QuantisedState:
    """adamlab's quantised-state step (``precision`` "int8" or "bf16"; ``algorithm`` "adam" or "adamax") over
    ``params`` (their ``.grad`` as gradients), through :func:`adamlab.kernels.quantized.adam_step_quantised`:
    every tensor takes quantised state (the optimizer keeps those under 4096 elements in fp32), with the state
    seeds the optimizer gives them (``tensor_seed(state_seed, position)``)."""

    def __init__(self, params: Sequence[torch.Tensor], algorithm: str, precision: str, lr: float = 1e-3) -> None:
        from adamlab.hyperparameters import AdaMaxHyperparameters, AdamHyperparameters
        from adamlab.kernels import quantized
        from adamlab.numpy.quantised import tensor_seed

        self._step = quantized.adam_step_quantised
        self.precision, self.adamax = precision, algorithm == "adamax"
        self.hp = (AdaMaxHyperparameters if self.adamax else AdamHyperparameters)(lr=lr)
        self.block = int(self.hp.state_block_size)
        first, second = quantized.STATE_DTYPES[precision]
        self.params = list(params)
        self.exp_avgs = [torch.zeros(p.numel(), dtype=first) for p in self.params]
        self.exp_avg_sqs = [torch.zeros(p.numel(), dtype=second) for p in self.params]
        int8 = precision == "int8"
        self.scales_m = [torch.zeros(-(-p.numel() // self.block)) for p in self.params] if int8 else None
        self.scales_v = [torch.zeros(-(-p.numel() // self.block)) for p in self.params] if int8 else None
        self.steps = [torch.zeros((), dtype=torch.float32) for _ in self.params]
        self.seeds = [tensor_seed(self.hp.state_seed, i) for i in range(len(self.params))]

    def state_tensors(self) -> list[torch.Tensor]:
        return [*self.exp_avgs, *self.exp_avg_sqs, *(self.scales_m or []), *(self.scales_v or []), *self.steps]

    def step(self) -> None:
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in self.params]
        self._step(
            self.precision,
            [p.detach() for p in self.params],
            grads,
            self.exp_avgs,
            self.exp_avg_sqs,
            self.scales_m,
            self.scales_v,
            self.steps,
            self.seeds,
            self.hp,
            block_size=self.block,
            adamax=self.adamax,
        )


def contender_names() -> list[str]:
    """Every contender that can run here, the rooflines first."""
    return [ROOFLINE, ROOFLINE_TENSORS, *_contenders()]


def _flatten(t: torch.Tensor) -> list[torch.Tensor]:
    """A tensor, or the plain tensors inside a tensor subclass that holds them (torchao's 8-bit state)."""
    if type(t) in (torch.Tensor, torch.nn.Parameter) or not hasattr(t, "__tensor_flatten__"):
        return [t]
    names, _ = t.__tensor_flatten__()
    return [u for name in names for u in _flatten(getattr(t, name))]


def state_tensors(holder: Any) -> list[torch.Tensor]:
    """The optimizer state of a contender: every tensor in a torch optimizer's ``state`` (tensor subclasses
    opened up), or what its ``state_tensors()`` gives, or its ``exp_avgs`` and ``exp_avg_sqs`` lists."""
    if isinstance(holder, torch.optim.Optimizer):
        found = []
        for state in holder.state.values():
            found += [u for v in state.values() if isinstance(v, torch.Tensor) for u in _flatten(v)]
        return found
    if hasattr(holder, "state_tensors"):
        return list(holder.state_tensors())
    from adamlab.kernels.half import HalfRoofline

    if isinstance(holder, HalfRoofline):  # its tensors: θ, g, m, v
        return [*holder.tensors[2], *holder.tensors[3]]
    return [*getattr(holder, "exp_avgs", []), *getattr(holder, "exp_avg_sqs", []), *getattr(holder, "steps", [])]


def state_bytes_per_param(holder: Any, params: int) -> float:
    """Bytes of optimizer state per parameter, from the state tensors themselves (each storage counted once:
    a table shared by several tensors, as bitsandbytes' quantisation map, once)."""
    seen: dict[tuple[int, int], int] = {}
    for t in state_tensors(holder):
        storage = t.untyped_storage()
        seen[(storage.data_ptr(), storage.nbytes())] = storage.nbytes()
    return sum(seen.values()) / params


# ---------------------------------------------------------------------------------------------- memory


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence the profiler's native log lines (written to fd 2) while it starts and stops."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_extra_bytes(step: Callable[[], Any]) -> dict[str, int | None]:
    """Peak bytes allocated during ``step()`` above what was allocated before it: ``torch`` (torch's CPU
    allocator, from the profiler's memory events), ``python`` (tracemalloc) and ``total`` (their sum).
    ``torch`` is None where the profiler gives no memory events."""
    from torch.profiler import ProfilerActivity, profile

    torch_peak: int | None = None
    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        tracemalloc.start()
        try:
            before, _ = tracemalloc.get_traced_memory()
            step()
            _, python_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    try:
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
        running = peak = 0
        for e in sorted(events, key=lambda e: e.start_ns()):
            running += e.nbytes()
            peak = max(peak, running)
        torch_peak = peak
    except (AttributeError, RuntimeError):
        torch_peak = None
    python_extra = max(0, python_peak - before)
    return {"torch": torch_peak, "python": python_extra, "total": (torch_peak or 0) + python_extra}


# ---------------------------------------------------------------------------------------------- timing


def _make_params(sizes: Sequence[int], seed: int = 0, dtype: torch.dtype = torch.float32) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    params = []
    for n in sizes:
        p = torch.nn.Parameter(torch.randn(n, generator=gen).to(dtype))
        p.grad = torch.randn(n, generator=gen).to(dtype)
        params.append(p)
    return params


def _half_holders(names: Sequence[str], params: list[torch.nn.Parameter]) -> dict[str, Any]:
    """The contenders of a half-precision layout: its roofline, adamlab's half-precision kernel (called
    directly: adamlab.kernels.half) and torch's fused Adam on the same dtype."""
    from adamlab.kernels.half import HalfAdam, HalfRoofline

    holders: dict[str, Any] = {}
    for name in names:
        if name == ROOFLINE:
            holders[name] = HalfRoofline(params)
        elif name == "adamlab Adam":
            holders[name] = HalfAdam(params)
        elif name == TORCH_FUSED:
            holders[name] = torch.optim.Adam(params, fused=True)
    return holders


class _Roofline:
    """The roofline over flat buffers of ``total`` elements; a one-tensor layout lends its parameter and
    gradient (the loop only reads g and adds to p; this saves memory at 5e7)."""

    def __init__(self, total: int, params: list[torch.nn.Parameter]) -> None:
        from adamlab.kernels.fused import roofline

        self._roofline = roofline
        grad = params[0].grad if len(params) == 1 else None
        if grad is not None:
            p, g = params[0].detach(), grad
        else:
            p, g = torch.randn(total), torch.randn(total)
        self.p, self.g, self.m, self.v = p, g, torch.zeros(total), torch.zeros(total)

    def state_tensors(self) -> list[torch.Tensor]:
        return [self.m, self.v]

    def step(self) -> None:
        self._roofline(self.p, self.g, self.m, self.v, torch.get_num_threads())


class _RooflineTensors:
    """The roofline over the layout's own parameters and gradients where they lie, with its own m and v."""

    def __init__(self, params: list[torch.nn.Parameter]) -> None:
        from adamlab.kernels.fused import RooflinePlan

        ps = [p.detach() for p in params]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        self.m, self.v = [torch.zeros_like(p) for p in ps], [torch.zeros_like(p) for p in ps]
        self.plan = RooflinePlan(ps, grads, self.m, self.v)

    def state_tensors(self) -> list[torch.Tensor]:
        return [*self.m, *self.v]

    def step(self) -> None:
        self.plan.run(torch.get_num_threads())


def _time_steps(step: Callable[[], Any], count: int) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


#: Sizes of the verification problem: every tail of a 16- and an 8-lane loop, and a multi-chunk tensor.
VERIFY_SIZES = (1, 7, 9, 17, 31, 4099, 70_001)


def verify_build(isa: str, steps: int = 3) -> dict[str, float]:
    """Check the kernel's ``isa`` build against the reference path before it is timed: Adam and AdaMax
    (defaults, and AMSGrad with decoupled weight decay and averaging), ``steps`` steps on float32 tensors of
    ``VERIFY_SIZES`` against the reference path in float64 from the same start; and its bfloat16 / float16
    Adam against torch's fused Adam on those dtypes, bit for bit. Returns the largest difference per check
    (for the half-precision checks: the number of entries whose bits differ); raises RuntimeError if one
    exceeds float32 rounding (2e-6 + 2e-5·|x|), or if any half-precision entry differs."""
    import adamlab
    from adamlab.kernels import build

    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(n, generator=gen) for n in VERIFY_SIZES]
    grads = [[torch.randn(n, generator=gen) for n in VERIFY_SIZES] for _ in range(steps)]
    checks: dict[str, tuple[type, dict[str, Any]]] = {
        "Adam": (adamlab.Adam, {}),
        "Adam amsgrad+decoupled wd+averaging": (
            adamlab.Adam,
            {"amsgrad": True, "weight_decay": 0.1, "decoupled_weight_decay": True, "averaging": True},
        ),
        "AdaMax": (adamlab.AdaMax, {}),
        "AdaMax L2 wd": (adamlab.AdaMax, {"weight_decay": 0.1}),
    }

    def run(cls: type, options: dict[str, Any], impl: str, dtype: torch.dtype) -> list[torch.Tensor]:
        params = [torch.nn.Parameter(p.to(dtype, copy=True)) for p in start]
        opt = cls(params, lr=1e-2, impl=impl, **options)
        for gs in grads:
            for p, g in zip(params, gs):
                p.grad = g.to(dtype, copy=True)
            opt.step()
        out = [p.detach().double() for p in params]
        for p in params:
            out += [t.double() for k, t in opt.state[p].items() if k != "step" and torch.is_tensor(t)]
        return out

    errors: dict[str, float] = {}
    with build.using_isa(isa):
        for name, (cls, options) in checks.items():
            got = run(cls, options, "fused", torch.float32)
            want = run(cls, options, "reference", torch.float64)
            excess = max(float(((a - b).abs() - 2e-5 * b.abs()).max()) for a, b in zip(got, want))
            errors[name] = max(float((a - b).abs().max()) for a, b in zip(got, want))
            if excess > 2e-6:
                raise RuntimeError(
                    f"the kernel's {isa} build disagrees with the reference path on {name}: "
                    f"largest difference {errors[name]:.3g}; not timing it"
                )
        for dtype in dict.fromkeys(HALF_LAYOUTS.values()):
            name = f"Adam {str(dtype).removeprefix('torch.')}: entries not bit-equal to torch fused"
            errors[name] = float(_half_mismatches(start, grads, dtype))
            if errors[name]:
                raise RuntimeError(
                    f"the kernel's {isa} build disagrees with torch's fused Adam on {name.split(':')[0]} "
                    f"in {errors[name]:.0f} entries; not timing it"
                )
    return errors


def verify_state(isa: str, contender: str, steps: int = 3) -> int:
    """Check one quantised-state contender (a name of ``STATE_CONTENDERS``; ``STATE_OPTIMIZER`` is checked as
    "adamlab Adam int8 state") on the kernel's ``isa`` build before it is timed: ``steps`` steps on the
    tensors of ``VERIFY_SIZES`` that take quantised state, bit for bit against the reference path
    (:func:`_state_mismatches`). Returns 0 (the mismatching entries) or raises RuntimeError."""
    from adamlab.kernels import build

    algorithm, precision = STATE_CONTENDERS["adamlab Adam int8 state" if contender == STATE_OPTIMIZER else contender]
    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(n, generator=gen) for n in VERIFY_SIZES]
    grads = [[torch.randn(n, generator=gen) for n in VERIFY_SIZES] for _ in range(steps)]
    with build.using_isa(isa):
        differ = _state_mismatches(start, grads, algorithm, precision)
    if differ:
        raise RuntimeError(
            f"the kernel's {isa} build disagrees with the reference path (impl='reference') on "
            f"{algorithm} {precision} state in {differ} entries; not timing it"
        )
    return differ


def _state_mismatches(
    start: list[torch.Tensor], grads: list[list[torch.Tensor]], algorithm: str, precision: str
) -> int:
    """adamlab's quantised-state step, both as the benchmark times it (:class:`_QuantisedState`, the kernel's
    entry) and through the optimizer (``impl="fused"``), against the optimizer's torch reference path
    (``impl="reference"``, tested bit-equal to the NumPy oracle) from the same start, on the tensors of
    ``start`` that take quantised state (4096 elements or more): the number of θ, code and scale entries whose
    bits differ (the kernel matches the reference bit for bit)."""
    import adamlab
    from adamlab.hyperparameters import MIN_QUANTISED_NUMEL

    start = [p for p in start if p.numel() >= MIN_QUANTISED_NUMEL]
    cls = adamlab.AdaMax if algorithm == "adamax" else adamlab.Adam
    copies = [[torch.nn.Parameter(p.clone()) for p in start] for _ in range(3)]
    reference = cls(copies[0], lr=1e-2, state_precision=precision, impl="reference")
    fused = cls(copies[1], lr=1e-2, state_precision=precision, impl="fused")
    direct = _QuantisedState(copies[2], algorithm, precision, lr=1e-2)
    for gs in grads:
        for ps in copies:
            for p, g in zip(ps, [g for g in gs if g.numel() >= MIN_QUANTISED_NUMEL]):
                p.grad = g.clone()
        for optimizer in (reference, fused, direct):
            optimizer.step()

    def bits(t: torch.Tensor) -> torch.Tensor:
        flat = t.detach().reshape(-1)
        return (
            flat.view(torch.int16)
            if flat.element_size() == 2
            else flat.view(torch.int32)
            if flat.element_size() == 4
            else flat
        )

    second = "exp_inf" if algorithm == "adamax" else "exp_avg_sq"
    keys = ["exp_avg", second] + (["exp_avg_absmax", second + "_absmax"] if precision == "int8" else [])
    differ = 0
    for i, p in enumerate(copies[0]):
        want = [p, *(reference.state[p][k] for k in keys)]
        via_optimizer = [copies[1][i], *(fused.state[copies[1][i]][k] for k in keys)]
        sm, sv = direct.scales_m, direct.scales_v
        via_entry = [copies[2][i], direct.exp_avgs[i], direct.exp_avg_sqs[i]]
        via_entry += [sm[i], sv[i]] if sm is not None and sv is not None else []
        for w, a, b in zip(want, via_optimizer, via_entry):
            differ += int((bits(w) != bits(a)).sum()) + int((bits(w) != bits(b)).sum())
    return differ


#: The largest mean difference from torch.optim.Adam's update, as a fraction of that update's mean size, an
#: 8-bit contender may show after three steps (:func:`verify_eight_bit`). Measured here: 0.6 % for
#: bitsandbytes' Adam8bit and torchao's AdamW8bit (their 8-bit rounding); 10 % for Adam with a 10 % larger lr.
EIGHT_BIT_TOLERANCE = 0.02


def verify_eight_bit(make: Callable[[list[torch.nn.Parameter]], Any], steps: int = 3) -> float:
    """Check an 8-bit contender against ``torch.optim.Adam`` (fp32 state) before it is timed: ``steps`` steps
    from the same start on two tensors that every 8-bit optimizer here quantises (≥ 4096 elements, multiples of
    256). Their roundings differ from fp32 Adam's, so not bit for bit: returns Σ|θ − θ_Adam| / Σ|θ_Adam − θ₀|
    and raises RuntimeError above ``EIGHT_BIT_TOLERANCE`` (a contender computing something else)."""
    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(n, generator=gen) for n in (8192, 70_144)]
    grads = [[torch.randn(p.numel(), generator=gen) for p in start] for _ in range(steps)]

    def run(factory: Callable[[list[torch.nn.Parameter]], Any]) -> list[torch.Tensor]:
        params = [torch.nn.Parameter(p.clone()) for p in start]
        optimizer = factory(params)
        for gs in grads:
            for p, g in zip(params, gs):
                p.grad = g.clone()
            optimizer.step()
        return [p.detach() for p in params]

    want = run(lambda ps: torch.optim.Adam(ps, lr=1e-3))
    got = run(make)
    moved = sum(float((w - s).abs().sum()) for w, s in zip(want, start))
    difference = sum(float((g - w).abs().sum()) for g, w in zip(got, want)) / moved
    if not difference <= EIGHT_BIT_TOLERANCE:
        raise RuntimeError(
            f"its update differs from torch.optim.Adam's by {difference:.1%} on average "
            f"(tolerance {EIGHT_BIT_TOLERANCE:.0%}); not timing it"
        )
    return difference


def _half_mismatches(start: list[torch.Tensor], grads: list[list[torch.Tensor]], dtype: torch.dtype) -> int:
    """The half-precision kernel (adamlab.kernels.half) against torch.optim.Adam(fused=True) on ``dtype``
    from the same start: the number of θ, m, v entries whose bits differ (the kernel matches it bit for bit)."""
    from adamlab.kernels.half import HalfAdam

    ours = [torch.nn.Parameter(p.to(dtype, copy=True)) for p in start]
    theirs = [torch.nn.Parameter(p.to(dtype, copy=True)) for p in start]
    kernel, fused = HalfAdam(ours), torch.optim.Adam(theirs, lr=1e-3, fused=True)
    for gs in grads:
        for a, b, g in zip(ours, theirs, gs):
            a.grad, b.grad = g.to(dtype, copy=True), g.to(dtype, copy=True)
        kernel.step()
        fused.step()
    pairs = [(a.detach(), b.detach()) for a, b in zip(ours, theirs)]
    pairs += list(zip(kernel.exp_avgs, [fused.state[p]["exp_avg"] for p in theirs]))
    pairs += list(zip(kernel.exp_avg_sqs, [fused.state[p]["exp_avg_sq"] for p in theirs]))
    return sum(int((a.view(torch.int16) != b.view(torch.int16)).sum()) for a, b in pairs)


def moved_bytes(contender: str, per_update: int) -> int | None:
    """Bytes a step of ``contender`` moves per parameter: the quantised-state steps their own (16 for int8,
    20 for bf16: adamlab.kernels.quantized.MOVED_BYTES), the 8-bit contenders None (not a single pass: not
    known), every other the layout's ``per_update`` (28, or 14 in half precision)."""
    from adamlab.kernels.quantized import MOVED_BYTES

    if contender in STATE_CONTENDERS or contender == STATE_OPTIMIZER:
        return MOVED_BYTES[STATE_CONTENDERS.get(contender, ("adam", "int8"))[1]]
    return None if contender in EIGHT_BIT else per_update


def run_step_benchmark(
    *,
    quick: bool = False,
    isa: str = "auto",
    threads: Sequence[int] = (1, 2),
    layouts: Sequence[str] | None = None,
    repeats: int | None = None,
    contenders: Sequence[str] | None = None,
    round_seconds: float | None = None,
    memory: bool = True,
    out: str | os.PathLike[str] | None = None,
    progress: bool = True,
    optional: bool = True,
) -> dict[str, Any]:
    """Measure one optimizer step of every contender on every layout at every thread count.

    ``repeats`` is the number of round-robin rounds (default 15, or 2 with ``quick``); in each round a
    contender takes enough steps to fill about ``round_seconds`` (default 0.1 s; 0.005 s with ``quick``),
    at least one. ``isa`` is the kernel build the adamlab contenders and the rooflines run ("auto": the best
    this CPU runs); it is verified against the reference path first. Returns (and, with ``out``, writes as
    JSON) a dict with ``layouts``, ``results`` (one row per layout × threads × contender) and ``targets``
    (the issue's goals, checked on this run).
    """
    table = QUICK_LAYOUTS if quick else LAYOUTS
    layout_names = list(table) if layouts is None else list(layouts)
    for name in layout_names:
        if name not in table:
            raise ValueError(f"unknown layout {name!r}; choose from {sorted(table)}")
    factories = _contenders()
    names = contender_names() if contenders is None else list(contenders)
    absent = optional_skipped()
    skipped: dict[str, str] = {}  # contender -> why it did not run
    for name in names if contenders is not None else ():
        if name in absent:
            skipped[name] = absent[name]
        elif name not in (ROOFLINE, ROOFLINE_TENSORS) and name not in factories:
            raise ValueError(f"unknown contender {name!r}; choose from {contender_names()}")
    if contenders is None:
        skipped.update(absent)
    if not optional:
        skipped.update({name: "left out (optional contenders off)" for name in OPTIONAL if name in names})
    names = [name for name in names if name not in skipped]
    rounds = repeats if repeats is not None else (2 if quick else 15)
    per_round = round_seconds if round_seconds is not None else (0.005 if quick else 0.1)
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if progress else (lambda msg: None)

    from adamlab.kernels import build

    if isa != "auto" and isa not in build.ISAS:
        raise ValueError(f"unknown isa {isa!r}; choose from auto, {', '.join(build.ISAS)}")
    if isa != "auto" and isa not in build.supported_isas():
        raise ValueError(
            f"this CPU cannot run the {isa} build (it needs {', '.join(build.ISA_NEEDS[isa])}); "
            f"it runs {', '.join(build.supported_isas())}"
        )
    saved_isa = build.isa()
    used_isa = build.set_isa(isa)
    build.set_isa(saved_isa)
    say(f"[bench] verifying the kernel's {used_isa} build against the reference path")
    verified = verify_build(used_isa)
    state_checked: dict[str, int] = {}
    for name in [n for n in names if n in STATE_CONTENDERS or n == STATE_OPTIMIZER]:
        try:
            state_checked[name] = verify_state(used_isa, name)
        except RuntimeError as exc:  # the fp32 rows are still worth timing: these rows are named as skipped
            skipped[name] = str(exc)
    eight_bit_checked: dict[str, float] = {}
    for name in [n for n in names if n in EIGHT_BIT]:
        say(
            f"[bench] checking {name} against torch.optim.Adam" + (" (torch.compile: slow)" if name in COMPILED else "")
        )
        try:
            eight_bit_checked[name] = verify_eight_bit(factories[name])
        except Exception as exc:  # an optional contender that fails here is not timed, and the run says why
            skipped[name] = f"failed its check against torch.optim.Adam: {exc}"
    names = [name for name in names if name not in skipped]
    for name, why in skipped.items():
        say(f"[bench] skipping {name}: {why}")

    result: dict[str, Any] = {
        "schema": 1,
        "quick": quick,
        "machine": {
            "platform": platform.platform(),
            "processor": machine.cpu_model(),
            "cpu_features": machine.cpu_features(),
            "cpus": os.cpu_count(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "kernel_flags": " ".join(build.FLAGS),
            "kernel_threads": build.threading_model(),
            "kernel_isa": used_isa,
            "kernel_isa_requested": isa,
            "kernel_isas_supported": build.supported_isas(),
            "kernel_isa_verified": verified,
            "state_verified": state_checked,
            "eight_bit_verified": eight_bit_checked,
            "step_bridge": "ready" if build.bridge(wait=True) is not None else f"unavailable: {build.bridge_error()}",
        },
        "method": {
            "rounds": rounds,
            "round_seconds": per_round,
            "statistic": "median step time over all rounds, after warm-up; contenders interleaved",
            "bytes_per_update": BYTES_PER_UPDATE,
            "bytes_per_update_half": BYTES_PER_HALF_UPDATE,
            "memory": "torch.profiler memory events (peak of running sum) + tracemalloc peak, one step",
        },
        "layouts": {},
        "results": [],
        "skipped": skipped,
        "warmups": [],
    }
    saved_threads = torch.get_num_threads()
    started = time.perf_counter()
    build.set_isa(used_isa)
    try:
        for layout in layout_names:
            description, sizes = table[layout]
            total = sum(sizes)
            half = HALF_LAYOUTS.get(layout)
            element_bytes = 4 if half is None else 2
            per_update = BYTES_PER_UPDATE if half is None else BYTES_PER_HALF_UPDATE
            result["layouts"][layout] = {
                "description": description,
                "tensors": len(sizes),
                "elements": total,
                "min_size": min(sizes),
                "max_size": max(sizes),
                "dtype": str(half or torch.float32).removeprefix("torch."),
                "param_bytes": element_bytes * total,
                "bytes_per_update": per_update,
            }
            say(f"[bench] layout {layout}: {len(sizes)} tensors, {total:,} elements")
            params = _make_params(sizes, dtype=half or torch.float32)
            holders: dict[str, Any] = {}
            memory_of: dict[str, dict[str, int | None]] = {}
            if half is not None:
                holders = _half_holders(names, params)
            for name in names if half is None else ():
                if name in STATE_ONLY and layout not in STATE_LAYOUTS:
                    continue
                if name == ROOFLINE:
                    holders[name] = _Roofline(total, params)
                elif name == ROOFLINE_TENSORS:
                    if len(sizes) > 1:  # one tensor: the same as the roofline
                        holders[name] = _RooflineTensors(params)
                elif name in OPTIONAL:
                    try:
                        holders[name] = factories[name](params)
                    except Exception as exc:  # an optional contender that cannot start here: named, not timed
                        skipped[name] = f"could not start: {type(exc).__name__}: {exc}"
                        say(f"[bench] skipping {name}: {skipped[name]}")
                else:
                    holders[name] = factories[name](params)
            for name in [n for n in COMPILED if n in holders]:
                say(f"[bench]   warming up {name} before timing (torch.compile per tensor shape: minutes)")
                began = time.perf_counter()
                try:
                    holders[name].step()
                except Exception as exc:
                    skipped[name] = f"its first step (compilation) failed: {type(exc).__name__}: {exc}"
                    say(f"[bench] skipping {name}: {skipped[name]}")
                    del holders[name]
                    continue
                seconds = time.perf_counter() - began
                result["warmups"].append({"layout": layout, "contender": name, "seconds": seconds})
                say(f"[bench]   {name} warmed up in {seconds:.0f} s (not timed)")
            steppers: dict[str, Callable[[], Any]] = {name: holder.step for name, holder in holders.items()}
            state_bytes: dict[str, float] = {}
            for nthreads in threads:
                torch.set_num_threads(nthreads)
                rows = _measure(steppers, rounds, per_round, say, f"{layout} × {nthreads} thread(s)")
                for name, times in rows.items():
                    median = statistics.median(times)
                    if name not in state_bytes:  # the state exists after the first steps
                        state_bytes[name] = state_bytes_per_param(holders[name], total)
                    moved = moved_bytes(name, per_update)
                    result["results"].append(
                        {
                            "layout": layout,
                            "threads": nthreads,
                            "contender": name,
                            "median_s": median,
                            "min_s": min(times),
                            "steps": len(times),
                            "updates_per_s": total / median,
                            "state_bytes_per_param": state_bytes[name],
                            "moved_bytes_per_param": moved,
                            "gb_per_s": None if moved is None else moved * total / median / 1e9,
                        }
                    )
            if memory:
                torch.set_num_threads(threads[0])
                for name in steppers:
                    if name in (ROOFLINE, ROOFLINE_TENSORS):
                        memory_of[name] = {"torch": 0, "python": 0, "total": 0}
                    else:
                        memory_of[name] = peak_extra_bytes(steppers[name])
                for row in result["results"]:
                    if row["layout"] == layout:
                        mem = memory_of[row["contender"]]
                        peak = mem["total"] or 0
                        row["peak_extra_bytes"] = peak
                        row["peak_extra_torch_bytes"] = mem["torch"]
                        row["peak_extra_python_bytes"] = mem["python"]
                        row["peak_extra_frac"] = peak / (element_bytes * total)
            del steppers, holders, params
    finally:
        torch.set_num_threads(saved_threads)
        build.set_isa(saved_isa)
    result["machine"]["load_average_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    _add_ratios(result["results"])
    result["targets"] = check_targets(result)
    result["seconds"] = time.perf_counter() - started
    if out is not None:
        write_json(out, result)  # atomically, like every result file
    return result


def _measure(
    steppers: dict[str, Callable[[], Any]],
    rounds: int,
    per_round: float,
    say: Callable[[str], None],
    label: str,
) -> dict[str, list[float]]:
    """Warm up every contender (state allocation, first-touch page faults, the kernel build) and size its
    batch to about ``per_round`` seconds; then run the contenders round-robin, in a rotated order each round.
    Short rounds interleave finely, so that a drift of the machine's speed (other tenants) reaches every
    contender alike. A contender slower than ``SLOW_STEP_S`` a step (the reference paths at 5e7) runs in
    every third round only (every other with fewer than 9 rounds): its figure needs no more precision, and
    the run stays within minutes."""
    names = list(steppers)
    counts: dict[str, int] = {}
    every: dict[str, int] = {}
    for name in names:
        warm = min(_time_steps(steppers[name], 2))
        counts[name] = max(1, min(200, round(per_round / max(warm, 1e-7))))
        slow = warm > max(SLOW_STEP_S, 5 * per_round) and rounds >= 5
        every[name] = (3 if rounds >= 9 else 2) if slow else 1
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            if r % every[name] == 0:
                times[name] += _time_steps(steppers[name], counts[name])
    say(f"[bench]   {label}: {rounds} rounds")
    return times


def _add_ratios(rows: list[dict[str, Any]]) -> None:
    by_key = {(r["layout"], r["threads"], r["contender"]): r["median_s"] for r in rows}
    for row in rows:
        key = (row["layout"], row["threads"])
        roof = by_key.get((*key, ROOFLINE))
        fused = by_key.get((*key, TORCH_FUSED))
        row["frac_roofline"] = roof / row["median_s"] if roof else None
        row["vs_torch_fused"] = fused / row["median_s"] if fused else None
        for name, field in {DEEPSPEED: "vs_deepspeed", **EIGHT_BIT}.items():
            theirs = by_key.get((*key, name))
            if theirs:
                row[field] = theirs / row["median_s"]


def _row(result: dict[str, Any], layout: str, threads: int, contender: str) -> dict[str, Any] | None:
    for row in result["results"]:
        if (row["layout"], row["threads"], row["contender"]) == (layout, threads, contender):
            return row
    return None


#: The issue's goals: (layout, contender, field, threshold).
TARGETS: list[tuple[str, str, str, float]] = [
    ("flat", "adamlab Adam", "frac_roofline", 0.95),
    ("transformer", "adamlab Adam", "frac_roofline", 0.95),
    ("flat", "adamlab AdaMax", "frac_roofline", 0.95),
    ("transformer", "adamlab AdaMax", "frac_roofline", 0.95),
    ("flat", "adamlab Adam", "vs_torch_fused", 1.0),
    ("transformer", "adamlab Adam", "vs_torch_fused", 1.2),
    ("small", "adamlab Adam", "vs_torch_fused", 2.0),
    ("small", "adamlab Adam", "frac_roofline", 0.5),
    ("bf16", "adamlab Adam", "frac_roofline", 0.9),
    ("bf16", "adamlab Adam", "vs_torch_fused", 1.2),
    ("fp16", "adamlab Adam", "frac_roofline", 0.9),
    ("fp16", "adamlab Adam", "vs_torch_fused", 1.2),
    ("bf16-flat", "adamlab Adam", "frac_roofline", 0.9),
    ("bf16-flat", "adamlab Adam", "vs_torch_fused", 1.2),
    ("fp16-flat", "adamlab Adam", "frac_roofline", 0.9),
    ("fp16-flat", "adamlab Adam", "vs_torch_fused", 1.2),
    # issue 16: int8 state's update rate ≥ 1.3× the fp32 roofline's
    ("flat", "adamlab Adam int8 state", "frac_roofline", 1.3),
    ("transformer", "adamlab Adam int8 state", "frac_roofline", 1.3),
    ("flat", "adamlab AdaMax int8 state", "frac_roofline", 1.3),
    ("transformer", "adamlab AdaMax int8 state", "frac_roofline", 1.3),
    ("flat", "adamlab Adam", "peak_extra_frac", 0.01),
    ("transformer", "adamlab Adam", "peak_extra_frac", 0.01),
    ("small", "adamlab Adam", "peak_extra_frac", 0.01),
    ("flat", "adamlab AdaMax", "peak_extra_frac", 0.01),
    ("transformer", "adamlab AdaMax", "peak_extra_frac", 0.01),
]


#: Against DeepSpeed's CPU Adam, checked where it ran: faster on every layout.
DEEPSPEED_TARGETS: list[tuple[str, str, str, float]] = [
    (layout, contender, "vs_deepspeed", 1.0)
    for layout in ("flat", "transformer", "small")
    for contender in ("adamlab Adam", "adamlab AdaMax")
]


#: Issue 16, against each 8-bit contender, checked where it ran: int8 state ≥ 10× its update rate.
EIGHT_BIT_TARGETS: list[tuple[str, str, str, float]] = [
    (layout, "adamlab Adam int8 state", field, 10.0) for field in EIGHT_BIT.values() for layout in STATE_LAYOUTS
]


def check_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the issue, per thread count, as measured in ``result`` (``met`` is None if not run);
    the DeepSpeed and 8-bit targets only where that contender ran. An 8-bit target is not judged (``met``
    None, with a ``note``) where that contender kept no 8-bit state at all (8 B/param or more: fp32 m and v
    everywhere; torchao keeps fp32 state for a tensor whose size is not a multiple of its block of 256, as the
    flat layout's 5e7)."""
    checks = []
    threads = sorted({r["threads"] for r in result["results"]})
    ran = {r["contender"] for r in result["results"]}
    optional = list(DEEPSPEED_TARGETS) if DEEPSPEED in ran else []
    optional += [t for t in EIGHT_BIT_TARGETS if any(EIGHT_BIT[name] == t[2] for name in ran & set(EIGHT_BIT))]
    for layout, contender, field, threshold in TARGETS + optional:
        for nthreads in threads:
            row = _row(result, layout, nthreads, contender)
            value = None if row is None else row.get(field)
            if field == "peak_extra_frac":
                met = None if value is None else value <= threshold
            else:
                met = None if value is None else value >= threshold
            check = {
                "layout": layout,
                "threads": nthreads,
                "contender": contender,
                "field": field,
                "threshold": threshold,
                "value": value,
                "met": met,
            }
            theirs = next((_row(result, layout, nthreads, n) for n, f in EIGHT_BIT.items() if f == field), None)
            if theirs is not None and (theirs.get("state_bytes_per_param") or 0) >= 8:
                check["met"] = None
                check["note"] = (
                    f"not judged: {theirs['contender']} kept {theirs['state_bytes_per_param']:.2f} B/param of "
                    "state here (no 8-bit state)"
                )
            checks.append(check)
    return checks


# ---------------------------------------------------------------------------------------------- output


def _bytes(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def format_table(result: dict[str, Any]) -> str:
    """A Markdown table per layout × thread count, then the targets."""
    machine = result["machine"]
    lines: list[str] = [
        f"CPU: {machine['processor']}; kernel build: {machine.get('kernel_isa', '?')} "
        f"(this CPU runs {', '.join(machine.get('kernel_isas_supported', []))}); "
        f"load average before/after: {_load(machine.get('load_average'))} / {_load(machine.get('load_average_after'))}",
        "",
    ]
    for layout, info in result["layouts"].items():
        for nthreads in sorted({r["threads"] for r in result["results"] if r["layout"] == layout}):
            rows = [r for r in result["results"] if r["layout"] == layout and r["threads"] == nthreads]
            lines.append(
                f"**{layout}** ({info['tensors']} tensors, {info['elements']:,} elements), "
                f"{nthreads} thread{'s' if nthreads > 1 else ''}"
            )
            lines.append("")
            lines.append(
                "| contender | step | updates/s | GB/s | of roofline | × torch fused | state B/param "
                "| peak extra memory |"
            )
            lines.append("|---|--:|--:|--:|--:|--:|--:|--:|")
            for r in rows:
                frac = "—" if r["frac_roofline"] is None else f"{r['frac_roofline']:.0%}"
                fused = "—" if r["vs_torch_fused"] is None else f"{r['vs_torch_fused']:.2f}"
                gbs = "—" if r.get("gb_per_s") is None else f"{r['gb_per_s']:.1f}"
                state = "?" if r.get("state_bytes_per_param") is None else f"{r['state_bytes_per_param']:.2f}"
                mem = "—"
                if "peak_extra_bytes" in r:
                    mem = f"{_bytes(r['peak_extra_bytes'])} ({r['peak_extra_frac']:.1%})"
                lines.append(
                    f"| {r['contender']} | {_duration(r['median_s'])} | {r['updates_per_s']:.3g} | "
                    f"{gbs} | {frac} | {fused} | {state} | {mem} |"
                )
            lines.append("")
    for name, why in result.get("skipped", {}).items():
        lines.append(f"Skipped {name}: {why}.")
    for w in result.get("warmups", []):
        lines.append(
            f"Warm-up: {w['contender']} on {w['layout']} took {w['seconds']:.0f} s before timing "
            "(torch.compile per tensor shape), not counted in its step time."
        )
    if result.get("skipped") or result.get("warmups"):
        lines.append("")
    if result.get("targets"):
        lines.append("Targets:")
        lines.append("")
        for t in result["targets"]:
            value = "not run" if t["value"] is None else _target_value(t["field"], t["value"])
            sign = "≤" if t["field"] == "peak_extra_frac" else "≥"
            mark = t.get("note") or {True: "met", False: "NOT met", None: "—"}[t["met"]]
            lines.append(
                f"- {t['contender']}, {t['layout']}, {t['threads']} thread(s): {t['field']} = {value} "
                f"(target {sign} {_target_value(t['field'], t['threshold'])}): {mark}"
            )
    return "\n".join(lines)


def _load(value: list[float] | None) -> str:
    return "?" if not value else f"{value[0]:.1f}"


def _target_value(field: str, value: float) -> str:
    if field.startswith("vs_"):
        return f"{value:.2f}×"
    if field == "peak_extra_frac":
        return f"{value:.2%}"
    return f"{value:.3f}"


def _duration(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.0f} µs"


# ---------------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``adamlab bench step``."""
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few seconds (a smoke test)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts (default: 1 2)")
    parser.add_argument(
        "--isa",
        default="auto",
        choices=["auto", "scalar", "avx2", "avx512"],
        help="the kernel's instruction-set build to run (default auto: the best this CPU runs)",
    )
    parser.add_argument("--layouts", nargs="+", default=None, choices=sorted(LAYOUTS), help="layouts (default: all)")
    parser.add_argument("--repeats", type=int, default=None, help="round-robin rounds (default 15; quick 2)")
    parser.add_argument(
        "--contenders",
        nargs="+",
        default=None,
        metavar="NAME",
        help="contenders to run (default: all; names as in the table, quoted, e.g. 'adamlab Adam')",
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument(
        "--no-optional",
        action="store_true",
        help="leave out the optional contenders (DeepSpeed, bitsandbytes, torchao) even where installed",
    )
    parser.add_argument("--out", default=None, metavar="FILE.json", help="write the results as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def run_cli(args: argparse.Namespace, parser: argparse.ArgumentParser | None = None) -> int:
    """Run ``adamlab bench step`` from parsed arguments; prints the table. Returns the exit status."""
    if any(n < 1 for n in args.threads):
        message = "--threads takes positive thread counts"
        if parser is not None:
            parser.error(message)
        raise SystemExit(message)
    try:
        from adamlab.kernels import build

        runnable = build.supported_isas()
    except build.KernelUnavailableError as exc:
        raise SystemExit(f"adamlab bench step needs the fused kernel, which cannot be built here: {exc}") from exc
    unknown = [name for name in args.contenders or [] if name not in contender_names() and name not in OPTIONAL]
    if unknown:
        message = f"--contenders: unknown {', '.join(map(repr, unknown))}; choose from {contender_names()}"
        if parser is not None:
            parser.error(message)
        raise SystemExit(message)
    if args.isa != "auto" and args.isa not in runnable:
        message = f"--isa {args.isa}: this CPU cannot run that build; it runs {', '.join(runnable)} (or auto)"
        if parser is not None:
            parser.error(message)
        raise SystemExit(message)
    result = run_step_benchmark(
        quick=args.quick,
        isa=args.isa,
        threads=tuple(args.threads),
        layouts=args.layouts,
        repeats=args.repeats,
        contenders=args.contenders,
        memory=not args.no_memory,
        out=args.out,
        progress=not args.quiet,
        optional=not args.no_optional,
    )
    print(format_table(result))
    if args.out:
        print(f"\nwrote {args.out}")
    return 0


def add_cli(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``bench`` (with its ``step`` command) to an argparse ``subparsers`` object, as ``adamlab.cli``
    does for its commands; returns ``bench``'s parser. The leaf sets ``func`` (called as
    ``func(args, parser)``, returning the exit status) and ``parser``."""
    bench = subparsers.add_parser(
        "bench", help="benchmarks (``adamlab bench step``)", description="Benchmarks of adamlab's optimizers."
    )
    commands = bench.add_subparsers(dest="bench_command", metavar="BENCHMARK", required=True)
    step = commands.add_parser(
        "step",
        help="time one optimizer step against the memory-bandwidth roofline",
        description="Time one optimizer step of adamlab and torch.optim against the memory-bandwidth "
        "roofline, on three layouts, at each thread count; print a table, optionally write JSON.",
    )
    add_arguments(step)
    step.set_defaults(func=run_cli, parser=step)
    from adamlab.bench_train import add_train_cli  # ``bench train``: the lab's epoch vs a hand-written loop

    add_train_cli(commands)
    return bench


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m adamlab.bench [--quick] [--threads 1 2] [--out FILE.json]``."""
    parser = argparse.ArgumentParser(
        prog="python -m adamlab.bench", description="Time one optimizer step against the roofline."
    )
    add_arguments(parser)
    return run_cli(parser.parse_args(argv), parser)


if __name__ == "__main__":
    sys.exit(main())
