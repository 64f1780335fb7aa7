"""ffnskip_native._util: the JSON rule, atomic writes, and progress bars that stay quiet."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from ffnskip_native._util import atomic_write, dumps_json, json_safe, progress_bar


def test_non_finite_numbers_become_null_everywhere():
    value = {
        1: [math.nan, math.inf, -math.inf, 1.5, (2, np.float32(np.inf))],
        "arr": np.array([[0.25, np.nan]], dtype=np.float32),
        "scalar": np.float64(-np.inf),
        "int": np.int64(7),
        "raw": b"\x01\xff",
        "flag": True,
    }
    expected = {
        "1": [None, None, None, 1.5, [2, None]],
        "arr": [[0.25, None]],
        "scalar": None,
        "int": 7,
        "raw": "01ff",
        "flag": True,
    }
    assert json_safe(value) == expected
    assert json.loads(dumps_json(value)) == expected  # strict JSON: no NaN/Infinity tokens


def test_atomic_write_replaces_whole_or_leaves_the_old_file(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("old", encoding="utf-8")

    def fail(tmp):
        tmp.write_text("half", encoding="utf-8")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, fail)
    assert path.read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]  # no temporary left
    assert atomic_write(path, lambda tmp: tmp.write_text("new", encoding="utf-8")) == path
    assert path.read_text(encoding="utf-8") == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_progress_bar_prints_only_when_enabled(capsys):
    with progress_bar(3, "quiet", False) as bar:
        for _ in range(3):
            bar.update()
    assert capsys.readouterr() == ("", "")
    with progress_bar(3, "shown", True) as bar:
        for _ in range(3):
            bar.update()
    out, err = capsys.readouterr()
    assert out == "" and "shown" in err and "3/3" in err
