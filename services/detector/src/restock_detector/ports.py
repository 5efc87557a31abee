"""The detector's ports: what the handler and the relay need from the outside world, as Protocols.

The real adapters are in ``store.py`` (PostgreSQL through Piccolo) and ``restock_common.broker``; the unit
tests' recording fakes are in ``tests/unit``. Plain frozen dataclasses carry the data across.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from restock_common.rules import Rules


@dataclass(frozen=True)
class Tenant:
    """An installed shop."""

    id: int
    shop_domain: str


@dataclass(frozen=True)
class Receipt:
    """One Shopify delivery, identified by ``X-Shopify-Webhook-Id``."""

    webhook_id: str
    shop_domain: str
    topic: str
    event_id: str | None = None
    triggered_at: datetime | None = None


@dataclass(frozen=True)
class ItemMapping:
    """Inventory item -> variant, from a product payload."""

    inventory_item_id: int
    variant_id: int
    product_id: int
    sku: str | None
    title: str


@dataclass(frozen=True)
class LevelObservation:
    """One item's level at one location, as of Shopify's ``updated_at``."""

    inventory_item_id: int
    location_id: int
    available: int
    updated_at: datetime


@dataclass(frozen=True)
class VariantRef:
    """The variant an inventory item belongs to."""

    variant_id: int
    product_id: int | None


@dataclass(frozen=True)
class VariantMemory:
    """What the detector remembers of a variant (its locked ``variant_states`` row)."""

    available: int
    last_restock_at: datetime | None
    armed_at: datetime | None = None


@dataclass(frozen=True)
class ArmedVariant:
    """A variant whose debounce has ended, locked for the scheduler to settle."""

    tenant: Tenant
    variant: VariantRef
    armed_at: datetime
    last_restock_at: datetime | None


@dataclass(frozen=True)
class AuditEntry:
    """One ``audit_log`` row: ids only, never an email address or a phone number."""

    tenant_id: int | None
    action: str
    target_type: str
    target_ids: list[int]
    detail: dict[str, object]
    trace_id: str | None


@dataclass(frozen=True)
class NewRestock:
    """A restock to record."""

    tenant_id: int
    variant_id: int
    product_id: int | None
    available: int
    restock_window: int
    detected_at: datetime
    traceparent: str | None


@dataclass(frozen=True)
class OutboxMessage:
    """An event to publish once the transaction that caused it commits."""

    tenant_id: int
    routing_key: str
    message_id: uuid.UUID
    ordering_key: str
    payload: str
    traceparent: str | None


@dataclass(frozen=True)
class OutboxRow:
    """An unpublished outbox row, as the relay sees it."""

    id: int
    message_id: str
    routing_key: str
    payload: bytes
    traceparent: str | None


class UnitOfWork(Protocol):
    """The writes of one webhook, all inside one database transaction (committed on a clean exit)."""

    async def claim_receipt(self, receipt: Receipt) -> bool:
        """Record the delivery; False when this webhook id, or this shop's event id (Shopify resends an
        event under a new webhook id), was already processed."""

    async def rules_of(self, tenant_id: int) -> Rules:
        """The shop's rules (the defaults when it has none)."""

    async def save_items(self, tenant_id: int, items: Sequence[ItemMapping]) -> None:
        """Insert or update inventory item -> variant mappings."""

    async def save_snapshot(self, tenant_id: int, level: LevelObservation) -> bool:
        """Insert or update the level of one item at one location; False when it is older than the stored
        one (a stale or reordered webhook) and was ignored."""

    async def variant_of(self, tenant_id: int, inventory_item_id: int) -> VariantRef | None:
        """The variant of an inventory item, if a product payload told us."""

    async def lock_variant(self, tenant_id: int, variant_id: int) -> VariantMemory:
        """Create the variant's state row if missing and lock it until the transaction ends, so concurrent
        webhooks for one variant are decided one after the other."""

    async def variant_total(
        self, tenant_id: int, variant_id: int, excluded_location_ids: Sequence[int]
    ) -> int:
        """The sum of the variant's items' levels over the locations not excluded."""

    async def save_variant(
        self, tenant_id: int, variant_id: int, available: int, now: datetime, armed_at: datetime | None
    ) -> None:
        """Remember the variant's new total and whether (since when) it is armed."""

    async def record_restock(self, restock: NewRestock) -> int:
        """Insert the restock event, start the variant's cooldown, disarm it; returns the event id."""

    async def enqueue(self, message: OutboxMessage) -> None:
        """Add an event to the outbox, to be published by the relay after commit."""

    async def mark_uninstalled(self, tenant_id: int, now: datetime) -> None:
        """The shop uninstalled the app: its webhooks are refused from now on, its armed variants disarmed."""

    async def redact_contacts(
        self, tenant_id: int, contact_hashes: Sequence[str], now: datetime
    ) -> list[int]:
        """Erase email and phone of the shop's subscriptions of these contacts; returns their ids."""

    async def subscriptions_of(self, tenant_id: int, contact_hashes: Sequence[str]) -> list[int]:
        """The ids of the shop's subscriptions of these contacts."""

    async def delete_tenant(self, tenant_id: int) -> None:
        """Delete the shop and, by cascade, every row it owns."""

    async def audit(self, entry: AuditEntry) -> None:
        """Append an ``audit_log`` row."""


class WebhookStore(Protocol):
    """Where webhooks are recorded."""

    async def find_tenant(self, shop_domain: str, *, installed_only: bool = True) -> Tenant | None:
        """The installed shop of this domain, or None (unknown or, unless ``installed_only`` is False,
        uninstalled)."""

    def unit_of_work(self) -> AbstractAsyncContextManager[UnitOfWork]:
        """A transaction: committed when the block exits cleanly, rolled back on an exception."""


class ArmedBatch(Protocol):
    """Armed variants whose debounce has ended, locked until the batch's transaction ends."""

    variants: Sequence[ArmedVariant]
    work: UnitOfWork


class ArmedStore(Protocol):
    """``variant_states`` from the armed-restock scheduler's side."""

    def claim_due(self, now: datetime, limit: int) -> AbstractAsyncContextManager[ArmedBatch]:
        """In one transaction: lock up to ``limit`` armed variants of installed shops whose debounce has
        ended by ``now``, skipping rows a webhook or another replica holds."""


class OutboxSignal(Protocol):
    """Tells the relay that an outbox row was committed, so it publishes now instead of at its next poll."""

    def notify(self) -> None:
        """Wake the relay."""


class OutboxBatch(Protocol):
    """Unpublished outbox rows, locked by this relay until the batch's transaction ends."""

    rows: Sequence[OutboxRow]

    async def mark_published(self, row_id: int) -> None:
        """The broker confirmed this row."""

    async def note_failure(self, row_id: int) -> None:
        """Publishing this row failed; it stays unpublished (counted in ``publish_attempts``)."""


class OutboxStore(Protocol):
    """The outbox table, from the relay's side."""

    def claim(self, limit: int) -> AbstractAsyncContextManager[OutboxBatch]:
        """Lock up to ``limit`` unpublished rows, oldest first, skipping rows another relay holds."""


class Publisher(Protocol):
    """The broker, from the relay's side."""

    async def publish_raw(
        self, body: bytes, routing_key: str, *, message_id: str, traceparent: str | None = None
    ) -> None:
        """Publish exact bytes and return once the broker confirmed them; raise otherwise."""
