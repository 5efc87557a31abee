"""The consent lifecycle: every (state, event) pair of the table, and the invariants it must keep."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from restock_admin.consent import (
    TRANSITIONS,
    Change,
    Event,
    Refused,
    State,
    Unchanged,
    signup_event,
    step,
)

P, C, U, NEW = State.PENDING, State.CONFIRMED, State.UNSUBSCRIBED, State.NEW


@pytest.mark.parametrize(
    ("state", "event", "expected"),
    [
        (NEW, Event.SIGNUP, Change(C, "subscribed")),
        (NEW, Event.SIGNUP_TO_CONFIRM, Change(P, "subscribed")),
        (P, Event.SIGNUP, Unchanged()),
        (P, Event.SIGNUP_TO_CONFIRM, Unchanged()),
        (P, Event.CONFIRM, Change(C, "confirmed")),
        (P, Event.UNSUBSCRIBE, Change(U, "unsubscribed")),
        (P, Event.RESUME, Change(C, "confirmed")),
        (P, Event.EXPIRE, Change(U, "expired")),
        (P, Event.REDACT, Change(P, "redacted")),
        (C, Event.SIGNUP, Unchanged()),
        (C, Event.SIGNUP_TO_CONFIRM, Unchanged()),
        (C, Event.CONFIRM, Unchanged()),
        (C, Event.UNSUBSCRIBE, Change(U, "unsubscribed")),
        (C, Event.RESUME, Unchanged()),
        (C, Event.EXPIRE, Change(U, "expired")),
        (C, Event.REDACT, Change(C, "redacted")),
        (U, Event.SIGNUP, Change(C, "resubscribed")),
        (U, Event.SIGNUP_TO_CONFIRM, Change(P, "resubscribed")),
        (U, Event.UNSUBSCRIBE, Unchanged()),
        (U, Event.RESUME, Change(C, "resubscribed")),
        (U, Event.EXPIRE, Unchanged()),
        (U, Event.REDACT, Change(U, "redacted")),
    ],
)
def test_transition_table(state: State, event: Event, expected: object) -> None:
    assert step(state.value, event) == expected


def test_an_old_confirmation_link_does_not_revive_a_cancelled_subscription() -> None:
    assert isinstance(step("unsubscribed", Event.CONFIRM), Refused)


@pytest.mark.parametrize(
    "event", [Event.CONFIRM, Event.UNSUBSCRIBE, Event.RESUME, Event.EXPIRE, Event.REDACT]
)
def test_only_a_signup_starts_a_subscription(event: Event) -> None:
    assert isinstance(step(NEW.value, event), Refused)


def test_an_unknown_stored_state_is_refused_not_guessed() -> None:
    assert isinstance(step("weird", Event.CONFIRM), Refused)


@pytest.mark.parametrize(
    ("channel", "rule", "event"),
    [
        ("email", "off", Event.SIGNUP),
        ("sms", "off", Event.SIGNUP),
        ("email", "email", Event.SIGNUP_TO_CONFIRM),
        ("sms", "email", Event.SIGNUP),
        ("email", "email+sms", Event.SIGNUP_TO_CONFIRM),
        ("sms", "email+sms", Event.SIGNUP_TO_CONFIRM),
        ("sms", "garbled", Event.SIGNUP_TO_CONFIRM),
    ],
)
def test_signup_event_follows_the_double_opt_in_rule(channel: str, rule: str, event: Event) -> None:
    assert signup_event(channel, rule) == event


@given(st.lists(st.sampled_from([e for e in Event if e not in (Event.SIGNUP, Event.SIGNUP_TO_CONFIRM)])))
def test_nothing_but_the_contact_makes_a_subscription_confirmed(events: list[Event]) -> None:
    """From pending, only CONFIRM or RESUME (both from the contact) ever reach confirmed."""
    state = P
    for event in events:
        outcome = step(state.value, event)
        if isinstance(outcome, Change):
            if outcome.state is C and state is not C:
                assert event in (Event.CONFIRM, Event.RESUME)
            state = outcome.state


@given(st.sampled_from(list(State)), st.sampled_from(list(Event)))
def test_every_change_names_an_evidence_kind_and_unsubscribe_always_ends_alerts(
    state: State, event: Event
) -> None:
    outcome = step(state.value, event)
    if isinstance(outcome, Change):
        assert outcome.kind in {
            "subscribed",
            "confirmed",
            "unsubscribed",
            "resubscribed",
            "expired",
            "redacted",
        }
    if event is Event.UNSUBSCRIBE and state is not NEW:
        assert outcome == Unchanged() or outcome == Change(U, "unsubscribed")


def test_the_table_covers_every_stored_state_and_event() -> None:
    stored = [s for s in State if s is not NEW]
    assert {(s, e) for s in stored for e in Event} <= set(TRANSITIONS)
