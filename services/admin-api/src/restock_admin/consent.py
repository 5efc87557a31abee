"""The consent lifecycle of one subscription, as a transition table. Pure: no I/O, no clock.

Theory of operation
-------------------
A subscription is ``pending`` (awaiting double opt-in), ``confirmed`` (may be a target: the dispatcher's
freeze takes only these) or ``unsubscribed``. Something that happens to it is an ``Event``; the table says,
for each (state, event), what follows:

- ``Change(state, kind)``: the subscription moves to ``state`` and a ``consent_events`` row of ``kind`` is
  written with it (evidence is rows, never overwrites);
- ``Unchanged``: nothing to do (an idempotent repeat: a second unsubscribe, a second confirmation);
- ``Refused(reason)``: the event must not act (confirming a subscription the shopper has since cancelled).

Rules the table encodes:
- A signup starts ``confirmed`` when the shop's double opt-in rule does not cover its channel, else
  ``pending``; a signup of a contact that unsubscribed earlier is a ``resubscribed`` row on the same
  subscription (the Unique key keeps one row per contact, variant and channel).
- Only the contact can confirm (the emailed link, or YES from the phone); a cancelled subscription is not
  revived by an old confirmation link: that takes a new signup or an SMS START from the phone itself.
- Unsubscribing works from any state and is idempotent (RFC 8058 one-click may be retried by a mail client).
- ``EXPIRE`` is the retention job ending a subscription (unconfirmed too long, or its data's time is up).
- ``REDACT`` keeps the state and records that the personal data was erased.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class State(StrEnum):
    """The ``subscriptions.state`` values."""

    NEW = "new"  # not stored yet: only the start of a signup
    PENDING = "pending"
    CONFIRMED = "confirmed"
    UNSUBSCRIBED = "unsubscribed"


class Event(StrEnum):
    """What can happen to a subscription."""

    SIGNUP = "signup"  # a signup in a channel without double opt-in
    SIGNUP_TO_CONFIRM = "signup-to-confirm"  # a signup that needs double opt-in
    CONFIRM = "confirm"  # the confirmation link was followed, or YES was texted
    UNSUBSCRIBE = "unsubscribe"  # link, one-click, STOP keyword, provider opt-out
    RESUME = "resume"  # START / UNSTOP / YES from the phone itself
    EXPIRE = "expire"  # the retention job: unconfirmed too long, or retention over
    REDACT = "redact"  # personal data erased


@dataclass(frozen=True)
class Change:
    """Move to ``state`` and write a consent event of ``kind``."""

    state: State
    kind: str


@dataclass(frozen=True)
class Unchanged:
    """Nothing to do: the event repeats what already holds."""


@dataclass(frozen=True)
class Refused:
    """The event must not act; ``reason`` is shown to whoever asked."""

    reason: str


Step = Change | Unchanged | Refused

P, C, U = State.PENDING, State.CONFIRMED, State.UNSUBSCRIBED
SAME = Unchanged()
CANCELLED = Refused("this subscription was cancelled; sign up again to receive alerts")

TRANSITIONS: dict[tuple[State, Event], Step] = {
    (State.NEW, Event.SIGNUP): Change(C, "subscribed"),
    (State.NEW, Event.SIGNUP_TO_CONFIRM): Change(P, "subscribed"),
    (P, Event.SIGNUP): SAME,  # the rule changed since: the contact still has to confirm
    (P, Event.SIGNUP_TO_CONFIRM): SAME,
    (P, Event.CONFIRM): Change(C, "confirmed"),
    (P, Event.UNSUBSCRIBE): Change(U, "unsubscribed"),
    (P, Event.RESUME): Change(C, "confirmed"),
    (P, Event.EXPIRE): Change(U, "expired"),
    (P, Event.REDACT): Change(P, "redacted"),
    (C, Event.SIGNUP): SAME,
    (C, Event.SIGNUP_TO_CONFIRM): SAME,
    (C, Event.CONFIRM): SAME,
    (C, Event.UNSUBSCRIBE): Change(U, "unsubscribed"),
    (C, Event.RESUME): SAME,
    (C, Event.EXPIRE): Change(U, "expired"),
    (C, Event.REDACT): Change(C, "redacted"),
    (U, Event.SIGNUP): Change(C, "resubscribed"),
    (U, Event.SIGNUP_TO_CONFIRM): Change(P, "resubscribed"),
    (U, Event.CONFIRM): CANCELLED,
    (U, Event.UNSUBSCRIBE): SAME,
    (U, Event.RESUME): Change(C, "resubscribed"),
    (U, Event.EXPIRE): SAME,
    (U, Event.REDACT): Change(U, "redacted"),
}


def step(state: str, event: Event) -> Step:
    """What ``event`` does to a subscription in ``state`` (a stored value, or ``State.NEW``)."""
    try:
        current = State(state)
    except ValueError:
        return Refused(f"unknown subscription state {state!r}")
    return TRANSITIONS.get((current, event), Refused(f"{event.value} is not possible from {current.value}"))


def signup_event(channel: str, double_opt_in: str) -> Event:
    """The signup event of a channel under a shop's ``double_opt_in`` rule (off | email | email+sms)."""
    # An unknown value asks for confirmation: failing closed costs a click, failing open costs consent.
    covered = {"off": (), "email": ("email",)}.get(double_opt_in, ("email", "sms"))
    return Event.SIGNUP_TO_CONFIRM if channel in covered else Event.SIGNUP
