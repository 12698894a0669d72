"""adamlab.files: atomic writes with ordinary permissions; JSON without NaN."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from adamlab import files


def test_atomic_write_leaves_no_temporary_and_usual_permissions(tmp_path):
    path = tmp_path / "sub" / "a.json"
    files.write_json(path, {"x": np.float32(1.5), "n": np.int64(3), "bad": float("nan"), "arr": np.arange(2)})
    assert files.read_json(path) == {"arr": [0, 1], "bad": None, "n": 3, "x": 1.5}
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    assert [p.name for p in path.parent.iterdir()] == ["a.json"]


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "a.txt"
    files.atomic_write_text(path, "old")

    class Boom:
        def savefig(self, buf, format, **kw):
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        files.save_figure(Boom(), tmp_path, "a", formats=("txt",))
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_csv_blanks_missing_values(tmp_path):
    files.write_csv(tmp_path / "c.csv", ["a", "b"], [[1, None], [float("inf"), 2.5]])
    assert (tmp_path / "c.csv").read_text() == "a,b\n1,\n,2.5\n"
