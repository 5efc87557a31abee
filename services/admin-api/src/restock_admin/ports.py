"""Ports shared by the admin-api's surfaces: the consent ledger, where every consent change after a signup
is written (links, SMS keywords, provider opt-outs, retention). Adapter: ``ledger.py``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from restock_admin.consent import Event, Step


@dataclass(frozen=True)
class Subscriptions:
    """Target: these subscriptions."""

    ids: tuple[int, ...]


@dataclass(frozen=True)
class ContactAtShop:
    """Target: every subscription of one contact (its hash) at one shop."""

    tenant_id: int
    contact_hash: str


@dataclass(frozen=True)
class ContactOnChannel:
    """Target: every subscription of one contact on one channel, at every shop (an SMS keyword: with one
    sender number for all shops, the number cannot tell which shop the shopper means; ADR 17)."""

    contact_hash: str
    channel: str


@dataclass(frozen=True)
class RetentionDue:
    """Target: up to ``limit`` subscriptions of one shop whose personal data is due for erasure: pending
    since before ``unconfirmed_before``, or ended (unsubscribed, fulfilled, last notified) before
    ``ended_before``. Rows another run holds are skipped, so concurrent runs never act twice."""

    tenant_id: int
    unconfirmed_before: datetime
    ended_before: datetime
    limit: int


Target = Subscriptions | ContactAtShop | ContactOnChannel | RetentionDue


@dataclass(frozen=True)
class Evidence:
    """What every consent event row records besides its kind: where the change came from, the hashed IP
    of the request (when there is one), and ids-only detail."""

    source: str
    ip_hash: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Applied:
    """What an event did to one subscription."""

    subscription_id: int
    tenant_id: int
    before: str
    outcome: Step


@dataclass(frozen=True)
class AlreadyUsed:
    """The single-use link was used before; nothing was done."""


class ConsentLedger(Protocol):
    """Consent changes: the state and its evidence row written together, by the consent table."""

    async def apply(
        self, target: Target, events: Event | tuple[Event, ...], evidence: Evidence, now: datetime
    ) -> list[Applied]:
        """Apply ``events`` in order to every targeted subscription (locked), in one transaction; what each
        did to each subscription (an empty list: no such subscription)."""
        ...

    async def apply_once(
        self,
        token_id: str,
        purpose: str,
        subscription_id: int,
        event: Event,
        evidence: Evidence,
        now: datetime,
    ) -> list[Applied] | AlreadyUsed:
        """``apply`` to one subscription through a single-use link: the token is recorded as consumed in the
        same transaction; a refused event consumes nothing and changes nothing."""
        ...
