"""Debounce, event-id dedup, uninstall and the compliance webhooks, through the real detector app
(``create_app``: its webhook route, its armed-restock scheduler and its relay) on this run's PostgreSQL
and RabbitMQ, with a clock the test moves. See ``test_detector_webhooks.py`` for why the database is read
with plain asyncpg (``db``) while the app runs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from restock_common import messages, signatures, topology
from restock_common.broker import Broker
from restock_common.db.engine import bind_tables
from restock_common.db.tables import Rule, Tenant
from restock_common.rules import Rules, encode_rules
from restock_common.settings import Settings
from restock_detector.app import create_app
from restock_detector.ports import Receipt
from restock_detector.store import PostgresWebhookStore

pytestmark = pytest.mark.integration

SHOP = "detector-lifecycle.myshopify.com"
SHOP_ID = 548380009
PRODUCT_ID, VARIANT_ID, ITEM_ID, LOCATION_ID = 1101, 2101, 3101, 4101
DEBOUNCE = 2
EMAIL, PHONE = "Shopper@Example.com", "+16135550123"


class Clock:
    """The detector's clock, moved by the test; counts its reads (the scheduler reads it every tick)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)
        self.reads = 0

    def __call__(self) -> datetime:
        self.reads += 1
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def tenant_id(clean_db: None) -> int:
    tenant = Tenant(shop_domain=SHOP)
    await tenant.save()
    await Rule(tenant=tenant.id, body=encode_rules(Rules(debounce_seconds=DEBOUNCE))).save()
    return int(tenant.id)


@pytest.fixture
async def client(
    settings: Settings, engine: Any, clock: Clock, tenant_id: int
) -> AsyncIterator[AsyncTestClient[Any]]:
    app = create_app(settings, clock=clock, scheduler_tick_seconds=0.05, sync=False)
    try:
        async with AsyncTestClient(app) as test_client:
            yield test_client
    finally:
        bind_tables(engine)


class Shopify:
    """Signs and sends webhooks the way Shopify does."""

    def __init__(self, client: AsyncTestClient[Any], secret: str) -> None:
        self.client = client
        self.secret = secret
        self.updated_at = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    async def send(self, topic: str, payload: object, *, shop: str = SHOP, **extra: str) -> Any:
        body = json.dumps(payload).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Shopify-Topic": topic,
            "X-Shopify-Shop-Domain": shop,
            "X-Shopify-Webhook-Id": str(uuid.uuid4()),
            "X-Shopify-Event-Id": str(uuid.uuid4()),
            "X-Shopify-Hmac-Sha256": signatures.shopify_webhook_hmac(self.secret, body),
            **extra,
        }
        return await self.client.post("/webhooks/shopify", content=body, headers=headers)

    async def product(self) -> None:
        variant = {"id": VARIANT_ID, "title": "M", "inventory_item_id": ITEM_ID, "product_id": PRODUCT_ID}
        answer = await self.send(
            "products/update", {"id": PRODUCT_ID, "title": "Hoodie", "variants": [variant]}
        )
        assert answer.status_code == 200

    async def set_level(self, available: int, **extra: str) -> str:
        self.updated_at += timedelta(seconds=1)
        level = {
            "inventory_item_id": ITEM_ID,
            "location_id": LOCATION_ID,
            "available": available,
            "updated_at": self.updated_at.isoformat(),
        }
        answer = await self.send("inventory_levels/update", level, **extra)
        assert answer.status_code == 200, answer.text
        return str(answer.json()["status"])


@pytest.fixture
async def shopify(client: AsyncTestClient[Any], settings: Settings) -> Shopify:
    shopify = Shopify(client, settings.shopify_api_secret.get_secret_value())
    await shopify.product()
    return shopify


# The outbox is read for restock.detected rows: stock.changed rows (every move of a total) have own tests.
RESTOCKS_ONLY = {"outbox": " WHERE routing_key = 'restock.detected'"}


async def count(db: asyncpg.Connection, table: str) -> int:
    return int(await db.fetchval(f"SELECT count(*) FROM {table}{RESTOCKS_ONLY.get(table, '')}"))


async def variant_state(db: asyncpg.Connection) -> asyncpg.Record:
    return await db.fetchrow("SELECT * FROM variant_states WHERE variant_id = $1", VARIANT_ID)


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def scheduler_ticks(clock: Clock, ticks: int = 5) -> None:
    """Let the scheduler run a few rounds at the current (fake) time."""
    target = clock.reads + ticks

    async def ticked() -> bool:
        return clock.reads >= target

    await wait_for(ticked)


# Debounce


async def test_zero_to_five_arms_and_publishes_nothing_before_the_debounce_ends(
    shopify: Shopify, clock: Clock, db: asyncpg.Connection
) -> None:
    assert [await shopify.set_level(0), await shopify.set_level(5)] == ["still_out", "armed"]
    clock.now += timedelta(seconds=DEBOUNCE - 1)
    await scheduler_ticks(clock)
    state = await variant_state(db)
    assert (state["available"], state["armed_at"], state["last_restock_at"]) == (
        5,
        clock.now - timedelta(seconds=DEBOUNCE - 1),
        None,
    )
    assert (await count(db, "restock_events"), await count(db, "outbox")) == (0, 0)


async def test_a_drop_before_the_debounce_ends_disarms_for_good(
    shopify: Shopify, clock: Clock, db: asyncpg.Connection
) -> None:
    assert await shopify.set_level(5) == "armed"
    clock.now += timedelta(seconds=1)
    assert await shopify.set_level(0) == "disarmed"
    assert (await variant_state(db))["armed_at"] is None
    clock.now += timedelta(seconds=10 * DEBOUNCE)
    await scheduler_ticks(clock)
    assert (await count(db, "restock_events"), await count(db, "outbox")) == (0, 0)


async def test_stock_held_past_the_debounce_fires_exactly_one_restock(
    shopify: Shopify, clock: Clock, db: asyncpg.Connection, broker: Broker
) -> None:
    channel = await broker.connection.channel()
    queue = await channel.declare_queue(f"test.detector.{uuid.uuid4().hex[:8]}", exclusive=True)
    await queue.bind(topology.EXCHANGE, topology.RESTOCK_DETECTED)
    try:
        assert [await shopify.set_level(0), await shopify.set_level(5)] == ["still_out", "armed"]
        armed_at = clock.now
        clock.now += timedelta(seconds=1)
        assert await shopify.set_level(4) == "armed"  # still in stock: stays armed, the last total counts
        clock.now += timedelta(seconds=DEBOUNCE)

        async def published() -> bool:
            return bool(
                await db.fetchval(
                    "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL"
                    " AND routing_key = 'restock.detected'"
                )
            )

        await wait_for(published)  # the scheduler fired it and woke the relay
        await scheduler_ticks(clock)
        message = await queue.get(timeout=5, fail=True)
        assert message is not None
        await message.ack()
    finally:
        await queue.delete(if_unused=False, if_empty=False)
        await channel.close()
    fired_at = armed_at + timedelta(seconds=DEBOUNCE)
    detected = messages.decode(message.body, messages.RestockDetected)
    assert (detected.variant_id, detected.available, detected.detected_at) == (VARIANT_ID, 4, fired_at)
    [event] = await db.fetch("SELECT * FROM restock_events")
    assert (event["id"], event["available"], event["detected_at"]) == (detected.restock_event_id, 4, fired_at)
    assert await count(db, "outbox") == 1
    state = await variant_state(db)
    assert (state["armed_at"], state["last_restock_at"], state["available"]) == (None, fired_at, 4)


async def test_an_uninstalled_shops_armed_variant_never_fires(
    shopify: Shopify, clock: Clock, db: asyncpg.Connection
) -> None:
    assert await shopify.set_level(5) == "armed"
    answer = await shopify.send("app/uninstalled", {"id": SHOP_ID, "myshopify_domain": SHOP})
    assert answer.json() == {"status": "uninstalled"}
    clock.now += timedelta(seconds=10 * DEBOUNCE)
    await scheduler_ticks(clock)
    assert (await variant_state(db))["armed_at"] is None
    assert await count(db, "restock_events") == 0


# X-Shopify-Event-Id


async def test_an_event_resent_under_a_new_webhook_id_is_processed_once(
    shopify: Shopify, tenant_id: int, db: asyncpg.Connection
) -> None:
    rules = encode_rules(Rules(debounce_seconds=0))
    await db.execute("UPDATE rules SET body = $2::jsonb WHERE tenant = $1", tenant_id, rules)
    event = {"X-Shopify-Event-Id": "7f4e3a52-4f1c-4b0e-9d6a-resent"}
    assert await shopify.set_level(5, **event) == "restock"
    assert await shopify.set_level(5, **event) == "duplicate"
    assert await shopify.set_level(0, **event) == "duplicate"  # whatever the body says: the event was seen
    assert await count(db, "restock_events") == 1
    assert await count(db, "webhook_receipts") == 2  # the product's and the first delivery's
    assert await shopify.set_level(0) == "was_available"  # a new event is processed


async def test_two_deliveries_of_one_event_at_once_are_claimed_once(
    engine: Any, tenant_id: int, db: asyncpg.Connection
) -> None:
    """The second claim of an event waits for the first delivery's transaction and, once it committed,
    claims nothing; had the first rolled back, the second would have claimed it."""
    store = PostgresWebhookStore(engine.pool)

    def delivery(event_id: str) -> Receipt:
        return Receipt(str(uuid.uuid4()), SHOP, "inventory_levels/update", event_id=event_id)

    async def claim(receipt: Receipt, hold: asyncio.Event | None = None) -> bool:
        async with store.unit_of_work() as work:
            claimed = await work.claim_receipt(receipt)
            if hold is not None:
                await hold.wait()
            return claimed

    for first_commits in (True, False):
        event = f"event-{first_commits}"
        release = asyncio.Event()
        first = asyncio.create_task(claim(delivery(event), release))
        await asyncio.sleep(0.2)
        second = asyncio.create_task(claim(delivery(event)))
        await asyncio.sleep(0.3)
        assert not second.done()  # waiting for the first delivery's transaction
        if first_commits:
            release.set()
            assert await asyncio.wait_for(first, 10) is True
        else:
            first.cancel()  # its transaction rolls back
            with contextlib.suppress(asyncio.CancelledError):
                await first
        assert await asyncio.wait_for(second, 10) is (not first_commits)
        rows = await db.fetchval("SELECT count(*) FROM webhook_receipts WHERE event_id = $1", event)
        assert rows == 1


# Shop lifecycle and compliance webhooks


async def add_subscription(db: asyncpg.Connection, tenant_id: int, channel: str, contact: str) -> int:
    email, phone = (contact, None) if channel == "email" else (None, contact)
    return int(
        await db.fetchval(
            "INSERT INTO subscriptions (tenant, variant_id, channel, email, phone, contact_hash)"
            " VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            tenant_id,
            VARIANT_ID,
            channel,
            email,
            phone,
            signatures.contact_hash(contact),
        )
    )


async def audit_rows(db: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await db.fetch("SELECT * FROM audit_log ORDER BY id")
    return [
        {**dict(row), "target_ids": json.loads(row["target_ids"]), "detail": json.loads(row["detail"])}
        for row in rows
    ]


def privacy_payload(**extra: object) -> dict[str, object]:
    return {"shop_id": SHOP_ID, "shop_domain": SHOP, **extra}


CUSTOMER = {"id": 191167, "email": EMAIL.lower(), "phone": PHONE}


async def test_app_uninstalled_marks_the_shop_and_its_webhooks_are_refused(
    shopify: Shopify, clock: Clock, tenant_id: int, db: asyncpg.Connection
) -> None:
    answer = await shopify.send("app/uninstalled", {"id": SHOP_ID, "email": "owner@example.com"})
    assert (answer.status_code, answer.json()) == (200, {"status": "uninstalled"})
    assert await db.fetchval("SELECT uninstalled_at FROM tenants WHERE id = $1", tenant_id) == clock.now
    [audit] = await audit_rows(db)
    assert (audit["tenant"], audit["action"], audit["actor"]) == (tenant_id, "app.uninstalled", "shopify")
    assert "owner@example.com" not in json.dumps(audit, default=str)
    level = {
        "inventory_item_id": ITEM_ID,
        "location_id": 1,
        "available": 5,
        "updated_at": "2026-03-02T00:00:00Z",
    }
    answer = await shopify.send("inventory_levels/update", level)
    assert (answer.status_code, answer.json()) == (404, {"detail": f"unknown shop {SHOP!r}"})


async def test_customers_data_request_is_audited_with_ids_only(
    shopify: Shopify, tenant_id: int, db: asyncpg.Connection
) -> None:
    mine = await add_subscription(db, tenant_id, "email", EMAIL)
    await add_subscription(db, tenant_id, "email", "someone-else@example.com")
    payload = privacy_payload(customer=CUSTOMER, orders_requested=[299938, 280263], data_request={"id": 9999})
    answer = await shopify.send("customers/data_request", payload)
    assert (answer.status_code, answer.json()) == (200, {"status": "recorded", "subscriptions": 1})
    [audit] = await audit_rows(db)
    assert (audit["tenant"], audit["action"], audit["target_type"], audit["target_ids"]) == (
        tenant_id,
        "privacy.customers/data_request",
        "customer",
        [191167],
    )
    assert audit["detail"] == {
        "shop_id": SHOP_ID,
        "customer_id": 191167,
        "orders_requested": [299938, 280263],
        "data_request_id": 9999,
        "subscription_ids": [mine],
    }
    assert await db.fetchval("SELECT count(*) FROM subscriptions WHERE email IS NOT NULL") == 2


async def test_customers_redact_erases_that_customers_contacts(
    shopify: Shopify, tenant_id: int, db: asyncpg.Connection
) -> None:
    by_email = await add_subscription(db, tenant_id, "email", EMAIL)
    by_phone = await add_subscription(db, tenant_id, "sms", PHONE)
    other = await add_subscription(db, tenant_id, "email", "someone-else@example.com")
    answer = await shopify.send("customers/redact", privacy_payload(customer=CUSTOMER, orders_to_redact=[1]))
    assert (answer.status_code, answer.json()) == (200, {"status": "redacted", "subscriptions": 2})
    rows = {
        row["id"]: row
        for row in await db.fetch("SELECT id, email, phone, redacted_at, state FROM subscriptions")
    }
    for redacted in (by_email, by_phone):
        assert (rows[redacted]["email"], rows[redacted]["phone"]) == (None, None)
        assert rows[redacted]["redacted_at"] is not None
        assert rows[redacted]["state"] == "unsubscribed"  # never a target again
    assert (rows[other]["email"], rows[other]["redacted_at"]) == ("someone-else@example.com", None)
    [audit] = await audit_rows(db)
    assert (audit["action"], audit["target_ids"]) == ("privacy.customers/redact", [191167])
    assert audit["detail"]["subscription_ids"] == [by_email, by_phone]
    assert audit["detail"]["orders_to_redact"] == [1]
    assert EMAIL.lower() not in json.dumps(audit, default=str).lower()
    assert PHONE not in json.dumps(audit, default=str)


async def test_shop_redact_after_uninstall_deletes_the_shop_and_its_rows(
    shopify: Shopify, tenant_id: int, db: asyncpg.Connection
) -> None:
    subscription = await add_subscription(db, tenant_id, "email", EMAIL)
    # A restock and its job: the job's only key to its shop is ``tenant`` (ADR 24), which must cascade.
    event = await db.fetchval(
        "INSERT INTO restock_events (tenant, variant_id, available, restock_window, source)"
        " VALUES ($1, 1, 5, 1, 'webhook') RETURNING id",
        tenant_id,
    )
    await db.execute(
        "INSERT INTO notification_jobs (tenant, restock_event, subscription, variant_id, channel,"
        " notification_key, priority_at) VALUES ($1, $2, $3, 1, 'email', 'redact-test', now())",
        tenant_id,
        event,
        subscription,
    )
    assert (await shopify.send("app/uninstalled", {"id": SHOP_ID})).status_code == 200
    answer = await shopify.send("shop/redact", privacy_payload())
    assert (answer.status_code, answer.json()) == (200, {"status": "deleted"})
    for table in (
        "tenants",
        "subscriptions",
        "inventory_items",
        "rules",
        "restock_events",
        "notification_jobs",
    ):
        assert await count(db, table) == 0, table
    [audit] = [row for row in await audit_rows(db) if row["action"] == "privacy.shop/redact"]
    assert (audit["tenant"], audit["target_type"], audit["target_ids"]) == (None, "shop", [SHOP_ID])
    assert audit["detail"] == {"shop_id": SHOP_ID, "tenant_id": tenant_id, "shop_domain": SHOP}


@pytest.mark.parametrize("topic", ["customers/data_request", "customers/redact", "shop/redact"])
async def test_a_compliance_webhook_for_an_unknown_shop_is_answered_and_writes_nothing(
    shopify: Shopify, db: asyncpg.Connection, topic: str
) -> None:
    receipts = await count(db, "webhook_receipts")
    answer = await shopify.send(topic, privacy_payload(customer=CUSTOMER), shop="stranger.myshopify.com")
    assert (answer.status_code, answer.json()) == (200, {"status": "unknown_shop"})
    assert (await count(db, "audit_log"), await count(db, "webhook_receipts")) == (0, receipts)


@pytest.mark.parametrize("topic", ["customers/data_request", "customers/redact", "shop/redact"])
async def test_a_compliance_webhook_with_a_bad_hmac_is_refused(
    shopify: Shopify, db: asyncpg.Connection, topic: str
) -> None:
    answer = await shopify.send(topic, privacy_payload(), **{"X-Shopify-Hmac-Sha256": "Zm9yZ2Vk"})
    assert answer.status_code == 401
    assert (await count(db, "audit_log"), await count(db, "tenants")) == (0, 1)
