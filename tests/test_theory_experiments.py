"""``adamlab reproduce theory --quick`` as a lab experiment: tasks, files, resume, and the report from files."""

import json

import pytest

from adamlab.lab import results as R
from adamlab.lab.experiments import run_experiment, theory
from adamlab.lab.report import write_report
from adamlab.lab.runner import TASKS

FIGURES = ("logistic_regret", "counterexample", "counterexample_proof", "limits_gap")


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    d = tmp_path_factory.mktemp("theory")
    path = run_experiment("theory", quick=True, out_dir=d, progress=False)
    assert path == d / "report.md"
    return d


def _task(out, name):
    return json.loads(R.task_path(out, name, 0).read_text())


def test_quick_run_writes_task_results_plots_and_report(out):
    spec = R.read_spec(out)
    assert spec.quick and spec.report == "theory" and not spec.panels
    assert [t.name for t in spec.tasks] == list(theory.EXPERIMENTS)
    for name in theory.EXPERIMENTS:
        rec = _task(out, name)
        assert rec["complete"] and rec["seed"] == 0 and rec["task"] == name
        assert rec["settings"] == theory.SETTINGS["quick"][name]
    for stem in FIGURES:
        assert (out / f"{stem}.png").stat().st_size > 1000
        assert (out / f"{stem}.pdf").stat().st_size > 1000
    text = (out / "report.md").read_text()
    for heading in ("## 1.", "## 2.", "## 3."):
        assert heading in text
    assert "x_T = " in text and "R(T)/T = " in text


def test_quick_results_say_what_the_theory_says(out):
    c = _task(out, "counterexample")["results"]["reddi_C"]["optimizers"]
    assert c["Adam"]["x_final"] > 0.9
    assert c["AMSGrad"]["x_final"] < -0.9 and c["AdaGrad"]["x_final"] < -0.9
    assert c["Adam"]["final_avg_regret"] > 0.6 > 0.1 > c["AMSGrad"]["final_avg_regret"]
    assert c["Adam"]["proof_assumption"]["count"] > 0 and c["AMSGrad"]["proof_assumption"]["count"] == 0
    lim = _task(out, "limits")["results"]
    gaps = [row["bias_corrected"]["max_gap"] for row in lim["rows"]]
    assert gaps == sorted(gaps, reverse=True) and gaps[-1] < 1e-3


def test_the_crossing_is_found_at_every_round(out):
    # The numbers, found by checking every round: R(t) first passes the bound at t = 144, dips below
    # again until t = 277 and stays above from t = 278 (log-spaced checkpoints said "from T = 261").
    cross = _task(out, "counterexample")["results"]["reddi_C"]["crossing"]
    assert cross["first_above"] == 144 and cross["last_below"] == 277 and cross["above_from"] == 278
    assert all(144 < t <= 277 for t in cross["below_after"]) and 1 in cross["residues_mod3"]
    assert "R(t) first exceeds the bound at t = 144" in (out / "report.md").read_text()


def test_report_rebuilds_from_files_without_rerunning(out, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the report must not run tasks")

    for name in theory.EXPERIMENTS:
        monkeypatch.setitem(TASKS, f"theory.{name}", refuse)
    before = (out / "report.md").read_text()
    for stem in FIGURES:
        (out / f"{stem}.png").unlink()
    (out / "report.md").unlink()
    assert write_report(out) == out / "report.md"
    assert (out / "report.md").read_text() == before
    assert all((out / f"{stem}.png").exists() for stem in FIGURES)


def test_a_second_run_resumes_without_running_tasks(out, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a task with saved results must not run again")

    for name in theory.EXPERIMENTS:
        monkeypatch.setitem(TASKS, f"theory.{name}", refuse)
    assert run_experiment("theory", quick=True, out_dir=out, progress=False) == out / "report.md"


def test_a_run_refuses_to_mix_settings(out):
    with pytest.raises(R.ResultsError, match="holds a run of 'theory'"):
        run_experiment("theory", quick=False, out_dir=out, progress=False)


def test_report_needs_results(tmp_path):
    R.write_json(tmp_path / R.SPEC_FILE, theory.build_spec(quick=True).to_dict())
    with pytest.raises(R.ResultsError, match="has not run"):
        write_report(tmp_path)
