"""``make bench``'s table reads every results file in DESIGN.md's format."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType


def test_every_figure_is_a_row_with_its_baseline_and_ratio(tmp_path: Path, report: ModuleType) -> None:
    (tmp_path / "b.json").write_text(
        json.dumps({"fanout_100k_s": {"value": 2.5, "unit": "s", "baseline": 25.0, "ratio": 10.0}})
    )
    (tmp_path / "a.json").write_text(
        json.dumps({"p99_ms": {"value": 12.25, "unit": "ms", "baseline": None, "ratio": None}})
    )
    rows = report.rows(tmp_path)
    assert rows == [("a", "p99_ms", "12.25", "ms", "-", "-"), ("b", "fanout_100k_s", "2.5", "s", "25", "10")]
    table = report.render(rows).splitlines()
    assert table[0].split() == ["bench", "metric", "value", "unit", "baseline", "ratio"]
    assert len(table) == 4


def test_an_unreadable_file_is_reported_not_fatal(tmp_path: Path, report: ModuleType) -> None:
    (tmp_path / "broken.json").write_text("{")
    rows = report.rows(tmp_path)
    assert rows[0][:2] == ("broken", "(unreadable)")


def test_no_results_is_an_error(tmp_path: Path, report: ModuleType) -> None:
    assert report.main(["report", str(tmp_path)]) == 1
