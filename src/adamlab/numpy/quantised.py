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
    v = min(v, FLT_MAX)  (u = min(u, FLT_MAX))         int8 only (a NaN stays NaN), see below
    θ ← θ + (nstep·m)/(√v·dmul + eps)                  (AdaMax: θ + (nstep·m)/(u·dmul + eps), dmul = 1)
    stored ← quantise(m), quantise(v) (int8: quantise(z), z = √√v or √u, below)

``maximize`` flips g's sign first, L2 weight decay adds wd·θ to g, decoupled decay multiplies θ by
``1 − α_t·λ`` first, exactly as the fp32 kernel does. A coordinate with a non-finite gradient keeps θ and its
dequantised old m̃, ṽ (int8: m̃ and z̃, below; re-quantised with its block's new scale) and is counted.

int8 (version 2, ``state_int8_codes`` = 2), blockwise: blocks of B consecutive elements of the flattened
tensor (default 256, a multiple of 64; the last may be shorter), one float32 scale per block and moment.

    m (int8 c ∈ [−127, 127]): s_m = max|m|, y = |m|·(1/s_m), k = E4M3(y) (an 8-bit float code of y:
        4 exponent bits, 3 mantissa bits, subnormals, round to nearest even, see :func:`encode_e4m3`),
        c = sign(m)·k;  m̃ = sign(c)·(decode(|c|)·s_m)  — a relative half step of 2^-4 for
        y ∈ [2^-14, 1], an absolute one of 2^-18·s_m below.
    second moment (uint8 q): the root z of the quantity the step divides by — Adam z = √w with w = √v
        (z = ⁴√v), AdaMax z = √u — coded linearly: s_z = max z, q = min(rint(z·(255/s_z)), 255);
        z̃ = q·(s_z/255), Adam ṽ = (z̃·z̃)·(z̃·z̃), AdaMax ũ = z̃·z̃ — |z̃ − z| ≤ s_z/510.

(``1/s_m``, ``255/s_z`` and ``s_z/255`` are one float32 division per block; a scale of 0 codes 0.) The step
computes w = √v anyway, so the code costs one more √ and no tables (version 1's maps, a square map of m and a
fourth-power map of v, needed a √ and a ⁴√ of x/s; they are kept only to load old checkpoints:
:func:`decode_int8_v1`). A coordinate with a non-finite gradient stores its decoded old m̃ and z̃ (z̃ itself,
not a root of ṽ), re-encoded with its block's new scales.

The int8 clamp (an amendment of version 2, issue 16): a finite gradient above about 10^21 (c2·g·g beyond
FLT_MAX ≈ 3.4·10^38) would make v = ∞, z = ∞, the block's s_z = ∞, and every code of the block decode as
0·∞ = NaN on the next step. With v = min(v, FLT_MAX) (also where a decoded ṽ rounds to ∞, z̃ being at most an
ulp above its scale) w ≤ √FLT_MAX ≈ 1.8·10^19, z and s_z stay finite and the block's other coordinates are
untouched. The clamped coordinate's update is nstep·m/(√FLT_MAX·dmul + eps), not 0 as with fp32 state
(whose v = ∞ freezes the coordinate): about α·g/(5.8·10^20) at t = 1 with β1 = 0.9, β2 = 0.999, i.e. α at the
threshold and more above it. bf16 state is not clamped (it stores v = ∞ as fp32 state does).

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
#: The largest finite float32 (FLT_MAX = (2 − 2^-23)·2^127): int8's clamp of the second moment.
FLT_MAX = np.finfo(_F).max


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


#: The version of the int8 codes this module writes (``state_int8_codes`` in every int8 state). A state
#: without the key holds version 1's codes (:func:`decode_int8_v1`).
INT8_CODES = 2

_SUBNORMAL_BITS = 0x38800000  # bits(2^-14): the smallest normal value of the m code
_CODE_BIAS = 0x38000000  # bits(2^-15): code k ≥ 8 is the float32 with bits (k << 20) + _CODE_BIAS
_TWO17 = _F(131072.0)  # 2^17: the subnormal codes are k·2^-17, k < 8
_INV_TWO17 = _F(1.0 / 131072.0)
_E4M3_MAX = 127


def encode_e4m3(y: np.ndarray) -> np.ndarray:
    """The m code of y = |m|/s ≥ 0 (float32): k ∈ [0, 127] (uint8), an 8-bit float with 4 exponent bits,
    3 mantissa bits and subnormals ("E4M3"), rounded to nearest, ties to even:

        y < 2^-14 (bits(y) < 0x38800000):  k = rint(y·2^17)                 (subnormal; k ≤ 8; the product is exact)
        else:  t = bits(y) − 0x38000000;   k = (t + 0x7FFFF + ((t >> 20) & 1)) >> 20   (uint32; keeps 3 mantissa bits)
        k = min(k, 127)                                                      (+inf, NaN → 127)

    So k = 8e' + j codes (1 + j/8)·2^(e'−15) for k ≥ 8 and k·2^-17 below: the spacing is 2^-17 up to 2^-13
    and 1/8 of the binade above, a relative half step of at most 2^-4 over [2^-14, 1]. y carries no sign
    (negative zero included: pass |m|·r); a NaN of either sign codes 127, as the uint32 comparison gives: where a
    block's s_m is subnormal, r = 1/s_m is +∞ and y = |m|·∞ is +∞, or NaN (0·∞, negative on x86) for m = 0, so
    the whole block codes ±127 (values ≤ 1.875·s_m < 2^-125: harmless)."""
    y = np.ascontiguousarray(y, dtype=_F)
    bits = y.view(_U32)
    if np.any((bits >> _U32(31)).astype(bool) & ~np.isnan(y)):
        raise ValueError("encode_e4m3: y must be non-negative (y = |m|/s, sign bit clear)")
    small = bits < _U32(_SUBNORMAL_BITS)
    sub = np.rint(np.where(small, y, _F(0.0)) * _TWO17).astype(_U32)  # rint: half to even
    with np.errstate(over="ignore"):
        t = np.where(small, _U32(0), bits - _U32(_CODE_BIAS))
        k = (t + _U32(0x7FFFF) + ((t >> _U32(20)) & _U32(1))) >> _U32(20)
    k = np.where(small, sub, np.minimum(k, _U32(_E4M3_MAX)))
    return k.astype(np.uint8)


def decode_e4m3(k: np.ndarray) -> np.ndarray:
    """The float32 value of m codes k ∈ [0, 127] (exact): k < 8 → k·2^-17, else the float32 with bits
    (k << 20) + 0x38000000 (so 8 → 2^-14, 120 → 1, 127 → 1.875)."""
    k = np.asarray(k)
    if np.any(k < 0) or np.any(k > _E4M3_MAX):
        raise ValueError("decode_e4m3: codes k must lie in [0, 127]")
    ku = k.astype(_U32)
    normal = ((ku << _U32(20)) + _U32(_CODE_BIAS)).view(_F)
    return np.where(ku < 8, ku.astype(_F) * _INV_TWO17, normal).astype(_F)


def encode_linear(z: np.ndarray, r: Any) -> np.ndarray:
    """The second moment's code of a root z ≥ 0 with r = 255/s_z: q = min(rint(z·r), 255) (uint8, rint half to
    even; r a float32 scalar or one per block, broadcast). The code is linear in z: |q·(s_z/255) − z| ≤ s_z/510
    (plus float32 rounding)."""
    zr = np.asarray(z, dtype=_F) * np.asarray(r, dtype=_F)
    return np.minimum(np.rint(zr), _F(255.0)).astype(np.uint8)


def decode_linear(q: np.ndarray, d: Any) -> np.ndarray:
    """The root z̃ = q·d of codes q (uint8) with d = s_z/255 (one rounded multiplication)."""
    return np.asarray(q).astype(_F) * np.asarray(d, dtype=_F)


def root_of_second_moment(v: np.ndarray, adamax: bool) -> np.ndarray:
    """z, the root the int8 state stores of the second moment: Adam z = √w with w = √v (z = ⁴√v, w being the
    √v the step divides by); AdaMax z = √u. float32, correctly rounded roots (sqrtf)."""
    v = np.asarray(v, dtype=_F)
    return np.sqrt(v) if adamax else np.sqrt(np.sqrt(v))


def second_moment_of_root(z: np.ndarray, adamax: bool) -> np.ndarray:
    """The second moment of a stored root: Adam w̃ = z̃·z̃, ṽ = w̃·w̃; AdaMax ũ = z̃·z̃ (rounded float32)."""
    z = np.asarray(z, dtype=_F)
    w = z * z
    return w if adamax else w * w


def quantise_int8(x: np.ndarray, block: int, signed: bool) -> tuple[np.ndarray, np.ndarray]:
    """Blockwise int8 codes of float32 ``x``: returns (codes of x's shape, per-block scale s, float32).

    signed (the first moment m): s = max|m| over the block, r = 1/s (one float32 division per block),
    k = :func:`encode_e4m3` (|m|·r), code c = −k where m < 0 else k (int8 in [−127, 127]).
    unsigned (the root z of the second moment, :func:`root_of_second_moment`; z ≥ 0): s = max z,
    r = 255/s (one division), q = :func:`encode_linear` (z, r) (uint8). A block with s = 0 codes 0."""
    x = np.asarray(x, dtype=_F)
    scale = absmax(x, block)
    b, n = _blocks(x, block)
    s = scale[:, None]
    safe = np.where(s > 0, s, _F(1.0))
    if signed:
        r = (_F(1.0) / safe).astype(_F)
        k = encode_e4m3(np.abs(b) * r).astype(np.int16)
        q: np.ndarray = np.where(b < 0, -k, k).astype(np.int8)
    else:
        r = (_F(255.0) / safe).astype(_F)
        q = encode_linear(b, r)
    q = np.where(s > 0, q, 0).astype(q.dtype)
    return q.reshape(-1)[:n].reshape(x.shape), scale


def dequantise_int8(q: np.ndarray, scale: np.ndarray, block: int, signed: bool) -> np.ndarray:
    """The float32 values of blockwise codes ``q`` (see :func:`quantise_int8`): signed, m̃ = decode_e4m3(|c|)·s
    negated where c < 0; unsigned, z̃ = q·d with d = s/255 (one division per block)."""
    _check_block(block)
    q = np.asarray(q)
    b, n = _blocks(q, block)
    s = np.asarray(scale, dtype=_F)[:, None]
    if signed:
        mag = decode_e4m3(np.abs(b.astype(np.int16))) * s
        x = np.where(b < 0, -mag, mag)
    else:
        x = decode_linear(b, (s / _F(255.0)).astype(_F))
    return x.astype(_F).reshape(-1)[:n].reshape(q.shape)


def decode_int8_v1(q: np.ndarray, scale: np.ndarray, block: int, signed: bool, *, fourth_root: bool) -> np.ndarray:
    """LEGACY: the float32 values of version 1's codes (a state without ``state_int8_codes``), only to load old
    checkpoints. a = |q|·(1/127) (signed, m: the square map (a·a)·s with q's sign) or q·(1/255) (unsigned:
    the square map (a·a)·s of AdaMax's u, or with ``fourth_root`` Adam's v = ((a·a)·(a·a))·s)."""
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
    scales (the second moment's of its root z, see :func:`quantise_int8`) and ``state_int8_codes`` = 2, or bf16
    bit patterns (uint16); ``step`` (int), ``state_seed``, ``state_block_size``."""
    if precision not in QUANTISED:
        raise ValueError(f"precision must be one of {QUANTISED}, got {precision!r}")
    _check_block(block_size)
    second = "exp_inf" if algorithm == "adamax" else "exp_avg_sq"
    shape = np.shape(theta)
    state: dict[str, Any] = {"step": 0, "state_seed": int(seed) & _MASK32, "state_block_size": int(block_size)}
    if precision == "int8":
        state["state_int8_codes"] = INT8_CODES
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


def _moments(
    state: dict, precision: str, second: str, block: int, adamax: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The stored (m̃, second moment, z̃) of a state, flattened float32; z̃ (int8's stored root) is None for bf16."""
    if precision == "bf16":
        return bf16_to_float32(state["exp_avg"]).reshape(-1), bf16_to_float32(state[second]).reshape(-1), None
    if state.get("state_int8_codes") != INT8_CODES:
        raise ValueError(
            f"state_int8_codes must be {INT8_CODES} (this module's int8 codes), got "
            f"{state.get('state_int8_codes')!r}: convert a version-1 state with decode_int8_v1 first"
        )
    m = dequantise_int8(state["exp_avg"], state["exp_avg_absmax"], block, True).reshape(-1)
    z = dequantise_int8(state[second], state[second + "_absmax"], block, False).reshape(-1)
    return m, second_moment_of_root(z, adamax), z


def adam_step_quantised(
    theta: np.ndarray, g: np.ndarray, state: dict, hp: Any, precision: str
) -> tuple[np.ndarray, dict, int]:
    """One step of Adam (``hp.algorithm == "adam"``) or AdaMax with quantised state for one float32 tensor;
    returns (new θ, new state, number of non-finite gradient entries). Pure: the arguments are not changed.

    int8 (version 2): m̃ and z̃ are decoded, ṽ = (z̃·z̃)·(z̃·z̃) (AdaMax ũ = z̃·z̃); after the update
    w = √v (the step's root), z = √w (AdaMax z = √u) is stored. A coordinate with a non-finite gradient
    stores its decoded old m̃ and z̃ (not a root of ṽ), re-encoded with its block's new scales.

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
    m_old, v_old, z_old = _moments(state, precision, second, block, adamax)

    ok = np.isfinite(gf)
    ge: np.ndarray = gf * k["sign"]
    if k["wd"] != 0:
        ge = ge + old_theta * k["wd"]
    p = old_theta * k["decay"] if k["decay"] != 1 else old_theta
    m = (k["b1"] * m_old) + (k["c1"] * ge)
    with np.errstate(invalid="ignore", over="ignore"):
        if adamax:
            v = np.maximum(k["b2"] * v_old, np.abs(ge))
            if precision == "int8":
                v = np.minimum(v, FLT_MAX)  # u = min(u, FLT_MAX): s_z stays finite (NaN stays NaN)
            den = (v * k["dmul"]) + k["eps"]
            z = np.sqrt(v)
        else:
            v = (k["b2"] * v_old) + ((k["c2"] * ge) * ge)
            if precision == "int8":
                v = np.minimum(v, FLT_MAX)  # v = min(v, FLT_MAX): w, z and s_z stay finite (NaN stays NaN)
            w = np.sqrt(v)
            den = (w * k["dmul"]) + k["eps"]
            z = np.sqrt(w)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        q = (k["nstep"] * m) / den
    q = np.where(den > 0, q, _F(0.0))  # ε = 0 and ṽ = 0: the step is 0, as in the fp32 kernel
    new_theta = np.where(ok, p + q, old_theta).astype(_F)
    m_store = np.where(ok, m, m_old).astype(_F)

    new = dict(state)
    new["step"] = t
    shape = theta.shape
    if precision == "bf16":
        seed = int(state["state_seed"])
        new["exp_avg"] = bf16_stochastic_round(m_store, seed, t, 0).reshape(shape)
        new[second] = bf16_stochastic_round(np.where(ok, v, v_old).astype(_F), seed, t, 1).reshape(shape)
    else:
        assert z_old is not None
        z_store = np.where(ok, z, z_old).astype(_F)
        new["exp_avg"], new["exp_avg_absmax"] = quantise_int8(m_store.reshape(shape), block, True)
        new[second], new[second + "_absmax"] = quantise_int8(z_store.reshape(shape), block, False)
    return new_theta.reshape(shape), new, int((~ok).sum())


__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "FLT_MAX",
    "INT8_CODES",
    "MIN_QUANTISED_NUMEL",
    "QUANTISED",
    "STATE_PRECISIONS",
    "absmax",
    "adam_step_quantised",
    "bf16_stochastic_round",
    "bf16_to_float32",
    "decode_e4m3",
    "decode_int8_v1",
    "decode_linear",
    "dequantise_int8",
    "encode_e4m3",
    "encode_linear",
    "init_state",
    "mix32",
    "quantise_int8",
    "random_bits",
    "root_of_second_moment",
    "second_moment_of_root",
    "step_scalars",
    "tensor_seed",
]
