"""The debounce rules: tables for ``decide`` (arming), ``expire`` and ``observe``, and a model-based
property test: for any timed sequence of observations (duplicates, flapping, simultaneous ones) and any
moments the scheduler happens to run, the restocks the detector emits are those of a small independent
reference model of the rules."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from restock_common.rules import Rules
from restock_detector.transitions import (
    Arm,
    Disarm,
    Memory,
    NoRestock,
    Outcome,
    Reason,
    Restock,
    decide,
    due_at,
    expire,
    observe,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DAY = 86_400
RULES = Rules(debounce_seconds=300, cooldown_seconds=DAY, min_quantity=1)
NEVER = None


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("previous", "current", "last_restock_at", "armed_at", "rules", "expected"),
    [
        # out of stock -> in stock: armed until the debounce ends
        (0, 5, NEVER, NEVER, RULES, Arm(at(300))),
        (-2, 1, NEVER, NEVER, RULES, Arm(at(300))),
        (0, 5, NEVER, NEVER, Rules(debounce_seconds=0), Restock(5)),  # no debounce: fires at once
        # the cooldown is judged when it would fire, after the debounce
        (0, 5, at(-DAY + 301), NEVER, RULES, NoRestock(Reason.COOLDOWN)),
        (0, 5, at(-DAY + 300), NEVER, RULES, Arm(at(300))),
        # the other guards hold as without debounce
        (3, 5, NEVER, NEVER, RULES, NoRestock(Reason.WAS_AVAILABLE)),
        (0, 0, NEVER, NEVER, RULES, NoRestock(Reason.STILL_OUT)),
        (0, 2, NEVER, NEVER, Rules(min_quantity=3), NoRestock(Reason.TOO_FEW)),
        # armed: in stock keeps it armed, whatever the total; out of stock or too few disarms it
        (5, 7, NEVER, at(-10), RULES, NoRestock(Reason.ARMED)),
        (5, 1, NEVER, at(-10), RULES, NoRestock(Reason.ARMED)),
        (5, 0, NEVER, at(-10), RULES, Disarm(Reason.STILL_OUT)),
        (5, -1, NEVER, at(-10), RULES, Disarm(Reason.STILL_OUT)),
        (5, 2, NEVER, at(-10), Rules(min_quantity=3), Disarm(Reason.TOO_FEW)),
    ],
)
def test_decide_with_debounce(
    previous: int,
    current: int,
    last_restock_at: datetime | None,
    armed_at: datetime | None,
    rules: Rules,
    expected: object,
) -> None:
    assert decide(previous, current, last_restock_at, NOW, rules, armed_at=armed_at) == expected


ARMED = at(-300)  # armed 300 s ago: due now under RULES


@pytest.mark.parametrize(
    ("armed_at", "current", "last_restock_at", "rules", "expected"),
    [
        (ARMED, 5, NEVER, RULES, Restock(5)),
        (at(-1000), 2, NEVER, RULES, Restock(2)),  # a late scheduler still fires
        (at(-299), 5, NEVER, RULES, NoRestock(Reason.ARMED)),  # not yet
        (ARMED, 0, NEVER, RULES, Disarm(Reason.STILL_OUT)),
        (ARMED, 2, NEVER, Rules(debounce_seconds=300, min_quantity=3), Disarm(Reason.TOO_FEW)),
        # the cooldown is judged at the end of the debounce, not when the scheduler gets there
        (ARMED, 5, at(-DAY + 1), RULES, Disarm(Reason.COOLDOWN)),
        (at(-1000), 5, at(-DAY - 699), RULES, Disarm(Reason.COOLDOWN)),
        (ARMED, 5, at(-DAY), RULES, Restock(5)),
    ],
)
def test_expire(
    armed_at: datetime, current: int, last_restock_at: datetime | None, rules: Rules, expected: object
) -> None:
    assert expire(armed_at, current, last_restock_at, NOW, rules) == expected


@pytest.mark.parametrize(
    ("memory", "current", "expected"),
    [
        # an ended debounce is settled with the total that held until now, then the change is judged
        (Memory(5, NEVER, ARMED), 0, Outcome(Restock(5), NoRestock(Reason.WAS_AVAILABLE))),
        (Memory(5, NEVER, ARMED), 8, Outcome(Restock(5), NoRestock(Reason.WAS_AVAILABLE))),
        (
            Memory(5, at(-DAY + 1), ARMED),
            0,
            Outcome(Disarm(Reason.COOLDOWN), NoRestock(Reason.WAS_AVAILABLE)),
        ),
        # not ended yet: only the change is judged
        (Memory(5, NEVER, at(-299)), 0, Outcome(None, Disarm(Reason.STILL_OUT))),
        (Memory(5, NEVER, at(-299)), 9, Outcome(None, NoRestock(Reason.ARMED))),
        (Memory(0, NEVER, NEVER), 4, Outcome(None, Arm(at(300)))),
    ],
)
def test_observe(memory: Memory, current: int, expected: Outcome) -> None:
    assert observe(memory, current, NOW, RULES) == expected


# The model-based property test.

Event = tuple[int, int]  # (second it fires at, units available)


def reference(observations: list[tuple[int, int]], rules: Rules) -> list[Event]:
    """The rules restated over the whole timeline: a rise from <= 0 to the threshold at ``t`` fires at
    ``t + debounce`` with the last level seen before then, unless the level fell under the threshold
    before then or the previous restock is closer than the cooldown. Later observations at one second
    come after earlier ones; an observation at the very end of a debounce comes after the restock."""
    threshold = max(rules.min_quantity, 1)
    events: list[Event] = []
    previous, i = 0, 0
    while i < len(observations):
        start, level = observations[i]
        if previous > 0 or level < threshold:
            previous, i = level, i + 1
            continue
        fire_at, last, j = start + rules.debounce_seconds, level, i + 1
        while j < len(observations) and observations[j][0] < fire_at and observations[j][1] >= threshold:
            last, j = observations[j][1], j + 1
        held = j == len(observations) or observations[j][0] >= fire_at
        cooled = not events or fire_at - events[-1][0] >= rules.cooldown_seconds
        if held and cooled:
            events.append((fire_at, last))
        previous, i = observations[j - 1][1], j
    return events


@dataclass
class Detector:
    """The detector's decisions over time, driven the way the handler and the scheduler drive them."""

    rules: Rules
    memory: Memory = field(default_factory=lambda: Memory(0, None, None))

    def __post_init__(self) -> None:
        self.events: list[Event] = []

    def fire(self, available: int, fired_at: datetime) -> None:
        self.events.append((int((fired_at - NOW).total_seconds()), available))

    def scheduler_tick(self, now: datetime) -> None:
        armed_at = self.memory.armed_at
        if armed_at is None:
            return
        settled = expire(armed_at, self.memory.available, self.memory.last_restock_at, now, self.rules)
        if isinstance(settled, Restock):
            self.fire(settled.available, due_at(armed_at, self.rules))
            self.memory = Memory(self.memory.available, due_at(armed_at, self.rules), None)
        elif isinstance(settled, Disarm):
            self.memory = Memory(self.memory.available, self.memory.last_restock_at, None)

    def webhook(self, level: int, now: datetime) -> None:
        outcome = observe(self.memory, level, now, self.rules)
        last, armed = self.memory.last_restock_at, self.memory.armed_at
        if isinstance(outcome.expired, Restock):
            assert armed is not None
            last = due_at(armed, self.rules)
            self.fire(outcome.expired.available, last)
        if outcome.expired is not None:
            armed = None
        decision = outcome.decision
        if isinstance(decision, Restock):
            self.fire(decision.available, now)
            last = now
        keep = isinstance(decision, Arm) or decision == NoRestock(Reason.ARMED)
        self.memory = Memory(level, last, (now if isinstance(decision, Arm) else armed) if keep else None)


timelines = st.lists(
    st.tuples(st.integers(0, 4), st.integers(-1, 5), st.none() | st.integers(0, 6)), max_size=30
)
debounce_rules = st.builds(
    Rules,
    debounce_seconds=st.sampled_from([0, 1, 2, 3, 5, 8]),
    cooldown_seconds=st.sampled_from([0, 1, 3, 6, 10, 30]),
    min_quantity=st.integers(-1, 4),
)


@settings(max_examples=500)
@given(timeline=timelines, rules=debounce_rules)
def test_the_detector_emits_what_the_reference_model_says(
    timeline: list[tuple[int, int, int | None]], rules: Rules
) -> None:
    """Each step: a gap in seconds, a level, and whether (and how late) the scheduler runs first."""
    detector, observations, second = Detector(rules), [], 0
    for gap, level, tick in timeline:
        if tick is not None:
            detector.scheduler_tick(at(second + min(tick, gap)))
        second += gap
        detector.webhook(level, at(second))
        observations.append((second, level))
    detector.scheduler_tick(at(second + rules.debounce_seconds + 1))  # the end of time
    assert detector.events == reference(observations, rules)


def test_the_reference_model_says_what_the_issue_says() -> None:
    """The model itself, on the issue's examples (so a wrong model cannot make the property pass)."""
    rules = Rules(debounce_seconds=2, cooldown_seconds=10)
    assert reference([(0, 0), (1, 5)], rules) == [(3, 5)]  # held past the debounce
    assert reference([(0, 5), (1, 0)], rules) == []  # dropped before it ended
    assert reference([(0, 5), (2, 0)], rules) == [(2, 5)]  # dropped just as it ended
    assert reference([(0, 5), (1, 3), (1, 4)], rules) == [(2, 4)]  # the last level counts
    assert reference([(0, 5), (5, 0), (6, 5), (20, 0), (21, 5)], rules) == [(2, 5), (23, 5)]  # cooldown
    assert reference([(0, 5)], Rules(debounce_seconds=0)) == [(0, 5)]


@settings(max_examples=500)
@given(
    available=st.integers(-2, 6),
    current=st.integers(-2, 6),
    armed=st.none() | st.integers(0, 40),
    last=st.none() | st.integers(0, 40),
    now=st.integers(0, 80),
    rules=debounce_rules,
)
def test_an_observation_fires_at_most_one_restock(
    available: int, current: int, armed: int | None, last: int | None, now: int, rules: Rules
) -> None:
    """The two-trip webhook writes at most one restock per observation (``optimistic.CollectedWrites``)."""
    memory = Memory(available, None if last is None else at(last), None if armed is None else at(armed))
    outcome = observe(memory, current, at(max(now, armed or 0, last or 0)), rules)
    assert not (isinstance(outcome.expired, Restock) and isinstance(outcome.decision, Restock))
