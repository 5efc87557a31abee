"""When does a change of stock count as a restock? Pure: no I/O, the clock is passed in.

Rules
-----
A variant's availability is the sum of its inventory items' levels over the shop's locations, minus the
excluded locations (the same number Shopify shows as the variant's ``inventory_quantity``). Each new total
is compared with the previous one, and the first guard below that holds says why it is *not* a restock:

1. ``WAS_AVAILABLE``  the previous total was above 0: shoppers could already buy it, nobody is waiting.
2. ``STILL_OUT``      the new total is 0 or less (negative means oversold): nothing to buy yet.
3. ``TOO_FEW``        the new total is under the shop's ``min_quantity``: too few to be worth an alert
                      (they would be gone before the emails land).
4. ``COOLDOWN``       the variant's last restock is less than ``cooldown_seconds`` before the moment this
                      one would fire: a flapping level (0 -> 3 -> 0 -> 2) must not notify twice in a day.

When no guard holds, the change looks like a restock, and the debounce decides when it fires:

- ``debounce_seconds == 0``: it is a ``Restock`` now.
- otherwise the variant is ``Arm``-ed: it fires ``debounce_seconds`` later (``expire``) if it is still
  in stock then (at least ``min_quantity`` and above 0), and the cooldown is judged at that moment.
  While armed, a total that falls to 0 or under ``min_quantity`` ``Disarm``-s it (no event, ever); any
  other total keeps it armed and only the total at the end counts. A debounce that has ended is settled
  (``expire``) before the next observation is judged, so what fires never depends on whether the
  scheduler or the next webhook gets there first: a restock fires *at* ``armed_at + debounce_seconds``.

Confirmation (rule ``confirm_with_admin_api``): a restock is then always armed, even with no debounce
(due at once), because the Admin API is read outside any transaction, by the scheduler, and its answer is
an input of ``expire``: the restock fires only if Shopify's own total, over the locations not excluded, is
still in stock (else ``Disarm(NOT_CONFIRMED)``). Until the answer is in, the variant stays armed
(``AWAITING_CONFIRMATION``); if the Admin API cannot be asked for ``CONFIRMATION_GRACE`` after the
debounce ended, our snapshots decide alone: a missed alert is worse than an unconfirmed one.

A variant seen for the first time has a previous total of 0: shoppers subscribe to sold-out variants, so
a first observation of stock is their restock, and a missed alert is the failure that matters most.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from restock_common.rules import Rules


class Reason(enum.Enum):
    """Why a change is not a restock (see the module's rules)."""

    WAS_AVAILABLE = "was_available"
    STILL_OUT = "still_out"
    TOO_FEW = "too_few"
    COOLDOWN = "cooldown"
    ARMED = "armed"  # armed earlier and still waiting for its debounce to end
    AWAITING_CONFIRMATION = "awaiting_confirmation"  # debounce over, the Admin API not read yet
    NOT_CONFIRMED = "not_confirmed"  # the Admin API says it is not (enough) in stock: a phantom restock


@dataclass(frozen=True)
class Observation:
    """What the detector knows about one variant when a new level arrives."""

    previous: int
    current: int
    last_restock_at: datetime | None
    now: datetime


@dataclass(frozen=True)
class Restock:
    """Notify the variant's subscribers: ``available`` units are back."""

    available: int


@dataclass(frozen=True)
class Arm:
    """Looks like a restock: confirm it is still in stock at ``until`` (``variant_states.armed_at = now``)."""

    until: datetime


@dataclass(frozen=True)
class Disarm:
    """An armed variant will not fire (``armed_at`` cleared), and why."""

    reason: Reason


@dataclass(frozen=True)
class NoRestock:
    """Nothing to do, and why."""

    reason: Reason


Decision = Restock | Arm | Disarm | NoRestock

CONFIRMATION_GRACE = timedelta(minutes=10)


@dataclass(frozen=True)
class Confirmation:
    """The Admin API's answer for an armed variant: its total over the locations not excluded, or None
    when the Admin API could not be asked (down, throttled out, bad token)."""

    available: int | None


Guard = Callable[[Observation, Rules], bool]


def debounce(rules: Rules) -> timedelta:
    return timedelta(seconds=max(rules.debounce_seconds, 0))


def due_at(armed_at: datetime, rules: Rules) -> datetime:
    """When an armed variant's debounce ends: the moment its restock fires, if it does."""
    return armed_at + debounce(rules)


def _in_cooldown(seen: Observation, rules: Rules) -> bool:
    if seen.last_restock_at is None:
        return False
    return seen.now - seen.last_restock_at < timedelta(seconds=rules.cooldown_seconds)


# The rules as data, checked in order: the first guard that holds is the reason. ``seen.now`` is the
# moment the restock would fire (after the debounce).
GUARDS: tuple[tuple[Reason, Guard], ...] = (
    (Reason.WAS_AVAILABLE, lambda seen, rules: seen.previous > 0),
    (Reason.STILL_OUT, lambda seen, rules: seen.current <= 0),
    (Reason.TOO_FEW, lambda seen, rules: seen.current < rules.min_quantity),
    (Reason.COOLDOWN, _in_cooldown),
)

# What keeps an armed variant armed: the stock guards only (it was 0 when armed, so not WAS_AVAILABLE).
STOCK_GUARDS = GUARDS[1:3]


def _out_of_stock(current: int, rules: Rules) -> Reason | None:
    seen = Observation(0, current, None, datetime.min)
    return next((reason for reason, holds in STOCK_GUARDS if holds(seen, rules)), None)


def decide(
    previous: int,
    current: int,
    last_restock_at: datetime | None,
    now: datetime,
    rules: Rules,
    *,
    armed_at: datetime | None = None,
) -> Decision:
    """What going from ``previous`` to ``current`` units at ``now`` means under ``rules``. An armed
    variant's ended debounce must be settled with ``expire`` first (see ``observe``)."""
    if armed_at is not None:
        reason = _out_of_stock(current, rules)
        return Disarm(reason) if reason else NoRestock(Reason.ARMED)
    seen = Observation(previous, current, last_restock_at, now + debounce(rules))
    for reason, holds in GUARDS:
        if holds(seen, rules):
            return NoRestock(reason)
    if rules.debounce_seconds <= 0 and not rules.confirm_with_admin_api:
        return Restock(current)
    return Arm(now + debounce(rules))


def expire(
    armed_at: datetime,
    current: int,
    last_restock_at: datetime | None,
    now: datetime,
    rules: Rules,
    confirmation: Confirmation | None = None,
) -> Restock | Disarm | NoRestock:
    """An armed variant at ``now`` with ``current`` units: ``NoRestock(ARMED)`` before its debounce ends,
    then a ``Restock`` (fired at ``due_at(armed_at, rules)``) or a ``Disarm``; with the confirmation rule,
    the Admin API's ``confirmation`` decides too (see the module's rules)."""
    due = due_at(armed_at, rules)
    if now < due:
        return NoRestock(Reason.ARMED)
    reason = _out_of_stock(current, rules)
    if reason is None and _in_cooldown(Observation(0, current, last_restock_at, due), rules):
        reason = Reason.COOLDOWN
    if reason is not None:
        return Disarm(reason)
    if not rules.confirm_with_admin_api:
        return Restock(current)
    return _confirmed(current, confirmation, now - due, rules)


def _confirmed(
    current: int, confirmation: Confirmation | None, overdue: timedelta, rules: Rules
) -> Restock | Disarm | NoRestock:
    if confirmation is None or confirmation.available is None:
        if confirmation is None or overdue < CONFIRMATION_GRACE:
            return NoRestock(Reason.AWAITING_CONFIRMATION)
        return Restock(current)  # the Admin API stayed out of reach: our snapshots decide
    if _out_of_stock(confirmation.available, rules) is not None:
        return Disarm(Reason.NOT_CONFIRMED)
    return Restock(confirmation.available)


@dataclass(frozen=True)
class Memory:
    """What the detector remembers of a variant between observations."""

    available: int
    last_restock_at: datetime | None
    armed_at: datetime | None = None


@dataclass(frozen=True)
class Outcome:
    """An observation's consequences: first the settled debounce (if one ended), then the new decision."""

    expired: Restock | Disarm | None
    decision: Decision


def observe(memory: Memory, current: int, now: datetime, rules: Rules) -> Outcome:
    """A new total for a variant: settle an ended debounce with the total that held until now, then
    decide on the change."""
    expired: Restock | Disarm | None = None
    if memory.armed_at is not None:
        settled = expire(memory.armed_at, memory.available, memory.last_restock_at, now, rules)
        if not isinstance(settled, NoRestock):
            expired = settled
            fired = due_at(memory.armed_at, rules) if isinstance(settled, Restock) else memory.last_restock_at
            memory = Memory(memory.available, fired, None)
    decision = decide(memory.available, current, memory.last_restock_at, now, rules, armed_at=memory.armed_at)
    return Outcome(expired, decision)
