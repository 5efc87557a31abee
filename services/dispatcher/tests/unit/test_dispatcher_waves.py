"""The wave planner: a decision table, then properties of lines driven through random restocks, sales and
ticks (hypothesis)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from restock_common.rules import Rules
from restock_dispatcher import waves
from restock_dispatcher.waves import Decision, PlanState, Reason, Status

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
ON = Rules(waves_enabled=True, shoppers_per_unit=3, wave_interval_seconds=1800)
MIN = timedelta(minutes=1)


@pytest.mark.parametrize(
    ("state", "window", "available", "waiting", "rules", "expected"),
    [
        # Waves off: everybody at once.
        (PlanState(), 7, 5, 40, Rules(), (40, None, Reason.WAVES_OFF, Status.IDLE, None)),
        # A first restock: wave 1 of available x 3, the rest held for 30 minutes.
        (PlanState(), 7, 5, 40, ON, (15, 1, Reason.RELEASED, Status.ACTIVE, T0 + 30 * MIN)),
        # A line shorter than the wave: everybody, and the plan goes idle.
        (PlanState(), 7, 5, 10, ON, (10, 1, Reason.RELEASED, Status.IDLE, None)),
        # Sold out: nobody, no next wave; the line keeps its place.
        (PlanState(7, 1, T0 - MIN), 7, 0, 25, ON, (0, None, Reason.SOLD_OUT, Status.SOLD_OUT, None)),
        (PlanState(7, 1, T0 - MIN), 7, -2, 25, ON, (0, None, Reason.SOLD_OUT, Status.SOLD_OUT, None)),
        # Stock left but the previous wave is 10 minutes old: wait for its interval.
        (
            PlanState(7, 1, T0 - 10 * MIN),
            7,
            4,
            25,
            ON,
            (0, None, Reason.WAITING_FOR_INTERVAL, Status.ACTIVE, T0 + 20 * MIN),
        ),
        # The interval has passed: wave 2 with the stock of now (a sale shrank it to 2 units).
        (PlanState(7, 1, T0 - 30 * MIN), 7, 2, 25, ON, (6, 2, Reason.RELEASED, Status.ACTIVE, T0 + 30 * MIN)),
        # A new window: a new line, wave 1 at once, whatever the old line's last wave.
        (PlanState(6, 4, T0 - MIN), 7, 1, 25, ON, (3, 1, Reason.RELEASED, Status.ACTIVE, T0 + 30 * MIN)),
        # Nobody waiting.
        (PlanState(7, 2, T0 - 40 * MIN), 7, 9, 0, ON, (0, None, Reason.NOBODY_WAITING, Status.IDLE, None)),
        # Zero shoppers per unit counts as one: a rule of 0 would hold the line forever.
        (
            PlanState(),
            7,
            2,
            3,
            Rules(waves_enabled=True, shoppers_per_unit=0),
            (2, 1, Reason.RELEASED, Status.ACTIVE, T0 + 30 * MIN),
        ),
    ],
)
def test_plan_decision_table(
    state: PlanState,
    window: int,
    available: int,
    waiting: int,
    rules: Rules,
    expected: tuple[int, int | None, Reason, Status, datetime | None],
) -> None:
    decision = waves.plan(state, window=window, available=available, waiting=waiting, rules=rules, now=T0)
    assert (
        decision.release,
        decision.wave,
        decision.reason,
        decision.status,
        decision.next_wave_at,
    ) == expected


def test_a_released_wave_is_remembered_and_the_next_one_counts_from_it() -> None:
    first = waves.plan(PlanState(), window=7, available=5, waiting=40, rules=ON, now=T0)
    assert first.state == PlanState(window=7, wave=1, last_wave_at=T0)
    later = T0 + 31 * MIN
    second = waves.plan(first.state, window=7, available=5, waiting=25, rules=ON, now=later)
    assert (second.wave, second.release, second.state.last_wave_at) == (2, 15, later)


@pytest.mark.parametrize(
    ("reason", "status", "held"),
    [
        (Reason.RELEASED, Status.ACTIVE, "held:quota"),
        (Reason.WAITING_FOR_INTERVAL, Status.ACTIVE, "held:quota"),
        (Reason.SOLD_OUT, Status.SOLD_OUT, "held:sold-out"),
        (Reason.RELEASED, Status.IDLE, None),
        (Reason.NOBODY_WAITING, Status.IDLE, None),
        (Reason.WAVES_OFF, Status.IDLE, None),
    ],
)
def test_held_decision(reason: Reason, status: Status, held: str | None) -> None:
    assert Decision(0, None, reason, status, None, PlanState()).held_decision == held


def test_assign_labels_the_line_fifo() -> None:
    decision = waves.plan(PlanState(), window=7, available=1, waiting=5, rules=ON, now=T0)
    assert list(waves.assign("abcde", decision)) == [
        ("a", "wave:1"),
        ("b", "wave:1"),
        ("c", "wave:1"),
        ("d", "held:quota"),
        ("e", "held:quota"),
    ]
    sold_out = waves.plan(decision.state, window=7, available=0, waiting=2, rules=ON, now=T0)
    assert list(waves.assign("de", sold_out)) == [("d", "held:sold-out"), ("e", "held:sold-out")]
    off = waves.plan(PlanState(), window=7, available=1, waiting=2, rules=Rules(), now=T0)
    assert list(waves.assign("ab", off)) == [("a", "released"), ("b", "released")]


def test_schedule_projects_waves_at_each_interval_with_stock_unchanged() -> None:
    schedule = waves.schedule(PlanState(), window=7, available=2, rules=ON, now=T0)
    first, second, third = next(schedule), next(schedule), next(schedule)
    assert [(d.wave, d.release, d.state.last_wave_at) for d in (first, second, third)] == [
        (1, 6, T0),
        (2, 6, T0 + 30 * MIN),
        (3, 6, T0 + 60 * MIN),
    ]
    assert [d.reason for d in waves.schedule(PlanState(), window=7, available=0, rules=ON, now=T0)] == [
        Reason.SOLD_OUT
    ]


# --- properties -----------------------------------------------------------------------------------------


@dataclass
class Row:
    """One frozen job of the model: a target in one window."""

    target: int
    window: int
    state: str = "waiting"  # waiting | notified | superseded
    decision: str = "waiting"


@dataclass
class Line:
    """The store's semantics around the planner, in memory: one variant, targets 0..n-1 in FIFO order.

    A restock freezes a row per target for its window (a target that already has one is suppressed), a
    new window supersedes the older waiting rows, and every decision is the pure planner's."""

    rules: Rules
    targets: int
    now: datetime = T0
    window: int = 0
    available: int = 0
    state: PlanState = field(default_factory=PlanState)
    next_wave_at: datetime | None = None
    rows: list[Row] = field(default_factory=list)
    # (wave size, window, wave, ids released)
    waves_released: list[tuple[int, int, int, list[int]]] = field(default_factory=list)

    def waiting(self) -> list[Row]:
        return [r for r in self.rows if r.window == self.window and r.state == "waiting"]

    def restock(self, quantity: int, new_window: bool) -> None:
        if new_window or not self.rows:
            self.window += 1
            for row in self.rows:
                if row.state == "waiting":
                    row.state, row.decision = "superseded", "superseded"
        framed = {r.target for r in self.rows if r.window == self.window}
        self.rows += [Row(t, self.window) for t in range(self.targets) if t not in framed]
        self.replan(quantity)

    def stock_changed(self, quantity: int) -> None:
        if self.rows:
            self.replan(quantity)

    def tick(self, minutes: int) -> None:
        self.now += timedelta(minutes=minutes)
        if self.next_wave_at is not None and self.now >= self.next_wave_at:
            self.replan(self.available)

    def replan(self, available: int) -> None:
        self.available = available
        line = self.waiting()
        decision = waves.plan(
            self.state,
            window=self.window,
            available=available,
            waiting=len(line),
            rules=self.rules,
            now=self.now,
        )
        released = [row for row, label in waves.assign(line, decision) if label.startswith("wave:")]
        for row, label in waves.assign(line, decision):
            row.decision = label
            if label.startswith("wave:"):
                row.state = "notified"
        if decision.wave is not None:
            # The rule, computed here rather than by the planner under test.
            size = max(0, available) * max(1, self.rules.shoppers_per_unit)
            self.waves_released.append((size, self.window, decision.wave, [row.target for row in released]))
        self.state, self.next_wave_at = decision.state, decision.next_wave_at


Step = tuple[str, int, bool]
steps = st.lists(
    st.one_of(
        st.tuples(st.just("restock"), st.integers(0, 6), st.booleans()),
        st.tuples(st.just("stock"), st.integers(-1, 6), st.just(False)),
        st.tuples(st.just("tick"), st.integers(0, 45), st.just(False)),
    ),
    max_size=25,
)


def run(line: Line, script: list[Step]) -> Line:
    for kind, amount, flag in script:
        if kind == "restock":
            line.restock(amount, flag)
        elif kind == "stock":
            line.stock_changed(amount)
        else:
            line.tick(amount)
    return line


def lines() -> st.SearchStrategy[Line]:
    return st.builds(
        Line,
        rules=st.builds(
            Rules,
            waves_enabled=st.just(True),
            shoppers_per_unit=st.integers(0, 4),
            wave_interval_seconds=st.sampled_from([0, 60, 1800]),
        ),
        targets=st.integers(0, 40),
    )


@settings(max_examples=300, deadline=None)
@given(lines(), steps)
def test_no_wave_releases_more_than_the_rule_allows(line: Line, script: list[Step]) -> None:
    for size, _, _, released in run(line, script).waves_released:
        assert len(released) <= size


@settings(max_examples=300, deadline=None)
@given(lines(), steps)
def test_fifo_within_and_across_waves_and_restocks(line: Line, script: list[Step]) -> None:
    run(line, script)
    for window in {row.window for row in line.rows}:
        rows = [row for row in line.rows if row.window == window]
        notified = [row.target for row in rows if row.state == "notified"]
        # Released in waves, in order: the concatenation of the waves is FIFO...
        in_waves = [t for _, w, _, ids in line.waves_released if w == window for t in ids]
        assert in_waves == sorted(notified)
        # ... and nobody still waiting (or superseded) was ever overtaken by someone behind them.
        not_notified = [row.target for row in rows if row.state != "notified"]
        if notified and not_notified:
            assert max(notified) < min(not_notified)


@settings(max_examples=300, deadline=None)
@given(lines(), steps)
def test_nobody_is_notified_twice_in_one_window(line: Line, script: list[Step]) -> None:
    run(line, script)
    per_window = [(row.window, row.target) for row in line.rows if row.state == "notified"]
    assert len(per_window) == len(set(per_window))
    # Every release flipped exactly one waiting row: the planner never releases more than the line holds.
    assert sum(len(ids) for _, _, _, ids in line.waves_released) == len(per_window)


@settings(max_examples=300, deadline=None)
@given(lines(), steps)
def test_every_frozen_target_ends_notified_waiting_or_suppressed_with_a_reason(
    line: Line, script: list[Step]
) -> None:
    run(line, script)
    for row in line.rows:
        if row.state == "notified":
            assert row.decision.startswith("wave:")
        elif row.state == "waiting":
            assert row.decision in {"waiting", "held:quota", "held:sold-out"}
        else:
            assert (row.state, row.decision) == ("superseded", "superseded")
