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
    AuditLog,
    InventoryItem,
    Outbox,
    RestockEvent,
    Rule,
    StockSnapshot,
    Subscription,
    Tenant,
    VariantState,
    WebhookReceipt,
)
from restock_common.rules import DEFAULT_RULES, Rules, decode_rules
from restock_detector import ports

_CLAIM_RECEIPT = """
INSERT INTO webhook_receipts (webhook_id, event_id, shop_domain, topic, triggered_at, received_at)
VALUES ({}, {}, {}, {}, {}, now())
ON CONFLICT (webhook_id) DO NOTHING
RETURNING id
"""

# event_id is not UNIQUE (a shop's event ids are Shopify's, and older rows may have none): concurrent
# resends of one event are serialized on a transaction-scoped advisory lock named after it instead.
_LOCK_EVENT = "SELECT pg_advisory_xact_lock(hashtextextended({}, 0))"

_EVENT_SEEN = "SELECT 1 FROM webhook_receipts WHERE shop_domain = {} AND event_id = {} LIMIT 1"

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
SELECT available, last_restock_at, armed_at FROM variant_states
WHERE tenant = {} AND variant_id = {}
FOR UPDATE
"""

_VARIANT_TOTAL = """
SELECT COALESCE(SUM(s.available), 0) AS total
FROM stock_snapshots s
JOIN inventory_items i ON i.tenant = s.tenant AND i.inventory_item_id = s.inventory_item_id
WHERE i.tenant = {} AND i.variant_id = {} AND s.location_id <> ALL({}::bigint[])
"""

# Armed variants of installed shops whose debounce (the shop's rule, else the default) has ended.
_CLAIM_DUE = """
SELECT v.tenant, t.shop_domain, v.variant_id, v.armed_at, v.last_restock_at,
       (SELECT i.product_id FROM inventory_items i
        WHERE i.tenant = v.tenant AND i.variant_id = v.variant_id ORDER BY i.id LIMIT 1) AS product_id
FROM variant_states v
JOIN tenants t ON t.id = v.tenant AND t.uninstalled_at IS NULL
LEFT JOIN rules r ON r.tenant = v.tenant
WHERE v.armed_at IS NOT NULL
  AND v.armed_at + make_interval(secs => COALESCE((r.body ->> 'debounce_seconds')::double precision, {}))
      <= {}
ORDER BY v.armed_at
LIMIT {}
FOR UPDATE OF v SKIP LOCKED
"""

_REDACT = """
UPDATE subscriptions SET email = NULL, phone = NULL, redacted_at = {}
WHERE tenant = {} AND contact_hash = ANY({}::varchar[])
RETURNING id
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

    async def find_tenant(self, shop_domain: str, *, installed_only: bool = True) -> ports.Tenant | None:
        query = Tenant.select(Tenant.id, Tenant.shop_domain).where(Tenant.shop_domain == shop_domain)
        if installed_only:
            query = query.where(Tenant.uninstalled_at.is_null())
        row = await query.first()
        return ports.Tenant(row["id"], row["shop_domain"]) if row else None

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[ports.UnitOfWork]:
        async with self.engine.transaction():
            yield PiccoloUnitOfWork()


class PiccoloUnitOfWork:
    """``ports.UnitOfWork``: runs inside the transaction opened by ``PiccoloWebhookStore.unit_of_work``."""

    async def claim_receipt(self, receipt: ports.Receipt) -> bool:
        if receipt.event_id is not None:
            await WebhookReceipt.raw(_LOCK_EVENT, f"{receipt.shop_domain}:{receipt.event_id}")
            if await WebhookReceipt.raw(_EVENT_SEEN, receipt.shop_domain, receipt.event_id):
                return False
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
        return ports.VariantMemory(rows[0]["available"], rows[0]["last_restock_at"], rows[0]["armed_at"])

    async def variant_total(
        self, tenant_id: int, variant_id: int, excluded_location_ids: Sequence[int]
    ) -> int:
        rows = await StockSnapshot.raw(_VARIANT_TOTAL, tenant_id, variant_id, list(excluded_location_ids))
        return int(rows[0]["total"])

    async def save_variant(
        self, tenant_id: int, variant_id: int, available: int, now: datetime, armed_at: datetime | None
    ) -> None:
        await VariantState.raw(
            "UPDATE variant_states SET available = {}, updated_at = {}, armed_at = {}"
            " WHERE tenant = {} AND variant_id = {}",
            available,
            now,
            armed_at,
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
            "UPDATE variant_states SET last_restock_at = {}, armed_at = NULL"
            " WHERE tenant = {} AND variant_id = {}",
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

    async def mark_uninstalled(self, tenant_id: int, now: datetime) -> None:
        await Tenant.raw("UPDATE tenants SET uninstalled_at = {} WHERE id = {}", now, tenant_id)
        await VariantState.raw("UPDATE variant_states SET armed_at = NULL WHERE tenant = {}", tenant_id)

    async def redact_contacts(
        self, tenant_id: int, contact_hashes: Sequence[str], now: datetime
    ) -> list[int]:
        rows = await Subscription.raw(_REDACT, now, tenant_id, list(contact_hashes))
        return sorted(row["id"] for row in rows)

    async def subscriptions_of(self, tenant_id: int, contact_hashes: Sequence[str]) -> list[int]:
        rows = await Subscription.raw(
            "SELECT id FROM subscriptions WHERE tenant = {} AND contact_hash = ANY({}::varchar[])"
            " ORDER BY id",
            tenant_id,
            list(contact_hashes),
        )
        return [row["id"] for row in rows]

    async def delete_tenant(self, tenant_id: int) -> None:
        await Tenant.raw("DELETE FROM tenants WHERE id = {}", tenant_id)

    async def audit(self, entry: ports.AuditEntry) -> None:
        await AuditLog(
            tenant=entry.tenant_id,
            actor="shopify",
            action=entry.action,
            target_type=entry.target_type,
            target_ids=entry.target_ids,
            detail=entry.detail,
            trace_id=entry.trace_id,
        ).save()


class PiccoloArmedStore:
    """``ports.ArmedStore`` on PostgreSQL: a batch is a transaction holding its variants' row locks."""

    def __init__(self, engine: PostgresEngine) -> None:
        self.engine = engine

    @asynccontextmanager
    async def claim_due(self, now: datetime, limit: int) -> AsyncIterator[ports.ArmedBatch]:
        async with self.engine.transaction():
            rows = await VariantState.raw(_CLAIM_DUE, float(DEFAULT_RULES.debounce_seconds), now, limit)
            yield PiccoloArmedBatch([_armed_variant(row) for row in rows], PiccoloUnitOfWork())


class PiccoloArmedBatch:
    """``ports.ArmedBatch``: the locked variants and the unit of work of their transaction."""

    def __init__(self, variants: Sequence[ports.ArmedVariant], work: ports.UnitOfWork) -> None:
        self.variants = variants
        self.work = work


def _armed_variant(row: dict[str, Any]) -> ports.ArmedVariant:
    return ports.ArmedVariant(
        tenant=ports.Tenant(row["tenant"], row["shop_domain"]),
        variant=ports.VariantRef(row["variant_id"], row["product_id"]),
        armed_at=row["armed_at"],
        last_restock_at=row["last_restock_at"],
    )


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
