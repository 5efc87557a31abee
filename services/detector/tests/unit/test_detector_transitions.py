"""The restock rules, as a table of (previous, current, last restock, rules) -> decision, plus properties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from restock_common.rules import Rules
from restock_detector.transitions import NoRestock, Reason, Restock, decide

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DAY = 86_400
RULES = Rules(cooldown_seconds=DAY, min_quantity=1, debounce_seconds=0)
NEVER = None


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("previous", "current", "last_restock_at", "rules", "expected"),
    [
        # the one rule that fires: out of stock -> enough stock, no recent restock
        (0, 5, NEVER, RULES, Restock(5)),
        (0, 1, NEVER, RULES, Restock(1)),
        (-3, 2, NEVER, RULES, Restock(2)),  # oversold counts as out of stock
        (0, 5, ago(DAY), RULES, Restock(5)),  # cooldown just over
        (0, 5, ago(DAY + 1), RULES, Restock(5)),
        (0, 5, ago(10), Rules(cooldown_seconds=0, debounce_seconds=0), Restock(5)),  # no cooldown at all
        (0, 3, NEVER, Rules(min_quantity=3, debounce_seconds=0), Restock(3)),
        # was already available
        (5, 7, NEVER, RULES, NoRestock(Reason.WAS_AVAILABLE)),
        (1, 0, NEVER, RULES, NoRestock(Reason.WAS_AVAILABLE)),
        (7, 7, ago(2 * DAY), RULES, NoRestock(Reason.WAS_AVAILABLE)),
        # still nothing to buy
        (0, 0, NEVER, RULES, NoRestock(Reason.STILL_OUT)),
        (0, -1, NEVER, RULES, NoRestock(Reason.STILL_OUT)),
        (-2, -1, NEVER, RULES, NoRestock(Reason.STILL_OUT)),
        (
            0,
            0,
            NEVER,
            Rules(min_quantity=0, debounce_seconds=0),
            NoRestock(Reason.STILL_OUT),
        ),  # min 0 never means "0 is back"
        # too few to alert about
        (0, 2, NEVER, Rules(min_quantity=3, debounce_seconds=0), NoRestock(Reason.TOO_FEW)),
        # a flapping level inside the cooldown
        (0, 3, ago(60), RULES, NoRestock(Reason.COOLDOWN)),
        (0, 3, ago(DAY - 1), RULES, NoRestock(Reason.COOLDOWN)),
        (0, 3, NOW + timedelta(seconds=5), RULES, NoRestock(Reason.COOLDOWN)),  # clock skew: stay quiet
        # the first guard that holds is the reason
        (4, 0, ago(60), RULES, NoRestock(Reason.WAS_AVAILABLE)),
        (0, 0, ago(60), RULES, NoRestock(Reason.STILL_OUT)),
        (0, 1, ago(60), Rules(min_quantity=2, debounce_seconds=0), NoRestock(Reason.TOO_FEW)),
    ],
)
def test_decide(
    previous: int, current: int, last_restock_at: datetime | None, rules: Rules, expected: object
) -> None:
    assert decide(previous, current, last_restock_at, NOW, rules) == expected


levels = st.integers(min_value=-1_000, max_value=1_000_000)
restock_times = st.none() | st.integers(min_value=-10 * DAY, max_value=10 * DAY).map(
    lambda seconds: NOW - timedelta(seconds=seconds)
)
rule_sets = st.builds(
    Rules,
    cooldown_seconds=st.integers(min_value=0, max_value=30 * DAY),
    min_quantity=st.integers(-5, 50),
    debounce_seconds=st.just(0),
)


@given(previous=levels, current=levels, last_restock_at=restock_times, rules=rule_sets)
def test_restock_exactly_when_every_rule_allows_it(
    previous: int, current: int, last_restock_at: datetime | None, rules: Rules
) -> None:
    decision = decide(previous, current, last_restock_at, NOW, rules)
    cooled = last_restock_at is None or NOW - last_restock_at >= timedelta(seconds=rules.cooldown_seconds)
    should_fire = previous <= 0 and current > 0 and current >= rules.min_quantity and cooled
    assert isinstance(decision, Restock) == should_fire
    if isinstance(decision, Restock):
        assert decision.available == current


@given(current=levels, last_restock_at=restock_times, rules=rule_sets)
def test_never_fires_while_in_stock_or_out_of_stock(
    current: int, last_restock_at: datetime | None, rules: Rules
) -> None:
    assert isinstance(decide(1, current, last_restock_at, NOW, rules), NoRestock)
    assert isinstance(decide(0, min(current, 0), last_restock_at, NOW, rules), NoRestock)


@given(previous=levels, current=levels, rules=rule_sets)
def test_a_restock_starts_a_cooldown_that_silences_the_next_flap(
    previous: int, current: int, rules: Rules
) -> None:
    """Whatever fired now cannot fire again before the cooldown ends."""
    if isinstance(decide(previous, current, None, NOW, rules), Restock) and rules.cooldown_seconds > 0:
        later = NOW + timedelta(seconds=rules.cooldown_seconds - 1)
        assert decide(previous, current, NOW, later, rules) == NoRestock(Reason.COOLDOWN)
