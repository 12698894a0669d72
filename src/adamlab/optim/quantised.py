"""Quantised optimizer state in torch (``state_precision="bf16"``/``"int8"``, issue 16): the state's format,
its encode and decode, the reference step, and checkpoint conversion.

The arithmetic is the contract's, written in :mod:`adamlab.numpy.quantised` (the oracle; its docstring has the
formulas): this module does the same float32 operations in the same order with torch (one rounded operation
per line, no ``addcmul``/``lerp``/fused multiply-add), and is tested equal to it bit for bit.

Which tensors: float32 parameters (plain tensors, not complex, not DTensors) of at least
``MIN_QUANTISED_NUMEL`` = 4096 elements in a group with ``state_precision`` bf16 or int8; every other tensor
keeps ordinary state. A quantised state holds, besides ``step``:

- int8 (version 2 codes): ``exp_avg`` (int8 E4M3 codes of |m|/s_m with m's sign, p's shape),
  ``exp_avg_absmax`` (float32 s_m, ceil(n/B)), ``exp_avg_sq`` (uint8 linear codes of the root z = ⁴√v; AdaMax
  ``exp_inf``, z = √u) and ``exp_avg_sq_absmax`` (``exp_inf_absmax``: s_z = max z, a scale of the ROOT), and
  ``state_int8_codes`` = 2. A state without that key holds version 1's codes (an older checkpoint):
  :func:`upgrade_int8_codes` re-encodes it (``load_state_dict`` does);
- bf16: ``exp_avg`` and ``exp_avg_sq`` (``exp_inf``) as torch.bfloat16;
- both: ``state_seed`` (int, the stochastic rounding's seed) and ``state_block_size`` (int, B).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from adamlab.hyperparameters import MIN_QUANTISED_NUMEL, QUANTISED
from adamlab.numpy import quantised as Q

State = dict[str, Any]
_MASK32 = 0xFFFFFFFF
#: The keys only a quantised state has (besides the ``*_absmax`` scales).
QUANTISATION_KEYS = ("state_seed", "state_block_size", "state_int8_codes")


# ---------------------------------------------------------------------- which tensors, which format


def takes_quantised_state(p: torch.Tensor, hp: Any) -> bool:
    """Whether parameter ``p`` gets quantised state under ``hp``: state_precision bf16/int8, a plain float32
    tensor (not complex, not a tensor subclass) of at least 4096 elements."""
    return (
        hp.state_precision in QUANTISED
        and p.dtype == torch.float32
        and p.numel() >= MIN_QUANTISED_NUMEL
        and type(p) in (torch.Tensor, torch.nn.Parameter)
    )


def is_quantised(state: State) -> bool:
    """Whether a parameter's state is quantised (it carries ``state_seed``)."""
    return "state_seed" in state


def precision_of(state: State) -> str:
    """ "int8", "bf16" or "fp32": the format of a parameter's state."""
    if not is_quantised(state):
        return "fp32"
    return "int8" if "exp_avg_absmax" in state else "bf16"


def _second(state: State) -> str:
    return "exp_inf" if "exp_inf" in state else "exp_avg_sq"


def init_state(p: torch.Tensor, hp: Any, position: int) -> State:
    """The quantised state of ``p`` before its first step (m = v = 0); ``position``: p's index in the
    concatenation of all param groups' params (its seed is mix32(state_seed ^ mix32(position)))."""
    second = hp.moment_keys[1]
    state: State = {
        "step": torch.tensor(0.0, dtype=torch.float32),
        "state_seed": Q.tensor_seed(hp.state_seed, position),
        "state_block_size": int(hp.state_block_size),
    }
    if hp.state_precision == "int8":
        nb = -(-p.numel() // hp.state_block_size)
        state["exp_avg"] = torch.zeros(p.shape, dtype=torch.int8, device=p.device)
        state["exp_avg_absmax"] = torch.zeros(nb, dtype=torch.float32, device=p.device)
        state[second] = torch.zeros(p.shape, dtype=torch.uint8, device=p.device)
        state[second + "_absmax"] = torch.zeros(nb, dtype=torch.float32, device=p.device)
        state["state_int8_codes"] = Q.INT8_CODES
    else:
        state["exp_avg"] = torch.zeros(p.shape, dtype=torch.bfloat16, device=p.device)
        state[second] = torch.zeros(p.shape, dtype=torch.bfloat16, device=p.device)
    return state


# ---------------------------------------------------------------------- int8 maps


def _sqrt(x: torch.Tensor) -> torch.Tensor:
    """The correctly rounded float32 square root (IEEE sqrtf, as C and NumPy compute it). torch's float32
    ``sqrt`` on the CPU is not always correctly rounded (measured here: 27 of 5000 values one ulp off, torch
    2.13, AVX-512); the float64 root rounded to float32 is (53 ≥ 2·24 + 2 bits: no double rounding)."""
    return torch.sqrt(x.to(torch.float64)).to(torch.float32)


def _blocks(x: torch.Tensor, block: int) -> torch.Tensor:
    """Flattened x, zero-padded to whole blocks, shaped (blocks, B)."""
    flat = x.reshape(-1)
    pad = (-flat.numel()) % block
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return flat.reshape(-1, block)


def encode_e4m3(y: torch.Tensor) -> torch.Tensor:
    """:func:`adamlab.numpy.quantised.encode_e4m3` (the m code k ∈ [0, 127] of y = |m|/s ≥ 0, int64) on the
    float32 bit patterns: y < 2^-14 → rint(y·2^17), else with t = bits(y) − 0x38000000,
    (t + 0x7FFFF + ((t >> 20) & 1)) >> 20, at most 127."""
    bits = y.contiguous().view(torch.int32).to(torch.int64) & _MASK32  # uint32 (a NaN's sign bit included)
    small = bits < 0x38800000
    sub = torch.round(torch.where(small, y, torch.zeros_like(y)) * 131072.0).to(torch.int64)  # exact product
    t = bits - 0x38000000
    k = (t + 0x7FFFF + ((t >> 20) & 1)) >> 20
    return torch.where(small, sub, torch.clamp(k, max=127))


def decode_e4m3(k: torch.Tensor) -> torch.Tensor:
    """The float32 value of m codes k ∈ [0, 127] (exact): k·2^-17 for k < 8, else bits (k << 20) + 0x38000000."""
    k = k.to(torch.int64)
    normal = ((k << 20) + 0x38000000).to(torch.int32).view(torch.float32)
    return torch.where(k < 8, k.to(torch.float32) * (1.0 / 131072.0), normal)


def root_of_second_moment(v: torch.Tensor, adamax: bool) -> torch.Tensor:
    """z, the root int8 state stores: Adam z = √(√v) (⁴√v), AdaMax z = √u; each root correctly rounded."""
    return _sqrt(v) if adamax else _sqrt(_sqrt(v))


def second_moment_of_root(z: torch.Tensor, adamax: bool) -> torch.Tensor:
    """Adam ṽ = w̃·w̃ with w̃ = z̃·z̃; AdaMax ũ = z̃·z̃ (float32 products)."""
    w = z * z
    return w if adamax else w * w


def encode_int8(x: torch.Tensor, block: int, signed: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 x → (codes of x's shape, per-block scales s), as :func:`adamlab.numpy.quantised.quantise_int8`:
    signed (m): int8 ±E4M3(|x|·(1/s)), s = max|x|; unsigned (a root z ≥ 0): uint8 min(rint(z·(255/s)), 255),
    s = max z. One float32 division per block; s = 0 codes 0."""
    b = _blocks(x, block)
    scale = b.abs().amax(dim=1)
    s = scale[:, None]
    positive = s > 0
    safe = torch.where(positive, s, torch.ones_like(s))
    if signed:
        k = encode_e4m3(b.abs() * (torch.ones_like(s) / safe))
        q = torch.where(b < 0, -k, k)
    else:
        q = torch.clamp(torch.round(b * (torch.full_like(s, 255.0) / safe)), max=255.0)
    q = torch.where(positive, q, torch.zeros_like(q))
    codes = q.reshape(-1)[: x.numel()].reshape(x.shape)
    return codes.to(torch.int8 if signed else torch.uint8), scale


def decode_int8(q: torch.Tensor, scale: torch.Tensor, block: int, signed: bool) -> torch.Tensor:
    """Codes and per-block scales → float32: signed, m̃ = decode_e4m3(|c|)·s with c's sign; unsigned, the root
    z̃ = q·(s/255)."""
    b = _blocks(q, block)
    s = scale[:, None]
    if signed:
        mag = decode_e4m3(b.to(torch.int16).abs()) * s
        x = torch.where(b < 0, -mag, mag)
    else:
        x = b.to(torch.float32) * (s / torch.full_like(s, 255.0))  # one float32 division per block
    return x.reshape(-1)[: q.numel()].reshape(q.shape)


def upgrade_int8_codes(state: State) -> bool:
    """Re-encode a version-1 int8 state (one without ``state_int8_codes``: square map of m, fourth-power map
    of v, square map of u) in version 2, in place, decoding it with
    :func:`adamlab.numpy.quantised.decode_int8_v1`. Returns whether it did; other states are left alone."""
    if precision_of(state) != "int8" or "state_int8_codes" in state:
        return False
    m, v = _legacy_moments(state)
    store_moments(state, m, v, "int8", _second(state))
    return True


def _legacy_moments(state: State) -> tuple[torch.Tensor, torch.Tensor]:
    """The float32 m and v (u) of a version-1 int8 state, by :func:`adamlab.numpy.quantised.decode_int8_v1`."""
    second, block = _second(state), int(state["state_block_size"])

    def legacy(key: str, signed: bool, fourth_root: bool) -> torch.Tensor:
        q, s = state[key].detach().cpu().numpy(), state[key + "_absmax"].detach().cpu().numpy()
        value = Q.decode_int8_v1(q, s, block, signed, fourth_root=fourth_root)
        return torch.from_numpy(value).to(state[key].device)

    return legacy("exp_avg", True, False), legacy(second, False, second == "exp_avg_sq")


# ---------------------------------------------------------------------- bf16 with stochastic rounding


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """x·c mod 2³² for int64 tensors holding uint32 values, without int64 overflow (two 16-bit halves of c)."""
    low = x * (c & 0xFFFF)
    high = ((x * (c >> 16)) & 0xFFFF) << 16
    return (low + high) & _MASK32


def _mix(x: torch.Tensor) -> torch.Tensor:
    """:func:`adamlab.numpy.quantised.mix32` over an int64 tensor of uint32 values."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def random_bits(n: int, seed: int, step: int, which: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The 16-bit random numbers of elements 0…n−1 (int64 in [0, 2¹⁶)), as
    :func:`adamlab.numpy.quantised.random_bits` defines them."""
    key = Q.mix32((int(seed) & _MASK32) ^ Q.mix32((2 * int(step) + int(which)) & _MASK32))
    index = torch.arange(n, dtype=torch.int64, device=device) & _MASK32
    return _mix(index ^ key) >> 16


def encode_bf16(x: torch.Tensor, seed: int, step: int, which: int) -> torch.Tensor:
    """float32 x → torch.bfloat16 by stochastic rounding: (bits(x) + r) >> 16, NaN → 0x7FC0."""
    bits = x.contiguous().view(torch.int32).to(torch.int64) & _MASK32
    out = (bits + random_bits(x.numel(), seed, step, which, x.device).reshape(x.shape)) >> 16
    out = torch.where(torch.isnan(x), torch.full_like(out, 0x7FC0), out)
    out = torch.where(out >= 0x8000, out - 0x10000, out)
    return out.to(torch.int16).view(torch.bfloat16)


# ---------------------------------------------------------------------- moments in and out


def moments(state: State) -> tuple[torch.Tensor, torch.Tensor]:
    """The float32 m and v (AdaMax: u) a quantised state stores (dequantised)."""
    second = _second(state)
    if precision_of(state) == "bf16":
        return state["exp_avg"].to(torch.float32), state[second].to(torch.float32)
    if "state_int8_codes" not in state:  # version 1 (an older checkpoint): its own decoder
        return _legacy_moments(state)
    m, z = _roots(state)
    return m, second_moment_of_root(z, adamax=second == "exp_inf")


def _roots(state: State) -> tuple[torch.Tensor, torch.Tensor]:
    """The float32 m̃ and root z̃ a version-2 int8 state stores."""
    second, block = _second(state), int(state["state_block_size"])
    if state.get("state_int8_codes") != Q.INT8_CODES:
        raise ValueError(
            f"state_int8_codes must be {Q.INT8_CODES}, got {state.get('state_int8_codes')!r} (upgrade_int8_codes "
            "converts a version-1 state)"
        )
    m = decode_int8(state["exp_avg"], state["exp_avg_absmax"], block, True)
    return m, decode_int8(state[second], state[second + "_absmax"], block, False)


def _store_roots(state: State, m: torch.Tensor, z: torch.Tensor, second: str) -> None:
    block = int(state["state_block_size"])
    state["exp_avg"], state["exp_avg_absmax"] = encode_int8(m, block, True)
    state[second], state[second + "_absmax"] = encode_int8(z, block, False)
    state["state_int8_codes"] = Q.INT8_CODES


def store_moments(state: State, m: torch.Tensor, v: torch.Tensor, precision: str, second: str) -> None:
    """Encode float32 m and v (u) into ``state`` in ``precision`` (bf16 rounds with the seed and the state's
    step, as a step would; int8 with ``state["state_block_size"]``); drops the other format's keys."""
    for key in ("exp_avg", second, "exp_avg_absmax", second + "_absmax", "state_int8_codes"):
        state.pop(key, None)
    if precision == "bf16":
        seed, t = int(state["state_seed"]), int(float(state["step"]))
        state["exp_avg"] = encode_bf16(m.to(torch.float32), seed, t, 0)
        state[second] = encode_bf16(v.to(torch.float32), seed, t, 1)
    else:
        z = root_of_second_moment(v.to(torch.float32), adamax=second == "exp_inf")
        _store_roots(state, m.to(torch.float32), z, second)


def dequantised(state: State) -> State:
    """A copy of a parameter's state with float32 m and v (u) and without the quantisation's keys: the state
    torch.optim.Adam (Adamax) keeps. An fp32 state is returned as it is."""
    if not is_quantised(state):
        return state
    second = _second(state)
    m, v = moments(state)
    out = {k: v for k, v in state.items() if k not in QUANTISATION_KEYS and not k.endswith("_absmax")}
    out["exp_avg"], out[second] = m, v
    return out


def dequantised_state_dict(state_dict: dict[str, Any]) -> dict[str, Any]:
    """An adamlab optimizer's ``state_dict()`` with every quantised state (bf16/int8) turned into float32 m and
    v (u), and ``state_precision`` set to "fp32" in its groups: what ``torch.optim.Adam`` (``Adamax``) and an
    fp32 adamlab optimizer load. (torch's own ``load_state_dict`` would cast int8 codes to float32 as if they
    were values.) The argument is not changed.

    >>> sd = adamlab.optim.dequantised_state_dict(opt.state_dict())   # doctest: +SKIP
    >>> torch.optim.Adam(model.parameters()).load_state_dict(sd)       # doctest: +SKIP
    """
    groups = []
    for group in state_dict["param_groups"]:
        group = dict(group)
        if "state_precision" in group:
            group["state_precision"] = "fp32"
        groups.append(group)
    state = {key: dequantised(s) if isinstance(s, dict) else s for key, s in state_dict["state"].items()}
    return {**state_dict, "state": state, "param_groups": groups}


# ---------------------------------------------------------------------- the reference step


def _scalar(value: np.floating) -> torch.Tensor:
    return torch.tensor(float(value), dtype=torch.float32)


def step(p: torch.Tensor, grad: torch.Tensor, state: State, hp: Any) -> int:
    """One step of Adam (or AdaMax, by ``hp.algorithm``) with quantised state for one float32 tensor, in
    place: the contract's float32 operations in its order (see adamlab.numpy.quantised). Returns the number
    of non-finite gradient entries (their coordinates keep θ and their dequantised old m̃, ṽ; int8: m̃, z̃). An
    int8 state of version 1 is first re-encoded (:func:`upgrade_int8_codes`)."""
    precision = precision_of(state)
    second = _second(state)
    adamax = hp.algorithm == "adamax"
    state["step"] += 1
    t = int(float(state["step"]))
    k = {name: _scalar(value).to(p.device) for name, value in Q.step_scalars(hp, t).items()}
    upgrade_int8_codes(state)
    if precision == "int8":
        m_old, z_old = _roots(state)
        v_old = second_moment_of_root(z_old, adamax)
    else:
        m_old, v_old = moments(state)
    theta = p.detach()
    g = grad.detach() * k["sign"]
    if float(k["wd"]) != 0:
        g = g + theta * k["wd"]
    base = theta * k["decay"] if float(k["decay"]) != 1 else theta
    m = (k["b1"] * m_old) + (k["c1"] * g)
    if adamax:
        v = torch.maximum(k["b2"] * v_old, g.abs())
        if precision == "int8":
            v = torch.clamp(v, max=float(Q.FLT_MAX))  # u = min(u, FLT_MAX), as the oracle (a NaN stays NaN)
        den = (v * k["dmul"]) + k["eps"]
        z = _sqrt(v)
    else:
        v = (k["b2"] * v_old) + ((k["c2"] * g) * g)
        if precision == "int8":
            v = torch.clamp(v, max=float(Q.FLT_MAX))  # v = min(v, FLT_MAX), as the oracle (a NaN stays NaN)
        w = _sqrt(v)
        den = (w * k["dmul"]) + k["eps"]
        z = _sqrt(w)
    positive = den > 0
    q = (k["nstep"] * m) / torch.where(positive, den, torch.ones_like(den))
    q = torch.where(positive, q, torch.zeros_like(q))  # ε = 0 and ṽ = 0: the step is 0, as in the fp32 kernel
    ok = torch.isfinite(grad)
    p.copy_(torch.where(ok, base + q, theta))
    if precision == "int8":  # a non-finite gradient's coordinate keeps m̃ and z̃ itself (not a root of ṽ)
        _store_roots(state, torch.where(ok, m, m_old), torch.where(ok, z, z_old), second)
    else:
        store_moments(state, torch.where(ok, m, m_old), torch.where(ok, v, v_old), precision, second)
    return int((~ok).sum())


__all__ = [
    "QUANTISATION_KEYS",
    "decode_e4m3",
    "decode_int8",
    "dequantised",
    "dequantised_state_dict",
    "encode_bf16",
    "encode_e4m3",
    "encode_int8",
    "init_state",
    "is_quantised",
    "moments",
    "precision_of",
    "random_bits",
    "root_of_second_moment",
    "second_moment_of_root",
    "step",
    "store_moments",
    "takes_quantised_state",
    "upgrade_int8_codes",
]
