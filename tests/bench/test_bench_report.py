"""``make bench``'s table reads every results file in DESIGN.md's format."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

REPORT = Path(__file__).resolve().parents[2] / "bench" / "tools" / "report.py"


def _report() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_report", REPORT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_figure_is_a_row_with_its_baseline_and_ratio(tmp_path: Path) -> None:
    (tmp_path / "b.json").write_text(
        json.dumps({"fanout_100k_s": {"value": 2.5, "unit": "s", "baseline": 25.0, "ratio": 10.0}})
    )
    (tmp_path / "a.json").write_text(
        json.dumps({"p99_ms": {"value": 12.25, "unit": "ms", "baseline": None, "ratio": None}})
    )
    report = _report()
    rows = report.rows(tmp_path)
    assert rows == [("a", "p99_ms", "12.25", "ms", "-", "-"), ("b", "fanout_100k_s", "2.5", "s", "25", "10")]
    table = report.render(rows).splitlines()
    assert table[0].split() == ["bench", "metric", "value", "unit", "baseline", "ratio"]
    assert len(table) == 4


def test_an_unreadable_file_is_reported_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("{")
    rows = _report().rows(tmp_path)
    assert rows[0][:2] == ("broken", "(unreadable)")


def test_no_results_is_an_error(tmp_path: Path) -> None:
    assert _report().main(["report", str(tmp_path)]) == 1
