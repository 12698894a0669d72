"""The report: written from saved results only, with plots, and verdicts that follow the numbers."""

from __future__ import annotations

import pytest

from adamlab.lab import results as R
from adamlab.lab.report import write_report
from adamlab.lab.runner import run_spec
from test_lab_helpers import fake_results, tiny_spec


def test_report_from_a_real_tiny_run(tmp_path, monkeypatch):
    spec = tiny_spec(epochs=2)
    run_spec(spec, tmp_path, progress=False)

    def no_training(*args, **kwargs):
        raise AssertionError("the report must not train")

    monkeypatch.setattr("adamlab.lab.runner.train_run", no_training)
    path = write_report(tmp_path)
    text = path.read_text()
    for name in ("tiny.png", "tiny.pdf", "tiny_diagnostics.png", "tiny_diagnostics.pdf"):
        assert (tmp_path / name).stat().st_size > 1000, name
    assert "![tiny](tiny.png)" in text
    assert "Adam ≈ SGD" in text and "Adam faster than AdaGrad" in text
    assert "Chosen hyper-parameters" in text and ("lr=0.1" in text or "lr=0.01" in text)
    assert "§2.1 diagnostics" in text and "Quick run" in text and "a test run" in text
    assert "| Adam | 1 |" in text and "| Adam | 2 |" in text, "diagnostics at the first and last epoch"


def _flat(start, final, epochs):
    return [start + (final - start) * min(1.0, e / (epochs / 2)) for e in range(epochs + 1)]


def test_verdicts_follow_constructed_results(tmp_path):
    spec = tiny_spec(epochs=4, seeds=(0, 1))  # the same curve for both seeds: a zero-width interval
    # Adam ≈ SGD (0.300 vs 0.305) and Adam faster than AdaGrad (0.30 vs 0.40): both hold.
    fake_results(
        tmp_path / "held",
        spec,
        {
            "p": {
                "adam/lr=0.1": _flat(1, 0.300, 4),
                "sgd_nesterov/lr=0.05": _flat(1, 0.305, 4),
                "adagrad/lr=0.1": _flat(1, 0.40, 4),
            }
        },
    )
    text = write_report(tmp_path / "held").read_text()
    assert "2 of 2 held" in text
    assert text.count("✅ held") == 2
    assert "0.3000 vs SGD Nesterov 0.3050" in text and "95% CI" in text and "2 seeds" in text
    # Adam far from SGD and slower than AdaGrad: neither holds.
    fake_results(
        tmp_path / "not",
        spec,
        {
            "p": {
                "adam/lr=0.1": _flat(1, 0.5, 4),
                "sgd_nesterov/lr=0.05": _flat(1, 0.3, 4),
                "adagrad/lr=0.1": _flat(1, 0.4, 4),
            }
        },
    )
    text = write_report(tmp_path / "not").read_text()
    assert "0 of 2 held" in text and text.count("❌ did not hold") == 2


def test_one_seed_gives_no_verdict_and_the_plot_has_bands(tmp_path):
    spec = tiny_spec(epochs=4)
    fake_results(tmp_path, spec, {"p": {"adam/lr=0.1": _flat(1, 0.3, 4), "adagrad/lr=0.1": _flat(1, 0.4, 4)}})
    text = write_report(tmp_path).read_text()
    assert "0 of 2 held" in text and text.count("inconclusive") >= 2 and "needs ≥ 2 seeds" in text


def test_grid_edges_and_stand_ins_are_reported(tmp_path):
    spec = tiny_spec(epochs=2)
    fake_results(tmp_path, spec, {"p": {"adam/lr=0.1": [1, 0.5, 0.3]}})
    R.write_json(tmp_path / "p" / "data.json", {"description": "snippets, stand-in for IMDB", "stand_in_for": "IMDB"})
    text = write_report(tmp_path).read_text()
    assert "at the edge of the grid in lr" in text
    assert "a stand-in for IMDB" in text


def test_report_of_an_unfinished_or_foreign_directory(tmp_path):
    with pytest.raises(R.ResultsError, match=r"no spec\.json"):
        write_report(tmp_path)
    R.write_json(tmp_path / "spec.json", tiny_spec().to_dict())
    with pytest.raises(R.ResultsError, match="has not finished"):
        write_report(tmp_path)


def test_an_unfinished_panel_is_named_and_the_finished_ones_are_judged(tmp_path):
    import dataclasses

    spec = tiny_spec(epochs=4, seeds=(0, 1))
    two = dataclasses.replace(spec, panels=(*spec.panels, dataclasses.replace(spec.panels[0], name="q")))
    fake_results(tmp_path, spec, {"p": {"adam/lr=0.1": _flat(1, 0.300, 4), "sgd_nesterov/lr=0.05": _flat(1, 0.305, 4)}})
    R.write_json(tmp_path / R.SPEC_FILE, two.to_dict())  # panel q: nothing trained yet
    text = write_report(tmp_path).read_text()
    assert "**Not finished**: panel(s) `q`" in text
    assert "Adam ≈ SGD" in text and "2 seeds" in text


def test_the_readme_block_is_built_from_the_files(tmp_path):
    from adamlab.lab.report import readme_block

    spec = tiny_spec(epochs=4, seeds=(0, 1))
    fake_results(tmp_path, spec, {"p": {"adam/lr=0.1": _flat(1, 0.300, 4), "sgd_nesterov/lr=0.05": _flat(1, 0.305, 4)}})
    block = readme_block(tmp_path, link_base="res")
    assert "| p | 4 | 0, 1 |" in block and "![tiny experiment](res/tiny.png)" in block
    assert "| Adam ≈ SGD | ✅ held | Adam 0.3000 vs SGD Nesterov 0.3050" in block


def test_the_report_describes_each_panels_own_model(tmp_path):
    """The model line comes from the model: a CNN with its own (He) initialisation and input + hidden dropout
    is described as such, not as the default N(0, 0.01²) with input dropout."""
    import dataclasses

    import adamlab.lab.experiments.fig3  # noqa: F401  (registers the "convnet" model kind)
    from adamlab.lab.spec import ModelSpec

    spec = tiny_spec(epochs=2)
    cnn = ModelSpec("convnet", input_dropout=0.2, hidden_dropout=0.5)
    spec = dataclasses.replace(spec, panels=(dataclasses.replace(spec.panels[0], model=cnn),))
    fake_results(tmp_path, spec, {})
    R.write_json(tmp_path / "p" / "data.json", {"description": "images", "n_features": 784, "n_classes": 10})
    text = write_report(tmp_path).read_text()
    line = next(x for x in text.splitlines() if x.startswith("Model: "))
    assert "convnet" in line and "2,368,066 parameters" in line  # c64-c64-c128-1000 on one 28×28 channel
    assert "0.2 input and 0.5 hidden dropout" in line and "He et al. (2015)" in line
    assert "N(0, 0.01²), biases 0, the same" not in line


def test_the_report_of_a_real_run_names_its_dropout_init_and_penalty(tmp_path):
    spec = tiny_spec(epochs=1, dropout=0.3)
    run_spec(spec, tmp_path, progress=False)
    line = next(x for x in write_report(tmp_path).read_text().splitlines() if x.startswith("Model: "))
    # logistic regression on 12 features, 3 classes: 12·3 + 3 = 39 parameters
    assert line == (
        "Model: logistic, 39 parameters; 0.3 input dropout; objective nll + L2 penalty λ/2·‖W‖² with λ = 0.001; "
        "initial weights N(0, 0.01²), biases 0, the same for every optimiser."
    )


def test_describe_model_for_the_mlp_and_the_vae():
    from adamlab.lab.experiments import fig2a, fig4
    from adamlab.lab.models import describe_model

    mlp = describe_model(fig2a.build_spec(quick=True).panels[0].model, 784, 10)
    assert "mlp 1000-1000 hidden, 1,796,010 parameters; 0.2 input and 0.5 hidden dropout" in mlp
    assert "no L2 penalty" in mlp and "N(0, 0.01²), biases 0" in mlp
    vae = describe_model(fig4.build_spec(quick=True).panels[0].model, 784, 10)
    assert "vae (hidden 500, latent 50)" in vae and "no dropout" in vae and "objective negative_elbo" in vae
    # 784·500 + 500 + 500·100 + 100 + 50·500 + 500 + 500·784 + 784 (AEVB's 784-500-(50+50), 50-500-784)
    assert f"{784 * 500 + 500 + 500 * 100 + 100 + 50 * 500 + 500 + 500 * 784 + 784:,} parameters" in vae
