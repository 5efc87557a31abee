"""``POST /webhooks/shopify`` end to end inside the detector: the real app (``create_app``) on this run's
PostgreSQL and RabbitMQ, driven over ASGI with correctly (and incorrectly) signed Shopify webhooks.

Litestar 2's ``AsyncTestClient`` serves the app (lifespan and requests) on its own thread and event loop
(litestar#1920), so the app opens its own pool and broker connection there, as in production, and binds
the Piccolo tables to that pool. These tests therefore read the database with plain asyncpg (``db``), and
give the tables back to the session's engine afterwards for the tests that follow.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from restock_common import messages, signatures, topology
from restock_common.broker import Broker
from restock_common.db.engine import bind_tables
from restock_common.db.tables import Rule, Tenant
from restock_common.jobs import WavePlanStatus
from restock_common.keys import restock_window
from restock_common.rules import Rules, encode_rules
from restock_common.settings import Settings
from restock_detector.app import create_app

pytestmark = pytest.mark.integration

SHOP = "detector-test.myshopify.com"
PRODUCT_ID, VARIANT_ID, ITEM_ID, LOCATION_ID = 1001, 2001, 3001, 4001
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
INCOMING_TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
TABLES = (
    "webhook_receipts",
    "inventory_items",
    "stock_snapshots",
    "variant_states",
    "restock_events",
    "outbox",
)


class Clock:
    """The detector's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def tenant_id(clean_db: None) -> int:
    tenant = Tenant(shop_domain=SHOP)
    await tenant.save()
    # No debounce unless a test sets one: most tests are about what fires, not when.
    await Rule(tenant=tenant.id, body=encode_rules(Rules(debounce_seconds=0))).save()
    return int(tenant.id)


@pytest.fixture
async def client(
    settings: Settings, engine: Any, clock: Clock, tenant_id: int
) -> AsyncIterator[AsyncTestClient[Any]]:
    try:
        async with AsyncTestClient(create_app(settings, clock=clock, sync=False)) as test_client:
            yield test_client
    finally:
        bind_tables(engine)


class Shopify:
    """Signs and sends webhooks the way Shopify does, with ever-newer ``updated_at`` values."""

    def __init__(self, client: AsyncTestClient[Any], secret: str) -> None:
        self.client = client
        self.secret = secret
        self.updated_at = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def headers(self, topic: str, body: bytes, **extra: str) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            "X-Shopify-Topic": topic,
            "X-Shopify-Shop-Domain": SHOP,
            "X-Shopify-Webhook-Id": str(uuid.uuid4()),
            "X-Shopify-Hmac-Sha256": signatures.shopify_webhook_hmac(self.secret, body),
            "traceparent": INCOMING_TRACEPARENT,
            **extra,
        }

    async def post(self, body: bytes, headers: dict[str, str]) -> Any:
        return await self.client.post("/webhooks/shopify", content=body, headers=headers)

    async def send(self, topic: str, payload: object, **extra: str) -> Any:
        body = json.dumps(payload).encode()
        return await self.post(body, self.headers(topic, body, **extra))

    async def product(self, *variants: tuple[int, str, int]) -> Any:
        payload = {
            "id": PRODUCT_ID,
            "title": "Hoodie",
            "variants": [
                {
                    "id": variant,
                    "product_id": PRODUCT_ID,
                    "title": title,
                    "sku": f"SKU-{variant}",
                    "inventory_item_id": item,
                    "inventory_quantity": 0,
                }
                for variant, title, item in variants
            ],
        }
        return await self.send("products/update", payload)

    def level(
        self, available: int | None, item: int = ITEM_ID, location: int = LOCATION_ID
    ) -> dict[str, Any]:
        self.updated_at += timedelta(seconds=1)
        return {
            "inventory_item_id": item,
            "location_id": location,
            "available": available,
            "updated_at": self.updated_at.isoformat(),
            "admin_graphql_api_id": "gid://shopify/InventoryLevel/1",
        }

    async def set_level(self, available: int | None, item: int = ITEM_ID, location: int = LOCATION_ID) -> Any:
        return await self.send("inventory_levels/update", self.level(available, item, location))


@pytest.fixture
def shopify(client: AsyncTestClient[Any], settings: Settings) -> Shopify:
    return Shopify(client, settings.shopify_api_secret.get_secret_value())


async def rows(db: asyncpg.Connection, table: str) -> list[asyncpg.Record]:
    return await db.fetch(f"SELECT * FROM {table}{RESTOCKS_ONLY.get(table, '')} ORDER BY id")


# The outbox is read for restock.detected rows: stock.changed rows (every move of a total) have own tests.
RESTOCKS_ONLY = {"outbox": " WHERE routing_key = 'restock.detected'"}


async def count(db: asyncpg.Connection, table: str) -> int:
    return int(await db.fetchval(f"SELECT count(*) FROM {table}{RESTOCKS_ONLY.get(table, '')}"))


async def counts(db: asyncpg.Connection) -> dict[str, int]:
    return {table: await count(db, table) for table in TABLES}


async def set_rules(db: asyncpg.Connection, tenant_id: int, rules: Rules) -> None:
    await db.execute(
        "UPDATE rules SET body = $2::jsonb, version = version + 1 WHERE tenant = $1",
        tenant_id,
        encode_rules(rules),
    )


async def statuses(shopify: Shopify, *levels: int) -> list[str]:
    answers = [await shopify.set_level(available) for available in levels]
    assert all(answer.status_code == 200 for answer in answers), [answer.text for answer in answers]
    return [answer.json()["status"] for answer in answers]


async def test_a_signed_product_then_level_writes_the_mapping_and_the_snapshot(
    shopify: Shopify, db: asyncpg.Connection
) -> None:
    answer = await shopify.product((VARIANT_ID, "M", ITEM_ID), (2002, "Default Title", 3002))
    assert (answer.status_code, answer.json()) == (200, {"status": "ok", "variants": 2})
    items = await db.fetch("SELECT * FROM inventory_items ORDER BY inventory_item_id")
    assert [
        (i["inventory_item_id"], i["variant_id"], i["product_id"], i["sku"], i["title"]) for i in items
    ] == [
        (ITEM_ID, VARIANT_ID, PRODUCT_ID, f"SKU-{VARIANT_ID}", "Hoodie - M"),
        (3002, 2002, PRODUCT_ID, "SKU-2002", "Hoodie"),
    ]

    answer = await shopify.set_level(0)
    assert (answer.status_code, answer.json()) == (200, {"status": "still_out"})
    [snapshot] = await rows(db, "stock_snapshots")
    assert (snapshot["inventory_item_id"], snapshot["location_id"], snapshot["available"]) == (
        ITEM_ID,
        LOCATION_ID,
        0,
    )
    assert snapshot["shopify_updated_at"] == shopify.updated_at
    assert await count(db, "webhook_receipts") == 2


async def test_zero_to_five_writes_one_restock_event_and_one_outbox_row(
    shopify: Shopify, clock: Clock, tenant_id: int, db: asyncpg.Connection
) -> None:
    await shopify.product((VARIANT_ID, "M", ITEM_ID))
    assert await statuses(shopify, 0, 5) == ["still_out", "restock"]

    [event] = await rows(db, "restock_events")
    assert (
        event["tenant"],
        event["variant_id"],
        event["product_id"],
        event["available"],
        event["source"],
    ) == (tenant_id, VARIANT_ID, PRODUCT_ID, 5, "webhook")
    assert event["restock_window"] == restock_window(clock.now)
    assert event["traceparent"].split("-")[1] == TRACE_ID  # the webhook's trace
    [row] = await rows(db, "outbox")
    assert (row["routing_key"], row["ordering_key"], row["tenant"]) == (
        topology.RESTOCK_DETECTED,
        f"{tenant_id}:{VARIANT_ID}",
        tenant_id,
    )
    assert row["traceparent"] == event["traceparent"]
    detected = messages.decode(row["payload"].encode(), messages.RestockDetected)
    assert detected == messages.RestockDetected(
        restock_event_id=event["id"],
        tenant_id=tenant_id,
        shop_domain=SHOP,
        variant_id=VARIANT_ID,
        product_id=PRODUCT_ID,
        available=5,
        restock_window=event["restock_window"],
        detected_at=clock.now,
    )
    # Written by the event's own statement, its id put in place: the bytes are the message's encoding.
    assert row["payload"] == messages.encode(detected).decode()
    [state] = await rows(db, "variant_states")
    assert (state["available"], state["last_restock_at"]) == (5, clock.now)


async def test_more_stock_and_a_flap_inside_the_cooldown_do_nothing(
    shopify: Shopify, clock: Clock, db: asyncpg.Connection
) -> None:
    await shopify.product((VARIANT_ID, "M", ITEM_ID))
    assert await statuses(shopify, 0, 5) == ["still_out", "restock"]
    clock.now += timedelta(minutes=10)
    assert await statuses(shopify, 7) == ["was_available"]
    clock.now += timedelta(hours=2)
    assert await statuses(shopify, 0, 3) == ["was_available", "cooldown"]
    assert (await count(db, "restock_events"), await count(db, "outbox")) == (1, 1)
    [state] = await rows(db, "variant_states")
    assert state["available"] == 3  # remembered, so the next change is judged from 3


@pytest.mark.parametrize(
    ("line", "published"),
    [
        (None, False),  # no wave ever planned for the variant
        (WavePlanStatus.IDLE, False),  # a line nobody waits in any more
        (WavePlanStatus.ACTIVE, True),
        (WavePlanStatus.SOLD_OUT, True),
    ],
)
async def test_a_stock_change_is_enqueued_only_while_the_variants_wave_line_is_open(
    shopify: Shopify, tenant_id: int, db: asyncpg.Connection, line: str | None, published: bool
) -> None:
    await shopify.product((VARIANT_ID, "M", ITEM_ID))
    if line is not None:
        await db.execute(
            "INSERT INTO wave_plans (tenant, variant_id, wave, status, available, updated_at)"
            " VALUES ($1, $2, 1, $3, 0, now())",
            tenant_id,
            VARIANT_ID,
            line,
        )
    assert await statuses(shopify, 0, 5, 2) == ["still_out", "restock", "was_available"]
    changes = await db.fetch(
        "SELECT payload FROM outbox WHERE routing_key = $1 ORDER BY id", topology.STOCK_CHANGED
    )
    moves = [messages.decode(c["payload"].encode(), messages.StockChanged) for c in changes]
    assert [(m.previous, m.available) for m in moves] == ([(0, 5), (5, 2)] if published else [])
    assert await count(db, "outbox") == 1  # the restock.detected goes out either way
    [state] = await rows(db, "variant_states")
    assert state["available"] == 2  # and the total is remembered either way


async def test_after_the_cooldown_a_new_restock_fires(
    shopify: Shopify, clock: Clock, tenant_id: int, db: asyncpg.Connection
) -> None:
    await set_rules(db, tenant_id, Rules(cooldown_seconds=3600, debounce_seconds=0))
    await shopify.product((VARIANT_ID, "M", ITEM_ID))
    assert await statuses(shopify, 5, 0) == ["restock", "was_available"]
    clock.now += timedelta(seconds=3601)
    assert await statuses(shopify, 2) == ["restock"]
    assert await count(db, "restock_events") == 2


async def test_excluded_locations_do_not_count(
    shopify: Shopify, tenant_id: int, db: asyncpg.Connection
) -> None:
    await set_rules(db, tenant_id, Rules(excluded_location_ids=[9], debounce_seconds=0))
    await shopify.product((VARIANT_ID, "M", ITEM_ID))
    assert (await shopify.set_level(40, location=9)).json() == {"status": "still_out"}
    assert (await shopify.set_level(2)).json() == {"status": "restock"}
    [event] = await rows(db, "restock_events")
    assert event["available"] == 2


async def test_a_stale_observation_is_ignored(shopify: Shopify, db: asyncpg.Connection) -> None:
    await shopify.product((VARIANT_ID, "M", ITEM_ID))
    assert await statuses(shopify, 0) == ["still_out"]
    stale = {**shopify.level(5), "updated_at": (shopify.updated_at - timedelta(minutes=5)).isoformat()}
    answer = await shopify.send("inventory_levels/update", stale)
    assert (answer.status_code, answer.json()) == (200, {"status": "stale"})
    [snapshot] = await rows(db, "stock_snapshots")
    assert snapshot["available"] == 0
    assert await count(db, "restock_events") == 0


async def test_a_duplicate_webhook_id_is_processed_once(shopify: Shopify, db: asyncpg.Connection) -> None:
    await shopify.product((VARIANT_ID, "M", ITEM_ID))
    body = json.dumps(shopify.level(5)).encode()
    headers = shopify.headers(
        "inventory_levels/update", body, **{"X-Shopify-Webhook-Id": "b54557e4-bdd9-4b37"}
    )
    first, second = await shopify.post(body, headers), await shopify.post(body, headers)
    assert first.json() == {"status": "restock"}
    assert (second.status_code, second.json()) == (200, {"status": "duplicate"})
    assert [await count(db, table) for table in ("restock_events", "outbox", "webhook_receipts")] == [1, 1, 2]


async def test_an_unknown_item_keeps_its_snapshot_without_a_decision(
    shopify: Shopify, db: asyncpg.Connection
) -> None:
    answer = await shopify.set_level(5, item=99_999)
    assert (answer.status_code, answer.json()) == (200, {"status": "unknown_item"})
    assert [await count(db, table) for table in ("stock_snapshots", "variant_states", "restock_events")] == [
        1,
        0,
        0,
    ]


async def test_an_untracked_level_is_ignored(shopify: Shopify, db: asyncpg.Connection) -> None:
    before = await counts(db)
    answer = await shopify.set_level(None)
    assert (answer.status_code, answer.json()["status"]) == (200, "ignored")
    assert await counts(db) == before


def _spoil(shopify: Shopify, how: str) -> tuple[bytes, dict[str, str]]:
    payload: Any = shopify.level(5)
    topic = "inventory_levels/update"
    if how == "missing field":
        payload = {key: value for key, value in payload.items() if key != "available"}
    if how == "unknown topic":
        topic = "orders/cancelled"
    if how == "too large":
        payload = {**payload, "padding": "x" * (1024 * 1024)}
    body = b"this is not json" if how == "not json" else json.dumps(payload).encode()
    headers = shopify.headers(topic, body)
    if how == "wrong hmac":
        headers["X-Shopify-Hmac-Sha256"] = signatures.shopify_webhook_hmac("some-other-secret", body)
    if how == "truncated body":
        body = body[: len(body) // 2]
    if how == "missing header":
        del headers["X-Shopify-Webhook-Id"]
    if how == "unknown shop":
        headers["X-Shopify-Shop-Domain"] = "stranger.myshopify.com"
    return body, headers


@pytest.mark.parametrize(
    ("how", "status", "detail"),
    [
        ("wrong hmac", 401, "invalid HMAC"),
        ("truncated body", 401, "invalid HMAC"),
        ("not json", 400, "malformed JSON"),
        ("missing field", 400, "available"),
        ("missing header", 400, "X-Shopify-Webhook-Id"),
        ("unknown topic", 400, "unsupported topic 'orders/cancelled'"),
        ("unknown shop", 404, "unknown shop 'stranger.myshopify.com'"),
        ("too large", 413, "Request Entity Too Large"),
    ],
)
async def test_a_refused_webhook_has_a_reason_and_writes_nothing(
    shopify: Shopify, db: asyncpg.Connection, how: str, status: int, detail: str
) -> None:
    await shopify.product((VARIANT_ID, "M", ITEM_ID))
    before = await counts(db)
    body, headers = _spoil(shopify, how)
    answer = await shopify.post(body, headers)
    assert answer.status_code == status
    assert detail in answer.json()["detail"]
    assert await counts(db) == before


async def test_an_uninstalled_shop_is_unknown(
    shopify: Shopify, tenant_id: int, db: asyncpg.Connection
) -> None:
    await db.execute("UPDATE tenants SET uninstalled_at = now() WHERE id = $1", tenant_id)
    before = await counts(db)
    answer = await shopify.set_level(5)
    assert (answer.status_code, answer.json()) == (404, {"detail": f"unknown shop {SHOP!r}"})
    assert await counts(db) == before


async def test_health_and_readiness(client: AsyncTestClient[Any]) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert (ready.status_code, ready.json()) == (
        200,
        {"ready": True, "checks": {"postgresql": "ok", "broker": "ok"}},
    )


async def _wait_for(predicate: Any, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_the_relay_in_the_app_publishes_a_restock_and_marks_it(
    shopify: Shopify, broker: Broker, db: asyncpg.Connection
) -> None:
    channel = await broker.connection.channel()
    queue = await channel.declare_queue(f"test.detector.{uuid.uuid4().hex[:8]}", exclusive=True)
    await queue.bind(topology.EXCHANGE, topology.RESTOCK_DETECTED)
    try:
        await shopify.product((VARIANT_ID, "M", ITEM_ID))
        assert await statuses(shopify, 0, 5) == ["still_out", "restock"]

        async def published() -> bool:
            return bool(
                await db.fetchval(
                    "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL"
                    " AND routing_key = 'restock.detected'"
                )
            )

        await _wait_for(published)
        [row] = await rows(db, "outbox")
        assert row["publish_attempts"] == 1
        message = await queue.get(timeout=5, fail=True)
        assert message is not None
        await message.ack()
        assert message.body == row["payload"].encode()
        assert message.message_id == str(row["message_id"])
        assert str((message.headers or {})["traceparent"]).split("-")[1] == TRACE_ID
    finally:
        await queue.delete(if_unused=False, if_empty=False)
        await channel.close()
