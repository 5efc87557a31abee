"""``make bench``'s summary: one table of every figure in ``bench/results/*.json`` beside its baseline
from the same run and the ratio (DESIGN.md's format: ``{"metric": {"value", "unit", "baseline",
"ratio"}}``). Run after the benchmarks; it reads their files and measures nothing itself.

Usage: ``python bench/tools/report.py [results_dir]``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent.parent / "results"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:,.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def rows(results_dir: Path) -> list[tuple[str, str, str, str, str, str]]:
    """(benchmark, metric, value, unit, baseline, ratio) for every figure, sorted by file then metric."""
    table = []
    for path in sorted(results_dir.glob("*.json")):
        try:
            figures = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            table.append((path.stem, "(unreadable)", str(error), "", "", ""))
            continue
        for metric, figure in figures.items():
            if not isinstance(figure, dict):
                continue
            table.append(
                (
                    path.stem,
                    metric,
                    _cell(figure.get("value")),
                    str(figure.get("unit", "")),
                    _cell(figure.get("baseline")),
                    _cell(figure.get("ratio")),
                )
            )
    return table


def render(table: list[tuple[str, str, str, str, str, str]]) -> str:
    header = ("bench", "metric", "value", "unit", "baseline", "ratio")
    widths = [max(len(row[i]) for row in [header, *table]) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()

    return "\n".join([line(header), line(tuple("-" * width for width in widths)), *map(line, table)])


def main(argv: list[str]) -> int:
    results_dir = Path(argv[1]) if len(argv) > 1 else RESULTS
    table = rows(results_dir)
    if not table:
        print(f"no results in {results_dir}")
        return 1
    print(render(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
