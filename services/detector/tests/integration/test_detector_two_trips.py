"""The two-trip level webhook (ADR 27) on the real PostgreSQL: its write is all or nothing, and nothing when
the variant's row moved since the read or a concurrent delivery claimed the webhook; the version moves with
every update of the row."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from restock_common import signatures
from restock_common.db.tables import Rule, Tenant
from restock_common.rules import Rules, encode_rules
from restock_common.settings import Settings
from restock_detector.handler import Result, WebhookHandler
from restock_detector.optimistic import level_total
from restock_detector.ports import (
    LevelObservation,
    LevelRead,
    LevelWrite,
    LevelWritten,
    Receipt,
    VariantMemory,
    WriteOutcome,
)
from restock_detector.relay import OutboxWakeup
from restock_detector.store import PostgresWebhookStore

pytestmark = pytest.mark.integration

SHOP = "two-trips.myshopify.com"
ITEM, VARIANT, PRODUCT, LOCATION, OTHER_LOCATION = 3001, 2001, 1001, 4001, 4002
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Detector:
    def __init__(self, settings: Settings, pool: Any, tenant_id: int) -> None:
        self.secret = settings.shopify_api_secret.get_secret_value()
        self.store = PostgresWebhookStore(pool)
        self.handler = WebhookHandler(self.secret, self.store, OutboxWakeup(), lambda: T0)
        self.tenant_id = tenant_id
        self.sent = 0

    async def send(
        self, topic: str, payload: object, webhook_id: str | None = None, event_id: str | None = None
    ) -> Result:
        self.sent += 1
        body = json.dumps(payload).encode()
        headers = {
            "X-Shopify-Topic": topic,
            "X-Shopify-Shop-Domain": SHOP,
            "X-Shopify-Webhook-Id": webhook_id or f"webhook-{self.sent}",
            "X-Shopify-Hmac-Sha256": signatures.shopify_webhook_hmac(self.secret, body),
        }
        if event_id is not None:
            headers["X-Shopify-Event-Id"] = event_id
        return await self.handler.handle_webhook(headers, body)

    async def level(self, available: int, seconds: int, location: int = LOCATION) -> str:
        payload = {
            "inventory_item_id": ITEM,
            "location_id": location,
            "available": available,
            "updated_at": (T0 + timedelta(seconds=seconds)).isoformat(),
        }
        result = await self.send("inventory_levels/update", payload)
        assert result.status_code == 200, result.body
        return str(result.body["status"])

    async def read(self, receipt: Receipt, level: LevelObservation) -> LevelRead:
        async with self.store.level_session() as session:
            read = await session.read_level(receipt, self.tenant_id, level)
        assert read.memory is not None  # a known item
        return read

    async def write(self, write: LevelWrite) -> LevelWritten:
        async with self.store.level_session() as session:
            return await session.write_level(write)

    async def claim(self, receipt: Receipt) -> bool:
        async with self.store.level_session() as session:
            return await session.claim_receipt(receipt)

    def write_of(self, receipt: Receipt, level: LevelObservation, read: LevelRead) -> LevelWrite:
        """The write of a restock to ``level``'s total, as the handler would plan it from ``read``."""
        assert read.variant is not None
        assert read.memory is not None
        total = level_total(read, level, ())
        assert total is not None
        return LevelWrite(
            receipt=receipt,
            tenant_id=self.tenant_id,
            variant=read.variant,
            version=read.version,
            level=level,
            state=VariantMemory(total, read.memory.last_restock_at, None),
            updated_at=T0,
            change=None,
            restock=None,
        )


@pytest.fixture
async def detector(settings: Settings, engine: Any, clean_db: None) -> Detector:
    tenant = Tenant(shop_domain=SHOP)
    await tenant.save()
    await Rule(tenant=tenant.id, body=encode_rules(Rules(debounce_seconds=0))).save()
    detector = Detector(settings, engine.pool, int(tenant.id))
    product = {
        "id": PRODUCT,
        "title": "Tee",
        "variants": [{"id": VARIANT, "title": "M", "inventory_item_id": ITEM}],
    }
    assert (await detector.send("products/update", product)).status_code == 200
    assert await detector.level(0, 0) == "still_out"  # creates the variant's row
    return detector


async def state(engine: Any) -> dict[str, Any]:
    async with engine.pool.acquire() as db:
        row = await db.fetchrow(
            "SELECT available, version FROM variant_states WHERE variant_id = $1", VARIANT
        )
        snapshots = await db.fetch("SELECT location_id, available FROM stock_snapshots ORDER BY location_id")
        receipts = await db.fetchval("SELECT count(*) FROM webhook_receipts")
        outbox = await db.fetchval("SELECT count(*) FROM outbox")
    return {
        "available": row["available"],
        "version": row["version"],
        "snapshots": [(s["location_id"], s["available"]) for s in snapshots],
        "receipts": receipts,
        "outbox": outbox,
    }


async def test_a_known_variants_level_is_read_then_written_and_moves_the_version(
    detector: Detector, engine: Any
) -> None:
    before = await state(engine)
    assert await detector.level(4, 1) == "restock"
    after = await state(engine)
    assert after["version"] == before["version"] + 1  # one write: the two-trip path, not the lock
    assert (after["available"], after["snapshots"]) == (4, [(LOCATION, 4)])
    assert (after["receipts"], after["outbox"]) == (before["receipts"] + 1, before["outbox"] + 1)


async def test_a_write_after_the_variant_moved_writes_nothing(detector: Detector, engine: Any) -> None:
    receipt = Receipt("late", SHOP, "inventory_levels/update")
    level = LevelObservation(ITEM, LOCATION, 3, T0 + timedelta(seconds=5))
    read = await detector.read(receipt, level)
    assert await detector.level(2, 1, OTHER_LOCATION) == "restock"  # lands between read and write
    moved = await state(engine)

    written = await detector.write(detector.write_of(receipt, level, read))

    assert written.outcome is WriteOutcome.CONFLICT
    assert await state(engine) == moved  # no receipt, no level, no state: the handler redoes it locked


async def test_a_first_level_creates_the_row_unless_another_writer_did_meanwhile(
    detector: Detector, engine: Any
) -> None:
    async with engine.pool.acquire() as db:
        await db.execute("DELETE FROM variant_states")
    receipt = Receipt("first", SHOP, "inventory_levels/update")
    level = LevelObservation(ITEM, LOCATION, 3, T0 + timedelta(seconds=5))
    read = await detector.read(receipt, level)
    assert (read.version, read.memory) == (None, VariantMemory(0, None))
    assert await detector.level(2, 1, OTHER_LOCATION) == "restock"  # creates the row meanwhile
    created = await state(engine)

    written = await detector.write(detector.write_of(receipt, level, read))

    assert written.outcome is WriteOutcome.CONFLICT
    assert await state(engine) == created


async def test_any_update_of_the_row_moves_the_version(detector: Detector, engine: Any) -> None:
    receipt = Receipt("after-an-update", SHOP, "inventory_levels/update")
    level = LevelObservation(ITEM, LOCATION, 3, T0 + timedelta(seconds=5))
    read = await detector.read(receipt, level)
    async with engine.pool.acquire() as db:  # e.g. the scheduler disarming, or the dispatcher's freeze
        await db.execute("UPDATE variant_states SET armed_at = NULL WHERE variant_id = $1", VARIANT)
    written = await detector.write(detector.write_of(receipt, level, read))
    assert written.outcome is WriteOutcome.CONFLICT


async def test_a_write_whose_webhook_was_claimed_meanwhile_is_rolled_back(
    detector: Detector, engine: Any
) -> None:
    receipt = Receipt("twice", SHOP, "inventory_levels/update")
    level = LevelObservation(ITEM, LOCATION, 3, T0 + timedelta(seconds=5))
    read = await detector.read(receipt, level)
    assert await detector.claim(receipt)  # Shopify's retry, on another replica
    before = await state(engine)

    written = await detector.write(detector.write_of(receipt, level, read))

    assert written.outcome is WriteOutcome.DUPLICATE
    assert await state(engine) == before  # the state's update rolled back with the statement


async def test_a_redelivered_webhook_is_answered_duplicate_by_the_read(detector: Detector) -> None:
    payload = {
        "inventory_item_id": ITEM,
        "location_id": LOCATION,
        "available": 6,
        "updated_at": (T0 + timedelta(seconds=3)).isoformat(),
    }
    first = await detector.send("inventory_levels/update", payload, "same", event_id="event-1")
    again = await detector.send("inventory_levels/update", payload, "same", event_id="event-1")
    assert (first.body, again.body) == ({"status": "restock"}, {"status": "duplicate"})
    # The read itself knows both kinds of repeat (no write is tried for them): the same webhook id, and
    # the same shop event resent under a new webhook id; another event is new.
    level = LevelObservation(ITEM, LOCATION, 6, T0 + timedelta(seconds=3))
    topic = "inventory_levels/update"
    repeats = [
        Receipt("same", SHOP, topic),
        Receipt("resent", SHOP, topic, event_id="event-1"),
        Receipt("other", SHOP, topic, event_id="event-2"),
    ]
    seen = []
    for receipt in repeats:
        async with detector.store.level_session() as session:
            seen.append((await session.read_level(receipt, detector.tenant_id, level)).seen)
    assert seen == [True, True, False]
