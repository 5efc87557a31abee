"""The storefront's side effects, as small ports; adapters in ``repository.py``, fakes in the unit tests."""

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
    """The outcome of an idempotent signup: the subscription, and whether this call created it."""

    subscription: StoredSubscription
    created: bool


class TenantDirectory(Protocol):
    """Which shops are installed."""

    async def installed_tenant_id(self, shop_domain: str) -> int | None:
        """The tenant id of an installed shop; None when unknown or uninstalled."""
        ...


class SubscriptionStore(Protocol):
    """Where subscriptions and their consent evidence are kept."""

    async def subscribe(self, signup: Signup) -> Subscribed:
        """Store the signup and its ``subscribed`` consent event in one transaction; if the same contact
        already has a subscription to that variant on that channel, return it and write nothing."""
        ...
