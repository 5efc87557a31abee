"""Inventory-aware waves, as rules (pure: no I/O, the clock passed in).

Theory of operation
-------------------
With a shop's ``waves_enabled`` rule on, a restock's frozen targets are ``waiting`` jobs in a line ordered
by subscription time (FIFO), and the planner lets them go in *waves*:

- A wave releases at most ``available x shoppers_per_unit`` targets, the first ones in line.
- A line belongs to one restock window (``restock_common.keys``): the notification key of a waiting job
  names its window, so a job may be released only while its window is the current one. A new window
  starts a new line (wave numbers restart at 1) and its first wave goes at once.
- The next wave of a line goes when ``wave_interval_seconds`` have passed since the previous wave started
  AND stock remains; the plan is re-made on every restock, stock change and timer tick, with the
  availability of that moment. A sell-out (``available <= 0``) holds the rest of the line: those targets
  keep their place at the front of the line for the next restock.
- Nobody waiting: the plan goes idle. Waves off: everybody goes at once (``wave`` is ``None``).

Each held target's job records why (``held:quota``: beyond this wave's size; ``held:sold-out``); each
released one its wave (``wave:<n>``). ``plan`` decides how many to release; ``assign`` labels a FIFO
stream of targets with that decision, for the dry run and the tests.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TypeVar

from restock_common.jobs import WavePlanStatus
from restock_common.rules import Rules


class Reason(enum.StrEnum):
    """Why a plan released what it released (or nothing)."""

    RELEASED = "released"  # a wave went: its size, the rest held by quota
    WAVES_OFF = "waves-off"  # the shop does not use waves: everybody at once
    SOLD_OUT = "sold-out"  # no stock: the line waits for the next restock
    WAITING_FOR_INTERVAL = "waiting-for-interval"  # the previous wave is younger than the interval
    NOBODY_WAITING = "nobody-waiting"  # the line is empty


Status = WavePlanStatus  # ``wave_plans.status``; the detector reads it too, so it is defined in common


@dataclass(frozen=True)
class PlanState:
    """What a variant's plan remembers between decisions (a row of ``wave_plans``)."""

    window: int | None = None  # the restock window of the current line
    wave: int = 0  # the last wave released in that window
    last_wave_at: datetime | None = None  # when that wave started


@dataclass(frozen=True)
class Decision:
    """The planner's answer: release ``release`` targets as wave ``wave`` (or nothing, and why)."""

    release: int
    wave: int | None
    reason: Reason
    status: Status
    next_wave_at: datetime | None
    state: PlanState  # the state to store

    @property
    def held_decision(self) -> str | None:
        """The ``decision`` of the targets left waiting (None: nobody is held by this decision)."""
        if self.reason is Reason.SOLD_OUT:
            return "held:sold-out"
        if self.reason in (Reason.RELEASED, Reason.WAITING_FOR_INTERVAL) and self.status is Status.ACTIVE:
            return "held:quota"
        return None


def wave_size(available: int, rules: Rules) -> int:
    """How many targets one wave may release with ``available`` units in stock (at least one shopper per
    unit: a rule of 0 would hold the line forever)."""
    return max(0, available) * max(1, rules.shoppers_per_unit)


def plan(
    state: PlanState, *, window: int, available: int, waiting: int, rules: Rules, now: datetime
) -> Decision:
    """Decide the next wave of a variant's line.

    ``waiting`` is how many targets of ``window`` are waiting (a count capped above the wave size is
    enough: the planner only needs to know whether some remain after the wave).
    """
    if not rules.waves_enabled:
        return Decision(waiting, None, Reason.WAVES_OFF, Status.IDLE, None, state)
    if state.window != window:
        state = PlanState(window=window)  # a new window: a new line, whose first wave goes at once
    if waiting <= 0:
        return Decision(0, None, Reason.NOBODY_WAITING, Status.IDLE, None, state)
    if available <= 0:
        return Decision(0, None, Reason.SOLD_OUT, Status.SOLD_OUT, None, state)
    interval = timedelta(seconds=rules.wave_interval_seconds)
    if state.last_wave_at is not None and now < state.last_wave_at + interval:
        due = state.last_wave_at + interval
        return Decision(0, None, Reason.WAITING_FOR_INTERVAL, Status.ACTIVE, due, state)
    release = min(wave_size(available, rules), waiting)
    released = replace(state, wave=state.wave + 1, last_wave_at=now)
    if release < waiting:
        return Decision(release, released.wave, Reason.RELEASED, Status.ACTIVE, now + interval, released)
    return Decision(release, released.wave, Reason.RELEASED, Status.IDLE, None, released)


def schedule(
    state: PlanState, *, window: int, available: int, rules: Rules, now: datetime
) -> Iterator[Decision]:
    """The decisions a line would get if stock stayed at ``available`` and the line never ran out: the
    planner asked again at each ``next_wave_at`` (the dry run's projection). Ends after a decision that
    schedules nothing more (sold out, waves off)."""
    unbounded = wave_size(available, rules) + 1
    while True:
        decision = plan(state, window=window, available=available, waiting=unbounded, rules=rules, now=now)
        yield decision
        if decision.next_wave_at is None:
            return
        state, now = decision.state, decision.next_wave_at


T = TypeVar("T")


def assign(targets: Iterable[T], decision: Decision) -> Iterator[tuple[T, str]]:
    """Label a FIFO stream of waiting targets with the job ``decision`` this plan gives each: the first
    ``release`` get ``wave:<n>`` (``released`` with waves off), the rest their hold reason."""
    released = f"wave:{decision.wave}" if decision.wave is not None else "released"
    held = decision.held_decision or "waiting"
    for position, target in enumerate(targets):
        yield target, released if position < decision.release else held
