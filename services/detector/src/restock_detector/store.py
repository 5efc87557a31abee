"""The PostgreSQL adapters of the detector's ports, on asyncpg directly.

The tables are Piccolo's (``restock_common.db.tables``), but a webhook is the detector's hot path (hundreds
a second), so its statements go straight to asyncpg on a pool of the detector's own (``open_pool``): each
is prepared once per connection (asyncpg's statement cache) and bound with ``$n`` parameters, without
Piccolo's per-query compilation, and several steps share one statement where the lock order allows. A
unit of work is one pooled connection inside one transaction; every statement of a webhook (receipt,
snapshot, decision, restock, outbox) commits or rolls back together.

Tracing: the asyncpg instrumentation's span per statement is suppressed here (on the webhook's path those
spans cost more CPU than the statements). The relay, scheduler and sync get one CLIENT span per unit of work
(``db.transaction``, not made current, so the traceparent written on rows stays the caller's); a webhook's
transaction gets none: it is most of the request's SERVER span already.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from typing import Any

import asyncpg
import msgspec
from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.trace import SpanKind

from restock_common.jobs import WavePlanStatus
from restock_common.rules import DEFAULT_RULES, Rules, decode_rules
from restock_detector import ports

_FIND_TENANT = "SELECT id, shop_domain FROM tenants WHERE shop_domain = $1 AND ($2 OR uninstalled_at IS NULL)"

_SHOP_ACCESS = "SELECT id, shop_domain, access_token FROM tenants WHERE id = $1 AND uninstalled_at IS NULL"
_SHOP_BY_DOMAIN = (
    "SELECT id, shop_domain, access_token FROM tenants WHERE shop_domain = $1 AND uninstalled_at IS NULL"
)

# A receipt is claimed once per webhook id and once per shop event: ON CONFLICT DO NOTHING without a target
# covers both unique indexes (``webhook_receipts_one_per_event`` is partial: an event id may be absent). A
# concurrent claim of the same event waits for the first to commit, then claims nothing.
_CLAIM_RECEIPT = """
INSERT INTO webhook_receipts (webhook_id, event_id, shop_domain, topic, triggered_at, received_at)
VALUES ($1::varchar, $2::varchar, $3::varchar, $4::varchar, $5::timestamptz, now())
ON CONFLICT DO NOTHING
RETURNING id
"""

# A mapping from the Admin API has no sku or title: it keeps the ones a product payload stored.
_SAVE_ITEMS = """
INSERT INTO inventory_items (tenant, inventory_item_id, variant_id, product_id, sku, title, updated_at)
SELECT $1, item, variant, product, sku, title, now()
FROM unnest($2::bigint[], $3::bigint[], $4::bigint[], $5::varchar[], $6::text[])
    AS given(item, variant, product, sku, title)
ON CONFLICT (tenant, inventory_item_id) DO UPDATE SET
    variant_id = EXCLUDED.variant_id,
    product_id = COALESCE(EXCLUDED.product_id, inventory_items.product_id),
    sku = COALESCE(EXCLUDED.sku, inventory_items.sku),
    title = COALESCE(EXCLUDED.title, inventory_items.title),
    updated_at = EXCLUDED.updated_at
"""

# A level is saved only if it is not older than the stored one (Shopify does not guarantee order): the rule
# of every snapshot upsert, and of ``optimistic.level_total``'s stale check.
_NEWER_LEVEL_WINS = """ON CONFLICT (tenant, inventory_item_id, location_id) DO UPDATE SET
    available = EXCLUDED.available, shopify_updated_at = EXCLUDED.shopify_updated_at,
    observed_at = EXCLUDED.observed_at, source = EXCLUDED.source
WHERE stock_snapshots.shopify_updated_at <= EXCLUDED.shopify_updated_at"""


def _line_open(tenant: str, variant: str) -> str:
    """The SQL condition that a variant's wave line is open (ADR 26): targets wait in it, so its
    ``stock.changed`` has a consumer. ``tenant`` and ``variant`` are the SQL expressions naming it."""
    return (
        f"EXISTS (SELECT 1 FROM wave_plans WHERE tenant = {tenant} AND variant_id = {variant}"
        f" AND status <> '{WavePlanStatus.IDLE}')"
    )


# An observation older than the stored one loses: the WHERE makes the upsert a no-op, and nothing returns.
_SAVE_SNAPSHOT = f"""
INSERT INTO stock_snapshots (tenant, inventory_item_id, location_id, available, shopify_updated_at,
                             observed_at, source)
VALUES ($1, $2, $3, $4, $5, now(), $6)
{_NEWER_LEVEL_WINS}
RETURNING id
"""

_RULES_OF = "SELECT body::text AS body FROM rules WHERE tenant = $1"

# Creates the variant's row if missing and locks it either way, in one statement: ON CONFLICT DO UPDATE
# takes the row lock and returns the latest committed version (a no-op update, HOT).
_LOCK_VARIANT = """
INSERT INTO variant_states (tenant, variant_id, available, updated_at)
VALUES ($1, $2, 0, now())
ON CONFLICT (tenant, variant_id) DO UPDATE SET tenant = EXCLUDED.tenant
RETURNING available, last_restock_at, armed_at
"""

# The webhook's hot path in one trip: is the shop installed, claim the receipt, then the item's variant,
# locked, and the shop's rules. The item is read and its variant locked only if the receipt was claimed.
_CLAIM_LEVEL = """
WITH shop AS (
    SELECT 1 FROM tenants WHERE id = $6 AND uninstalled_at IS NULL
), receipt AS (
    INSERT INTO webhook_receipts (webhook_id, event_id, shop_domain, topic, triggered_at, received_at)
    SELECT $1::varchar, $2::varchar, $3::varchar, $4::varchar, $5::timestamptz, now()
    WHERE EXISTS (SELECT 1 FROM shop)
    ON CONFLICT DO NOTHING  -- the webhook id or the shop's event id (_CLAIM_RECEIPT)
    RETURNING id
), item AS (
    SELECT variant_id, product_id FROM inventory_items
    WHERE tenant = $6 AND inventory_item_id = $7 AND EXISTS (SELECT 1 FROM receipt)
), state AS (
    INSERT INTO variant_states (tenant, variant_id, available, updated_at)
    SELECT $6, variant_id, 0, now() FROM item
    ON CONFLICT (tenant, variant_id) DO UPDATE SET tenant = EXCLUDED.tenant
    RETURNING variant_id, available, last_restock_at, armed_at
)
SELECT EXISTS (SELECT 1 FROM shop) AS installed, EXISTS (SELECT 1 FROM receipt) AS claimed, locked.*,
       (SELECT body::text FROM rules WHERE tenant = $6) AS rules
FROM (SELECT 1) AS one
LEFT JOIN (
    SELECT item.variant_id, item.product_id, state.available, state.last_restock_at, state.armed_at
    FROM item JOIN state USING (variant_id)
) AS locked ON true
"""

# The two-trip webhook's read (ADR 27), one snapshot of everything its decision needs, without a lock: the
# shop installed?, the delivery seen?, the item's variant, its state and the row's version, the rules, the
# stored time of this level, the variant's other levels (its items' snapshots but this one) and whether its
# wave line is open (a freeze that opens it later moves the version: the write is then refused).
_READ_LEVEL = f"""
SELECT EXISTS (SELECT 1 FROM tenants WHERE id = $1 AND uninstalled_at IS NULL) AS installed,
       EXISTS (SELECT 1 FROM webhook_receipts WHERE webhook_id = $2)
       OR EXISTS (SELECT 1 FROM webhook_receipts WHERE shop_domain = $4 AND event_id = $3) AS seen,
       item.variant_id, item.product_id,
       state.available, state.last_restock_at, state.armed_at, state.version,
       (SELECT body::text FROM rules WHERE tenant = $1) AS rules,
       (SELECT shopify_updated_at FROM stock_snapshots
        WHERE tenant = $1 AND inventory_item_id = $5 AND location_id = $6) AS stored_at,
       others.locations, others.levels,
       {_line_open("$1", "item.variant_id")} AS line_open
FROM (SELECT 1) AS one
LEFT JOIN inventory_items item ON item.tenant = $1 AND item.inventory_item_id = $5
LEFT JOIN variant_states state ON state.tenant = $1 AND state.variant_id = item.variant_id
LEFT JOIN LATERAL (
    SELECT array_agg(s.location_id) AS locations, array_agg(s.available) AS levels
    FROM inventory_items i
    JOIN stock_snapshots s ON s.tenant = i.tenant AND s.inventory_item_id = i.inventory_item_id
    WHERE i.tenant = $1 AND i.variant_id = item.variant_id
      AND NOT (s.inventory_item_id = $5 AND s.location_id = $6)
) AS others ON true
"""

# The two-trip webhook's write: everything, or nothing if the variant's row is no longer at the version read
# (its trigger bumps the version on every update; every other write depends on ``state``), or, when the read
# found no row (version NULL), if one exists now. The wave line was read closed or open with that version,
# and a freeze that opens a line moves the version (``wave_store._CURRENT_TOTAL``), so an opening cannot be
# missed; the check here, in this statement's snapshot, only drops a change for a line closed since. A
# receipt claimed by a concurrent delivery after the state was updated rolls the statement back by raising
# (restock_claim_lost).
_WRITE_LEVEL = f"""
WITH created AS (  -- a variant's first observation: its row, unless a concurrent writer created it
    INSERT INTO variant_states (tenant, variant_id, available, armed_at, last_restock_at, updated_at)
    SELECT $6, $7, $9, $10, $11, COALESCE($12, now()) WHERE $8::bigint IS NULL
    ON CONFLICT (tenant, variant_id) DO NOTHING
    RETURNING 1
), updated AS (
    UPDATE variant_states
    SET available = $9, armed_at = $10, last_restock_at = $11, updated_at = COALESCE($12, updated_at)
    WHERE tenant = $6 AND variant_id = $7 AND version = $8
    RETURNING 1
), state AS (
    SELECT 1 FROM created UNION ALL SELECT 1 FROM updated
), receipt AS (
    INSERT INTO webhook_receipts (webhook_id, event_id, shop_domain, topic, triggered_at, received_at)
    SELECT $1::varchar, $2::varchar, $3::varchar, $4::varchar, $5::timestamptz, now() FROM state
    ON CONFLICT DO NOTHING
    RETURNING 1
), level AS (
    INSERT INTO stock_snapshots (tenant, inventory_item_id, location_id, available, shopify_updated_at,
                                 observed_at, source)
    SELECT $6, $13, $14, $15, $16, now(), $17 FROM state
    {_NEWER_LEVEL_WINS}
), changed AS (
    INSERT INTO outbox (tenant, routing_key, message_id, ordering_key, payload, traceparent, created_at,
                        publish_attempts)
    SELECT $6, $18, $19, $20, $21, $22, now(), 0 FROM state
    WHERE $18::varchar IS NOT NULL
      AND {_line_open("$6", "$7")}
    RETURNING 1
), event AS (
    INSERT INTO restock_events (tenant, variant_id, product_id, available, restock_window, source,
                                detected_at, traceparent)
    SELECT $6, $7, $23, $24, $25, $26, $27, $28 FROM state WHERE $24::int IS NOT NULL
    RETURNING id
), queued AS (
    INSERT INTO outbox (tenant, routing_key, message_id, ordering_key, payload, traceparent, created_at,
                        publish_attempts)
    SELECT $6, $29, $30, $31, $32::text || event.id::text || $33::text, $34, now(), 0 FROM event
)
SELECT EXISTS (SELECT 1 FROM state) AS written, EXISTS (SELECT 1 FROM changed) AS changed,
       (SELECT id FROM event) AS restock_event_id,
       CASE WHEN EXISTS (SELECT 1 FROM state) AND NOT EXISTS (SELECT 1 FROM receipt)
            THEN restock_claim_lost($1) END AS claim_lost
"""
CLAIM_LOST = "restock_claim_lost"  # the constraint name restock_claim_lost() reports

# save_snapshot + variant_total in one trip. The statement cannot see its own upsert, so the total is the
# other snapshots plus the saved level; they are current because every writer of a known variant's
# snapshots holds the variant's row lock, which this transaction took in an earlier statement.
_SAVE_LEVEL = f"""
WITH saved AS (
    INSERT INTO stock_snapshots (tenant, inventory_item_id, location_id, available, shopify_updated_at,
                                 observed_at, source)
    VALUES ($1, $2, $3, $4, $5, now(), $6)
    {_NEWER_LEVEL_WINS}
    RETURNING location_id, available
)
SELECT (SELECT COALESCE(SUM(s.available), 0)
        FROM stock_snapshots s
        JOIN inventory_items i ON i.tenant = s.tenant AND i.inventory_item_id = s.inventory_item_id
        WHERE i.tenant = $1 AND i.variant_id = $7 AND s.location_id <> ALL($8::bigint[])
          AND NOT (s.inventory_item_id = $2 AND s.location_id = $3))
       + CASE WHEN saved.location_id = ANY($8::bigint[]) THEN 0 ELSE saved.available END AS total
FROM saved
"""

# A variant nobody waits for (no subscription that is not unsubscribed) and never seen before starts at the
# total the sync found; sorted, so that concurrent seeders create rows in one order.
_SEED_UNWATCHED = """
INSERT INTO variant_states (tenant, variant_id, available, updated_at)
SELECT $1, given.variant, given.total, now()
FROM unnest($2::bigint[], $3::int[]) AS given(variant, total)
WHERE NOT EXISTS (
    SELECT 1 FROM subscriptions s
    WHERE s.tenant = $1 AND s.variant_id = given.variant AND s.state <> 'unsubscribed'
)
ORDER BY given.variant
ON CONFLICT (tenant, variant_id) DO NOTHING
"""

_VARIANT_TOTAL = """
SELECT COALESCE(SUM(s.available), 0)::bigint AS total
FROM stock_snapshots s
JOIN inventory_items i ON i.tenant = s.tenant AND i.inventory_item_id = s.inventory_item_id
WHERE i.tenant = $1 AND i.variant_id = $2 AND s.location_id <> ALL($3::bigint[])
"""

_SAVE_VARIANT = """
UPDATE variant_states SET available = $3, updated_at = $4, armed_at = $5
WHERE tenant = $1 AND variant_id = $2
"""

# The new total, and its stock.changed only if the variant's wave line is open (ADR 26): the wave planner
# is the one consumer, and it re-plans only a line with targets waiting; a line that opens later reads the
# total itself, under this row's lock (the dispatcher's ``plan_restock``), so no change is lost in between.
_SAVE_VARIANT_AND_ENQUEUE = f"""
WITH state AS (
    UPDATE variant_states SET available = $3, updated_at = $4, armed_at = $5
    WHERE tenant = $1 AND variant_id = $2
)
INSERT INTO outbox (tenant, routing_key, message_id, ordering_key, payload, traceparent, created_at,
                    publish_attempts)
SELECT $1, $6, $7, $8, $9, $10, now(), 0
WHERE {_line_open("$1", "$2")}
"""

_RECORD_RESTOCK = """
WITH event AS (
    INSERT INTO restock_events (tenant, variant_id, product_id, available, restock_window, source,
                                detected_at, traceparent)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
    RETURNING id
), cooled AS (
    UPDATE variant_states SET last_restock_at = $7, armed_at = NULL WHERE tenant = $1 AND variant_id = $2
), queued AS (
    INSERT INTO outbox (tenant, routing_key, message_id, ordering_key, payload, traceparent, created_at,
                        publish_attempts)
    SELECT $1, $9, $10, $11, $12::text || event.id::text || $13::text, $14, now(), 0 FROM event
)
SELECT id FROM event
"""

_ENQUEUE = """
INSERT INTO outbox (tenant, routing_key, message_id, ordering_key, payload, traceparent, created_at,
                    publish_attempts)
VALUES ($1, $2, $3, $4, $5, $6, now(), 0)
"""

_MARK_UNINSTALLED = """
WITH shop AS (UPDATE tenants SET uninstalled_at = $2 WHERE id = $1)
UPDATE variant_states SET armed_at = NULL WHERE tenant = $1
"""

# Erased and ended: a redacted subscription has no contact and must never be a target again (the freeze
# takes only confirmed ones), even if the shopper signs up anew later (that is a new consent).
_REDACT = """
UPDATE subscriptions SET email = NULL, phone = NULL, redacted_at = $1,
       state = 'unsubscribed', unsubscribed_at = COALESCE(unsubscribed_at, $1)
WHERE tenant = $2 AND contact_hash = ANY($3::varchar[])
RETURNING id
"""

_SUBSCRIPTIONS_OF = """
SELECT id FROM subscriptions WHERE tenant = $1 AND contact_hash = ANY($2::varchar[]) ORDER BY id
"""

_AUDIT = """
INSERT INTO audit_log (tenant, actor, action, target_type, target_ids, detail, trace_id, occurred_at)
VALUES ($1, 'shopify', $2, $3, $4::jsonb, $5::jsonb, $6, now())
"""

# Armed variants of installed shops whose debounce (the shop's rule, else the default) has ended.
_DUE = """
SELECT v.tenant, t.shop_domain, t.access_token, v.variant_id, v.armed_at, v.last_restock_at, v.available,
       COALESCE((r.body ->> 'confirm_with_admin_api')::boolean, false) AS confirm,
       (SELECT i.product_id FROM inventory_items i
        WHERE i.tenant = v.tenant AND i.variant_id = v.variant_id ORDER BY i.id LIMIT 1) AS product_id
FROM variant_states v
JOIN tenants t ON t.id = v.tenant AND t.uninstalled_at IS NULL
LEFT JOIN rules r ON r.tenant = v.tenant
WHERE v.armed_at IS NOT NULL
  AND v.armed_at + make_interval(secs => COALESCE((r.body ->> 'debounce_seconds')::double precision, $1))
      <= $2
"""
_CLAIM_DUE = _DUE + "ORDER BY v.armed_at LIMIT $3 FOR UPDATE OF v SKIP LOCKED"
_DUE_CONFIRMATIONS = (
    _DUE + "AND COALESCE((r.body ->> 'confirm_with_admin_api')::boolean, false) ORDER BY v.armed_at LIMIT $3"
)

# Relays take turns: a claim waits on the oldest row another relay's batch holds (no SKIP LOCKED), then
# re-reads it and skips it if that batch published it. So a batch starts at the oldest unpublished row once
# the batch holding it ended. With SKIP LOCKED, two replicas' relays each took rows of one variant side by
# side and could publish them out of order.
_CLAIM_OUTBOX = """
SELECT id, message_id, routing_key, payload, traceparent, ordering_key FROM outbox
WHERE published_at IS NULL
ORDER BY id
LIMIT $1
FOR UPDATE
"""

# For the rest of the batch's transaction only (set_config's third argument: SET LOCAL).
_HOLD_LIMIT = "SELECT set_config('idle_in_transaction_session_timeout', $1, true)"

_SYNC_STATES = """
SELECT t.id, t.shop_domain, t.access_token, t.sync_requested_at, t.last_sync_started_at,
       t.last_sync_finished_at,
       COALESCE((r.body ->> 'sync_interval_seconds')::double precision, $1) AS interval_seconds
FROM tenants t LEFT JOIN rules r ON r.tenant = t.id
WHERE t.uninstalled_at IS NULL
"""

# Two int4 keys: a key space apart from the single-bigint event locks above. Session level: the lock spans
# the sync's many page transactions, and dies with the connection if the process does.
SYNC_LOCK_CLASS = 0x5359  # "SY"
_TRY_SYNC_LOCK = "SELECT pg_try_advisory_lock($1, $2::int)"
_SYNC_UNLOCK = "SELECT pg_advisory_unlock($1, $2::int)"


async def open_pool(database_url: str, *, max_size: int = 10) -> asyncpg.Pool:
    """The detector's own pool. A connection goes back to it without asyncpg's reset query (one round trip
    per release, on every webhook): nothing here changes session state, and the sync's session-level
    advisory lock is released explicitly (``PostgresSyncStore.exclusive``)."""
    return await asyncpg.create_pool(database_url, min_size=1, max_size=max_size, reset=_keep_session)


async def _keep_session(connection: asyncpg.Connection) -> None:
    """asyncpg has already ended any open transaction; there is nothing else to undo."""


tracer = trace.get_tracer("restock.detector.store")


@contextmanager
def _db_span(name: str) -> Iterator[None]:
    """One span for a block of statements, the per-statement instrumentation suppressed inside it."""
    span = tracer.start_span(name, kind=SpanKind.CLIENT, attributes={"db.system": "postgresql"})
    try:
        with suppress_instrumentation():
            yield
    except BaseException as error:
        span.record_exception(error)
        raise
    finally:
        span.end()


class PostgresStore:
    """An adapter on an asyncpg pool (``open_pool``'s, or in tests the Piccolo engine's)."""

    # The webhook store says False: its transaction is most of the request's SERVER span already, and on the
    # hot path a span costs about as much CPU as a statement.
    traced = True

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        with _db_span("db.transaction") if self.traced else suppress_instrumentation():
            async with self.pool.acquire() as connection, connection.transaction():
                yield connection

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[ports.UnitOfWork]:
        async with self.transaction() as connection:
            yield PostgresUnitOfWork(connection)


class PostgresWebhookStore(PostgresStore):
    """``ports.WebhookStore`` on PostgreSQL."""

    traced = False

    async def find_tenant(self, shop_domain: str, *, installed_only: bool = True) -> ports.Tenant | None:
        with _db_span("db.find_tenant"):
            row = await self.pool.fetchrow(_FIND_TENANT, shop_domain, not installed_only)
        return ports.Tenant(row["id"], row["shop_domain"]) if row else None

    async def shop_access(self, tenant_id: int) -> ports.ShopAccess | None:
        row = await self.pool.fetchrow(_SHOP_ACCESS, tenant_id)
        return ports.ShopAccess(row["id"], row["shop_domain"], row["access_token"]) if row else None

    @asynccontextmanager
    async def level_session(self) -> AsyncIterator[ports.LevelSession]:
        # One acquire for both trips (a release costs about as much client CPU as a statement), and the
        # asyncpg instrumentation's span per statement suppressed, as for the webhook's transaction.
        with suppress_instrumentation():
            async with self.pool.acquire() as connection:
                yield PostgresLevelSession(connection)


class PostgresLevelSession:
    """``ports.LevelSession`` on one pooled connection, each statement its own transaction."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self.connection = connection

    async def read_level(
        self, receipt: ports.Receipt, tenant_id: int, level: ports.LevelObservation
    ) -> ports.LevelRead:
        row = await self.connection.fetchrow(
            _READ_LEVEL,
            tenant_id,
            receipt.webhook_id,
            receipt.event_id,
            receipt.shop_domain,
            level.inventory_item_id,
            level.location_id,
        )
        if not row["installed"] or row["seen"] or row["variant_id"] is None:
            return ports.LevelRead(row["installed"], row["seen"])
        return ports.LevelRead(
            installed=True,
            seen=False,
            variant=ports.VariantRef(row["variant_id"], row["product_id"]),
            memory=ports.VariantMemory(row["available"] or 0, row["last_restock_at"], row["armed_at"]),
            version=row["version"],
            rules=decode_rules(row["rules"]),
            stored_at=row["stored_at"],
            other_levels=tuple(zip(row["locations"] or (), row["levels"] or (), strict=True)),
            line_open=row["line_open"],
        )

    async def write_level(self, write: ports.LevelWrite) -> ports.LevelWritten:
        receipt, level, state, change = write.receipt, write.level, write.state, write.change
        restock, message = write.restock or (None, None)
        try:
            row = await self.connection.fetchrow(
                _WRITE_LEVEL,
                receipt.webhook_id,
                receipt.event_id,
                receipt.shop_domain,
                receipt.topic,
                receipt.triggered_at,
                write.tenant_id,
                write.variant.variant_id,
                write.version,
                state.available,
                state.armed_at,
                state.last_restock_at,
                write.updated_at,
                level.inventory_item_id,
                level.location_id,
                level.available,
                level.updated_at,
                level.source,
                change and change.routing_key,
                change and change.message_id,
                change and change.ordering_key,
                change and change.payload,
                change and change.traceparent,
                restock and restock.product_id,
                restock and restock.available,
                restock and restock.restock_window,
                restock and restock.source,
                restock and restock.detected_at,
                restock and restock.traceparent,
                message and message.routing_key,
                message and message.message_id,
                message and message.ordering_key,
                message and message.before,
                message and message.after,
                message and message.traceparent,
            )
        except asyncpg.UniqueViolationError as error:
            if error.constraint_name != CLAIM_LOST:
                raise
            return ports.LevelWritten(ports.WriteOutcome.DUPLICATE)
        if not row["written"]:
            return ports.LevelWritten(ports.WriteOutcome.CONFLICT)
        event_id = row["restock_event_id"]
        return ports.LevelWritten(
            ports.WriteOutcome.WRITTEN, row["changed"] or event_id is not None, event_id
        )

    async def claim_receipt(self, receipt: ports.Receipt) -> bool:
        return await _claim_receipt(self.connection, receipt)


async def _claim_receipt(connection: asyncpg.Connection, receipt: ports.Receipt) -> bool:
    row = await connection.fetchrow(
        _CLAIM_RECEIPT,
        receipt.webhook_id,
        receipt.event_id,
        receipt.shop_domain,
        receipt.topic,
        receipt.triggered_at,
    )
    return row is not None


class PostgresUnitOfWork:
    """``ports.UnitOfWork`` on one connection, inside the transaction its store opened."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self.connection = connection

    async def claim_receipt(self, receipt: ports.Receipt) -> bool:
        return await _claim_receipt(self.connection, receipt)

    async def rules_of(self, tenant_id: int) -> Rules:
        body = await self.connection.fetchval(_RULES_OF, tenant_id)
        return decode_rules(body)

    async def save_items(self, tenant_id: int, items: Sequence[ports.ItemMapping]) -> None:
        # One row per item (a payload naming an item twice would make the upsert touch a row twice), in
        # item order: product webhooks and sync pages then lock the rows they share in the same order.
        unique = sorted({item.inventory_item_id: item for item in items}.values(), key=_item_key)
        if not unique:
            return
        await self.connection.execute(
            _SAVE_ITEMS,
            tenant_id,
            [item.inventory_item_id for item in unique],
            [item.variant_id for item in unique],
            [item.product_id for item in unique],
            [item.sku for item in unique],
            [item.title for item in unique],
        )

    async def save_snapshot(self, tenant_id: int, level: ports.LevelObservation) -> bool:
        row = await self.connection.fetchrow(
            _SAVE_SNAPSHOT,
            tenant_id,
            level.inventory_item_id,
            level.location_id,
            level.available,
            level.updated_at,
            level.source,
        )
        return row is not None

    async def lock_variant(self, tenant_id: int, variant_id: int) -> ports.VariantMemory:
        row = await self.connection.fetchrow(_LOCK_VARIANT, tenant_id, variant_id)
        return ports.VariantMemory(row["available"], row["last_restock_at"], row["armed_at"])

    async def claim_level(
        self, receipt: ports.Receipt, tenant_id: int, inventory_item_id: int
    ) -> ports.LevelClaim:
        row = await self.connection.fetchrow(
            _CLAIM_LEVEL,
            receipt.webhook_id,
            receipt.event_id,
            receipt.shop_domain,
            receipt.topic,
            receipt.triggered_at,
            tenant_id,
            inventory_item_id,
        )
        if not row["claimed"] or row["variant_id"] is None:
            return ports.LevelClaim(row["installed"], row["claimed"])
        locked = ports.LockedVariant(
            ports.VariantRef(row["variant_id"], row["product_id"]),
            ports.VariantMemory(row["available"], row["last_restock_at"], row["armed_at"]),
            decode_rules(row["rules"]),
        )
        return ports.LevelClaim(True, True, locked)

    async def seed_unwatched(self, tenant_id: int, totals: Sequence[tuple[int, int]]) -> None:
        if totals:
            variants, counts = zip(*totals, strict=True)
            await self.connection.execute(_SEED_UNWATCHED, tenant_id, list(variants), list(counts))

    async def save_level(
        self,
        tenant_id: int,
        variant_id: int,
        level: ports.LevelObservation,
        excluded_location_ids: Sequence[int],
    ) -> int | None:
        total = await self.connection.fetchval(
            _SAVE_LEVEL,
            tenant_id,
            level.inventory_item_id,
            level.location_id,
            level.available,
            level.updated_at,
            level.source,
            variant_id,
            list(excluded_location_ids),
        )
        return None if total is None else int(total)

    async def variant_total(
        self, tenant_id: int, variant_id: int, excluded_location_ids: Sequence[int]
    ) -> int:
        total = await self.connection.fetchval(
            _VARIANT_TOTAL, tenant_id, variant_id, list(excluded_location_ids)
        )
        return int(total)

    async def save_variant(
        self,
        tenant_id: int,
        variant_id: int,
        available: int,
        now: datetime,
        armed_at: datetime | None,
        change: ports.OutboxMessage | None = None,
    ) -> bool:
        if change is None:
            await self.connection.execute(_SAVE_VARIANT, tenant_id, variant_id, available, now, armed_at)
            return False
        status = await self.connection.execute(
            _SAVE_VARIANT_AND_ENQUEUE,
            tenant_id,
            variant_id,
            available,
            now,
            armed_at,
            change.routing_key,
            change.message_id,
            change.ordering_key,
            change.payload,
            change.traceparent,
        )
        return bool(status == "INSERT 0 1")

    async def record_restock(self, restock: ports.NewRestock, message: ports.RestockMessage) -> int:
        event_id = await self.connection.fetchval(
            _RECORD_RESTOCK,
            restock.tenant_id,
            restock.variant_id,
            restock.product_id,
            restock.available,
            restock.restock_window,
            restock.source,
            restock.detected_at,
            restock.traceparent,
            message.routing_key,
            message.message_id,
            message.ordering_key,
            message.before,
            message.after,
            message.traceparent,
        )
        return int(event_id)

    async def enqueue(self, message: ports.OutboxMessage) -> None:
        await self.connection.execute(
            _ENQUEUE,
            message.tenant_id,
            message.routing_key,
            message.message_id,
            message.ordering_key,
            message.payload,
            message.traceparent,
        )

    async def mark_uninstalled(self, tenant_id: int, now: datetime) -> None:
        await self.connection.execute(_MARK_UNINSTALLED, tenant_id, now)

    async def redact_contacts(
        self, tenant_id: int, contact_hashes: Sequence[str], now: datetime
    ) -> list[int]:
        rows = await self.connection.fetch(_REDACT, now, tenant_id, list(contact_hashes))
        return sorted(row["id"] for row in rows)

    async def subscriptions_of(self, tenant_id: int, contact_hashes: Sequence[str]) -> list[int]:
        rows = await self.connection.fetch(_SUBSCRIPTIONS_OF, tenant_id, list(contact_hashes))
        return [row["id"] for row in rows]

    async def delete_tenant(self, tenant_id: int) -> None:
        await self.connection.execute("DELETE FROM tenants WHERE id = $1", tenant_id)

    async def audit(self, entry: ports.AuditEntry) -> None:
        await self.connection.execute(
            _AUDIT,
            entry.tenant_id,
            entry.action,
            entry.target_type,
            msgspec.json.encode(entry.target_ids).decode(),
            msgspec.json.encode(entry.detail).decode(),
            entry.trace_id,
        )


def _item_key(item: ports.ItemMapping) -> int:
    return item.inventory_item_id


class PostgresArmedStore(PostgresStore):
    """``ports.ArmedStore`` on PostgreSQL: a batch is a transaction holding its variants' row locks."""

    @asynccontextmanager
    async def claim_due(self, now: datetime, limit: int) -> AsyncIterator[ports.ArmedBatch]:
        async with self.transaction() as connection:
            rows = await connection.fetch(_CLAIM_DUE, float(DEFAULT_RULES.debounce_seconds), now, limit)
            yield PostgresArmedBatch([_armed_variant(row) for row in rows], PostgresUnitOfWork(connection))

    async def due_confirmations(self, now: datetime, limit: int) -> list[ports.ConfirmationTarget]:
        rows = await self.pool.fetch(_DUE_CONFIRMATIONS, float(DEFAULT_RULES.debounce_seconds), now, limit)
        return [
            ports.ConfirmationTarget(
                ports.ShopAccess(row["tenant"], row["shop_domain"], row["access_token"]), row["variant_id"]
            )
            for row in rows
        ]


class PostgresArmedBatch:
    """``ports.ArmedBatch``: the locked variants and the unit of work of their transaction."""

    def __init__(self, variants: Sequence[ports.ArmedVariant], work: ports.UnitOfWork) -> None:
        self.variants = variants
        self.work = work


def _armed_variant(row: Any) -> ports.ArmedVariant:
    return ports.ArmedVariant(
        tenant=ports.Tenant(row["tenant"], row["shop_domain"]),
        variant=ports.VariantRef(row["variant_id"], row["product_id"]),
        armed_at=row["armed_at"],
        last_restock_at=row["last_restock_at"],
        available=row["available"],
    )


class PostgresOutboxStore(PostgresStore):
    """``ports.OutboxStore`` on PostgreSQL: a batch is a transaction holding its rows' locks, and PostgreSQL
    ends its session if it stays idle in it for ``hold_limit_seconds``
    (``Settings.outbox_hold_limit_seconds``: a frozen relay releases its rows then; a live one ends its
    batches sooner, ``relay.py``)."""

    def __init__(self, pool: asyncpg.Pool, *, hold_limit_seconds: float) -> None:
        super().__init__(pool)
        self.idle_limit_ms = str(round(hold_limit_seconds * 1000))

    @asynccontextmanager
    async def claim(self, limit: int) -> AsyncIterator[ports.OutboxBatch]:
        async with self.transaction() as connection:
            rows = await connection.fetch(_CLAIM_OUTBOX, limit)
            if rows:  # an empty claim holds nothing, and polls come twice a second
                await connection.execute(_HOLD_LIMIT, self.idle_limit_ms)
            yield PostgresOutboxBatch([_outbox_row(row) for row in rows], connection)


class PostgresOutboxBatch:
    """``ports.OutboxBatch``: marks run in the batch's transaction, committed when the batch ends."""

    def __init__(self, rows: Sequence[ports.OutboxRow], connection: asyncpg.Connection) -> None:
        self.rows = rows
        self.connection = connection

    async def mark_published(self, row_ids: Sequence[int]) -> None:
        await self.connection.execute(
            "UPDATE outbox SET published_at = now(), publish_attempts = publish_attempts + 1"
            " WHERE id = ANY($1::bigint[])",
            list(row_ids),
        )

    async def note_failure(self, row_id: int) -> None:
        await self.connection.execute(
            "UPDATE outbox SET publish_attempts = publish_attempts + 1 WHERE id = $1", row_id
        )


def _outbox_row(row: Any) -> ports.OutboxRow:
    return ports.OutboxRow(
        id=row["id"],
        message_id=str(row["message_id"]),
        routing_key=row["routing_key"],
        payload=row["payload"].encode(),
        traceparent=row["traceparent"],
        ordering_key=row["ordering_key"],
    )


class PostgresSyncStore(PostgresStore):
    """``ports.SyncStore`` on PostgreSQL."""

    async def sync_states(self) -> list[ports.SyncState]:
        rows = await self.pool.fetch(_SYNC_STATES, float(DEFAULT_RULES.sync_interval_seconds))
        return [_sync_state(row) for row in rows]

    async def sync_state(self, tenant_id: int) -> ports.SyncState | None:
        row = await self.pool.fetchrow(
            _SYNC_STATES + " AND t.id = $2", float(DEFAULT_RULES.sync_interval_seconds), tenant_id
        )
        return _sync_state(row) if row else None

    async def shop_by_domain(self, shop_domain: str) -> ports.ShopAccess | None:
        row = await self.pool.fetchrow(_SHOP_BY_DOMAIN, shop_domain)
        return ports.ShopAccess(row["id"], row["shop_domain"], row["access_token"]) if row else None

    @asynccontextmanager
    async def exclusive(self, tenant_id: int) -> AsyncIterator[bool]:
        async with self.pool.acquire() as connection:
            locked = bool(await connection.fetchval(_TRY_SYNC_LOCK, SYNC_LOCK_CLASS, tenant_id))
            try:
                yield locked
            finally:
                if locked:
                    await connection.execute(_SYNC_UNLOCK, SYNC_LOCK_CLASS, tenant_id)

    async def mark_started(self, tenant_id: int, now: datetime) -> None:
        await self.pool.execute("UPDATE tenants SET last_sync_started_at = $2 WHERE id = $1", tenant_id, now)

    async def mark_finished(
        self, tenant_id: int, now: datetime, error: str | None, *, rerun: bool = False
    ) -> None:
        await self.pool.execute(
            "UPDATE tenants SET last_sync_finished_at = $2, last_sync_error = $3,"
            " sync_requested_at = CASE WHEN $4 THEN $2 ELSE sync_requested_at END WHERE id = $1",
            tenant_id,
            now,
            error,
            rerun,
        )

    async def known_items(self, tenant_id: int) -> int:
        count = await self.pool.fetchval("SELECT count(*) FROM inventory_items WHERE tenant = $1", tenant_id)
        return int(count)


def _sync_state(row: Any) -> ports.SyncState:
    return ports.SyncState(
        shop=ports.ShopAccess(row["id"], row["shop_domain"], row["access_token"]),
        interval_seconds=float(row["interval_seconds"]),
        requested_at=row["sync_requested_at"],
        started_at=row["last_sync_started_at"],
        finished_at=row["last_sync_finished_at"],
    )
