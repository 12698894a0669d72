"""The README's Python example runs as written, and its numbers come from the committed result files."""

from __future__ import annotations

import re
from pathlib import Path

from adamlab.lab.report import sync_readme

README = Path(__file__).parents[1] / "README.md"


def test_readme_example_runs(capsys):
    text = README.read_text(encoding="utf-8")
    block = re.search(r"## The optimizers\n\n```python\n(.*?)```", text, re.S)
    assert block is not None, "the README lost its optimizer example"
    namespace: dict = {}
    exec(compile(block.group(1), str(README), "exec"), namespace)
    out = capsys.readouterr().out
    first, last = re.search(r"loss ([\d.]+) -> ([\d.]+)", out).groups()
    assert float(last) < 0.1 * float(first)  # the example trains
    assert "q99" in out


def test_readme_results_are_the_committed_results():
    text = README.read_text(encoding="utf-8")
    assert "<!-- adamlab report: docs/results/fig1 -->" in text, "the README lost its Figure 1 results"
    stale = sync_readme(README, check=True)
    assert stale == [], (
        f"README blocks disagree with their results: run `adamlab report DIR --readme README.md` ({stale})"
    )


def test_a_changed_number_is_caught(tmp_path):
    text = README.read_text(encoding="utf-8")
    block = re.search(r"<!-- adamlab report: docs/results/fig1 -->\n(.*?)<!-- /adamlab report -->", text, re.S)
    assert block is not None
    copy = tmp_path / "README.md"
    (tmp_path / "docs").symlink_to(README.parent / "docs")
    copy.write_text(text.replace(block.group(1), block.group(1).replace("run", "rnu", 1)), encoding="utf-8")
    assert sync_readme(copy, check=True) == ["docs/results/fig1"]
    assert sync_readme(copy) == ["docs/results/fig1"] and sync_readme(copy, check=True) == []
