"""The dry run's pure parts: why a subscription would be left out, and how the line is labelled."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from restock_common.rules import Rules
from restock_dispatcher import waves
from restock_dispatcher.dry_run import Labeller, suppression

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
LIVE = {
    "state": "confirmed",
    "unsubscribed_at": None,
    "fulfilled_at": None,
    "notified_count": 0,
    "holder_state": None,
}


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({}, None),
        ({"holder_state": "waiting"}, None),  # still in this window's line
        ({"state": "unsubscribed"}, "unsubscribed"),
        ({"unsubscribed_at": T0}, "unsubscribed"),
        ({"state": "pending"}, "unconfirmed"),
        ({"fulfilled_at": T0}, "fulfilled"),
        ({"notified_count": 2}, "notified-max-times"),
        ({"notified_count": 1}, None),
        ({"holder_state": "sent"}, "already-notified-in-window"),
        ({"holder_state": "pending"}, "already-notified-in-window"),
        ({"state": "unsubscribed", "holder_state": "sent"}, "unsubscribed"),  # the first reason wins
    ],
)
def test_suppression(changes: dict[str, object], reason: str | None) -> None:
    assert suppression({**LIVE, **changes}, Rules()) == reason


def labels(quantity: int, count: int, rules: Rules, state: waves.PlanState | None = None) -> list[tuple]:
    schedule = waves.schedule(state or waves.PlanState(), window=7, available=quantity, rules=rules, now=T0)
    labeller = Labeller(schedule)
    return [labeller.next() for _ in range(count)]


def test_the_line_is_labelled_wave_by_wave_at_each_interval() -> None:
    rules = Rules(waves_enabled=True, shoppers_per_unit=2, wave_interval_seconds=600)
    assert labels(1, 5, rules) == [
        ("notify", 1, T0, None),
        ("notify", 1, T0, None),
        ("notify", 2, T0 + timedelta(minutes=10), None),
        ("notify", 2, T0 + timedelta(minutes=10), None),
        ("notify", 3, T0 + timedelta(minutes=20), None),
    ]


def test_a_recent_wave_delays_the_first_projected_one() -> None:
    rules = Rules(waves_enabled=True, shoppers_per_unit=1, wave_interval_seconds=600)
    recent = waves.PlanState(window=7, wave=4, last_wave_at=T0 - timedelta(minutes=4))
    assert labels(1, 2, rules, recent) == [
        ("notify", 5, T0 + timedelta(minutes=6), None),
        ("notify", 6, T0 + timedelta(minutes=16), None),
    ]


def test_sold_out_holds_everyone_and_waves_off_notifies_everyone() -> None:
    assert labels(0, 2, Rules(waves_enabled=True)) == [("held", None, None, "held:sold-out")] * 2
    assert labels(0, 2, Rules()) == [("notify", None, None, None)] * 2
