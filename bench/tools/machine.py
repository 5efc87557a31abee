"""What the machine gave a benchmark run: CPU stolen by the hypervisor, and a server's time spent waiting
for a CPU while it had work (Linux ``/proc``).

This machine is shared: at stop 17 the same code's webhook p99 went from tens of milliseconds to seconds
as the host took 2-80 % of our CPU time (``steal``). A latency figure is only comparable with another
when both runs got the same machine, so the detector bench prints these beside its figures (ADR 22).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class Sample:
    """Cumulative counters at one instant."""

    cpu_ticks: int  # every state of every CPU (/proc/stat "cpu" line), in clock ticks
    steal_ticks: int  # time the hypervisor ran something else while a CPU of ours wanted to run
    run_ns: int  # the process's main thread: time on a CPU (/proc/<pid>/schedstat)
    wait_ns: int  # and time runnable but waiting for a CPU


@dataclass(frozen=True)
class Usage:
    """Between two samples: steal as a percentage of all CPU time, and the process's CPU and run-queue
    wait as percentages of one CPU over the wall time."""

    steal_pct: float
    cpu_pct: float
    runqueue_wait_pct: float


def parse_stat(text: str) -> tuple[int, int]:
    """(all ticks, steal ticks) from ``/proc/stat``'s aggregate ``cpu`` line."""
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            ticks = [int(value) for value in fields[1:]]
            # user nice system idle iowait irq softirq steal [guest guest_nice]: guest time is already
            # counted in user and nice, so it is left out of the total.
            return sum(ticks[:8]), ticks[7] if len(ticks) > 7 else 0
    raise ValueError("no aggregate cpu line in /proc/stat")


def parse_schedstat(text: str) -> tuple[int, int]:
    """(ns on a CPU, ns waiting on a run queue) from ``/proc/<pid>/schedstat``."""
    run, wait, _slices = (int(value) for value in text.split())
    return run, wait


def sample(pid: int, proc: Path = PROC) -> Sample:
    cpu_ticks, steal_ticks = parse_stat((proc / "stat").read_text())
    run_ns, wait_ns = parse_schedstat((proc / str(pid) / "schedstat").read_text())
    return Sample(cpu_ticks, steal_ticks, run_ns, wait_ns)


def usage(before: Sample, after: Sample, wall_s: float) -> Usage:
    ticks = after.cpu_ticks - before.cpu_ticks
    steal = 100 * (after.steal_ticks - before.steal_ticks) / ticks if ticks else 0.0
    wall_ns = wall_s * 1e9
    return Usage(
        steal_pct=steal,
        cpu_pct=100 * (after.run_ns - before.run_ns) / wall_ns,
        runqueue_wait_pct=100 * (after.wait_ns - before.wait_ns) / wall_ns,
    )
