"""``bench/tools/machine.py``: the steal and run-queue figures printed beside the detector bench's
latencies, from ``/proc`` text and from this process's own counters."""

from __future__ import annotations

import os
import time
from types import ModuleType

import pytest

STAT = """cpu  35629 12 10143 92431 1198 0 1458 5532 0 0
cpu0 17000 6 5000 46000 600 0 700 2700 0 0
intr 1 2 3
"""


def test_the_aggregate_line_gives_all_ticks_and_steal(machine: ModuleType) -> None:
    assert machine.parse_stat(STAT) == (35629 + 12 + 10143 + 92431 + 1198 + 0 + 1458 + 5532, 5532)


def test_a_stat_without_an_aggregate_line_is_an_error(machine: ModuleType) -> None:
    with pytest.raises(ValueError, match="aggregate"):
        machine.parse_stat("cpu0 1 2 3 4 5 6 7 8\n")


def test_schedstat_is_time_on_cpu_then_time_waiting(machine: ModuleType) -> None:
    assert machine.parse_schedstat("1500000000 250000000 812\n") == (1_500_000_000, 250_000_000)


@pytest.mark.parametrize(
    ("before", "after", "wall_s", "expected"),
    [
        # 1,000 ticks of which 100 stolen; 0.5 s on a CPU and 0.25 s waiting over 1 s of wall time.
        ((0, 0, 0, 0), (1000, 100, 500_000_000, 250_000_000), 1.0, (10.0, 50.0, 25.0)),
        # Nothing moved (a run shorter than a tick): zero, not a division by zero.
        ((5, 1, 7, 7), (5, 1, 7, 7), 2.0, (0.0, 0.0, 0.0)),
    ],
)
def test_usage_is_the_difference_of_two_samples(
    machine: ModuleType,
    before: tuple[int, int, int, int],
    after: tuple[int, int, int, int],
    wall_s: float,
    expected: tuple[float, float, float],
) -> None:
    used = machine.usage(machine.Sample(*before), machine.Sample(*after), wall_s)
    assert (used.steal_pct, used.cpu_pct, used.runqueue_wait_pct) == pytest.approx(expected)


def test_a_busy_process_sees_its_own_cpu_time_grow(machine: ModuleType) -> None:
    before = machine.sample(os.getpid())
    began = time.perf_counter()
    while time.perf_counter() - began < 0.2:
        pass
    after = machine.sample(os.getpid())
    used = machine.usage(before, after, time.perf_counter() - began)
    assert after.cpu_ticks > before.cpu_ticks
    assert used.cpu_pct > 0
    assert 0 <= used.steal_pct <= 100
