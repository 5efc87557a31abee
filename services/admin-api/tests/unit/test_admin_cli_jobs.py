"""``jobs replay``: its arguments, its JSON line and its exit code."""

from __future__ import annotations

import json

import pytest

from restock_admin.cli import parse_args
from restock_admin.jobs.replay_report import EXIT_REPLAYED, EXIT_SOME_REFUSED, exit_code, report
from restock_common.replay import ReplayResult


def test_jobs_replay_arguments() -> None:
    args = parse_args(["jobs", "replay", "--job", "12", "--job", "13", "--actor", "ops@example.com"])
    assert (args.command, args.jobs_command) == ("jobs", "replay")
    assert (args.job_ids, args.actor, args.reason) == ([12, 13], "ops@example.com", "")
    assert (
        parse_args(["jobs", "replay", "--job", "1", "--actor", "a", "--reason", "outage"]).reason == "outage"
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["jobs", "replay", "--actor", "ops"],
        ["jobs", "replay", "--job", "12"],
        ["jobs", "replay", "--job", "x", "--actor", "ops"],
        ["jobs", "replay", "--job", "0", "--actor", "ops"],
        ["jobs", "replay", "--job", "1", "--actor", "  "],
        ["jobs"],
    ],
)
def test_invalid_jobs_replay_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(argv)
    assert exited.value.code == 2
    assert capsys.readouterr().err


def test_report_and_exit_code() -> None:
    full = ReplayResult([12, 13], {})
    partial = ReplayResult([12], {13: "opted-out"})
    assert json.loads(report(full)) == {"replayed": [12, 13], "refused": {}}
    assert json.loads(report(partial)) == {"replayed": [12], "refused": {"13": "opted-out"}}
    assert (exit_code(full), exit_code(partial)) == (EXIT_REPLAYED, EXIT_SOME_REFUSED)
