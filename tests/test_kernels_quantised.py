"""The quantised-state kernel (adamlab.kernels.quantized, state_kernels.c) against the NumPy oracle
(adamlab.numpy.quantised), bit for bit: θ, the stored codes or bf16 bits, the int8 scales, the step counters
and the non-finite counts, on every instruction-set build this CPU runs, at 1 and 2 threads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adamlab.hyperparameters import AdaMaxHyperparameters, AdamHyperparameters
from adamlab.kernels import build
from adamlab.kernels import quantized as Q

oracle = pytest.importorskip("adamlab.numpy.quantised")

pytestmark = pytest.mark.skipif(not build.available(), reason=f"no fused kernel: {build.unavailable_reason()}")


def isa_params() -> list:
    runs = build.supported_isas() if build.available() else ["scalar"]
    return [
        pytest.param(isa, marks=() if isa in runs else pytest.mark.skip(reason=f"this CPU cannot run the {isa} build"))
        for isa in build.ISAS
    ]


class KernelState:
    """Torch tensors for the kernel: params, state, scales, steps, seeds of several tensors."""

    def __init__(self, precision: str, sizes: list[int], adamax: bool, block: int, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.precision, self.block, self.adamax = precision, block, adamax
        self.params = [torch.randn(n, generator=gen) for n in sizes]
        first, second = Q.STATE_DTYPES[precision]
        self.m = [torch.zeros(n, dtype=first) for n in sizes]
        self.v = [torch.zeros(n, dtype=second) for n in sizes]
        blocks = [-(-n // block) for n in sizes]
        self.sm = [torch.zeros(b) for b in blocks] if precision == "int8" else None
        self.sv = [torch.zeros(b) for b in blocks] if precision == "int8" else None
        self.steps = [torch.zeros(()) for _ in sizes]
        self.seeds = [oracle.tensor_seed(12345, i) for i in range(len(sizes))]

    def step(self, grads: list[torch.Tensor], hp, threads: int | None = None) -> list[int]:
        return Q.adam_step_quantised(
            self.precision,
            self.params,
            grads,
            self.m,
            self.v,
            self.sm,
            self.sv,
            self.steps,
            self.seeds,
            hp,
            block_size=self.block,
            adamax=self.adamax,
            threads=threads,
        )


def numpy_bits(t: torch.Tensor) -> np.ndarray:
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16)
    return t.numpy()


class OracleState:
    """The same tensors stepped by adamlab.numpy.quantised, one tensor at a time."""

    def __init__(self, ks: KernelState) -> None:
        algorithm = "adamax" if ks.adamax else "adam"
        self.precision = ks.precision
        self.params = [p.numpy().copy() for p in ks.params]
        self.states = [
            oracle.init_state(p, ks.precision, algorithm=algorithm, block_size=ks.block, seed=s)
            for p, s in zip(self.params, ks.seeds)
        ]

    def step(self, grads: list[torch.Tensor], hp) -> list[int]:
        counts = []
        for i, g in enumerate(grads):
            self.params[i], self.states[i], bad = oracle.adam_step_quantised(
                self.params[i], g.numpy(), self.states[i], hp, self.precision
            )
            counts.append(bad)
        return counts


def assert_same(ks: KernelState, os_: OracleState, where: str) -> None:
    second = "exp_inf" if ks.adamax else "exp_avg_sq"
    for i, state in enumerate(os_.states):
        what = f"{where}, tensor {i} ({ks.params[i].numel()} elements)"
        np.testing.assert_array_equal(ks.params[i].numpy().view(np.uint32), os_.params[i].view(np.uint32), what)
        np.testing.assert_array_equal(numpy_bits(ks.m[i]), state["exp_avg"].reshape(-1), f"m: {what}")
        np.testing.assert_array_equal(numpy_bits(ks.v[i]), state[second].reshape(-1), f"v: {what}")
        if ks.precision == "int8":
            assert ks.sm is not None and ks.sv is not None
            np.testing.assert_array_equal(ks.sm[i].numpy(), state["exp_avg_absmax"], f"m's scales: {what}")
            np.testing.assert_array_equal(ks.sv[i].numpy(), state[second + "_absmax"], f"v's scales: {what}")
        assert float(ks.steps[i]) == state["step"], what


def gradients(sizes: list[int], step: int, seed: int, block: int) -> list[torch.Tensor]:
    """Gradients with every case the kernel distinguishes: scales spread over magnitudes, a whole block of
    zeros (s = 0 for m; v too at the first step), and non-finite entries (NaN, ±inf) on later steps."""
    gen = torch.Generator().manual_seed(seed * 1000 + step)
    grads = []
    for i, n in enumerate(sizes):
        g = torch.randn(n, generator=gen) * 10.0 ** (-(i % 4))
        g[: min(n, block)] = 0.0  # the first block: all zero
        if step >= 2 and n > block + 7:
            g[block + 3] = float("nan")
            g[block + 5] = float("inf")
            g[n - 1] = float("-inf")
        grads.append(g)
    return grads


HP_CASES = {
    "adam": AdamHyperparameters(lr=1e-2),
    "maximize": AdamHyperparameters(lr=1e-2, maximize=True),
    "l2": AdamHyperparameters(lr=1e-2, weight_decay=0.1),
    "l2-maximize": AdamHyperparameters(lr=1e-2, weight_decay=0.1, maximize=True),
    "adamw": AdamHyperparameters(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True),
    "no-bias-correction": AdamHyperparameters(lr=1e-2, bias_correction=False, eps=0.0),
    "eps-hat-sqrt-beta1-decay": AdamHyperparameters(lr=1e-2, eps_mode="hat", lr_decay="sqrt", beta1_decay=0.99),
    "adamax": AdaMaxHyperparameters(lr=1e-2),
    "adamax-l2-maximize-eps": AdaMaxHyperparameters(lr=1e-2, eps=1e-8, weight_decay=0.05, maximize=True),
    "adamax-decoupled-maximize": AdaMaxHyperparameters(
        lr=1e-2, eps=1e-8, weight_decay=0.05, decoupled_weight_decay=True, maximize=True
    ),
}

# Sizes: not multiples of B or of any vector width; a tensor that crosses the driver's 65,536-element chunk
# boundary mid-block (it starts at element 1000 of the concatenation); one shorter than a block.
SIZES = [1000, 70_001, 4096 + 37, 50]


@pytest.mark.parametrize("precision", Q.QUANTISED)
@pytest.mark.parametrize("case", list(HP_CASES))
@pytest.mark.parametrize("isa", isa_params())
def test_kernel_equals_oracle(precision: str, case: str, isa: str) -> None:
    hp = HP_CASES[case]
    adamax = hp.algorithm == "adamax"
    ks = KernelState(precision, SIZES, adamax, 256, seed=1)
    os_ = OracleState(ks)
    with build.using_isa(isa):
        for t in range(1, 4):
            grads = gradients(SIZES, t, seed=1, block=256)
            counts = ks.step(grads, hp, threads=1)
            assert counts == os_.step(grads, hp), f"step {t}"
            assert_same(ks, os_, f"{case}, {precision}, {isa}, step {t}")
    assert sum(counts) > 0  # the non-finite entries were there


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the oracle's v overflowing to ∞
@pytest.mark.parametrize("isa", isa_params())
def test_bf16_nan_and_inf_state(isa: str) -> None:
    """bf16: a NaN θ under L2 decay makes m and v NaN (stored as 0x7FC0), a huge gradient overflows v to ∞
    (0x7F80, which stays ∞ after the random bits are added), on lanes spread over a vector and a tail."""
    hp = AdamHyperparameters(lr=1e-2, weight_decay=0.1)
    sizes = [4096 + 45]
    ks = KernelState("bf16", sizes, False, 256, seed=4)
    nan_at, huge_at = [3, 17, 100, 4096 + 40], [5, 31, 4096 + 44]
    ks.params[0][nan_at] = float("nan")
    ks.params[0][200] = float("inf")
    os_ = OracleState(ks)
    with build.using_isa(isa):
        for t in range(1, 3):
            g = gradients(sizes, t, seed=4, block=256)[0]
            g[huge_at] = 1e30
            assert ks.step([g], hp) == os_.step([g], hp)
            assert_same(ks, os_, f"NaN/inf state, {isa}, step {t}")
    m, v = numpy_bits(ks.m[0]), numpy_bits(ks.v[0])
    assert (m[nan_at] == 0x7FC0).all() and (v[nan_at] == 0x7FC0).all()
    assert (v[huge_at] == 0x7F80).all()


@pytest.mark.parametrize("block", [64, 192, 8192])
@pytest.mark.parametrize("isa", isa_params())
def test_block_sizes(block: int, isa: str) -> None:
    """B = 64, a multiple of 64 that is no power of two, and one over the kernel's stack buffers (8192)."""
    hp = AdamHyperparameters(lr=1e-3)
    sizes = [70_000, 10_000 + 1]
    ks = KernelState("int8", sizes, False, block, seed=2)
    os_ = OracleState(ks)
    with build.using_isa(isa):
        for t in range(1, 3):
            grads = gradients(sizes, t, seed=2, block=block)
            assert ks.step(grads, hp, threads=2) == os_.step(grads, hp)
            assert_same(ks, os_, f"B={block}, {isa}, step {t}")


@pytest.mark.parametrize("precision", Q.QUANTISED)
def test_threads_give_the_same_bits(precision: str) -> None:
    """2 threads (the driver cuts 3·10⁵ elements into chunks; blocks at chunk edges go whole to one thread)
    give the 1-thread bits, which are the oracle's."""
    hp = AdamHyperparameters(lr=1e-2, weight_decay=0.01)
    sizes = [1000, 150_001, 150_000]
    one = KernelState(precision, sizes, False, 256, seed=3)
    two = KernelState(precision, sizes, False, 256, seed=3)
    os_ = OracleState(one)
    for t in range(1, 3):
        grads = gradients(sizes, t, seed=3, block=256)
        assert one.step(grads, hp, threads=1) == two.step(grads, hp, threads=2) == os_.step(grads, hp)
    assert_same(one, os_, "1 thread")
    assert_same(two, os_, "2 threads")


def e4m3_value(k: int) -> float:
    """The value of the m code k by its definition (quant_spec2.md): k·2^-17 below 8, else (1 + j/8)·2^(e − 15)
    with k = 8e + j."""
    return k * 2.0**-17 if k < 8 else (1 + (k % 8) / 8) * 2.0 ** (k // 8 - 15)


def tie_gradients(block: int) -> torch.Tensor:
    """Gradients whose codes land within a few ulps of their rounding ties, each block led by G = 1 (the block's
    scale): |g|/G near the midpoints of consecutive m codes (y = |m|/s_m, the E4M3 code, subnormal codes
    included) and near ((q + ½)/255)² (the root's code: z/s_z = √(|g|/G) on the first step, for Adam's
    z = ⁴√(c2·g²) and AdaMax's z = √|g|)."""
    ties = [(e4m3_value(k) + e4m3_value(k + 1)) / 2 for k in range(127)] + [((q + 0.5) / 255) ** 2 for q in range(255)]
    base = torch.tensor(ties, dtype=torch.float32)
    steps = torch.arange(-6, 7, dtype=torch.float32) * 2.0**-23
    values = (base[:, None] * (1 + steps[None, :])).reshape(-1)
    values = values * torch.where(torch.arange(values.numel()) % 2 == 0, 1.0, -1.0)  # both signs of m
    per_block = block - 1
    blocks = -(-values.numel() // per_block)
    g = torch.zeros(blocks, block)
    g[:, 0] = 1.0
    padded = torch.zeros(blocks * per_block)
    padded[: values.numel()] = values
    g[:, 1:] = padded.reshape(blocks, per_block)
    return g.reshape(-1)


@pytest.mark.parametrize("adamax", [False, True])
@pytest.mark.parametrize("isa", isa_params())
def test_codes_at_rounding_ties(adamax: bool, isa: str) -> None:
    """The codes where m and the root land next to a rounding tie (where a rounding that is not half-to-even
    on the exact float32 bits would differ), the subnormal m codes (y < 2^-14) among them: the oracle's bits,
    on the first step (from zero state) and the second."""
    hp = AdaMaxHyperparameters(lr=1e-3) if adamax else AdamHyperparameters(lr=1e-3)
    g = tie_gradients(256)
    ks = KernelState("int8", [g.numel()], adamax, 256, seed=7)
    os_ = OracleState(ks)
    with build.using_isa(isa):
        for t in (1, 2):
            assert ks.step([g], hp, threads=1) == os_.step([g], hp)
            assert_same(ks, os_, f"ties, {isa}, step {t}")
    codes = ks.m[0].abs().unique()
    assert codes.min() == 0 and codes.max() == 120 and codes.numel() > 100  # the whole range was exercised


@pytest.mark.parametrize("adamax", [False, True])
@pytest.mark.parametrize("isa", isa_params())
def test_gradients_over_the_float_range(adamax: bool, isa: str) -> None:
    """Gradients log-uniform over 10^-45 … 10^15 (subnormal g, and v = (1 − β2)·g² from subnormal — Adam's w = √v
    down to 2^-74.5, where the AVX-512 build's root without the divider must still round as sqrtf — to 10^27),
    both signs, over three steps: the oracle's bits."""
    hp = AdaMaxHyperparameters(lr=1e-3, eps=1e-8) if adamax else AdamHyperparameters(lr=1e-3)
    gen = torch.Generator().manual_seed(11)
    n = 8 * 256 + 13
    ks = KernelState("int8", [n], adamax, 256, seed=11)
    os_ = OracleState(ks)
    with build.using_isa(isa):
        for t in range(1, 4):
            exponent = torch.rand(n, generator=gen, dtype=torch.float64) * 60 - 45
            sign = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0).double()
            g = (sign * 10.0**exponent).float()
            assert ks.step([g], hp, threads=1) == os_.step([g], hp)
            assert_same(ks, os_, f"float range, {isa}, step {t}")
    assert (ks.v[0] == 0).any() and (ks.v[0] == 255).any()


def test_adamax_zero_denominator_does_not_move_theta() -> None:
    """AdaMax's default ε = 0 with a coordinate that never had a gradient: u = 0, and the step is 0 (not 0/0);
    its θ stays exactly as it was."""
    hp = AdaMaxHyperparameters(lr=1e-2)
    ks = KernelState("int8", [4096], True, 256, seed=4)
    before = ks.params[0].clone()
    g = torch.zeros(4096)
    g[300:] = 1.0
    ks.step([g], hp)
    assert torch.equal(ks.params[0][:300], before[:300])
    assert torch.isfinite(ks.params[0]).all()


@pytest.mark.parametrize("isa", isa_params())
def test_subnormal_scale(isa: str) -> None:
    """m = (1 − β1)·g of gradients ~1e−38 is subnormal below 2^-128, so the block's r_m = 1/s_m overflows to
    ∞: y = |m|·∞ is +∞ for every non-zero m and NaN (0·∞) for the zeros, and both take the top code 127 (the
    contract's "+inf or NaN y land in the else branch"), with m's sign. v = 0.001·g² underflows to 0: the root's
    block has s_z = 0 and codes 0."""
    hp = AdamHyperparameters(lr=1e-3)
    g = torch.zeros(256)
    g[1::2] = 1e-38
    g[3] = 2e-38
    g[5] = -1e-38
    ks = KernelState("int8", [256], False, 256, seed=8)
    with build.using_isa(isa):
        ks.step([g], hp, threads=1)
    assert ks.sm is not None and ks.sv is not None
    assert 0 < ks.sm[0].item() < 2.0**-128
    assert ks.m[0][:6].tolist() == [127, 127, 127, 127, 127, -127]
    assert ks.sv[0].item() == 0.0 and ks.v[0].eq(0).all()


def test_int8_codes_by_hand() -> None:
    """One Adam step from zero state, computed by hand: m = (1 − β1)·g, v = (1 − β2)·g², θ moves by −α·sign(g)
    (bias-corrected, ε tiny). s_m = 0.1·2, so y = |m|/s_m = |g|/2: 1 → code 120 (2^0: 8·15), 0.25 → 104 (2^-2:
    8·13), 0.36 = 1.44·2^-2 → 108 (1.44 rounds to 1.5 = 1 + 4/8), 3·2^-17 → 3 (a subnormal code), with g's sign.
    The root z = ⁴√(0.001·g²) over its block's max: z/s_z = √(|g|/2), codes 255, 255·√0.25 = 127.5 → 128 is a
    tie (avoided), so 255·√0.36 = 153, 255·√0.0625 = 63.75 → 64 (g = 0.125), 255·√(3·2^-17) = 1.22 → 1."""
    hp = AdamHyperparameters(lr=0.5, eps=1e-30)
    g = torch.zeros(256)
    g[0], g[1], g[2], g[3] = 2.0, -0.72, 0.125, 6 * 2.0**-17
    ks = KernelState("int8", [256], False, 256, seed=5)
    ks.params[0].zero_()
    ks.step([g], hp)
    assert ks.sm is not None and ks.sv is not None
    assert ks.sm[0].item() == pytest.approx(0.1 * 2.0, rel=1e-6)
    assert ks.sv[0].item() == pytest.approx((0.001 * 4.0) ** 0.25, rel=1e-6)
    assert ks.m[0][:4].tolist() == [120, -108, 88, 3]  # 0.125/2 = 2^-4: 8·11
    assert ks.v[0][:4].tolist() == [255, 153, 64, 1]
    assert ks.params[0][:4].tolist() == pytest.approx([-0.5, 0.5, -0.5, -0.5], rel=1e-5)


def test_bf16_stochastic_rounding_is_unbiased() -> None:
    """m = (1 − β1)·g for one step from zero: stored in bf16 with stochastic rounding, the mean of the stored
    values over many coordinates equals the float32 mean (round to nearest would be off by a fixed bias)."""
    hp = AdamHyperparameters(lr=1e-3)
    x = 1.0 + 2.0**-9  # a quarter of the way between two bf16 neighbours of 1.0 (gap 2⁻⁷)
    g = torch.full((1 << 16,), x / 0.1)
    ks = KernelState("bf16", [g.numel()], False, 256, seed=6)
    ks.step([g], hp)
    stored = ks.m[0].float()
    m = float(np.float32(0.1) * np.float32(x / 0.1))
    assert set(stored.unique().tolist()) == {1.0, 1.0 + 2.0**-7}
    assert stored.double().mean().item() == pytest.approx(m, abs=2e-4)


# ---------------------------------------------------------------------- argument checks


def _call(**overrides):
    n = 4096
    args = dict(
        precision="int8",
        params=[torch.zeros(n)],
        grads=[torch.zeros(n)],
        exp_avgs=[torch.zeros(n, dtype=torch.int8)],
        exp_avg_sqs=[torch.zeros(n, dtype=torch.uint8)],
        scales_m=[torch.zeros(16)],
        scales_v=[torch.zeros(16)],
        steps=[torch.zeros(())],
        seeds=[0],
        hp=AdamHyperparameters(),
    )
    kwargs = {k: overrides.pop(k) for k in ("block_size", "adamax", "threads") if k in overrides}
    args.update(overrides)
    return Q.adam_step_quantised(*args.values(), **kwargs)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"precision": "int4"}, "precision"),
        ({"params": [torch.zeros(4096, dtype=torch.float64)]}, "params"),
        ({"grads": [torch.zeros(4095)]}, "grads"),
        ({"exp_avgs": [torch.zeros(4096, dtype=torch.uint8)]}, "exp_avgs"),
        ({"exp_avg_sqs": [torch.zeros(4096, dtype=torch.bfloat16)]}, "exp_avg_sqs"),
        ({"scales_m": [torch.zeros(15)]}, "scales_m"),
        ({"scales_v": None}, "scales_v"),
        ({"steps": [torch.zeros((), dtype=torch.float64)]}, "steps"),
        ({"block_size": 100}, "block_size"),
        ({"block_size": 0}, "block_size"),
        ({"threads": 0}, "threads"),
        ({"adamax": True}, "adamax"),
        ({"hp": AdamHyperparameters(amsgrad=True)}, "amsgrad"),
        ({"hp": AdamHyperparameters(averaging=True)}, "averaging"),
        ({"hp": "adam"}, "hp"),
        (
            {
                "precision": "bf16",
                "exp_avgs": [torch.zeros(4096, dtype=torch.bfloat16)],
                "exp_avg_sqs": [torch.zeros(4096, dtype=torch.bfloat16)],
                "seeds": None,
            },
            "seeds",
        ),
    ],
)
def test_bad_arguments_are_named(overrides: dict, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        _call(**overrides)


def test_nothing_to_do() -> None:
    assert _call(params=[], grads=[], exp_avgs=[], exp_avg_sqs=[], scales_m=[], scales_v=[], steps=[]) == []


OVERFLOW_CASES = [
    (False, 1e25),
    (False, -1e25),
    (False, 1e38),
    (True, 1e38),
    (True, -3.4028234663852886e38),  # AdaMax: u = |g| = FLT_MAX, and the decoded ũ = z̃² can round to ∞
]


@pytest.mark.parametrize(("adamax", "big"), OVERFLOW_CASES)
@pytest.mark.parametrize("isa", isa_params())
def test_second_moment_overflow_stays_in_its_coordinate(adamax: bool, big: float, isa: str) -> None:
    """A finite gradient whose (1 − β2)·g² overflows float32 (or, AdaMax, whose decoded ũ would) in one
    coordinate: int8 clamps v (u) to FLT_MAX, so w, z and the block's scale s_z stay finite — no θ and no code of
    the block becomes NaN (before the clamp the whole block decoded 0·∞ = NaN on the next step) — and every
    build gives the oracle's bits over three steps (the big gradient at steps 1 and 3)."""
    hp = AdaMaxHyperparameters(lr=1e-3, eps=1e-8) if adamax else AdamHyperparameters(lr=1e-3)
    n, j = 3 * 256 + 5, 256 + 17  # the big coordinate in the second block
    ks = KernelState("int8", [n], adamax, 256, seed=21)
    os_ = OracleState(ks)
    gen = torch.Generator().manual_seed(21)
    with build.using_isa(isa):
        for t in range(1, 4):
            g = torch.randn(n, generator=gen)
            if t != 2:
                g[j] = big
            assert ks.step([g], hp, threads=1) == os_.step([g], hp) == [0]
            assert_same(ks, os_, f"overflow {big:g}, {isa}, step {t}")
            assert torch.isfinite(ks.params[0]).all(), f"step {t}"
            assert ks.sv is not None and torch.isfinite(ks.sv[0]).all(), f"step {t}"
    assert ks.sv is not None
    # the block's scale is the big coordinate's root: Adam √√FLT_MAX (v clamped), AdaMax √|g| (u = |g|)
    top = abs(big) ** 0.5 if adamax else float(np.finfo(np.float32).max) ** 0.25
    assert ks.sv[0][1].item() == pytest.approx(top, rel=1e-3)
    assert ks.v[0][j].item() == 255
