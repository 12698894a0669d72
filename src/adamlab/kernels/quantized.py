"""Adam and AdaMax with quantised optimizer state in the fused C kernel (``adamlab_adam_step_quantised``,
state_kernels.c): issue 16.

θ and g stay float32; m and v (AdaMax: u) are stored as

* ``"int8"`` (codes version 2, ``state_int8_codes`` = 2): blockwise codes, one float32 scale per block of
  ``block_size`` consecutive elements of the flattened tensor and per moment: m as int8 ±k, k ∈ [0, 127] an
  8-bit float code of |m|/s_m (4 exponent bits, 3 mantissa bits, subnormals, round half to even; s_m the
  block's max |m|); the second moment by its root z (Adam z = √w with w = √v the step's root, so z = ⁴√v;
  AdaMax z = √u) as uint8 q = min(rint(z·255/s_z), 255), z̃ = q·(s_z/255), ṽ = (z̃·z̃)·(z̃·z̃), ũ = z̃·z̃
  (s_z the block's max z): 2 bytes of state per parameter (plus 8/B for the scales);
* ``"bf16"``: bfloat16 with stochastic rounding by counter-based random bits (seeded by each tensor's
  ``state_seed``, reproducible on every instruction set and thread count): 4 bytes of state per parameter.

One step of Adam (Algorithm 1, §2 of Kingma & Ba) with every stored value dequantised, updated and
re-quantised in the same pass over memory, in float32 arithmetic, one rounded operation at a time in the order
of the contract (docs/quantised-state.md): m = (b1·m̃) + (c1·g), v = (b2·ṽ) + ((c2·g)·g),
θ ← θ + (nstep·m)/(√v·dmul + ε) from the new float32 m and v (AdaMax, §7.1: u = max(b2·ũ, |g|),
θ ← θ + (nstep·m)/(u·dmul + ε)), with nstep = −α_t/(1 − β1^t) and dmul = 1/√(1 − β2^t) (§3) as the fp32
kernel folds them; the step is 0 where the denominator is 0. Every instruction-set build gives the bits of the
NumPy oracle ``adamlab.numpy.quantised`` (tests/test_kernels_quantised.py).

Memory moved per parameter and step: 16 bytes for int8 (read θ, g, m, v: 4 + 4 + 1 + 1; write θ, m, v:
4 + 1 + 1) and 20 for bf16, against the fp32 step's 28: the speed limits are 1.75× and 1.4× the fp32 one.

:func:`adam_step_quantised` is the one call (the optimizers' ``state_precision`` routes to it).
"""

from __future__ import annotations

import itertools
import operator
from array import array
from collections.abc import Sequence
from typing import Any

import torch

from adamlab.kernels import build
from adamlab.kernels.half import _address, _pointers  # one home of the pointer arrays the kernels take

#: The state precisions this kernel implements.
QUANTISED = ("bf16", "int8")
#: The kernel's code for each precision (QMODE_* in state_kernels.c).
MODES = {"bf16": 0, "int8": 1}
#: The int8 block size when none is given (elements per scale).
DEFAULT_BLOCK_SIZE = 256
#: State tensors' dtypes: (first moment, second moment) per precision.
STATE_DTYPES = {"bf16": (torch.bfloat16, torch.bfloat16), "int8": (torch.int8, torch.uint8)}
#: Bytes of state per parameter (the scales of int8 aside: 8/B more) and bytes moved per parameter and step.
STATE_BYTES = {"fp32": 8, "bf16": 4, "int8": 2}
MOVED_BYTES = {"fp32": 28, "bf16": 20, "int8": 16}

_MASK32 = 0xFFFFFFFF
_IS_CPU = operator.attrgetter("is_cpu")
_DTYPE = operator.attrgetter("dtype")
_LAYOUT = operator.attrgetter("layout")


def available() -> bool:
    """Whether the fused kernel (with its quantised-state loops) is built and loadable here."""
    return build.available()


def _check_tensors(name: str, tensors: Sequence[torch.Tensor], dtype: torch.dtype, sizes: array) -> None:
    """ValueError naming ``name`` unless ``tensors`` are contiguous CPU tensors of ``dtype`` and of ``sizes``.
    The common case runs its loops in C (``map``): this is called on every step, for every tensor."""
    if len(tensors) != len(sizes):
        raise ValueError(f"{name}: {len(tensors)} tensors for {len(sizes)} parameters")
    try:
        fine = (
            all(map(isinstance, tensors, itertools.repeat(torch.Tensor)))
            and set(map(_DTYPE, tensors)) <= {dtype}
            and all(map(_IS_CPU, tensors))
            and set(map(_LAYOUT, tensors)) <= {torch.strided}
            and all(map(torch.Tensor.is_contiguous, tensors))
            and array("q", map(torch.Tensor.numel, tensors)) == sizes
        )
    except (RuntimeError, NotImplementedError, AttributeError, TypeError):
        fine = False
    if fine:
        return
    for t, n in zip(tensors, sizes):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name}: tensors expected, got {type(t).__name__}")
        if t.dtype != dtype or t.device.type != "cpu" or t.layout != torch.strided or not t.is_contiguous():
            raise ValueError(f"{name}: contiguous CPU {dtype} tensors expected, got {t.dtype} on {t.device}")
        if t.numel() != n:
            raise ValueError(f"{name}: a tensor of {t.numel()} elements where {n} are needed")


def _check_block_size(block_size: Any) -> int:
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 64 or block_size % 64:
        raise ValueError(f"block_size: a positive multiple of 64 expected, got {block_size!r}")
    return block_size


def adam_step_quantised(
    precision: str,
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    exp_avgs: Sequence[torch.Tensor],
    exp_avg_sqs: Sequence[torch.Tensor],
    scales_m: Sequence[torch.Tensor] | None,
    scales_v: Sequence[torch.Tensor] | None,
    steps: Sequence[torch.Tensor],
    seeds: Sequence[int] | None,
    hp: Any,
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    adamax: bool = False,
    threads: int | None = None,
) -> list[int]:
    """One step of Adam (or AdaMax, ``adamax=True``) with quantised state, in place, for float32 tensors.

    ``params``, ``grads``: contiguous CPU float32 tensors. ``precision="int8"``: ``exp_avgs`` int8 and
    ``exp_avg_sqs`` (AdaMax: the ``exp_inf`` tensors) uint8 of the parameters' sizes; ``scales_m``/``scales_v``
    float32 tensors of ceil(numel/block_size) scales each; ``seeds`` ignored. ``precision="bf16"``: the state
    tensors bfloat16, ``scales_*`` ignored (None), ``seeds`` one ``state_seed`` (int, taken modulo 2^32) per
    parameter. ``steps``: float32 one-element tensors, incremented here. ``hp``: the group's
    AdamHyperparameters (AdaMaxHyperparameters with ``adamax``); AMSGrad and averaging are not offered.
    ``threads``: None for torch.get_num_threads(). Returns the number of non-finite gradient entries per tensor
    (those coordinates keep θ and their old m̃, ṽ). ValueError names the argument that is not as described.
    """
    if precision not in QUANTISED:
        raise ValueError(f"precision: one of {', '.join(QUANTISED)} expected, got {precision!r}")
    algorithm = getattr(hp, "algorithm", None)
    if algorithm not in ("adam", "adamax"):
        raise ValueError(f"hp: an AdamHyperparameters or AdaMaxHyperparameters object expected, got {hp!r}")
    if bool(adamax) != (algorithm == "adamax"):
        raise ValueError(f"adamax={adamax!r} does not match hp ({type(hp).__name__})")
    if getattr(hp, "amsgrad", False) or hp.averaging:
        raise ValueError("hp: amsgrad and averaging are not offered with quantised state (state_precision)")
    block = _check_block_size(block_size)
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads: a positive int or None expected, got {threads!r}")
    if not params:
        return []
    sizes = array("q", [p.numel() if isinstance(p, torch.Tensor) else -1 for p in params])
    _check_tensors("params", params, torch.float32, sizes)
    _check_tensors("grads", grads, torch.float32, sizes)
    first, second = STATE_DTYPES[precision]
    _check_tensors("exp_avgs", exp_avgs, first, sizes)
    _check_tensors("exp_avg_sqs", exp_avg_sqs, second, sizes)
    try:
        _check_tensors("steps", steps, torch.float32, array("q", itertools.repeat(1, len(sizes))))
    except ValueError as error:
        raise ValueError(f"steps: one float32 one-element CPU tensor per parameter expected ({error})") from None
    n = len(params)
    if precision == "int8":
        blocks = array("q", [-(-size // block) for size in sizes])
        if scales_m is None or scales_v is None:
            raise ValueError("scales_m, scales_v: the float32 absmax tensors are needed for int8")
        _check_tensors("scales_m", scales_m, torch.float32, blocks)
        _check_tensors("scales_v", scales_v, torch.float32, blocks)
        scale_m_ptrs, scale_v_ptrs = _pointers(scales_m), _pointers(scales_v)
        seed_array = array("q", bytes(8 * n))
    else:
        if seeds is None or len(seeds) != n:
            raise ValueError(f"seeds: one int state_seed per parameter expected for bf16 ({n} parameters)")
        if any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
            raise ValueError("seeds: ints expected")
        seed_array = array("q", [int(s) & _MASK32 for s in seeds])
        scale_m_ptrs = scale_v_ptrs = array("Q", bytes(8 * n))
    numel = sizes
    nonfinite = array("q", bytes(8 * n))
    pointers = [_pointers(ts) for ts in (params, grads, exp_avgs, exp_avg_sqs)]
    step_ptrs = _pointers(steps)
    hp_array = hp.kernel_array()
    bad = build.load().adamlab_adam_step_quantised(
        MODES[precision],
        int(adamax),
        n,
        _address(numel),
        *[_address(a) for a in pointers],
        _address(scale_m_ptrs),
        _address(scale_v_ptrs),
        _address(step_ptrs),
        _address(seed_array),
        block,
        _address(hp_array),
        hp.flags,
        torch.get_num_threads() if threads is None else threads,
        _address(nonfinite),
    )
    if bad == -1:
        raise MemoryError("the quantised-state kernel could not allocate its block buffers")
    if bad < 0:
        raise ValueError(f"the quantised-state kernel refused the request (code {bad})")
    return list(nonfinite)


__all__ = ["DEFAULT_BLOCK_SIZE", "QUANTISED", "adam_step_quantised", "available"]
