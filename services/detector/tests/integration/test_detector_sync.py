"""The detector against the sandbox Shopify over HTTP, on this run's PostgreSQL and RabbitMQ: both apps are
served by uvicorn on free loopback ports in this test's loop; the sandbox delivers signed webhooks to the
detector and answers its GraphQL Admin API with Shopify's shapes and cost-based throttle.

Covered: a webhook the sandbox drops is recovered by the next (requested) sync and published; a sync
against a tiny bucket, and one through injected 429s, finishes with every item; two syncs of one shop at
once, one runs and the other skips; an item no product webhook named is resolved through the Admin API;
the confirmation read vetoes a phantom restock and lets a real one fire; ``stock.changed`` and
``order.created`` reach the dispatcher's inventory queue.
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from litestar import Litestar

from restock_common import messages, signatures, topology
from restock_common.broker import Broker
from restock_common.db.tables import Rule, Tenant
from restock_common.jobs import WavePlanStatus
from restock_common.rules import Rules, encode_rules
from restock_common.settings import Settings
from restock_detector.admin_api import ShopifyAdminApi
from restock_detector.app import create_app, sync_once
from restock_detector.relay import OutboxWakeup
from restock_detector.store import SYNC_LOCK_CLASS, PostgresSyncStore
from restock_detector.sync import ReconciliationSync
from restock_sandbox.app import create_app as create_sandbox

pytestmark = pytest.mark.integration

SHOP = "detector-sync.myshopify.com"
TOKEN = "detector-sync-token"
PRODUCT_ID, LOCATION, OTHER_LOCATION = 9001, 4001, 4002
VARIANTS = [(2001 + n, 3001 + n) for n in range(6)]  # (variant, inventory item)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def served(app: Litestar, port: int) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on this loop until the block ends."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    task = asyncio.create_task(server.serve())
    deadline = asyncio.get_running_loop().time() + 20
    while not server.started:
        assert not task.done(), "server failed to start"
        assert asyncio.get_running_loop().time() < deadline, "server did not start in time"
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def wait_for(predicate: Callable[[], Awaitable[object]], timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


class Peers:
    """The sandbox store (its control routes) and the detector's database, for one test."""

    def __init__(
        self, store: httpx.AsyncClient, db: asyncpg.Connection, tenant_id: int, settings: Settings
    ) -> None:
        self.store, self.db, self.tenant_id, self.settings = store, db, tenant_id, settings

    async def product(self, variants: list[tuple[int, int]] = VARIANTS) -> None:
        body = {
            "title": "Hoodie",
            "variants": [{"id": v, "title": f"S{v}", "inventory_item_id": i} for v, i in variants],
        }
        answer = await self.store.put(f"/store/products/{PRODUCT_ID}", json=body)
        assert answer.status_code == 200, answer.text

    async def set_level(self, item: int, available: int, location: int = LOCATION) -> dict[str, Any]:
        level = {"inventory_item_id": item, "location_id": location, "available": available}
        answer = await self.store.post("/store/inventory_levels/set", json=level)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    async def drop_next(self, topic: str, times: int = 1) -> None:
        fault = {"topic": topic, "mode": "drop", "times": times}
        assert (await self.store.post("/store/webhook-faults/", json=fault)).status_code in (200, 201)

    async def graphql_config(self, **config: float) -> dict[str, Any]:
        answer = await self.store.post("/store/graphql/config", json=config)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    async def stats(self) -> dict[str, Any]:
        return dict((await self.store.get("/store/graphql/stats")).json())

    async def restocks(self) -> list[asyncpg.Record]:
        return await self.db.fetch("SELECT * FROM restock_events ORDER BY id")

    async def items(self) -> list[int]:
        rows = await self.db.fetch("SELECT inventory_item_id FROM inventory_items ORDER BY 1")
        return [row["inventory_item_id"] for row in rows]

    async def tenant(self) -> asyncpg.Record:
        return await self.db.fetchrow("SELECT * FROM tenants WHERE id = $1", self.tenant_id)

    async def watch(self, variant: int) -> None:
        """A shopper waiting for ``variant`` (a confirmed subscription; the contact is a hash only)."""
        await self.db.execute(
            "INSERT INTO subscriptions (tenant, variant_id, channel, contact_hash, state) "
            "VALUES ($1, $2, 'email', $3, 'confirmed')",
            self.tenant_id,
            variant,
            signatures.contact_hash(f"shopper-{variant}@example.com"),
        )

    async def set_rules(self, rules: Rules) -> None:
        await self.db.execute(
            "UPDATE rules SET body = $2::jsonb WHERE tenant = $1", self.tenant_id, encode_rules(rules)
        )

    def sync(self, engine: Any, http: httpx.AsyncClient) -> ReconciliationSync:
        """A reconciliation sync of its own (another replica's, as far as the lock is concerned)."""
        admin = ShopifyAdminApi(self.settings.shopify_api_base_url, http)
        return ReconciliationSync(
            PostgresSyncStore(engine.pool),
            admin,
            OutboxWakeup(),
            lambda: datetime.now(UTC),
            bulk_threshold=10_000,
        )


@pytest.fixture
async def tenant_id(clean_db: None) -> int:
    tenant = Tenant(shop_domain=SHOP, access_token=TOKEN)
    await tenant.save()
    await Rule(tenant=tenant.id, body=encode_rules(Rules(debounce_seconds=0))).save()
    return int(tenant.id)


@pytest.fixture
async def peers(
    settings: Settings, engine: Any, broker: Broker, db: asyncpg.Connection, tenant_id: int
) -> AsyncIterator[Peers]:
    """The sandbox and the detector (with its sync loop), each on a free port, talking to each other."""
    sandbox_port, detector_port = free_port(), free_port()
    shared = settings.model_copy(
        update={
            "shopify_api_base_url": f"http://127.0.0.1:{sandbox_port}",
            "sandbox_webhook_url": f"http://127.0.0.1:{detector_port}/webhooks/shopify",
            "sandbox_shop_domain": SHOP,
            "sandbox_shopify_access_token": TOKEN,
            "sandbox_bulk_seconds": 0.3,
            "smtp_port": free_port(),
            "sync_poll_seconds": 0.2,
        }
    )
    detector = create_app(shared, engine, broker, scheduler_tick_seconds=0.1)
    async with (
        served(create_sandbox(shared), sandbox_port) as sandbox_url,
        served(detector, detector_port),
        httpx.AsyncClient(base_url=sandbox_url, timeout=30) as store,
    ):
        peers = Peers(store, db, tenant_id, shared)

        async def first_sync_done() -> bool:  # a new shop is synced at once: let it end on the empty store
            return (await peers.tenant())["last_sync_finished_at"] is not None

        await wait_for(first_sync_done)
        yield peers


@pytest.fixture
async def restock_queue(broker: Broker) -> AsyncIterator[AbstractQueue]:
    channel = await broker.connection.channel()
    queue = await channel.declare_queue(f"test.detector.sync.{uuid.uuid4().hex[:8]}", exclusive=True)
    await queue.bind(topology.EXCHANGE, topology.RESTOCK_DETECTED)
    yield queue
    await queue.delete(if_unused=False, if_empty=False)
    await channel.close()


async def next_message(queue: AbstractQueue, timeout: float = 30.0) -> AbstractIncomingMessage:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        message = await queue.get(fail=False)
        if message is not None:
            await message.ack()
            return message
        assert asyncio.get_running_loop().time() < deadline, "no message in time"
        await asyncio.sleep(0.05)


async def request_sync(peers: Peers) -> datetime:
    """Ask for a sync (as an operator or the admin API would) and wait until one started after it."""
    await asyncio.sleep(0.01)
    asked = await peers.db.fetchval(
        "UPDATE tenants SET sync_requested_at = clock_timestamp() WHERE id = $1 RETURNING sync_requested_at",
        peers.tenant_id,
    )

    async def finished() -> bool:
        row = await peers.tenant()
        return (
            row["last_sync_finished_at"] is not None
            and row["last_sync_started_at"] > asked
            and (row["last_sync_finished_at"] >= row["last_sync_started_at"])
        )

    await wait_for(finished)
    return asked


async def test_a_dropped_webhook_is_recovered_by_the_next_sync(
    peers: Peers, restock_queue: AbstractQueue
) -> None:
    variant, item = VARIANTS[0]
    await peers.product()
    await peers.set_level(item, 0)
    await peers.drop_next("inventory_levels/update")
    await peers.set_level(item, 5)  # Shopify says 5; the webhook never arrives
    await asyncio.sleep(0.2)
    assert await peers.restocks() == []

    await request_sync(peers)

    [event] = await peers.restocks()
    assert (event["variant_id"], event["available"], event["source"]) == (variant, 5, "sync")
    detected = messages.decode((await next_message(restock_queue)).body, messages.RestockDetected)
    assert (detected.variant_id, detected.restock_event_id, detected.shop_domain) == (
        variant,
        event["id"],
        SHOP,
    )
    row = await peers.tenant()
    assert row["last_sync_error"] is None
    assert sorted(await peers.items()) == [i for _, i in VARIANTS]

    await request_sync(peers)  # nothing changed since: the next sync finds nothing new
    assert len(await peers.restocks()) == 1


async def test_a_sync_against_a_tiny_bucket_finishes_with_every_item(peers: Peers) -> None:
    await peers.drop_next("products/create")  # the detector learns the catalogue from the sync alone
    await peers.drop_next("inventory_levels/update", times=len(VARIANTS))
    await peers.product()
    for n, (_, item) in enumerate(VARIANTS):
        await peers.set_level(item, n % 2)
    for variant, _ in VARIANTS[:4]:
        await peers.watch(variant)
    await peers.graphql_config(maximum_available=150, restore_rate=150)
    # Someone else (another app, an earlier query) has just emptied the bucket: the first page is THROTTLED.
    drain = {
        "query": "query($first: Int!) { productVariants(first: $first) { edges { node { id product { id } "
        "inventoryItem { id inventoryLevels(first: 20) { edges { node { location { id } "
        'quantities(names: ["available"]) { name quantity } updatedAt } } } } } } } }',
        "variables": {"first": 2},
    }
    drained = await peers.store.post(
        "/admin/api/2025-01/graphql.json", json=drain, headers={"X-Shopify-Access-Token": TOKEN}
    )
    assert "errors" not in drained.json(), drained.text
    await peers.store.delete("/store/graphql/stats")

    await request_sync(peers)

    row = await peers.tenant()
    assert row["last_sync_error"] is None
    assert await peers.items() == [i for _, i in VARIANTS]
    # In stock: variants 1, 3 and 5. Shoppers wait for 0-3: 1 and 3 are restocks; 5, never seen and awaited
    # by nobody, is recorded at its level without being announced.
    restocked = sorted(r["variant_id"] for r in await peers.restocks())
    assert restocked == [VARIANTS[1][0], VARIANTS[3][0]]
    quiet = await peers.db.fetchval(
        "SELECT available FROM variant_states WHERE variant_id = $1", VARIANTS[5][0]
    )
    assert quiet == 1
    counts = (await peers.stats())["counts"]
    assert sum(v for k, v in counts.items() if "throttled" in k.lower()) >= 1, counts
    assert sum(v for k, v in counts.items() if "productVariants" in k and "throttled" not in k.lower()) >= 3


async def test_a_sync_survives_429s(peers: Peers) -> None:
    await peers.product()
    await peers.watch(VARIANTS[1][0])
    await peers.drop_next("inventory_levels/update")  # only the sync can find it
    await peers.set_level(VARIANTS[1][1], 4)
    answer = await peers.store.post("/store/graphql/faults", json={"http_429": 2})
    assert answer.status_code == 200

    await request_sync(peers)

    assert (await peers.tenant())["last_sync_error"] is None
    assert [r["variant_id"] for r in await peers.restocks()] == [VARIANTS[1][0]]
    assert (await peers.stats())["http_429_pending"] == 0


async def test_two_syncs_of_one_shop_at_once_one_runs_the_other_skips(
    peers: Peers, engine: Any, db: asyncpg.Connection
) -> None:
    await peers.product()
    await peers.watch(VARIANTS[2][0])
    await peers.drop_next("inventory_levels/update")  # only a sync can find it
    await peers.set_level(VARIANTS[2][1], 3)
    shop = await PostgresSyncStore(engine.pool).shop_by_domain(SHOP)
    assert shop is not None
    async with httpx.AsyncClient() as http:
        # Another replica holds the shop's lock (its session): this one skips, and touches nothing.
        holder = await asyncpg.connect(peers.settings.database_url)
        try:
            assert await holder.fetchval(
                "SELECT pg_try_advisory_lock($1, $2::int)", SYNC_LOCK_CLASS, shop.tenant_id
            )
            before = await peers.tenant()
            assert (await peers.sync(engine, http).sync_shop(shop, force=True)).outcome == "skipped_locked"
            assert (await peers.tenant())["last_sync_started_at"] == before["last_sync_started_at"]
        finally:
            await holder.close()  # a replica that dies releases its lock with its connection
        # Two at once (the bulk form, which takes a while): one syncs, the other skips.
        peers_bulk = [peers.sync(engine, http), peers.sync(engine, http)]
        for sync in peers_bulk:
            sync.bulk_threshold = 1
        reports = await asyncio.gather(*(sync.sync_shop(shop, force=True) for sync in peers_bulk))
    assert [r.error for r in reports] == [None, None], reports
    assert sorted(report.outcome for report in reports) == ["skipped_locked", "synced"]
    assert [r["variant_id"] for r in await peers.restocks()] == [VARIANTS[2][0]]
    assert (await peers.tenant())["last_sync_error"] is None


async def test_an_unknown_item_is_resolved_through_the_admin_api(peers: Peers) -> None:
    variant, item = VARIANTS[3]
    await peers.drop_next("products/create")
    await peers.product()  # the detector never hears of the product
    delivered = await peers.set_level(item, 6)
    assert await peers.items() == [item]  # mapped from inventoryItem(id:) { variant }
    [event] = await peers.restocks()
    assert (event["variant_id"], event["product_id"], event["available"]) == (variant, PRODUCT_ID, 6)
    assert delivered is not None
    counts = (await peers.stats())["counts"]
    assert any("inventoryItem" in key for key in counts), counts


async def test_the_confirmation_read_vetoes_a_phantom_restock_and_confirms_a_real_one(
    peers: Peers, settings: Settings
) -> None:
    variant, item = VARIANTS[4]
    await peers.product()
    await peers.set_rules(Rules(debounce_seconds=0, confirm_with_admin_api=True))
    # A webhook saying 5 that Shopify does not back up (a count correction undone, a replayed payload):
    # signed like Shopify's, but the store still holds nothing.
    phantom = {
        "inventory_item_id": item,
        "location_id": LOCATION,
        "available": 5,
        "updated_at": (datetime.now(UTC) - timedelta(minutes=5)).isoformat(),
    }
    body = json.dumps(phantom).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Shopify-Topic": "inventory_levels/update",
        "X-Shopify-Shop-Domain": SHOP,
        "X-Shopify-Webhook-Id": str(uuid.uuid4()),
        "X-Shopify-Hmac-Sha256": signatures.shopify_webhook_hmac(
            settings.shopify_api_secret.get_secret_value(), body
        ),
    }
    detector_url = peers.settings.sandbox_webhook_url
    async with httpx.AsyncClient() as http:
        answer = await http.post(detector_url, content=body, headers=headers)
    assert answer.json() == {"status": "armed"}

    async def vetoed() -> bool:
        return bool(
            await peers.db.fetchval("SELECT count(*) FROM audit_log WHERE action = 'restock.not_confirmed'")
        )

    await wait_for(vetoed)
    assert await peers.restocks() == []
    state = await peers.db.fetchrow("SELECT * FROM variant_states WHERE variant_id = $1", variant)
    assert (state["armed_at"], state["available"]) == (None, 0)
    [audit] = await peers.db.fetch("SELECT * FROM audit_log WHERE action = 'restock.not_confirmed'")
    assert json.loads(audit["detail"])["detector_total"] == 5
    assert json.loads(audit["detail"])["admin_api_total"] == 0

    await peers.set_level(item, 2)  # a real restock: the webhook arms it, Shopify confirms it

    async def restocked() -> bool:
        return bool(await peers.restocks())

    await wait_for(restocked)
    [event] = await peers.restocks()
    assert (event["variant_id"], event["available"]) == (variant, 2)


async def test_stock_changes_and_orders_reach_the_dispatchers_inventory_queue(
    peers: Peers, broker: Broker
) -> None:
    variant, item = VARIANTS[5]
    await peers.product()
    # Shoppers wait in the variant's wave line, sold out: its changes go to the wave planner (ADR 26).
    await peers.db.execute(
        "INSERT INTO wave_plans (tenant, variant_id, wave, status, available, updated_at)"
        " VALUES ($1, $2, 1, $3, 0, now())",
        peers.tenant_id,
        variant,
        WavePlanStatus.SOLD_OUT,
    )
    await peers.set_level(item, 3)
    await peers.set_level(item, 1, OTHER_LOCATION)
    order = {
        "line_items": [{"variant_id": variant, "quantity": 2, "price": "12.50"}],
        "email": "Buyer@Example.com",
        "phone": "+15557654321",
        "currency": "EUR",
    }
    assert (await peers.store.post("/store/orders", json=order)).status_code == 200

    queue = await broker.declare_queue(topology.dispatcher_inventory_queue(peers.settings.delivery_limit))
    received: list[AbstractIncomingMessage] = []

    async def three() -> bool:
        message = await queue.get(fail=False)
        if message is not None:
            await message.ack()
            received.append(message)
        return len(received) >= 3

    await wait_for(three)
    changes = [
        messages.decode(m.body, messages.StockChanged)
        for m in received
        if m.routing_key == topology.STOCK_CHANGED
    ]
    assert [(c.variant_id, c.previous, c.available, c.source) for c in changes] == [
        (variant, 0, 3, "webhook"),
        (variant, 3, 4, "webhook"),
    ]
    [created] = [
        messages.decode(m.body, messages.OrderCreated)
        for m in received
        if m.routing_key == topology.ORDER_CREATED
    ]
    assert created.lines == [messages.OrderLine(variant_id=variant, quantity=2, price_cents=1250)]
    assert created.currency == "EUR"
    assert created.contact_hashes == sorted(
        {signatures.contact_hash("buyer@example.com"), signatures.contact_hash("+15557654321")}
    )
    assert all(b"xample" not in m.body and b"7654321" not in m.body for m in received)


async def test_the_sync_command_syncs_one_shop_now(peers: Peers) -> None:
    await peers.product()
    await peers.watch(VARIANTS[0][0])
    await peers.drop_next("inventory_levels/update")
    await peers.set_level(VARIANTS[0][1], 2)
    report = await sync_once(peers.settings, SHOP.upper())  # the command's own pool and client
    assert report is not None
    assert (report.outcome, report.variants, report.restocks) == ("synced", len(VARIANTS), 1)
    assert await sync_once(peers.settings, "nobody.myshopify.com") is None


async def test_a_refused_token_is_recorded_and_the_shop_waits_for_its_schedule(peers: Peers) -> None:
    await peers.db.execute("UPDATE tenants SET access_token = 'revoked' WHERE id = $1", peers.tenant_id)
    await request_sync(peers)
    row = await peers.tenant()
    assert row["last_sync_error"].startswith("admin api unauthorized")
    assert "revoked" not in row["last_sync_error"]
    started = row["last_sync_started_at"]
    await asyncio.sleep(1.0)  # five ticks of the loop: not retried before its interval
    assert (await peers.tenant())["last_sync_started_at"] == started


async def test_uninstalled_shops_are_not_synced(engine: Any, tenant_id: int) -> None:
    store = PostgresSyncStore(engine.pool)
    assert [state.shop.tenant_id for state in await store.sync_states()] == [tenant_id]
    await Tenant.raw("UPDATE tenants SET uninstalled_at = now() WHERE id = {}", tenant_id)
    assert await store.sync_states() == []
    assert await store.sync_state(tenant_id) is None
    assert await store.shop_by_domain(SHOP) is None
