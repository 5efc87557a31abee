"""The confirmation rule in ``transitions``: a table of (our total, the Admin API's answer, time past the
debounce) -> decision, and the arming that makes the read happen outside any transaction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from restock_common.rules import Rules
from restock_detector.transitions import (
    CONFIRMATION_GRACE,
    Arm,
    Confirmation,
    Decision,
    Disarm,
    Memory,
    NoRestock,
    Reason,
    Restock,
    decide,
    expire,
    observe,
)

ARMED_AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CONFIRMED = Rules(debounce_seconds=300, confirm_with_admin_api=True, min_quantity=2)
AT_ONCE = Rules(debounce_seconds=0, confirm_with_admin_api=True)
DUE = ARMED_AT + timedelta(seconds=300)
UNREACHABLE = Confirmation(None)


@pytest.mark.parametrize(
    ("current", "confirmation", "now", "expected"),
    [
        # before the debounce ends nothing is asked
        (5, Confirmation(5), DUE - timedelta(seconds=1), NoRestock(Reason.ARMED)),
        # our own guards first: no read can bring back what our snapshots say is gone
        (0, Confirmation(9), DUE, Disarm(Reason.STILL_OUT)),
        (1, Confirmation(9), DUE, Disarm(Reason.TOO_FEW)),
        # the read decides
        (5, None, DUE, NoRestock(Reason.AWAITING_CONFIRMATION)),  # not read yet: wait for the scheduler
        (5, Confirmation(4), DUE, Restock(4)),  # Shopify's number is the one announced
        (5, Confirmation(2), DUE, Restock(2)),
        (5, Confirmation(1), DUE, Disarm(Reason.NOT_CONFIRMED)),  # under min_quantity at Shopify
        (5, Confirmation(0), DUE, Disarm(Reason.NOT_CONFIRMED)),  # a phantom restock
        (5, Confirmation(-3), DUE, Disarm(Reason.NOT_CONFIRMED)),
        # the Admin API out of reach: wait, then let our snapshots decide
        (5, UNREACHABLE, DUE, NoRestock(Reason.AWAITING_CONFIRMATION)),
        (
            5,
            UNREACHABLE,
            DUE + CONFIRMATION_GRACE - timedelta(seconds=1),
            NoRestock(Reason.AWAITING_CONFIRMATION),
        ),
        (5, UNREACHABLE, DUE + CONFIRMATION_GRACE, Restock(5)),
        # a webhook settling a due variant never reads: it waits even past the grace
        (5, None, DUE + 2 * CONFIRMATION_GRACE, NoRestock(Reason.AWAITING_CONFIRMATION)),
    ],
)
def test_an_armed_restock_fires_only_when_the_admin_api_confirms_it(
    current: int, confirmation: Confirmation | None, now: datetime, expected: Decision
) -> None:
    assert expire(ARMED_AT, current, None, now, CONFIRMED, confirmation) == expected


def test_without_the_rule_the_read_is_ignored() -> None:
    rules = Rules(debounce_seconds=300)
    assert expire(ARMED_AT, 5, None, DUE, rules, Confirmation(0)) == Restock(5)


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        (Rules(debounce_seconds=0), Restock(5)),
        (AT_ONCE, Arm(ARMED_AT)),  # no debounce, but the read still happens first, due at once
        (CONFIRMED, Arm(DUE)),
    ],
)
def test_with_the_rule_every_restock_is_armed_first(rules: Rules, expected: Decision) -> None:
    assert decide(0, 5, None, ARMED_AT, rules) == expected


def test_cooldown_wins_over_a_confirmation() -> None:
    assert expire(ARMED_AT, 5, DUE - timedelta(hours=1), DUE, CONFIRMED, Confirmation(5)) == Disarm(
        Reason.COOLDOWN
    )


def test_a_webhook_after_the_due_time_leaves_the_restock_to_the_scheduler() -> None:
    outcome = observe(Memory(5, None, ARMED_AT), 6, DUE + timedelta(seconds=5), CONFIRMED)
    assert outcome.expired is None  # not fired without the read
    assert outcome.decision == NoRestock(Reason.ARMED)  # still armed, still in stock
    dropped = observe(Memory(5, None, ARMED_AT), 0, DUE + timedelta(seconds=5), CONFIRMED)
    assert dropped.decision == Disarm(Reason.STILL_OUT)
