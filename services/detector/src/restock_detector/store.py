"""The PostgreSQL adapters of the detector's ports, through Piccolo.

Every write of a webhook runs inside one ``engine.transaction()``: Piccolo's queries join it through its
context variable, so ``PiccoloUnitOfWork`` needs no connection of its own. Upserts and locks are written
as SQL (``Table.raw`` binds ``{}`` as real query parameters) because they are set-based or conditional.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from piccolo.engine.postgres import PostgresEngine

from restock_common.db.tables import (
    InventoryItem,
    Outbox,
    RestockEvent,
    Rule,
    StockSnapshot,
    Tenant,
    VariantState,
    WebhookReceipt,
)
from restock_common.rules import Rules, decode_rules
from restock_detector import ports

_CLAIM_RECEIPT = """
INSERT INTO webhook_receipts (webhook_id, event_id, shop_domain, topic, triggered_at, received_at)
VALUES ({}, {}, {}, {}, {}, now())
ON CONFLICT (webhook_id) DO NOTHING
RETURNING id
"""

_SAVE_ITEMS = """
INSERT INTO inventory_items (tenant, inventory_item_id, variant_id, product_id, sku, title, updated_at)
SELECT {}, item, variant, product, sku, title, now()
FROM unnest({}::bigint[], {}::bigint[], {}::bigint[], {}::varchar[], {}::text[])
    AS given(item, variant, product, sku, title)
ON CONFLICT (tenant, inventory_item_id) DO UPDATE SET
    variant_id = EXCLUDED.variant_id, product_id = EXCLUDED.product_id, sku = EXCLUDED.sku,
    title = EXCLUDED.title, updated_at = EXCLUDED.updated_at
"""

# An observation older than the stored one loses: the WHERE makes the upsert a no-op, and nothing returns.
_SAVE_SNAPSHOT = """
INSERT INTO stock_snapshots (tenant, inventory_item_id, location_id, available, shopify_updated_at,
                             observed_at, source)
VALUES ({}, {}, {}, {}, {}, now(), 'webhook')
ON CONFLICT (tenant, inventory_item_id, location_id) DO UPDATE SET
    available = EXCLUDED.available, shopify_updated_at = EXCLUDED.shopify_updated_at,
    observed_at = EXCLUDED.observed_at, source = EXCLUDED.source
WHERE stock_snapshots.shopify_updated_at <= EXCLUDED.shopify_updated_at
RETURNING id
"""

_ENSURE_VARIANT = """
INSERT INTO variant_states (tenant, variant_id, available, updated_at)
VALUES ({}, {}, 0, now())
ON CONFLICT (tenant, variant_id) DO NOTHING
"""

_LOCK_VARIANT = """
SELECT available, last_restock_at FROM variant_states
WHERE tenant = {} AND variant_id = {}
FOR UPDATE
"""

_VARIANT_TOTAL = """
SELECT COALESCE(SUM(s.available), 0) AS total
FROM stock_snapshots s
JOIN inventory_items i ON i.tenant = s.tenant AND i.inventory_item_id = s.inventory_item_id
WHERE i.tenant = {} AND i.variant_id = {} AND s.location_id <> ALL({}::bigint[])
"""

_CLAIM_OUTBOX = """
SELECT id, message_id, routing_key, payload, traceparent FROM outbox
WHERE published_at IS NULL
ORDER BY id
LIMIT {}
FOR UPDATE SKIP LOCKED
"""


class PiccoloWebhookStore:
    """``ports.WebhookStore`` on PostgreSQL."""

    def __init__(self, engine: PostgresEngine) -> None:
        self.engine = engine

    async def find_tenant(self, shop_domain: str) -> ports.Tenant | None:
        row = await (
            Tenant.select(Tenant.id, Tenant.shop_domain)
            .where((Tenant.shop_domain == shop_domain) & Tenant.uninstalled_at.is_null())
            .first()
        )
        return ports.Tenant(row["id"], row["shop_domain"]) if row else None

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[ports.UnitOfWork]:
        async with self.engine.transaction():
            yield PiccoloUnitOfWork()


class PiccoloUnitOfWork:
    """``ports.UnitOfWork``: runs inside the transaction opened by ``PiccoloWebhookStore.unit_of_work``."""

    async def claim_receipt(self, receipt: ports.Receipt) -> bool:
        rows = await WebhookReceipt.raw(
            _CLAIM_RECEIPT,
            receipt.webhook_id,
            receipt.event_id,
            receipt.shop_domain,
            receipt.topic,
            receipt.triggered_at,
        )
        return bool(rows)

    async def rules_of(self, tenant_id: int) -> Rules:
        rows = await Rule.raw("SELECT body FROM rules WHERE tenant = {}", tenant_id)
        return decode_rules(rows[0]["body"] if rows else None)

    async def save_items(self, tenant_id: int, items: Sequence[ports.ItemMapping]) -> None:
        # One row per item: a payload naming an item twice would make the upsert touch a row twice.
        unique = list({item.inventory_item_id: item for item in items}.values())
        if not unique:
            return
        await InventoryItem.raw(
            _SAVE_ITEMS,
            tenant_id,
            [item.inventory_item_id for item in unique],
            [item.variant_id for item in unique],
            [item.product_id for item in unique],
            [item.sku for item in unique],
            [item.title for item in unique],
        )

    async def save_snapshot(self, tenant_id: int, level: ports.LevelObservation) -> bool:
        rows = await StockSnapshot.raw(
            _SAVE_SNAPSHOT,
            tenant_id,
            level.inventory_item_id,
            level.location_id,
            level.available,
            level.updated_at,
        )
        return bool(rows)

    async def variant_of(self, tenant_id: int, inventory_item_id: int) -> ports.VariantRef | None:
        rows = await InventoryItem.raw(
            "SELECT variant_id, product_id FROM inventory_items WHERE tenant = {} AND inventory_item_id = {}",
            tenant_id,
            inventory_item_id,
        )
        return ports.VariantRef(rows[0]["variant_id"], rows[0]["product_id"]) if rows else None

    async def lock_variant(self, tenant_id: int, variant_id: int) -> ports.VariantMemory:
        await VariantState.raw(_ENSURE_VARIANT, tenant_id, variant_id)
        rows = await VariantState.raw(_LOCK_VARIANT, tenant_id, variant_id)
        return ports.VariantMemory(rows[0]["available"], rows[0]["last_restock_at"])

    async def variant_total(
        self, tenant_id: int, variant_id: int, excluded_location_ids: Sequence[int]
    ) -> int:
        rows = await StockSnapshot.raw(_VARIANT_TOTAL, tenant_id, variant_id, list(excluded_location_ids))
        return int(rows[0]["total"])

    async def save_variant(self, tenant_id: int, variant_id: int, available: int, now: datetime) -> None:
        await VariantState.raw(
            "UPDATE variant_states SET available = {}, updated_at = {} WHERE tenant = {} AND variant_id = {}",
            available,
            now,
            tenant_id,
            variant_id,
        )

    async def record_restock(self, restock: ports.NewRestock) -> int:
        event = RestockEvent(
            tenant=restock.tenant_id,
            variant_id=restock.variant_id,
            product_id=restock.product_id,
            available=restock.available,
            restock_window=restock.restock_window,
            source="webhook",
            detected_at=restock.detected_at,
            traceparent=restock.traceparent,
        )
        await event.save()
        await VariantState.raw(
            "UPDATE variant_states SET last_restock_at = {} WHERE tenant = {} AND variant_id = {}",
            restock.detected_at,
            restock.tenant_id,
            restock.variant_id,
        )
        return int(event.id)

    async def enqueue(self, message: ports.OutboxMessage) -> None:
        await Outbox(
            tenant=message.tenant_id,
            routing_key=message.routing_key,
            message_id=message.message_id,
            ordering_key=message.ordering_key,
            payload=message.payload,
            traceparent=message.traceparent,
        ).save()


class PiccoloOutboxStore:
    """``ports.OutboxStore`` on PostgreSQL: a batch is a transaction holding its rows' locks."""

    def __init__(self, engine: PostgresEngine) -> None:
        self.engine = engine

    @asynccontextmanager
    async def claim(self, limit: int) -> AsyncIterator[ports.OutboxBatch]:
        async with self.engine.transaction():
            rows = await Outbox.raw(_CLAIM_OUTBOX, limit)
            yield PiccoloOutboxBatch([_outbox_row(row) for row in rows])


class PiccoloOutboxBatch:
    """``ports.OutboxBatch``: marks run in the batch's transaction, committed when the batch ends."""

    def __init__(self, rows: Sequence[ports.OutboxRow]) -> None:
        self.rows = rows

    async def mark_published(self, row_id: int) -> None:
        await Outbox.raw(
            "UPDATE outbox SET published_at = now(), publish_attempts = publish_attempts + 1 WHERE id = {}",
            row_id,
        )

    async def note_failure(self, row_id: int) -> None:
        await Outbox.raw("UPDATE outbox SET publish_attempts = publish_attempts + 1 WHERE id = {}", row_id)


def _outbox_row(row: dict[str, Any]) -> ports.OutboxRow:
    return ports.OutboxRow(
        id=row["id"],
        message_id=str(row["message_id"]),
        routing_key=row["routing_key"],
        payload=row["payload"].encode(),
        traceparent=row["traceparent"],
    )
