"""The README's Python example runs as written, and its numbers come from the code."""

from __future__ import annotations

import re
from pathlib import Path

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
