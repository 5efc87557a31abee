"""The named kill points: what an armed value means, and that the process dies exactly on the nth reach."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from restock_common.faults import FaultPoints, parse_armed


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, (None, 0)),
        ("", (None, 0)),
        ("  ", (None, 0)),
        ("after_claim", ("after_claim", 1)),
        ("after_claim@1", ("after_claim", 1)),
        ("after_claim@500", ("after_claim", 500)),
        (" before_provider_call@3 ", ("before_provider_call", 3)),
    ],
)
def test_parse_armed(value: str | None, expected: tuple[str | None, int]) -> None:
    assert parse_armed(value) == expected


@pytest.mark.parametrize("value", ["@3", "after_claim@", "after_claim@0", "after_claim@-1", "after_claim@x"])
def test_a_malformed_point_is_refused_at_startup(value: str) -> None:
    with pytest.raises(ValueError, match="fault point"):
        FaultPoints(value)


def test_unarmed_and_other_points_never_kill() -> None:
    FaultPoints(None).reach("after_claim")
    armed = FaultPoints("after_claim@2")
    for _ in range(10):
        armed.reach("before_provider_call")
    assert armed.remaining == 2


def _run(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)


def test_the_process_dies_by_sigkill_on_the_nth_reach_and_not_before() -> None:
    script = (
        "from restock_common.faults import FaultPoints\n"
        "points = FaultPoints('after_claim@3')\n"
        "for i in range(1, 6):\n"
        "    print(i, flush=True)\n"
        "    points.reach('after_claim')\n"
    )
    done = _run(script)
    assert done.returncode == -signal.SIGKILL
    assert done.stdout.split() == ["1", "2", "3"]
