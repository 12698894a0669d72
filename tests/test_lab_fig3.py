"""Figure 3's experiment: the spec (quick and full), the data (CIFAR-10 or Fashion-MNIST as its declared
stand-in, whitened on the training split), the probe's verdict rule, and a tiny end-to-end run through the lab
with the report's Figure 3 section."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from scipy import stats

from adamlab.data import load_cifar10
from adamlab.lab.experiments import fig3
from adamlab.lab.spec import ExperimentSpec
from test_data_loaders import isolated, write_cifar, write_mnist  # noqa: F401  (autouse fixture: no network)


def test_quick_and_full_specs():
    full = fig3.build_spec()
    quick = fig3.build_spec(quick=True)
    assert [p.name for p in full.panels] == ["dropout", "no_dropout"]
    for spec, epochs in ((full, 45), (quick, fig3.QUICK_EPOCHS)):
        for panel in spec.panels:
            assert panel.epochs == epochs and panel.batch_size == 128
            assert [o.key for o in panel.optimizers] == ["adagrad", "sgd_nesterov", "adam"]
            assert panel.probes == (fig3.PROBE,)
            assert panel.model.kind == fig3.MODEL
        drop, none = spec.panels
        assert (drop.model.input_dropout, drop.model.hidden_dropout) == (0.2, 0.5)
        assert (none.model.input_dropout, none.model.hidden_dropout) == (0.0, 0.0)
        assert ExperimentSpec.from_json(spec.to_json()) == spec
    assert full.seeds == (0, 1, 2) and quick.seeds == (0, 1)
    assert fig3.build_spec(seed=5, seeds=2).seeds == (5, 6)
    assert full.panels[0].optimizers[2].settings() == [{"lr": lr} for lr in fig3.FULL_LR["adam"]]
    assert "subsample" not in full.panels[0].dataset.options
    assert quick.panels[0].dataset.options["subsample"] == fig3.QUICK_SUBSAMPLE
    # a quick run says so in its title, every panel title and its first note
    assert "QUICK" in quick.title and all("QUICK" in p.title for p in quick.panels)
    assert quick.notes[0].startswith("QUICK RUN") and "QUICK" not in full.title
    assert any("stand-in for CIFAR-10" in n for n in full.notes)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="seeds must be >= 1"):
        fig3.build_spec(seeds=0)
    with pytest.raises(ValueError, match="corpus must be one of auto, cifar10, fashion-mnist"):
        fig3.build_spec(corpus="cifar100")
    with pytest.raises(ValueError, match="fig3 whiten must be one of zca, channel"):
        fig3.load_images({"whiten": "pca"})
    with pytest.raises(ValueError, match="not 1×s×s or 3×s×s"):
        fig3.image_shape(100 * 3 + 1)


def test_image_shape():
    assert fig3.image_shape(784) == (1, 28)
    assert fig3.image_shape(3072) == (3, 32)


def test_fashion_mnist_is_the_declared_stand_in(tmp_path):
    """No CIFAR-10 under the data root: Fashion-MNIST, ZCA-whitened with a fit on its training split (the
    whitened training set has zero mean), subsampled after whitening, and named a stand-in."""
    write_mnist(tmp_path, folder="fashion-mnist", n=40, seed=3)
    data = fig3.load_images({"zca_epsilon": 0.01}, tmp_path)
    assert data.X.shape == (40, 784) and data.n_classes == 10
    assert data.info["corpus"] == "fashion-mnist" and data.info["stand_in_for"] == "CIFAR-10"
    assert "stand-in for CIFAR-10" in data.info["description"]
    np.testing.assert_allclose(data.X.mean(axis=0), 0.0, atol=1e-4)
    sub = fig3.load_images({"zca_epsilon": 0.01, "subsample": 10}, tmp_path)
    assert sub.X.shape == (10, 784) and "subset of 10" in sub.info["description"]
    rows = [int(np.flatnonzero((data.X == r).all(axis=1))[0]) for r in sub.X]  # rows of the whitened full set
    np.testing.assert_array_equal(sub.y, data.y[rows])


def test_cifar10_is_used_when_present(tmp_path):
    write_mnist(tmp_path, folder="fashion-mnist", n=8)
    write_cifar(tmp_path, n=6)
    data = fig3.load_images({}, tmp_path)
    assert data.info["corpus"] == "cifar10" and data.info["stand_in_for"] is None
    expected, labels = load_cifar10("train", root=tmp_path, whiten="zca")
    np.testing.assert_array_equal(data.X, expected.reshape(30, 3072))
    np.testing.assert_array_equal(data.y, labels)
    assert fig3.image_shape(data.n_features) == (3, 32)


def _fake_panel(finals: list[float]):
    """A stand-in for the lab's PanelResults holding only what probe_claims reads."""

    class Panel:
        def __init__(self) -> None:
            history = [[{"probes": {}}, {"probes": {fig3.PROBE: {"fraction": f}}}] for f in finals]
            self.chosen = {key: [{"history": h} for h in history] for key in ("adagrad", "adam")}

        def label(self, key):
            return key

    return Panel()


@pytest.mark.parametrize(
    ("finals", "status"),
    [
        ([0.90, 0.91, 0.92], "held"),
        ([0.10, 0.12, 0.11], "did not hold"),
        ([0.45, 0.50, 0.55], "inconclusive"),
        ([0.95], "inconclusive"),  # one seed: no interval
    ],
)
def test_probe_claim_rule(finals, status):
    rows = fig3.probe_claims({"p": _fake_panel(finals)})
    assert [r["status"] for r in rows] == [status, status]
    if len(finals) > 1:  # the interval is Student's t over seeds, computed here with scipy
        half = stats.t.ppf(0.975, len(finals) - 1) * np.std(finals, ddof=1) / math.sqrt(len(finals))
        assert rows[0]["lo"] == pytest.approx(np.mean(finals) - half)
        assert rows[0]["hi"] == pytest.approx(np.mean(finals) + half)


@pytest.mark.slow
def test_tiny_run_end_to_end(tmp_path):
    """The lab trains the spec (here on 64 stand-in images for 4 epochs, two seeds), records the probe for
    AdaGrad and Adam but not SGD, and the report gains the paper-layout figure and claims 1 and 3."""
    from adamlab.lab.runner import run_spec

    write_mnist(tmp_path / "data", folder="fashion-mnist", n=64, seed=1)
    fig3.register()
    spec = fig3.build_spec(quick=True)
    panels = tuple(
        dataclasses.replace(
            p,
            epochs=4,
            dataset=dataclasses.replace(p.dataset, options={**p.dataset.options, "subsample": 64}),
        )
        for p in spec.panels
    )
    spec = dataclasses.replace(spec, panels=panels)
    out = tmp_path / "out"
    run_spec(spec, out, data_dir=tmp_path / "data", progress=False)
    (out / "experiment.json").write_text(json.dumps({"experiment": "fig3", "quick": True, "seed": 0}))
    run = json.loads((out / "no_dropout" / "runs" / "adagrad" / "lr=0.01_seed0.json").read_text())
    fractions = [(h.get("probes") or {}).get(fig3.PROBE, {}).get("fraction") for h in run["history"]]
    assert fractions[0] is None and all(0.0 <= f <= 1.0 for f in fractions[1:])
    sgd = json.loads((out / "dropout" / "runs" / "sgd_nesterov" / "lr=0.01_seed1.json").read_text())
    assert all(not (h.get("probes") or {}).get(fig3.PROBE) for h in sgd["history"])
    report = fig3.report(out).read_text()
    assert "Figure 3: the paper's layout" in report and "(QUICK RUN)" in report
    assert "in the first 3 epochs Adam faster than SGD-Nesterov" in report
    assert "ε dominates AdaGrad's denominator" in report
    assert (out / "fig3_paper_layout.png").is_file()
    assert "stand-in for CIFAR-10" in (out / "no_dropout" / "data.json").read_text()
