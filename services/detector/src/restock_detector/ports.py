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
        """Record the delivery; False when this webhook id was already processed."""

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

    async def save_variant(self, tenant_id: int, variant_id: int, available: int, now: datetime) -> None:
        """Remember the variant's new total."""

    async def record_restock(self, restock: NewRestock) -> int:
        """Insert the restock event, start the variant's cooldown; returns the event id."""

    async def enqueue(self, message: OutboxMessage) -> None:
        """Add an event to the outbox, to be published by the relay after commit."""


class WebhookStore(Protocol):
    """Where webhooks are recorded."""

    async def find_tenant(self, shop_domain: str) -> Tenant | None:
        """The installed shop of this domain, or None (unknown or uninstalled)."""

    def unit_of_work(self) -> AbstractAsyncContextManager[UnitOfWork]:
        """A transaction: committed when the block exits cleanly, rolled back on an exception."""


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
