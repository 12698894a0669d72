"""Figure 3's CNN, its whitening and the ε-vs-√v̂ probe, against independent oracles: hand-counted parameters
and map sizes, numpy/scipy covariances, hand-built optimiser states and torch.optim's own state."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F

import adamlab
from adamlab.lab.convnet import (
    EVAL_SLICE,
    FC_DROPOUT,
    INPUT_DROPOUT,
    ConvNet,
    epsilon_dominance,
    fit_whitening,
    he_init,
    pooled_side,
)


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("channels", "side", "expected"),
    [
        # conv 5×5: c_in·c_out·25 + c_out; FC: 128·4·4 = 2048 inputs → 1000; softmax layer 1000 → 10.
        (1, 28, (1 * 64 * 25 + 64) + (64 * 64 * 25 + 64) + (64 * 128 * 25 + 128) + (2048 * 1000 + 1000) + 10010),
        (3, 32, (3 * 64 * 25 + 64) + (64 * 64 * 25 + 64) + (64 * 128 * 25 + 128) + (2048 * 1000 + 1000) + 10010),
    ],
)
def test_parameter_count_by_hand(channels, side, expected):
    model = ConvNet(channels, side, 10)
    assert _count(model) == expected
    assert expected == (2_368_066 if channels == 1 else 2_371_266)
    assert model.fc.in_features == 2048  # the same on Fashion-MNIST and CIFAR-10: no width changed


def test_map_sizes_by_hand():
    """28 → 14 → 7 → 4 (Fashion-MNIST) and 32 → 16 → 8 → 4 (CIFAR-10), read off the forward pass."""
    assert [pooled_side(s) for s in (28, 14, 7, 32, 16, 8)] == [14, 7, 4, 16, 8, 4]
    for channels, side, sides in ((1, 28, [14, 7, 4]), (3, 32, [16, 8, 4])):
        model = ConvNet(channels, side, 10).eval()
        seen: list[tuple[int, ...]] = []

        def record(module, inputs, output, seen=seen):
            seen.append(tuple(output.shape))

        hooks = [c.register_forward_hook(record) for c in model.convs]
        with torch.no_grad():
            logits = model(torch.randn(2, channels * side * side))
        for h in hooks:
            h.remove()
        # each convolution keeps its input's side ('same' padding); the pooling after it halves it
        assert [s[1] for s in seen] == [64, 64, 128]
        assert [s[2] for s in seen] == [side, *sides[:-1]]
        assert logits.shape == (2, 10)


def test_forward_matches_functional_composition():
    """The module equals the layer recipe written out with torch.nn.functional (flat and NCHW inputs, NCHW
    and channels_last layouts)."""
    torch.manual_seed(1)
    model = ConvNet(1, 28, 10).eval()
    x = torch.randn(5, 784)
    h = x.view(5, 1, 28, 28)
    for conv in model.convs:
        h = F.max_pool2d(F.relu(F.conv2d(h, conv.weight, conv.bias, padding=2)), 3, 2, padding=1)
    expected = F.linear(F.relu(F.linear(h.reshape(5, -1), model.fc.weight, model.fc.bias)), model.out.weight)
    expected = expected + model.out.bias
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(model(x.view(5, 1, 28, 28)), expected, rtol=1e-4, atol=1e-5)
        fast = ConvNet(1, 28, 10, channels_last=True).eval()
        fast.load_state_dict(model.state_dict())
        torch.testing.assert_close(fast(x), expected, rtol=1e-4, atol=1e-5)


def test_evaluation_in_slices_equals_one_pass():
    model = ConvNet(1, 8, 3, widths=(2, 2, 2), fc_units=4).eval()
    x = torch.randn(EVAL_SLICE + 7, 64)
    with torch.no_grad():
        whole = model(x)
    assert whole.shape == (EVAL_SLICE + 7, 3)
    with torch.no_grad():
        torch.testing.assert_close(whole[-7:], model(x[-7:]))


def test_dropout_rates_and_train_eval_behaviour():
    """Input dropout zeroes ≈ 20 % of the pixels and scales the rest by 1/0.8; FC dropout zeroes ≈ 50 % of the
    1000 units and doubles the rest; evaluation has no dropout; the same generator state gives the same masks."""
    assert (INPUT_DROPOUT, FC_DROPOUT) == (0.2, 0.5)
    model = ConvNet(1, 28, 10, input_dropout=INPUT_DROPOUT, fc_dropout=FC_DROPOUT)
    with torch.no_grad():
        model.fc.bias.fill_(10.0)  # every FC unit positive after its ReLU, so the zeros are dropout's
    x = torch.rand(64, 784) + 0.5  # no zero pixels
    seen: dict[str, torch.Tensor] = {}
    h1 = model.convs[0].register_forward_pre_hook(lambda m, a: seen.__setitem__("input", a[0].detach().clone()))
    h2 = model.out.register_forward_pre_hook(lambda m, a: seen.__setitem__("fc", a[0].detach().clone()))
    model.eval()
    with torch.no_grad():
        clean = model(x)
    fc_clean = seen["fc"]
    model.train()
    with torch.no_grad():
        noisy = model(x, torch.Generator().manual_seed(5))
        again = model(x, torch.Generator().manual_seed(5))
    h1.remove()
    h2.remove()
    inp = seen["input"].reshape(64, 784)
    kept = inp != 0
    assert abs((~kept).float().mean().item() - 0.2) < 0.01
    torch.testing.assert_close(inp[kept], (x / 0.8)[kept])
    fc = seen["fc"]
    assert abs((fc == 0).float().mean().item() - 0.5) < 0.02
    assert torch.equal(noisy, again)
    assert not torch.allclose(noisy, clean)
    # with dropout probabilities 0 training and evaluation agree
    plain = ConvNet(1, 28, 10).train()
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(plain(x), clean)
    assert fc_clean.min() > 0


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="input_dropout"):
        ConvNet(input_dropout=1.0)
    with pytest.raises(ValueError, match="fc_dropout"):
        ConvNet(fc_dropout=-0.1)
    with pytest.raises(ValueError, match="n_classes"):
        ConvNet(n_classes=1)
    with pytest.raises(ValueError, match="784 features"):
        ConvNet().eval()(torch.zeros(2, 100))
    with pytest.raises(ValueError, match="whitening method must be one of zca, channel"):
        fit_whitening(np.zeros((4, 4)), "pca")


def test_he_init_scale_and_determinism():
    model = ConvNet()
    he_init(model, torch.Generator().manual_seed(0))
    assert abs(model.fc.weight.std().item() - math.sqrt(2 / 2048)) < 0.01 * math.sqrt(2 / 2048)
    assert abs(model.convs[1].weight.std().item() - math.sqrt(2 / (64 * 25))) < 0.02 * math.sqrt(2 / 1600)
    assert abs(model.out.weight.std().item() - 0.01) < 0.001  # the softmax layer: small, logits near 0
    assert all(float(b.detach().abs().max()) == 0 for n, b in model.named_parameters() if n.endswith("bias"))
    other = ConvNet()
    other.initialize(torch.Generator().manual_seed(0), 0.01)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), other.parameters(), strict=True))


# -- whitening --------------------------------------------------------------------------------------------------


def _correlated_images(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) + 3 * np.eye(d)
    return (rng.normal(size=(n, d)) @ mix + rng.uniform(0, 1, size=d)).astype(np.float32)


def test_zca_gives_identity_covariance():
    """ε = 0: the whitened training data has zero mean and identity covariance (numpy's covariance)."""
    x = _correlated_images(4000, 16)
    white = fit_whitening(x, "zca", epsilon=0.0)
    z = white.apply(x).astype(np.float64)
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(np.cov(z, rowvar=False, bias=True), np.eye(16), atol=1e-4)
    # ZCA's matrix is symmetric (it rotates back after scaling), unlike PCA whitening
    assert white.matrix is not None
    np.testing.assert_allclose(white.matrix, white.matrix.T, atol=1e-8)


def test_zca_with_epsilon_matches_scipy_eigendecomposition():
    """ε > 0: covariance of the whitened data = U·diag(λ/(λ + ε))·Uᵀ from scipy's eigendecomposition of C."""
    x = _correlated_images(3000, 9, seed=3)
    eps = 0.5
    z = fit_whitening(x, "zca", epsilon=eps).apply(x).astype(np.float64)
    c = np.cov(x.astype(np.float64), rowvar=False, bias=True)
    lam, u = scipy.linalg.eigh(c)
    expected = (u * (lam / (lam + eps))) @ u.T
    np.testing.assert_allclose(np.cov(z, rowvar=False, bias=True), expected, atol=1e-4)
    # the test split is whitened with the training split's statistics, not its own
    test = _correlated_images(500, 9, seed=4)
    white = fit_whitening(x, "zca", epsilon=eps)
    assert white.matrix is not None
    np.testing.assert_allclose(
        white.apply(test), (test - x.astype(np.float64).mean(axis=0)) @ white.matrix, rtol=1e-4, atol=1e-4
    )


def test_per_channel_standardisation():
    rng = np.random.default_rng(2)
    x = (rng.normal(size=(200, 3, 4, 4)) * np.array([1.0, 5.0, 0.1])[None, :, None, None] + 7).astype(np.float32)
    white = fit_whitening(x.reshape(200, -1), "channel", channels=3)
    z = white.apply(x.reshape(200, -1), channels=3).reshape(200, 3, 16).astype(np.float64)
    np.testing.assert_allclose(z.mean(axis=(0, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=(0, 2)), 1.0, atol=1e-5)
    np.testing.assert_allclose(white.std, x.reshape(200, 3, 16).std(axis=(0, 2)), rtol=1e-5)


# -- the ε-vs-√v̂ probe ---------------------------------------------------------------------------------------


def _state(entries: dict[int, dict], **group) -> dict:
    return {"state": entries, "param_groups": [{"params": sorted(entries), **group}]}


def test_probe_adagrad_hand_built():
    # √G = [0, 1e-11, 2, 1e-9]; ε = 1e-10 exceeds the first two
    sd = _state(
        {0: {"sum": torch.tensor([0.0, 1e-22, 4.0, 1e-18], dtype=torch.float64), "step": torch.tensor(3.0)}}, eps=1e-10
    )
    out = epsilon_dominance(sd)
    assert out is not None
    assert out["fraction"] == 0.5 and out["count"] == 4


def test_probe_adam_bias_correction_hand_built():
    """v = 1e-18 at t = 1, β2 = 0.999: √v = 1e-9 < ε = 1e-8, but v̂ = v/(1 − 0.999) = 1e-15, √v̂ ≈ 3.2e-8 > ε."""
    v = torch.tensor([1e-18, 1e-18, 1e-30, 1.0], dtype=torch.float64)
    entry = {"step": torch.tensor(1.0), "exp_avg": torch.zeros(4), "exp_avg_sq": v}
    corrected = epsilon_dominance(_state({0: entry}, eps=1e-8, betas=(0.9, 0.999)))
    raw = epsilon_dominance(_state({0: entry}, eps=1e-8, betas=(0.9, 0.999), bias_correction=False))
    assert corrected is not None and raw is not None
    assert corrected["fraction"] == 0.25  # only v = 1e-30
    assert raw["fraction"] == 0.75
    # the running maximum under AMSGrad
    ams = {**entry, "max_exp_avg_sq": torch.ones(4, dtype=torch.float64)}
    out = epsilon_dominance(_state({0: ams}, eps=1e-8, betas=(0.9, 0.999), amsgrad=True))
    assert out is not None and out["fraction"] == 0.0


def test_probe_on_real_optimizers():
    """From real state_dicts: coordinates whose gradient was always 0 keep G = 0 / v = 0, so exactly they are
    dominated by ε; the counts agree with a direct reading of torch.optim's state; SGD has no second moment."""
    for make in (
        lambda p: torch.optim.Adagrad(p, lr=0.1),
        lambda p: torch.optim.Adam(p, lr=0.1),
        lambda p: adamlab.Adam(p, lr=0.1),
    ):
        a = torch.nn.Parameter(torch.ones(6))
        b = torch.nn.Parameter(torch.ones(2, 2))
        opt = make([a, b])
        mask = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0])
        for _ in range(3):
            opt.zero_grad()
            ((a * mask).pow(2).sum() + b.sum()).backward()
            opt.step()
        out = epsilon_dominance(opt.state_dict())
        assert out is not None
        assert out["count"] == 10
        assert out["fraction"] == pytest.approx(3 / 10)
    sgd = torch.optim.SGD([torch.nn.Parameter(torch.ones(3))], lr=0.1, momentum=0.9)
    assert epsilon_dominance(sgd.state_dict()) is None
    # before the first step: AdaGrad's G is its initial value 0 (nothing measured yet), Adam has no state
    assert epsilon_dominance(torch.optim.Adagrad([torch.nn.Parameter(torch.ones(3))]).state_dict()) is None
    assert epsilon_dominance(adamlab.Adam([torch.nn.Parameter(torch.ones(3))]).state_dict()) is None
    with pytest.raises(ValueError, match="state_dict"):
        epsilon_dominance({"state": {}})
