"""Figure 3's convolutional network (§6.3), its whitened inputs, and the ε-vs-√v̂ probe.

**The network "c64-c64-c128-1000"** (the paper's §6.3): three stages of 5×5 convolution with 64, 64 and 128
feature maps, each followed by a ReLU and 3×3 max-pooling with stride 2, then a fully connected layer of 1000
ReLU units and a softmax over the 10 classes. Dropout (inverted) on the input and on the 1000 fully connected
units when switched on; the paper gives no rates, we use Hinton et al. (2012)'s 20 % on the input and 50 % on
the hidden units (:data:`INPUT_DROPOUT`, :data:`FC_DROPOUT`).

**Adapting it to Fashion-MNIST** (one 28×28 grey channel instead of CIFAR-10's three 32×32 colour channels)
without changing a layer width: the convolutions keep their size with zero padding 2 ("same"), and the
poolings have padding 1, so a side s becomes ⌊(s − 1)/2⌋ + 1: CIFAR-10's 32 → 16 → 8 → 4 and Fashion-MNIST's
28 → 14 → 7 → 4. Both end in 128 maps of 4×4, so the fully connected layer has the same 2048 inputs on either
data set; only the first convolution's input channels differ (3 or 1).

**Whitening** (the paper's "whitened inputs"): ZCA, fitted on the training split only —
``x ↦ (x − μ)·W`` with ``W = U·diag(1/√(λ + ε))·Uᵀ`` from the pixel covariance ``C = U·diag(λ)·Uᵀ``
(:func:`adamlab.data.fit_zca`, the same transform ``adamlab.data.load_cifar10`` applies to CIFAR-10, with the
same ε = 0.01 in units of squared [0, 1] pixel values). ZCA rather than per-channel standardisation: it is
what "whitened" meant for CIFAR-10 in the work the paper builds on (the maxout / pylearn2 set-up), it
decorrelates neighbouring pixels as well as scaling them, and with one grey channel per-channel
standardisation would be a mere global shift and scale. Per-channel standardisation is available as
``method="channel"`` for comparison.

**The probe** (claim 3 of Figure 3): the paper explains AdaGrad's late slow-down by the second-moment estimate
"vanishing" so that ε dominates the denominator. :func:`epsilon_dominance` measures, from an optimiser's
public ``state_dict()``, the fraction of coordinates where ε > √(second moment): AdaGrad's accumulated
G = Σ g² (torch's ``Adagrad``, step g/(√G + ε)) and Adam's bias-corrected v̂ = v/(1 − β2^t) (step
m̂/(√v̂ + ε), Algorithm 1).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from adamlab.formulas import bias_correction
from adamlab.lab.models import dropout

__all__ = [
    "EVAL_SLICE",
    "FC_DROPOUT",
    "FC_UNITS",
    "INPUT_DROPOUT",
    "KERNEL",
    "POOL",
    "POOL_STRIDE",
    "WIDTHS",
    "ConvNet",
    "Whitening",
    "epsilon_dominance",
    "fit_whitening",
    "he_init",
    "pooled_side",
]

#: The paper's feature maps per convolution stage ("c64-c64-c128") and fully connected units ("1000").
WIDTHS = (64, 64, 128)
FC_UNITS = 1000
#: 5×5 convolutions; 3×3 max-pooling with stride 2.
KERNEL = 5
POOL = 3
POOL_STRIDE = 2
#: Dropout rates when dropout is on (Hinton et al. 2012; the paper gives none): input and hidden units.
INPUT_DROPOUT = 0.2
FC_DROPOUT = 0.5
#: Evaluation (no dropout, no gradient) runs in slices of this many examples, to bound its memory.
EVAL_SLICE = 1024


def pooled_side(side: int) -> int:
    """The side of a map after a 'same' 5×5 convolution and 3×3/2 max-pooling with padding 1:
    ⌊(s + 2 − 3)/2⌋ + 1 = ⌊(s − 1)/2⌋ + 1 (32 → 16, 28 → 14, 7 → 4)."""
    return (side + 2 * (POOL // 2) - POOL) // POOL_STRIDE + 1


class ConvNet(nn.Module):
    """c64-c64-c128-1000: [conv 5×5 → ReLU → max-pool 3×3/2] × 3 → FC 1000 → ReLU → linear → (softmax).

    ``in_channels``/``image_size``: 3/32 for CIFAR-10, 1/28 for Fashion-MNIST. The input may be flat
    ``(batch, in_channels·image_size²)`` (the lab's tensors) or ``(batch, C, H, W)``. ``input_dropout`` and
    ``fc_dropout`` are inverted-dropout probabilities, active in training mode only; masks are drawn from
    ``generator`` when one is passed to :meth:`forward` (so the lab can save and restore it). With
    ``channels_last`` the activations use torch's NHWC layout (see docs/figures.md for what it gains here).
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        n_classes: int = 10,
        *,
        widths: tuple[int, ...] = WIDTHS,
        fc_units: int = FC_UNITS,
        input_dropout: float = 0.0,
        fc_dropout: float = 0.0,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("image_size", image_size), ("n_classes", n_classes)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {n_classes}")
        for name, p in (("input_dropout", input_dropout), ("fc_dropout", fc_dropout)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name} must lie in [0, 1), got {p}")
        self.in_channels = in_channels
        self.image_size = image_size
        self.input_dropout = float(input_dropout)
        self.fc_dropout = float(fc_dropout)
        self.channels_last = bool(channels_last)
        chans = (in_channels, *widths)
        self.convs = nn.ModuleList(nn.Conv2d(a, b, KERNEL, padding=KERNEL // 2) for a, b in itertools.pairwise(chans))
        side = image_size
        for _ in widths:
            side = pooled_side(side)
        self.final_side = side
        self.fc = nn.Linear(widths[-1] * side * side, fc_units)
        self.out = nn.Linear(fc_units, n_classes)
        if self.channels_last:
            for conv in self.convs:
                assert isinstance(conv, nn.Conv2d)
                conv.weight.data = conv.weight.data.contiguous(memory_format=torch.channels_last)

    #: How :meth:`initialize` draws the weights, for reports (:func:`adamlab.lab.models.describe_model`).
    init_description = (
        "He et al. (2015): N(0, 2/fan_in) for the convolutions and the fully connected layer, "
        "N(0, 0.01²) for the softmax layer, biases 0 (he_init)"
    )

    def initialize(self, generator: torch.Generator, std: float | None = None) -> None:
        """The lab's initialisation hook: :func:`he_init` from ``generator`` (``std`` is not used: each layer's
        scale follows from its fan-in)."""
        he_init(self, generator)

    @property
    def n_features(self) -> int:
        """Inputs per example: in_channels · image_size²."""
        return self.in_channels * self.image_size**2

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not self.training and not torch.is_grad_enabled() and x.shape[0] > EVAL_SLICE:
            # Full-training-set evaluation hands over chunks of many thousand images: the first stage's maps
            # alone would take 64·28²·4 bytes ≈ 200 KB per image, so evaluate in slices.
            return torch.cat([self(x[i : i + EVAL_SLICE]) for i in range(0, x.shape[0], EVAL_SLICE)])
        if x.dim() == 2:
            if x.shape[1] != self.n_features:
                raise ValueError(
                    f"expected {self.n_features} features per example "
                    f"({self.in_channels}×{self.image_size}×{self.image_size}), got {x.shape[1]}"
                )
            x = x.view(x.shape[0], self.in_channels, self.image_size, self.image_size)
        if self.training:
            x = dropout(x, self.input_dropout, generator)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for conv in self.convs:
            x = F.max_pool2d(torch.relu(conv(x)), POOL, POOL_STRIDE, padding=POOL // 2)
        x = torch.relu(self.fc(x.flatten(1)))
        if self.training:
            x = dropout(x, self.fc_dropout, generator)
        return self.out(x)


def he_init(model: nn.Module, generator: torch.Generator, output_std: float = 0.01) -> None:
    """Hidden layers' weights ~ N(0, 2/fan_in) (He et al. 2015, for ReLU layers), the softmax layer's
    ~ N(0, ``output_std``²), biases 0, all drawn from ``generator``.

    The paper gives no initialisation for its CNN. The lab's default N(0, 0.01²) everywhere shrinks the
    signal by a factor ≈ 0.01·√(fan_in/2) per layer (about 10⁻⁴ through this network), which stalls SGD for
    many epochs but not Adam (scale-invariant) and would bias the comparison; He's scale keeps the
    activations' variance through the ReLU stages. The last (softmax) layer is not followed by a ReLU: with
    the small N(0, 0.01²) the initial logits are small and the initial cost close to ln 10 ≈ 2.30 (2.63 on
    the whitened Fashion-MNIST stand-in), near where the paper's curves start, instead of a random confident
    guess (4.7–5.6 with He's scale there).
    fan_in = in_channels·5·5 for a convolution, in_features for a linear layer.
    """
    last = None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            last = module
    with torch.no_grad():
        for module in model.modules():
            if not isinstance(module, (nn.Conv2d, nn.Linear)):
                continue
            w = module.weight
            std = output_std if module is last else math.sqrt(2.0 / math.prod(w.shape[1:]))
            w.copy_(torch.randn(w.shape, generator=generator, dtype=w.dtype) * std)
            if module.bias is not None:
                module.bias.zero_()


# -- whitening ---------------------------------------------------------------------------------------------

WHITENING_METHODS = ("zca", "channel")


@dataclass(frozen=True)
class Whitening:
    """A whitening transform fitted on a training split: ``method`` ``"zca"`` (``x ↦ (x − mean)·matrix`` on
    flattened images) or ``"channel"`` (``x ↦ (x − mean_c)/std_c`` per channel); apply with :meth:`apply`."""

    method: str
    mean: np.ndarray
    matrix: np.ndarray | None = None
    std: np.ndarray | None = None
    epsilon: float = 0.0

    def apply(self, x: np.ndarray, channels: int = 1) -> np.ndarray:
        """Whiten ``x`` of shape (N, channels·H·W) (or (N, C, H, W)); float32, same shape."""
        from adamlab.data import apply_zca

        x = np.asarray(x)
        if self.method == "zca":
            assert self.matrix is not None
            return apply_zca(x, self.mean, self.matrix)
        assert self.std is not None
        per = x.reshape(x.shape[0], channels, -1).astype(np.float32)
        out = (per - self.mean[None, :, None].astype(np.float32)) / self.std[None, :, None].astype(np.float32)
        return out.reshape(x.shape)

    def describe(self) -> str:
        if self.method == "zca":
            return f"ZCA whitening fitted on the training split (ε = {self.epsilon:g})"
        return "per-channel standardisation fitted on the training split (zero mean, unit variance)"


def fit_whitening(x_train: np.ndarray, method: str = "zca", *, channels: int = 1, epsilon: float = 1e-2) -> Whitening:
    """Fit a :class:`Whitening` on the training images ``x_train`` (N, channels·H·W) or (N, C, H, W).

    ``"zca"``: :func:`adamlab.data.fit_zca` (mean image, ``W = U·diag(1/√(λ + ε))·Uᵀ``); ``ε`` in units of the
    pixels' variance, 0 allowed for a full-rank covariance (then the whitened training data has exactly the
    identity covariance). ``"channel"``: per-channel mean and standard deviation over all pixels and images.
    """
    from adamlab.data import fit_zca

    if method not in WHITENING_METHODS:
        raise ValueError(f"whitening method must be one of {', '.join(WHITENING_METHODS)}; got {method!r}")
    x = np.asarray(x_train)
    if method == "zca":
        mean, w = fit_zca(x.reshape(x.shape[0], -1), epsilon)
        return Whitening("zca", mean, matrix=w, epsilon=float(epsilon))
    per = x.reshape(x.shape[0], channels, -1).astype(np.float64)
    mean = per.mean(axis=(0, 2))
    std = per.std(axis=(0, 2))
    if np.any(std == 0):
        raise ValueError("per-channel standardisation needs every channel to vary; a channel is constant")
    return Whitening("channel", mean, std=std)


# -- the ε-vs-√v̂ probe ---------------------------------------------------------------------------------------


def epsilon_dominance(state_dict: Mapping[str, Any]) -> dict[str, float] | None:
    """The fraction of coordinates where ε exceeds the square root of the optimiser's second moment.

    ``state_dict``: an optimiser's public ``optimizer.state_dict()`` (``{"state": {index: {...}},
    "param_groups": [{"params": [index, ...], "eps": ..., ...}]}``). Recognised by its state keys:

    * AdaGrad (``torch.optim.Adagrad``, state ``sum`` = G_t = G_0 + Σ g², step −α·g/(√G_t + ε)):
      the coordinates with ε > √G_t.
    * Adam (``adamlab.Adam`` / ``torch.optim.Adam``, state ``exp_avg_sq`` = v_t and ``step`` = t, step
      −α·m̂/(√v̂ + ε) with v̂ = v/(1 − β2^t), Algorithm 1): the coordinates with ε > √v̂. Without bias
      correction (``bias_correction=False``) v̂ = v; with AMSGrad the running maximum ``max_exp_avg_sq``;
      under ``eps_mode="hat"`` ε̂ is compared with √v, the same test as ε > √v̂ when ε̂ = ε·√(1 − β2^t).

    Parameters not yet stepped are skipped. Returns ``{"fraction", "count", "median_sqrt_second"}`` (the
    median over coordinates of √G or √v̂, for scale) or ``None`` for an optimiser without a second moment
    (SGD) or before any step.
    """
    groups = state_dict.get("param_groups")
    states = state_dict.get("state")
    if not isinstance(groups, list) or not isinstance(states, Mapping):
        raise ValueError("state_dict must be an optimizer's state_dict(): a dict with 'state' and 'param_groups'")
    hits = 0
    total = 0
    roots: list[torch.Tensor] = []
    for group in groups:
        if "eps" not in group:  # SGD and other optimisers without a second moment
            continue
        eps = float(group["eps"])
        for index in group["params"]:
            st = states.get(index)
            if not st:
                continue
            if "sum" in st:
                if "step" in st and float(st["step"]) <= 0:
                    continue
                root = st["sum"].detach().double().sqrt()
            elif "exp_avg_sq" in st:
                t = float(st["step"])
                if t <= 0:
                    continue
                v = st["max_exp_avg_sq"] if group.get("amsgrad") else st["exp_avg_sq"]
                v = v.detach().double()
                if group.get("bias_correction", True) and group.get("eps_mode", "paper") != "hat":
                    v = v / bias_correction(float(group["betas"][1]), t)
                root = v.sqrt()
            else:
                continue
            flat = root.reshape(-1)
            hits += int((flat < eps).sum())
            total += flat.numel()
            roots.append(flat)
    if total == 0:
        return None
    return {
        "fraction": hits / total,
        "count": float(total),
        "median_sqrt_second": float(torch.cat(roots).median()),
    }
