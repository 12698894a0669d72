"""Quantised optimizer state (issue 16), literally: the NumPy oracle of ``state_precision="int8"``/``"bf16"``.

Every line is one rounded float32 operation in the order of the contract (docs/quantised-state.md, "The
optimizer option"); the fused kernel (``adamlab.kernels.quantized``) and the torch reference path
(``adamlab.optim.reference``) are tested against this module bit for bit.

One step for one coordinate (float32 throughout, no fused multiply-add), with the per-tensor scalars of the
fp32 kernel (``formulas.adam_scalars``) rounded to float32 once: b1 = β1,t, c1 = 1 − β1,t, b2 = β2,
c2 = 1 − β2, nstep = −α_t/(1 − β1^t) (Algorithm 1 folded, §2), dmul = 1/√(1 − β2^t) (§3), eps = ε:

    m̃, ṽ ← dequantise(stored)                         (int8: blockwise maps below; bf16: exact)
    m = (b1·m̃) + (c1·g)                               first moment (§2)
    v = (b2·ṽ) + ((c2·g)·g)                           Adam: second raw moment (§2)
    u = max(b2·ũ, |g|)                                 AdaMax (§7.1): u in place of v
    θ ← θ + (nstep·m)/(√v·dmul + eps)                  (AdaMax: θ + (nstep·m)/(u·dmul + eps), dmul = 1)
    stored ← quantise(m), quantise(v)

``maximize`` flips g's sign first, L2 weight decay adds wd·θ to g, decoupled decay multiplies θ by
``1 − α_t·λ`` first, exactly as the fp32 kernel does. A coordinate with a non-finite gradient keeps θ and its
dequantised old m̃, ṽ (re-quantised with its block's new scale) and is counted.

int8, blockwise (blocks of B consecutive elements of the flattened tensor; per block s = max|x| in float32):

    m (int8, −127…127), the square map:      q = rint(127·√(|m|·(1/s)))·sign(m);  m̃ = sign(q)·((a·a)·s), a = |q|·(1/127)
    v (uint8, 0…255), the fourth-power map:  q = rint(255·√√(v·(1/s)));           ṽ = ((a·a)·(a·a))·s, a = q·(1/255)
    u (AdaMax, uint8), the square map:       q = rint(255·√(u·(1/s)));             ũ = (a·a)·s,         a = q·(1/255)

(``1/s`` is one float32 division per block; s = 0 encodes q = 0.) The maps are dense near 0, where Adam's
moments mostly lie: the square map's decode error is at most |m̃ − m| ≤ (2·√r/127 + 1/127²)·s/2 for
r = |m|/s (see tests/test_numpy_quantised.py).

bf16 with stochastic rounding: encode x as ``(bits(x) + r) >> 16`` (uint32 arithmetic; NaN → 0x7FC0), with
r a 16-bit counter-based random number (:func:`random_bits`): reproducible, the same on every machine, and
unbiased (E[x̃] = x). The random bits of element i of a tensor at step t (after the increment) for moment
``which`` (0: m, 1: v or u) are ``mix32(key ^ i) >> 16`` with ``key = mix32(seed ^ mix32(2t + which))``.

Where the contract leaves a case open, this module (and the torch path) does what the fp32 kernel does:
where the denominator √v·dmul + eps is 0 (ε = 0 and ṽ = 0) the step is 0 rather than 0/0. AdaMax adds ε to
the denominator (as the contract writes), not inside the max as the fp32 AdaMax does; the two agree at
AdaMax's default ε = 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from adamlab import formulas as F
from adamlab.hyperparameters import DEFAULT_BLOCK_SIZE, MIN_QUANTISED_NUMEL, QUANTISED, STATE_PRECISIONS

_F = np.float32
_U32 = np.uint32
_MASK32 = 0xFFFFFFFF
_INV127 = _F(1.0) / _F(127.0)
_INV255 = _F(1.0) / _F(255.0)
_BF16_NAN = 0x7FC0


# ---------------------------------------------------------------------- random bits


def mix32(x: Any) -> Any:
    """The 32-bit integer mixer of the contract (uint32 arithmetic, products modulo 2^32):
    x ^= x >> 16; x *= 0x7feb352d; x ^= x >> 15; x *= 0x846ca68b; x ^= x >> 16.

    Takes a Python int (returns an int) or an array of uint32 (returns uint32)."""
    if isinstance(x, (int, np.integer)):
        y = int(x) & _MASK32
        y ^= y >> 16
        y = (y * 0x7FEB352D) & _MASK32
        y ^= y >> 15
        y = (y * 0x846CA68B) & _MASK32
        y ^= y >> 16
        return y
    a = np.asarray(x, dtype=_U32).copy()
    with np.errstate(over="ignore"):
        a ^= a >> _U32(16)
        a *= _U32(0x7FEB352D)
        a ^= a >> _U32(15)
        a *= _U32(0x846CA68B)
        a ^= a >> _U32(16)
    return a


def tensor_seed(optimizer_seed: int, position: int) -> int:
    """A parameter's ``state_seed``: mix32(optimizer_seed ^ mix32(position)), position = its index in the
    concatenation of all param groups' params."""
    return int(mix32((int(optimizer_seed) & _MASK32) ^ mix32(position)))


def random_bits(n: int, seed: int, step: int, which: int) -> np.ndarray:
    """The 16-bit random numbers (uint32 in [0, 2^16)) of elements 0…n−1 of a tensor with ``state_seed``
    ``seed`` at step ``step`` (after the increment) for moment ``which`` (0: m; 1: v or u)."""
    key = mix32((int(seed) & _MASK32) ^ mix32((2 * int(step) + int(which)) & _MASK32))
    index = np.arange(n, dtype=np.uint64).astype(_U32)  # the low 32 bits of the element index
    return mix32(index ^ _U32(key)) >> _U32(16)


# ---------------------------------------------------------------------- bf16


def bf16_to_float32(bits: np.ndarray) -> np.ndarray:
    """Decode bf16 bit patterns (uint16): the float32 whose upper 16 bits they are (exact)."""
    return (np.asarray(bits, dtype=np.uint16).astype(_U32) << _U32(16)).view(_F)


def bf16_stochastic_round(x: np.ndarray, seed: int, step: int, which: int) -> np.ndarray:
    """Encode float32 ``x`` (flattened order) as bf16 bit patterns (uint16) with stochastic rounding:
    ``(bits(x) + r) >> 16`` with r = :func:`random_bits` (so x rounds up with probability equal to its distance
    from the bf16 value below, relative to the gap: unbiased); NaN becomes 0x7FC0, ±inf stays ±inf."""
    xf = np.ascontiguousarray(x, dtype=_F)
    bits = xf.reshape(-1).view(_U32)
    r = random_bits(bits.size, seed, step, which)
    with np.errstate(over="ignore"):
        out = ((bits + r) >> _U32(16)).astype(np.uint16)
    out[np.isnan(xf.reshape(-1))] = _BF16_NAN
    return out.reshape(xf.shape)


# ---------------------------------------------------------------------- int8 blocks


def _blocks(x: np.ndarray, block: int) -> tuple[np.ndarray, int]:
    """x flattened and zero-padded to whole blocks, shaped (blocks, B); and the true length."""
    flat = np.ascontiguousarray(x).reshape(-1)
    n = flat.size
    nb = -(-n // block)
    padded = np.zeros(nb * block, dtype=flat.dtype)
    padded[:n] = flat
    return padded.reshape(nb, block), n


def _check_block(block: int) -> None:
    if not isinstance(block, (int, np.integer)) or isinstance(block, bool) or block < 64 or block % 64:
        raise ValueError(f"block (the int8 block size) must be a positive multiple of 64, got {block!r}")


def absmax(x: np.ndarray, block: int) -> np.ndarray:
    """Per block of ``block`` consecutive elements of flattened x: s = max|x| (float32, ceil(n/B) values)."""
    _check_block(block)
    b, _ = _blocks(np.asarray(x, dtype=_F), block)
    return np.max(np.abs(b), axis=1).astype(_F)


def quantise_int8(
    x: np.ndarray, block: int, signed: bool, *, fourth_root: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Blockwise quantisation of float32 ``x``: returns (q, scale), q of x's shape, scale = :func:`absmax`.

    signed (m): int8 q = rint(127·√(|x|·(1/s)))·sign(x). Unsigned (v, u): uint8 q = rint(255·√(x·(1/s)))
    (the square map, AdaMax's u) or, with ``fourth_root`` (Adam's v), q = rint(255·√√(x·(1/s))).
    rint rounds half to even; q is clamped to 127 (255); s = 0 gives q = 0."""
    x = np.asarray(x, dtype=_F)
    scale = absmax(x, block)
    b, n = _blocks(x, block)
    s = scale[:, None]
    safe = np.where(s > 0, s, _F(1.0))
    inv = (_F(1.0) / safe).astype(_F)  # one float32 division per block
    if signed:
        r = np.abs(b) * inv
        q = np.minimum(np.rint(_F(127.0) * np.sqrt(r)), _F(127.0))
        q = np.where(b < 0, -q, q)
        dtype: Any = np.int8
    else:
        r = b * inv
        root = np.sqrt(np.sqrt(r)) if fourth_root else np.sqrt(r)
        q = np.minimum(np.rint(_F(255.0) * root), _F(255.0))
        dtype = np.uint8
    q = np.where(s > 0, q, _F(0.0))
    return q.reshape(-1)[:n].astype(dtype).reshape(x.shape), scale


def dequantise_int8(
    q: np.ndarray, scale: np.ndarray, block: int, signed: bool, *, fourth_root: bool = False
) -> np.ndarray:
    """The float32 values of blockwise codes ``q`` (see :func:`quantise_int8`): a = |q|·(1/127) (signed) or
    q·(1/255); the square map gives (a·a)·s (with q's sign), the fourth-power map ((a·a)·(a·a))·s."""
    _check_block(block)
    q = np.asarray(q)
    b, n = _blocks(q, block)
    s = np.asarray(scale, dtype=_F)[:, None]
    if signed:
        a = np.abs(b.astype(np.int16)).astype(_F) * _INV127
        x = (a * a) * s
        x = np.where(b < 0, -x, x)
    else:
        a = b.astype(_F) * _INV255
        sq = a * a
        x = ((sq * sq) if fourth_root else sq) * s
    return x.astype(_F).reshape(-1)[:n].reshape(q.shape)


# ---------------------------------------------------------------------- one step


def init_state(
    theta: np.ndarray,
    precision: str,
    *,
    algorithm: str = "adam",
    block_size: int = DEFAULT_BLOCK_SIZE,
    seed: int = 0,
) -> dict:
    """The quantised state of a float32 tensor before its first step (m = v = 0), keyed as adamlab.Adam's
    (``exp_avg``, ``exp_avg_sq``) or AdaMax's (``exp_avg``, ``exp_inf``): int8 codes and ``*_absmax``
    scales, or bf16 bit patterns (uint16); ``step`` (int), ``state_seed``, ``state_block_size``."""
    if precision not in QUANTISED:
        raise ValueError(f"precision must be one of {QUANTISED}, got {precision!r}")
    _check_block(block_size)
    second = "exp_inf" if algorithm == "adamax" else "exp_avg_sq"
    shape = np.shape(theta)
    state: dict[str, Any] = {"step": 0, "state_seed": int(seed) & _MASK32, "state_block_size": int(block_size)}
    if precision == "int8":
        nb = -(-int(np.prod(shape, dtype=np.int64)) // block_size)
        state.update(
            exp_avg=np.zeros(shape, np.int8),
            exp_avg_absmax=np.zeros(nb, _F),
        )
        state[second], state[second + "_absmax"] = np.zeros(shape, np.uint8), np.zeros(nb, _F)
    else:
        state.update(exp_avg=np.zeros(shape, np.uint16))
        state[second] = np.zeros(shape, np.uint16)
    return state


def step_scalars(hp: Any, t: int) -> dict[str, np.float32]:
    """The per-tensor float32 scalars of step t (the fp32 kernel's ``adam_scalars``/``adamax_scalars``,
    computed in double by ``formulas`` and rounded once): b1, c1, b2, c2, nstep, dmul, eps, wd (L2), decay
    (decoupled), sign (maximize)."""
    beta1, beta2 = hp.betas
    beta1_t = F.beta1_at(beta1, t, hp.beta1_decay)
    alpha_t = F.step_size(hp.lr, t, hp.lr_decay)
    if hp.algorithm == "adamax" or not hp.bias_correction:
        step = alpha_t / F.bias_correction(beta1, t) if hp.bias_correction else alpha_t
        dscale = 1.0
    elif hp.eps_mode == "hat":
        step, dscale = F.adam_hat_step(hp.lr, beta1, beta2, t, hp.lr_decay), 1.0
    else:
        step, dscale = F.adam_scalars(hp.lr, beta1, beta2, t, bias_correction_on=True, lr_decay=hp.lr_decay)
    decoupled = bool(hp.decoupled_weight_decay)
    return {
        "b1": _F(beta1_t),
        "c1": _F(1.0 - beta1_t),
        "b2": _F(beta2),
        "c2": _F(1.0 - beta2),
        "nstep": _F(-step),
        "dmul": _F(dscale),
        "eps": _F(hp.eps),
        "wd": _F(0.0 if decoupled else hp.weight_decay),
        "decay": _F(1.0 - alpha_t * hp.weight_decay if decoupled else 1.0),
        "sign": _F(-1.0 if hp.maximize else 1.0),
    }


def _decode(state: dict, key: str, precision: str, block: int, signed: bool, fourth_root: bool) -> np.ndarray:
    if precision == "bf16":
        return bf16_to_float32(state[key])
    return dequantise_int8(state[key], state[key + "_absmax"], block, signed, fourth_root=fourth_root)


def adam_step_quantised(
    theta: np.ndarray, g: np.ndarray, state: dict, hp: Any, precision: str
) -> tuple[np.ndarray, dict, int]:
    """One step of Adam (``hp.algorithm == "adam"``) or AdaMax with quantised state for one float32 tensor;
    returns (new θ, new state, number of non-finite gradient entries). Pure: the arguments are not changed.

    ``state`` as :func:`init_state` makes it; ``hp`` an ``adamlab.hyperparameters`` object (amsgrad and
    averaging are not offered with quantised state)."""
    if precision not in QUANTISED:
        raise ValueError(f"precision must be one of {QUANTISED}, got {precision!r}")
    if getattr(hp, "amsgrad", False) or hp.averaging:
        raise ValueError("state_precision bf16/int8 does not offer amsgrad or averaging")
    theta = np.asarray(theta)
    if theta.dtype != _F:
        raise TypeError(f"theta must be float32, got {theta.dtype}")
    g = np.asarray(g, dtype=_F)
    adamax = hp.algorithm == "adamax"
    second = "exp_inf" if adamax else "exp_avg_sq"
    block = int(state.get("state_block_size", DEFAULT_BLOCK_SIZE))
    t = int(state["step"]) + 1
    k = step_scalars(hp, t)
    old_theta: np.ndarray = theta.reshape(-1)
    gf: np.ndarray = g.reshape(-1)
    m_old = _decode(state, "exp_avg", precision, block, True, False).reshape(-1)
    v_old = _decode(state, second, precision, block, False, not adamax).reshape(-1)

    ok = np.isfinite(gf)
    ge: np.ndarray = gf * k["sign"]
    if k["wd"] != 0:
        ge = ge + old_theta * k["wd"]
    p = old_theta * k["decay"] if k["decay"] != 1 else old_theta
    m = (k["b1"] * m_old) + (k["c1"] * ge)
    if adamax:
        v = np.maximum(k["b2"] * v_old, np.abs(ge))
        den = (v * k["dmul"]) + k["eps"]
    else:
        v = (k["b2"] * v_old) + ((k["c2"] * ge) * ge)
        den = (np.sqrt(v) * k["dmul"]) + k["eps"]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        q = (k["nstep"] * m) / den
    q = np.where(den > 0, q, _F(0.0))  # ε = 0 and ṽ = 0: the step is 0, as in the fp32 kernel
    new_theta = np.where(ok, p + q, old_theta).astype(_F)
    m_store = np.where(ok, m, m_old).astype(_F)
    v_store = np.where(ok, v, v_old).astype(_F)

    new = dict(state)
    new["step"] = t
    shape = theta.shape
    if precision == "bf16":
        seed = int(state["state_seed"])
        new["exp_avg"] = bf16_stochastic_round(m_store, seed, t, 0).reshape(shape)
        new[second] = bf16_stochastic_round(v_store, seed, t, 1).reshape(shape)
    else:
        new["exp_avg"], new["exp_avg_absmax"] = quantise_int8(m_store.reshape(shape), block, True)
        new[second], new[second + "_absmax"] = quantise_int8(
            v_store.reshape(shape), block, False, fourth_root=not adamax
        )
    return new_theta.reshape(shape), new, int((~ok).sum())


__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "MIN_QUANTISED_NUMEL",
    "QUANTISED",
    "STATE_PRECISIONS",
    "absmax",
    "adam_step_quantised",
    "bf16_stochastic_round",
    "bf16_to_float32",
    "dequantise_int8",
    "init_state",
    "mix32",
    "quantise_int8",
    "random_bits",
    "step_scalars",
    "tensor_seed",
]
