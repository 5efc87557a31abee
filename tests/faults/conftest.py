"""Prints the fault suite's figures (one row per case) at the end of the run, pass or fail."""

from __future__ import annotations

import pytest
from fault_rig import RESULTS, TABLE_HEADER


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RESULTS:
        return
    terminalreporter.section("fault suite: every case, accounted")
    terminalreporter.write_line(TABLE_HEADER)
    for result in RESULTS:
        terminalreporter.write_line(result.row())
