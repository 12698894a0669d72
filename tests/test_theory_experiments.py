"""``adamlab reproduce theory --quick``: files, resumability, and the report rebuilt from JSON alone."""

import json

import pytest

from adamlab.theory import experiments
from adamlab.theory.experiments import EXPERIMENTS, report, run

FIGURES = ("logistic_regret", "counterexample", "counterexample_proof", "limits_gap")


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    d = tmp_path_factory.mktemp("theory")
    path = run(d, quick=True, progress=False)
    assert path == d / "report.md"
    return d


def test_quick_run_writes_results_plots_and_report(out):
    for name in EXPERIMENTS:
        rec = json.loads((out / f"{name}.json").read_text())
        assert rec["mode"] == "quick" and rec["seed"] == 0 and rec["experiment"] == name
    for stem in FIGURES:
        assert (out / f"{stem}.png").stat().st_size > 1000
        assert (out / f"{stem}.pdf").stat().st_size > 1000
    text = (out / "report.md").read_text()
    for heading in ("## 1.", "## 2.", "## 3."):
        assert heading in text
    assert "x_T = " in text and "R(T)/T = " in text


def test_quick_results_say_what_the_theory_says(out):
    c = json.loads((out / "counterexample.json").read_text())["results"]["reddi_C"]["optimizers"]
    assert c["Adam"]["x_final"] > 0.9
    assert c["AMSGrad"]["x_final"] < -0.9 and c["AdaGrad"]["x_final"] < -0.9
    assert c["Adam"]["final_avg_regret"] > 0.6 > 0.1 > c["AMSGrad"]["final_avg_regret"]
    assert c["Adam"]["proof_assumption"]["count"] > 0 and c["AMSGrad"]["proof_assumption"]["count"] == 0
    lim = json.loads((out / "limits.json").read_text())["results"]
    gaps = [row["bias_corrected"]["max_gap"] for row in lim["rows"]]
    assert gaps == sorted(gaps, reverse=True) and gaps[-1] < 1e-3


def test_report_rebuilds_from_json_without_rerunning(out, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("report() must not run experiments")

    monkeypatch.setattr(experiments, "_RUNNERS", dict.fromkeys(EXPERIMENTS, refuse))
    before = (out / "report.md").read_text()
    for stem in FIGURES:
        (out / f"{stem}.png").unlink()
    (out / "report.md").unlink()
    assert report(out) == out / "report.md"
    assert (out / "report.md").read_text() == before
    assert all((out / f"{stem}.png").exists() for stem in FIGURES)


def test_run_is_resumable(out, monkeypatch):
    """Every JSON exists, so run() re-runs nothing and only hands over to report()."""

    def refuse(*args, **kwargs):
        raise AssertionError("an experiment with saved results must not run again")

    monkeypatch.setattr(experiments, "_RUNNERS", dict.fromkeys(EXPERIMENTS, refuse))
    monkeypatch.setattr(experiments, "report", lambda d: d / "stub.md")
    assert run(out, quick=True, progress=False) == out / "stub.md"


def test_run_refuses_to_mix_settings(out):
    with pytest.raises(ValueError, match="mode='quick'"):
        run(out, quick=False, progress=False)
    with pytest.raises(ValueError, match="seed=0"):
        run(out, quick=True, seed=1, progress=False)


def test_report_needs_results(tmp_path):
    with pytest.raises(FileNotFoundError):
        report(tmp_path)
