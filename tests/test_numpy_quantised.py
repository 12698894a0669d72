"""The NumPy oracle of quantised optimizer state (adamlab.numpy.quantised), against independent answers:
hand-computed codes, the maps' derived error bounds, the statistics of stochastic rounding, a separate
uint32 implementation of the mixer, and the float64 Adam of adamlab.numpy."""

from __future__ import annotations

import ctypes
import math
import struct

import numpy as np
import pytest

from adamlab.hyperparameters import AdaMaxHyperparameters, AdamHyperparameters
from adamlab.numpy import Adam, AdaMax
from adamlab.numpy import quantised as Q


def _mix_c(x: int) -> int:
    """The mixer in ctypes' wrapping uint32 arithmetic (an implementation independent of the module's)."""
    y = ctypes.c_uint32(x)
    y.value ^= y.value >> 16
    y = ctypes.c_uint32(y.value * 0x7FEB352D)
    y.value ^= y.value >> 15
    y = ctypes.c_uint32(y.value * 0x846CA68B)
    y.value ^= y.value >> 16
    return y.value


def test_mix32_hand_and_independent() -> None:
    assert Q.mix32(0) == 0  # every step of the mixer keeps 0
    # mix32(1) by hand: 1 → 1·0x7feb352d = 0x7feb352d → ^ (>>15 = 0xffd6) = 0x7febcafb → ·0x846ca68b mod 2^32
    y = (0x7FEBCAFB * 0x846CA68B) % 2**32
    assert Q.mix32(1) == y ^ (y >> 16)
    xs = [1, 2, 3, 0xDEADBEEF, 2**32 - 1, 12345678]
    assert [Q.mix32(x) for x in xs] == [_mix_c(x) for x in xs]
    assert Q.mix32(np.array(xs, dtype=np.uint32)).tolist() == [_mix_c(x) for x in xs]


def test_random_bits_definition() -> None:
    seed, step, which = 77, 5, 1
    key = _mix_c(seed ^ _mix_c(2 * step + which))
    expected = [_mix_c(key ^ i) >> 16 for i in range(10)]
    assert Q.random_bits(10, seed, step, which).tolist() == expected
    assert Q.tensor_seed(3, 4) == _mix_c(3 ^ _mix_c(4))


def test_int8_hand_computed_codes() -> None:
    x = np.zeros(64, np.float32)
    x[:4] = [0.5, -1.0, 0.25, 0.0]
    q, s = Q.quantise_int8(x, 64, signed=True)
    # s = 1; q = rint(127·√r)·sign: √0.5·127 = 89.80 → 90; −1 → −127; √0.25·127 = 63.5 → 64 (half to even)
    assert s.tolist() == [1.0]
    assert q[:4].tolist() == [90, -127, 64, 0] and q.dtype == np.int8
    back = Q.dequantise_int8(q, s, 64, signed=True)
    assert back[:4] == pytest.approx([(90 / 127) ** 2, -1.0, (64 / 127) ** 2, 0.0], rel=1e-6)
    qv, sv = Q.quantise_int8(np.abs(x) * 4, 64, signed=False, fourth_root=True)
    # s = 4, r = 0.5, 1, 0.25, 0: 255·r^¼ = 214.4 → 214; 255; 255·√0.5 = 180.3 → 180; 0
    assert sv.tolist() == [4.0] and qv[:4].tolist() == [214, 255, 180, 0] and qv.dtype == np.uint8
    qu, _ = Q.quantise_int8(np.abs(x), 64, signed=False)
    # the square map with 255: 255·√0.5 = 180.3 → 180; 255; 255·0.5 = 127.5 → 128 (half to even); 0
    assert qu[:4].tolist() == [180, 255, 128, 0]


def test_int8_blocks_and_zero_blocks() -> None:
    x = np.zeros(200, np.float32)
    x[70] = -3.0  # second block of 64
    x[199] = 2.0  # last, shorter block (8 elements)
    q, s = Q.quantise_int8(x, 64, signed=True)
    assert s.tolist() == [0.0, 3.0, 0.0, 2.0]
    assert q[70] == -127 and q[199] == 127 and int(np.abs(q).sum()) == 254
    assert np.array_equal(Q.dequantise_int8(q, s, 64, signed=True), x)
    with pytest.raises(ValueError, match="multiple of 64"):
        Q.quantise_int8(x, 100, signed=True)


def test_square_map_error_bound() -> None:
    """|127√r − q| ≤ ½ gives |m̃ − m| = s·|q/127 − √r|·(q/127 + √r) ≤ s·(√r/127 + 1/254²) (+ float rounding)."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(256 * 40) * np.exp(rng.uniform(-8, 3, 256 * 40))).astype(np.float32)
    q, s = Q.quantise_int8(x, 256, signed=True)
    back = Q.dequantise_int8(q, s, 256, signed=True).astype(np.float64)
    scale = np.repeat(s.astype(np.float64), 256)
    r = np.abs(x) / scale
    bound = scale * (np.sqrt(r) / 127 + 1 / 254**2) * (1 + 1e-5) + 1e-7 * np.abs(x)
    assert np.all(np.abs(back - x) <= bound)
    assert np.max(np.abs(back - x) / scale) <= 1 / 127 + 1 / 254**2 + 1e-6  # ≤ 0.79 % of the block's absmax
    assert np.all(np.sign(back[x != 0]) * np.sign(x[x != 0]) >= 0)


def test_fourth_power_map_error_bound() -> None:
    """v = s·w⁴, |255w − q| ≤ ½: |ṽ − v| = s·|a − w|·(a + w)·(a² + w²) ≤ s·(1/510)·(2w + 1/510)·((w + 1/510)² + w²)."""
    rng = np.random.default_rng(1)
    v = np.exp(rng.uniform(-30, 0, 256 * 40)).astype(np.float32)
    q, s = Q.quantise_int8(v, 256, signed=False, fourth_root=True)
    back = Q.dequantise_int8(q, s, 256, signed=False, fourth_root=True).astype(np.float64)
    scale = np.repeat(s.astype(np.float64), 256)
    w = (v / scale) ** 0.25
    e = 1 / 510
    bound = scale * e * (2 * w + e) * ((w + e) ** 2 + w**2) * (1 + 1e-4) + 1e-6 * v
    assert np.all(np.abs(back - v) <= bound)
    # √ṽ is what the step uses: it is the square map of √v, so |√ṽ − √v| ≤ √s·(w/255 + 1/510²)
    root_err = np.abs(np.sqrt(back) - np.sqrt(v))
    assert np.all(root_err <= np.sqrt(scale) * (w / 255 + e**2) * (1 + 1e-4) + 1e-6 * np.sqrt(v))


def _bf16_down(x: float) -> float:
    """x truncated to bf16 (the upper 16 bits of its float32 pattern), via struct."""
    bits = struct.unpack("<I", struct.pack("<f", x))[0] & 0xFFFF0000
    return struct.unpack("<f", struct.pack("<I", bits))[0]


def _bf16_up(x: float) -> float:
    bits = (struct.unpack("<I", struct.pack("<f", x))[0] & 0xFFFF0000) + 0x10000
    return struct.unpack("<f", struct.pack("<I", bits))[0]


@pytest.mark.parametrize("x", [1.0 + 1 / 3, -0.0123456, 3.0e-20, 65432.1])
def test_bf16_stochastic_rounding_unbiased(x: float) -> None:
    xf = float(np.float32(x))
    lo, hi = _bf16_down(xf), _bf16_up(xf)
    n = 40_000
    values = np.full(n, xf, np.float32)
    got = Q.bf16_to_float32(Q.bf16_stochastic_round(values, seed=9, step=3, which=0)).astype(np.float64)
    assert set(np.unique(got).tolist()) <= {lo, hi}  # only the two neighbouring bf16 values occur
    p = (xf - lo) / (hi - lo)  # the probability of rounding away from zero
    standard_error = abs(hi - lo) * math.sqrt(p * (1 - p) / n)
    assert abs(got.mean() - xf) <= 4 * standard_error + 1e-12 * abs(xf)
    # over seeds as well: element 0 across many seeds
    seeds = [Q.bf16_stochastic_round(np.float32([xf]), seed=s, step=1, which=1)[0] for s in range(3000)]
    mean = Q.bf16_to_float32(np.array(seeds, np.uint16)).astype(np.float64).mean()
    assert abs(mean - xf) <= 4 * abs(hi - lo) * math.sqrt(p * (1 - p) / 3000) + 1e-12 * abs(xf)


def test_bf16_special_values() -> None:
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0], np.float32)
    bits = Q.bf16_stochastic_round(x, seed=1, step=1, which=0)
    assert bits.tolist() == [0x7FC0, 0x7F80, 0xFF80, 0x0000, 0x8000, 0x3F80]
    # a value exactly representable in bf16 never moves
    assert np.array_equal(Q.bf16_to_float32(bits[3:]), x[3:])


def _hp(algorithm: str, **kw: object):
    return (AdaMaxHyperparameters if algorithm == "adamax" else AdamHyperparameters)(**kw)


@pytest.mark.parametrize("precision", Q.QUANTISED)
def test_first_step_is_sign_descent(precision: str) -> None:
    """At t = 1 with zero state, Adam's step is −α·g/(|g| + ε/…) ≈ −α·sign(g) (§2.1), whatever the state format."""
    rng = np.random.default_rng(2)
    theta = rng.standard_normal(5000).astype(np.float32)
    g = rng.standard_normal(5000).astype(np.float32)
    hp = _hp("adam", lr=0.01)
    new, state, bad = Q.adam_step_quantised(theta, g, Q.init_state(theta, precision), hp, precision)
    assert bad == 0 and state["step"] == 1
    np.testing.assert_allclose(new - theta, -0.01 * np.sign(g), rtol=1e-4, atol=1e-6)
    assert np.array_equal(theta, theta.copy())  # pure


@pytest.mark.parametrize("algorithm", ["adam", "adamax"])
@pytest.mark.parametrize("precision", Q.QUANTISED)
def test_trajectory_close_to_float64_oracle(algorithm: str, precision: str) -> None:
    """50 steps on a quadratic: θ within a few per cent of a step of adamlab.numpy's float64 Adam/AdaMax."""
    rng = np.random.default_rng(3)
    n = 4096
    target = rng.standard_normal(n)
    curv = np.exp(rng.uniform(-2, 2, n))
    theta0 = rng.standard_normal(n)
    kw = dict(lr=1e-2, weight_decay=0.01)
    ref = (AdaMax if algorithm == "adamax" else Adam)(**kw)
    t64, s64 = theta0.copy(), ref.init(theta0)
    tq = theta0.astype(np.float32)
    sq = Q.init_state(tq, precision, algorithm=algorithm)
    hp = _hp(algorithm, **kw)
    for _ in range(50):
        t64, s64 = ref.step(t64, curv * (t64 - target), s64)
        tq, sq, bad = Q.adam_step_quantised(tq, (curv * (tq - target)).astype(np.float32), sq, hp, precision)
        assert bad == 0
    err = np.abs(tq - t64)
    # The path is at most 50·α = 0.5 long. Measured (median, max of |θ − θ64|): bf16 Adam 0.0007, 0.005;
    # bf16 AdaMax 0.0016, 0.014; int8 Adam 0.011, 0.19; int8 AdaMax 0.025, 0.20 (int8's m keeps 127 levels of
    # √(|m|/s): a coordinate whose gradient is small against its block's largest moves on a coarser m).
    if precision == "bf16":
        assert np.median(err) < 0.005 * 0.5 and np.max(err) < 0.05 * 0.5
    else:
        assert np.median(err) < 0.1 * 0.5 and np.max(err) < 0.5

    def cost(t: np.ndarray) -> float:
        return float(0.5 * np.sum(curv * (t.astype(np.float64) - target) ** 2))

    assert abs(cost(tq) - cost(t64)) <= 0.1 * cost(t64)  # the objective, within 10 % of float64's


@pytest.mark.parametrize("precision", Q.QUANTISED)
def test_nonfinite_gradient_keeps_coordinate(precision: str) -> None:
    rng = np.random.default_rng(4)
    theta = rng.standard_normal(300).astype(np.float32)
    hp = _hp("adam", lr=0.1)
    _, state, _ = Q.adam_step_quantised(theta, rng.standard_normal(300).astype(np.float32),
                                        Q.init_state(theta, precision), hp, precision)  # fmt: skip
    g = rng.standard_normal(300).astype(np.float32)
    g[[3, 100]] = [np.nan, -np.inf]
    new, after, bad = Q.adam_step_quantised(theta, g, state, hp, precision)
    assert bad == 2 and after["step"] == 2
    assert new[3] == theta[3] and new[100] == theta[100] and np.all(new[[0, 1, 200]] != theta[[0, 1, 200]])
    for key in ("exp_avg", "exp_avg_sq"):
        old = Q._decode(state, key, precision, 256, key == "exp_avg", key != "exp_avg")
        now = Q._decode(after, key, precision, 256, key == "exp_avg", key != "exp_avg")
        assert np.all(np.isfinite(now))
        if precision == "bf16":  # an exact bf16 value re-encodes to itself
            assert now[3] == old[3] and now[100] == old[100]
        else:  # re-quantised with the block's new scale: within the map's error of the old value
            s = after[key + "_absmax"][0]
            assert abs(now[3] - old[3]) <= s * (2 / 127) and abs(now[100] - old[100]) <= s * (2 / 127)


def test_refusals() -> None:
    theta = np.zeros(10, np.float32)
    with pytest.raises(ValueError, match="precision"):
        Q.init_state(theta, "fp8")
    with pytest.raises(ValueError, match="amsgrad"):
        Q.adam_step_quantised(theta, theta, Q.init_state(theta, "int8"), _hp("adam", amsgrad=True), "int8")
