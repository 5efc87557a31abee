"""The storefront's side effects, as small ports; adapters in ``repository.py`` and ``counters.py``, fakes in
the unit tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from restock_admin.storefront.signup import Signup


@dataclass(frozen=True)
class StoredSubscription:
    """A subscription as stored."""

    id: int
    variant_id: int
    channel: str
    state: str
    subscribed_at: datetime


@dataclass(frozen=True)
class Subscribed:
    """The outcome of an idempotent signup: the subscription, whether this call created its row, and
    whether a double opt-in confirmation was requested (an outbox row committed with it)."""

    subscription: StoredSubscription
    created: bool
    confirmation_requested: bool = False


@dataclass(frozen=True)
class PendingElsewhere:
    """Refused: the contact already has another unconfirmed subscription at this shop."""


@dataclass(frozen=True)
class ShopContext:
    """What a signup needs to know about its shop: the tenant, its double opt-in rule, and whether the
    variant is in its synced catalogue (None: the shop has no catalogue synced yet)."""

    tenant_id: int
    double_opt_in: str
    variant_known: bool | None


class ShopDirectory(Protocol):
    """Which shops are installed, with their signup rules and catalogue."""

    async def signup_context(self, shop_domain: str, variant_id: int) -> ShopContext | None:
        """The context of an installed shop; None when unknown or uninstalled."""
        ...


class SubscriptionStore(Protocol):
    """Where subscriptions and their consent evidence are kept."""

    async def subscribe(self, signup: Signup) -> Subscribed | PendingElsewhere:
        """In one transaction: store the signup (a new row, or the consent table's change of the contact's
        existing row) with its consent event, and, when it ends ``pending``, an outbox row asking the sender
        for the confirmation. A repeat of a live subscription returns it and writes nothing new (except a
        fresh confirmation request for a still pending one)."""
        ...


class HitCounter(Protocol):
    """Counts hits in rate-limit windows."""

    async def hit(self, key: str, ttl_seconds: int) -> int | None:
        """Count one hit on ``key`` (expiring after ``ttl_seconds``); the count so far, or None when the
        counter is unavailable (the caller lets the request through: limits are a guard, not the truth)."""
        ...


class ViewCounter(Protocol):
    """Product views per variant per day."""

    async def count_view(self, shop_domain: str, variant_id: int, day: str) -> bool:
        """Add one view; False when the shop is unknown or uninstalled."""
        ...
