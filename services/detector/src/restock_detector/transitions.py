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
4. ``COOLDOWN``       the variant was restocked less than ``cooldown_seconds`` ago: a flapping level
                      (0 -> 3 -> 0 -> 2) must not notify the same shoppers twice in a day.

When no guard holds, the change is a ``Restock``. A variant seen for the first time has a previous total
of 0: shoppers subscribe to sold-out variants, so a first observation of stock is their restock, and a
missed alert is the failure that matters most.

The decision is a tagged union so the debounce rule (a later task) can add an ``Arm(until)`` variant:
"looks like a restock, confirm it is still in stock after ``debounce_seconds``".
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
class NoRestock:
    """Nothing to do, and why."""

    reason: Reason


Decision = Restock | NoRestock

Guard = Callable[[Observation, Rules], bool]


def _in_cooldown(seen: Observation, rules: Rules) -> bool:
    if seen.last_restock_at is None:
        return False
    return seen.now - seen.last_restock_at < timedelta(seconds=rules.cooldown_seconds)


# The rules as data, checked in order: the first guard that holds is the reason.
GUARDS: tuple[tuple[Reason, Guard], ...] = (
    (Reason.WAS_AVAILABLE, lambda seen, rules: seen.previous > 0),
    (Reason.STILL_OUT, lambda seen, rules: seen.current <= 0),
    (Reason.TOO_FEW, lambda seen, rules: seen.current < rules.min_quantity),
    (Reason.COOLDOWN, _in_cooldown),
)


def decide(
    previous: int, current: int, last_restock_at: datetime | None, now: datetime, rules: Rules
) -> Decision:
    """Is going from ``previous`` to ``current`` units at ``now`` a restock under ``rules``?"""
    seen = Observation(previous, current, last_restock_at, now)
    for reason, holds in GUARDS:
        if holds(seen, rules):
            return NoRestock(reason)
    return Restock(current)
