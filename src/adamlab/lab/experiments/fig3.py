"""Figure 3 of the paper (§6.3): the convolutional network c64-c64-c128-1000, with and without dropout.

**Data**: CIFAR-10's 50,000 training images, ZCA-whitened (``adamlab.data.load_cifar10``), when the user has
them locally (never downloaded implicitly); otherwise **Fashion-MNIST's 60,000 training images as a declared
stand-in for CIFAR-10**, ZCA-whitened with ε = 0.01 fitted on its training split (the whitening is fitted on
the whole training split, before any subsampling). The corpus used is named in every plot title,
``data.json``, ``grid.json``/``grid.csv`` and the report. How the network adapts to one 28×28 channel without
changing a layer width: see :mod:`adamlab.lab.convnet`.

**Model** (:class:`adamlab.lab.convnet.ConvNet`): with dropout, 20 % on the input and 50 % on the 1000 fully
connected units (Hinton et al. 2012's rates; the paper gives none); without dropout, none. He-normal
initial weights (:func:`adamlab.lab.convnet.he_init`; the paper gives no scheme), the same for every
optimiser. Loss: mean negative log-likelihood, no L2 penalty (the paper names none for this network).

**Optimisers**: Adam (``adamlab.Adam``, constant α), SGD with Nesterov momentum 0.9 and AdaGrad
(``torch.optim``), minibatch 128. Full run: 45 epochs, learning rates on a grid per optimiser, chosen on the
smoothed final training cost with the first seed, then the other seeds at the chosen rate.

**Probe**: after every epoch, the fraction of coordinates where ε > √(second moment) — AdaGrad's
accumulated G, Adam's bias-corrected v̂ (:func:`adamlab.lab.convnet.epsilon_dominance`), read from the
optimiser's ``state_dict()``.

**Quick run** (``--quick``): a fixed subset of 1,024 training images (8 minibatches an epoch), 10 epochs, one
learning rate per optimiser (:data:`QUICK_LR`), two seeds. It says so in every title, file and
report; its verdicts are about the shortened run, not the paper's protocol.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from adamlab.lab.spec import (
    ClaimSpec,
    DatasetSpec,
    ExperimentSpec,
    ModelSpec,
    OptimizerSpec,
    PanelSpec,
    PlotSpec,
)

__all__ = [
    "CLAIMS_EARLY_EPOCHS",
    "DATASET",
    "DEFAULT_SEEDS",
    "FULL_EPOCHS",
    "FULL_LR",
    "MODEL",
    "PROBE",
    "QUICK_EPOCHS",
    "QUICK_LR",
    "QUICK_SUBSAMPLE",
    "build_spec",
    "image_shape",
    "load_images",
    "register",
]

#: The names this experiment registers with the lab (dataset, model kind, probe).
DATASET = "fig3-images"
MODEL = "convnet"
PROBE = "epsilon_dominance"

FULL_EPOCHS = 45
QUICK_EPOCHS = 10
QUICK_SUBSAMPLE = 1024
#: The paper's left panel: the first 3 epochs (claim 1 is judged there).
CLAIMS_EARLY_EPOCHS = 3
DEFAULT_SEEDS = {True: 2, False: 3}

#: Full grids (half a decade apart, around each optimiser's usual range for whitened inputs).
FULL_LR = {
    "adam": (1e-4, 3e-4, 1e-3, 3e-3),
    "sgd_nesterov": (3e-3, 1e-2, 3e-2, 1e-1),
    "adagrad": (3e-3, 1e-2, 3e-2, 1e-1),
}
#: Quick run: one rate per optimiser, chosen by a short check (4 epochs on 2,048 whitened images, seed 0, no
#: dropout: Adam 3e-4 reached 0.47, AdaGrad 1e-2 0.75, SGD-Nesterov 1e-2 0.73; the check's second rates did
#: not finish on the shared machine; see docs/figures.md).
QUICK_LR = {"adam": (3e-4,), "sgd_nesterov": (1e-2,), "adagrad": (1e-2,)}

CORPORA = ("auto", "cifar10", "fashion-mnist")


# -- data ----------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def _whitened(corpus: str, whiten: str, epsilon: float, data_dir: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    """(X flat float32, y, corpus used); the whitening fitted on the whole training split; cached per process."""
    from adamlab.data import DataNotFoundError, load_cifar10, load_fashion_mnist
    from adamlab.lab.convnet import fit_whitening

    if corpus in ("auto", "cifar10"):
        try:
            x, y = load_cifar10("train", root=data_dir, whiten="zca" if whiten == "zca" else None,
                                zca_epsilon=epsilon, download=corpus == "cifar10")  # fmt: skip
            flat = x.reshape(x.shape[0], -1)
            if whiten == "channel":
                flat = fit_whitening(flat, "channel", channels=3).apply(flat, channels=3)
            return flat, y, "cifar10"
        except DataNotFoundError:
            if corpus == "cifar10":
                raise
    x, y = load_fashion_mnist("train", root=data_dir)
    white = fit_whitening(x, whiten, epsilon=epsilon)
    return white.apply(x), y, "fashion-mnist"


def load_images(options: dict[str, Any], data_dir: Any = None):
    """The lab's loader for :data:`DATASET` (a :class:`~adamlab.lab.datasets.TrainingData` of flat whitened
    images). Options: ``corpus`` (``"auto"``: CIFAR-10 if found locally, else Fashion-MNIST as its stand-in;
    ``"cifar10"``; ``"fashion-mnist"``), ``whiten`` (``"zca"`` or ``"channel"``), ``zca_epsilon`` (0.01),
    ``subsample`` (a number of images, drawn with ``data_seed``, default 0, after whitening)."""
    from adamlab.lab.convnet import WHITENING_METHODS
    from adamlab.lab.datasets import TrainingData, _subsample

    corpus = options.get("corpus", "auto")
    if corpus not in CORPORA:
        raise ValueError(f"fig3 corpus must be one of {', '.join(CORPORA)}; got {corpus!r}")
    whiten = options.get("whiten", "zca")
    if whiten not in WHITENING_METHODS:
        raise ValueError(f"fig3 whiten must be one of {', '.join(WHITENING_METHODS)}; got {whiten!r}")
    epsilon = float(options.get("zca_epsilon", 1e-2))
    x, y, used = _whitened(corpus, whiten, epsilon, None if data_dir is None else str(data_dir))
    n_all = x.shape[0]
    x, y = _subsample(x, y, options)
    how = f"ZCA-whitened (ε = {epsilon:g})" if whiten == "zca" else "standardised per channel"
    subset = f", a fixed subset of {x.shape[0]:,} of them" if x.shape[0] < n_all else ""
    if used == "cifar10":
        desc = f"CIFAR-10 training images ({n_all:,} × 3×32×32{subset}), {how} on the training split"
        stand_in = None
    else:
        desc = (
            f"Fashion-MNIST training images ({n_all:,} × 1×28×28{subset}), {how} on the training split, "
            "stand-in for CIFAR-10"
        )
        stand_in = "CIFAR-10"
    info = {"description": desc, "corpus": used, "stand_in_for": stand_in, "whitening": whiten}
    return TrainingData(x, y, 10, info)


def image_shape(n_features: int) -> tuple[int, int]:
    """(channels, side) of square images with ``n_features`` values: 784 → (1, 28), 3072 → (3, 32)."""
    for channels in (1, 3):
        side = math.isqrt(n_features // channels)
        if channels * side * side == n_features:
            return channels, side
    raise ValueError(f"{n_features} features are not 1×s×s or 3×s×s images")


def _build_convnet(spec: ModelSpec, n_features: int, n_classes: int):
    from adamlab.lab.convnet import ConvNet

    channels, side = image_shape(n_features)
    return ConvNet(
        channels,
        side,
        n_classes,
        input_dropout=spec.input_dropout,
        fc_dropout=spec.hidden_dropout,
        channels_last=bool(spec.options.get("channels_last", True)),
    )


def _probe(model: Any, optimizer: Any, data: Any) -> dict[str, float]:
    """ε-vs-√v̂ from the optimiser's public state_dict(); {} for an optimiser without a second moment."""
    from adamlab.lab.convnet import epsilon_dominance

    return epsilon_dominance(optimizer.state_dict()) or {}


def register() -> None:
    """Make the dataset, the model kind and the probe known to the lab (idempotent)."""
    from adamlab.lab.datasets import register_dataset
    from adamlab.lab.models import register_model
    from adamlab.lab.runner import register_probe

    register_dataset(DATASET, load_images)
    register_model(MODEL, _build_convnet)
    register_probe(PROBE, _probe)


# -- the spec --------------------------------------------------------------------------------------------------


def _optimizers(quick: bool) -> tuple[OptimizerSpec, ...]:
    lr = QUICK_LR if quick else FULL_LR
    return (
        OptimizerSpec("adagrad", "AdaGrad", "adagrad", {}, {"lr": lr["adagrad"]}),
        OptimizerSpec(
            "sgd_nesterov", "SGD Nesterov", "sgd", {"momentum": 0.9, "nesterov": True}, {"lr": lr["sgd_nesterov"]}
        ),
        OptimizerSpec("adam", "Adam", "adam", {}, {"lr": lr["adam"]}),
    )


PAPER = (
    "CIFAR-10 with whitened inputs, CNN c64-c64-c128-1000 (5×5 convolutions, 3×3 max-pooling with stride 2, "
    "1000 ReLU units, softmax), dropout on the input and the fully connected layer or none; minibatch 128. "
    "Left: the first 3 epochs, cost falling from about 3 to 0.5; right: 45 epochs on a log axis from 1e2 "
    "down to 1e-4. Adam and AdaGrad fall fastest at first; later Adam and SGD-Nesterov pull far ahead of "
    "AdaGrad (the paper: v̂ vanishes and ε dominates); Adam is only slightly better than SGD-Nesterov."
)


def build_spec(*, quick: bool = False, seed: int = 0, seeds: int | None = None, corpus: str = "auto") -> ExperimentSpec:
    """The Figure 3 spec; ``quick`` shortens it (module docstring); ``seeds`` seeds from ``seed`` on (default
    :data:`DEFAULT_SEEDS`); ``corpus`` as in :func:`load_images`."""
    n_seeds = DEFAULT_SEEDS[quick] if seeds is None else seeds
    if n_seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {n_seeds}")
    if corpus not in CORPORA:
        raise ValueError(f"corpus must be one of {', '.join(CORPORA)}; got {corpus!r}")
    from adamlab.lab.convnet import FC_DROPOUT, INPUT_DROPOUT

    epochs = QUICK_EPOCHS if quick else FULL_EPOCHS
    options: dict[str, Any] = {"corpus": corpus, "whiten": "zca"}
    if quick:
        options["subsample"] = QUICK_SUBSAMPLE
    quick_tag = " [QUICK RUN]" if quick else ""
    panels = tuple(
        PanelSpec(
            name=name,
            title=f"CNN c64-c64-c128-1000, {what}{quick_tag}",
            dataset=DatasetSpec(DATASET, dict(options)),
            model=ModelSpec(
                MODEL,
                input_dropout=p_in,
                hidden_dropout=p_fc,
                options={"channels_last": True},
            ),
            optimizers=_optimizers(quick),
            epochs=epochs,
            plot=PlotSpec(ylabel="training cost", xlim=(0, FULL_EPOCHS), ylim=(1e-4, 1e2), yscale="log"),
            paper=PAPER,
            probes=(PROBE,),
        )
        for name, what, p_in, p_fc in (
            ("dropout", f"dropout {INPUT_DROPOUT:.0%} input / {FC_DROPOUT:.0%} FC", INPUT_DROPOUT, FC_DROPOUT),
            ("no_dropout", "no dropout", 0.0, 0.0),
        )
    )
    claims = []
    for panel in ("no_dropout", "dropout"):
        claims += [
            ClaimSpec(panel, "much_faster", "adam", "adagrad", f"{panel}: later, Adam ≫ AdaGrad", 2.0),
            ClaimSpec(panel, "much_faster", "sgd_nesterov", "adagrad", f"{panel}: later, SGD-Nesterov ≫ AdaGrad", 2.0),
            ClaimSpec(
                panel, "as_fast", "adam", "sgd_nesterov", f"{panel}: Adam at least as fast as SGD-Nesterov", 0.05
            ),
        ]
    notes = [
        "Data: CIFAR-10 if found locally, else Fashion-MNIST's training images as a declared stand-in for "
        "CIFAR-10 (one 28×28 grey channel: the same layer widths, 'same' convolutions and pooling with "
        "padding 1 give 28 → 14 → 7 → 4, the same 4×4×128 maps as CIFAR-10's 32 → 16 → 8 → 4); ZCA whitening "
        "fitted on the training split.",
        "Training cost = mean negative log-likelihood on the (sub)set trained on, without dropout, after "
        "every epoch; learning rates chosen by grid search on the smoothed final cost with the first seed.",
        f"Claim 1 (Adam and AdaGrad fastest in the first epochs) is judged on the first "
        f"{CLAIMS_EARLY_EPOCHS} epochs; claim 3 (ε dominates √v̂) from the probe; see the Figure 3 section.",
    ]
    if quick:
        notes.insert(
            0,
            f"QUICK RUN: a fixed subset of {QUICK_SUBSAMPLE:,} training images, {QUICK_EPOCHS} epochs (paper: "
            f"{FULL_EPOCHS} epochs of the whole set), one learning rate per optimiser (full run: a grid). The "
            "verdicts below are about this shortened run.",
        )
    return ExperimentSpec(
        name="fig3",
        title="Figure 3: convolutional network — training cost vs epochs" + quick_tag,
        panels=panels,
        seeds=tuple(range(seed, seed + n_seeds)),
        claims=tuple(claims),
        quick=quick,
        notes=tuple(notes),
    )


# -- Figure 3's own report: the paper's two panels, the probe, and the claims the lab's rules do not cover -------

_STYLE = {"dropout": "-", "no_dropout": "--"}


def _probe_curves(records: list[dict[str, Any]]) -> list[list[float]]:
    """Per seed, the probe's fraction per epoch (NaN where it has none: epoch 0, SGD)."""
    out = []
    for r in records:
        row = []
        for h in r["history"]:
            value = ((h.get("probes") or {}).get(PROBE) or {}).get("fraction")
            row.append(math.nan if value is None else float(value))
        out.append(row)
    return out


def early_claims(panels: dict[str, Any]) -> list[Any]:
    """Claim 1 on each panel: Adam and AdaGrad are each faster than SGD-Nesterov at epoch
    :data:`CLAIMS_EARLY_EPOCHS` (the lab's ``faster`` rule, margin 1 %, on the curves cut after that epoch)."""
    from adamlab.lab.claims import judge

    verdicts = []
    for name, pr in panels.items():
        k = CLAIMS_EARLY_EPOCHS
        for fast in ("adam", "adagrad"):
            claim = ClaimSpec(
                name, "faster", fast, "sgd_nesterov",
                f"{name}: in the first {k} epochs {pr.label(fast)} faster than SGD-Nesterov", 0.01,
            )  # fmt: skip
            cut_a = [c[: k + 1] for c in pr.seed_curves(fast)]
            cut_b = [c[: k + 1] for c in pr.seed_curves("sgd_nesterov")]
            verdicts.append(judge(claim, cut_a, cut_b, (pr.label(fast), pr.label("sgd_nesterov")), window=1))
    return verdicts


def probe_claims(panels: dict[str, Any]) -> list[dict[str, Any]]:
    """Claim 3 (the paper's explanation) per panel and optimiser: at the last epoch, does ε exceed √(second
    moment) on most coordinates? Per seed the fraction f_s; held if the 95 % t-interval of their mean lies
    at or above 1/2, did not hold if it lies below 1/2, else inconclusive (and with a single seed)."""
    from adamlab.lab.claims import DID_NOT_HOLD, HELD, INCONCLUSIVE, t_interval

    rows = []
    for name, pr in panels.items():
        for key in ("adagrad", "adam"):
            finals = [c[-1] for c in _probe_curves(pr.chosen[key])]
            finals = [f for f in finals if math.isfinite(f)]
            mean, lo, hi = t_interval(finals)
            if len(finals) < 2:
                status = INCONCLUSIVE
            elif lo >= 0.5:
                status = HELD
            elif hi < 0.5:
                status = DID_NOT_HOLD
            else:
                status = INCONCLUSIVE
            rows.append({"panel": name, "optimizer": key, "label": pr.label(key), "finals": finals,
                         "mean": mean, "lo": lo, "hi": hi, "status": status})  # fmt: skip
    return rows


def plot_figure3(spec: ExperimentSpec, panels: dict[str, Any], out: Any) -> list[Any]:
    """The paper's layout: the first 3 epochs (linear y) and every epoch (log y), the six curves (colour =
    optimiser, solid = dropout, dashed = none), with the probe's fraction per epoch beside them."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from adamlab.files import save_figure
    from adamlab.lab.report import _COLORS, FORMATS

    fig = Figure(figsize=(16, 5.4), layout="constrained")
    FigureCanvasAgg(fig)
    early, late, probe = fig.subplots(1, 3)
    for name, pr in panels.items():
        for key, curve in pr.curves.items():
            label = f"{pr.label(key)}{' + dropout' if name == 'dropout' else ''}"
            style = dict(color=_COLORS.get(key), ls=_STYLE.get(name, "-"), lw=1.5)
            k = CLAIMS_EARLY_EPOCHS
            early.plot(range(min(len(curve), k + 1)), curve[: k + 1], label=label, **style)
            late.plot(range(len(curve)), curve, label=label, **style)
            fractions = _probe_curves(pr.chosen[key])
            if any(math.isfinite(v) for v in fractions[0]):
                per_epoch = [
                    [f[e] for f in fractions if e < len(f) and math.isfinite(f[e])] for e in range(len(fractions[0]))
                ]
                mean = [float(np.mean(v)) if v else math.nan for v in per_epoch]
                probe.plot(range(len(mean)), mean, label=label, **style)
    early.set(xlabel="iterations over entire dataset", ylabel="training cost", title="first epochs (linear)")
    late.set(xlabel="iterations over entire dataset", ylabel="training cost", yscale="log",
             title="all epochs (log)")  # fmt: skip
    probe.set(xlabel="iterations over entire dataset", ylabel="fraction of coordinates", ylim=(0, 1),
              title="ε > √(second moment): AdaGrad √G, Adam √v̂")  # fmt: skip
    for ax in (early, late, probe):
        ax.grid(alpha=0.3)
    late.legend(fontsize=8)
    data = next(iter(panels.values())).data_description
    quick = "\nQUICK RUN: a subset of the images, fewer epochs, one learning rate each — not the paper's protocol"
    fig.suptitle(f"{spec.title}\n{data}{quick if spec.quick else ''}", fontsize=10)
    return save_figure(fig, out, "fig3_paper_layout", FORMATS, dpi=150, bbox_inches="tight")


def report(out_dir: Any) -> Any:
    """The lab's standard report (curves per panel, grids, the ``much_faster``/``as_fast`` claims), then
    Figure 3's own: the paper's two-panel layout with the probe, claim 1 (first epochs) and claim 3 (ε)."""
    from pathlib import Path

    from adamlab.files import atomic_write_text
    from adamlab.lab import results as R
    from adamlab.lab.claims import CONFIDENCE
    from adamlab.lab.report import _MARK, load_panel, write_report

    register()
    out = Path(out_dir)
    path = write_report(out)
    spec = R.read_spec(out)
    panels = {p.name: load_panel(spec, p, out) for p in spec.panels}
    figures = plot_figure3(spec, panels, out)
    early = early_claims(panels)
    probes = probe_claims(panels)
    epochs = spec.panels[0].epochs
    md = [
        "",
        "## Figure 3: the paper's layout, claim 1 and claim 3" + (" (QUICK RUN)" if spec.quick else ""),
        "",
        f"![Figure 3]({Path(figures[0]).name})",
        "",
        f"Epochs covered: {epochs} (paper: {FULL_EPOCHS}); seeds: {', '.join(map(str, spec.seeds))}. The network's "
        "initial weights are He-normal N(0, 2/fan_in) for the ReLU layers and N(0, 0.01²) for the softmax layer "
        '(`adamlab.lab.convnet.he_init`, as each panel\'s "Model" line says); "with dropout" drops '
        "20 % of the input pixels and 50 % of the 1000 fully connected units.",
        "",
        "| claim | verdict | numbers |",
        "| --- | --- | --- |",
    ]
    for v in early:
        md.append(f"| {v.claim.text} | {_MARK.get(v.status, '❌ ' + v.status)} | {v.reason} |")
    for row in probes:
        interval = (
            f"{CONFIDENCE:.0%} CI [{row['lo']:.3f}, {row['hi']:.3f}]" if math.isfinite(row["lo"]) else "no interval"
        )
        md.append(
            f"| {row['panel']}: ε dominates {row['label']}'s denominator at epoch {epochs} (fraction ≥ 1/2) "
            f"| {_MARK.get(row['status'], '❌ ' + row['status'])} | fraction {row['mean']:.3f} ({interval}, "
            f"{len(row['finals'])} seeds) |"
        )
    md += [
        "",
        "Claim 3 reads the optimiser's `state_dict()` after every epoch: the fraction of coordinates with "
        "ε > √G (AdaGrad, ε = 1e-10) or ε > √v̂ (Adam, v̂ bias-corrected, ε = 1e-8). A coordinate whose gradient "
        "has been exactly zero so far (a unit that never fired, a weight on a constant input) counts as "
        "dominated too.",
        "",
    ]
    atomic_write_text(path, path.read_text() + "\n".join(md))
    return path


# A spawned worker (``--jobs``) imports this module by the spec's name: registering here makes the dataset, the
# model and the probe known there as in the parent.
register()
