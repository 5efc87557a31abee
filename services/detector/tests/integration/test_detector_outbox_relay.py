"""The outbox relay against the real PostgreSQL and RabbitMQ: rows go out in order with their exact bytes,
are marked once confirmed, and survive a broker outage (a TCP proxy in front of RabbitMQ that the test
cuts and restores) to go out when it is back."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aio_pika.abc import AbstractQueue

from restock_common import messages, signatures, topology
from restock_common.broker import Broker
from restock_common.db.tables import Outbox, Rule, Tenant, WavePlan
from restock_common.faults import FaultPoints
from restock_common.jobs import WavePlanStatus
from restock_common.rules import Rules, encode_rules
from restock_common.settings import Settings
from restock_detector.handler import WebhookHandler
from restock_detector.relay import OutboxRelay, OutboxWakeup
from restock_detector.store import PostgresOutboxStore, PostgresWebhookStore

pytestmark = pytest.mark.integration

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class TcpProxy:
    """Forwards a local port to RabbitMQ; ``cut`` drops every connection and refuses new ones."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()
        self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, upstream_writer}
        await asyncio.gather(self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()
        self._writers.discard(writer)


async def _wait_for(predicate: Any, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


@pytest.fixture
async def tenant_id(clean_db: None) -> int:
    tenant = Tenant(shop_domain="detector-relay.myshopify.com")
    await tenant.save()
    return int(tenant.id)


@pytest.fixture
async def queue(broker: Broker) -> AsyncIterator[AbstractQueue]:
    """A private queue bound to ``restock.detected`` (deleted afterwards, so nothing leaks to other tests)."""
    channel = await broker.connection.channel()
    declared = await channel.declare_queue(f"test.detector.relay.{uuid.uuid4().hex[:8]}", exclusive=True)
    await declared.bind(topology.EXCHANGE, topology.RESTOCK_DETECTED)
    yield declared
    await declared.delete(if_unused=False, if_empty=False)
    await channel.close()


async def add_rows(tenant_id: int, count: int, routing_key: str = topology.RESTOCK_DETECTED) -> list[Outbox]:
    rows = []
    for n in range(count):
        event = messages.RestockDetected(
            restock_event_id=n + 1,
            tenant_id=tenant_id,
            shop_domain="detector-relay.myshopify.com",
            variant_id=500 + n,
            available=n + 1,
            restock_window=1,
            detected_at=datetime.now(UTC),
        )
        row = Outbox(
            tenant=tenant_id,
            routing_key=routing_key,
            message_id=uuid.uuid4(),
            ordering_key=f"{tenant_id}:{500 + n}",
            payload=messages.encode(event).decode(),
            traceparent=TRACEPARENT,
        )
        await row.save()
        rows.append(row)
    return rows


HOLD_LIMIT_SECONDS = 60.0


def make_relay(engine: Any, broker: Broker, poll_seconds: float = 30.0, window: int = 1) -> OutboxRelay:
    return OutboxRelay(
        PostgresOutboxStore(engine.pool, hold_limit_seconds=HOLD_LIMIT_SECONDS),
        broker,
        FaultPoints(None),
        OutboxWakeup(),
        poll_seconds,
        window=window,
        hold_limit_seconds=HOLD_LIMIT_SECONDS,
    )


async def unpublished() -> int:
    return await Outbox.count().where(Outbox.published_at.is_null())


async def test_rows_are_published_in_order_with_their_bytes_then_marked(
    engine: Any, broker: Broker, queue: AbstractQueue, tenant_id: int
) -> None:
    rows = await add_rows(tenant_id, 3)
    assert await make_relay(engine, broker).relay_once() == (3, True)
    assert await unpublished() == 0
    for row in rows:
        message = await queue.get(timeout=5, fail=True)
        assert message is not None
        await message.ack()
        assert message.body == row.payload.encode()
        assert message.message_id == str(row.message_id)
        # The publish continues the trace that wrote the row.
        assert str((message.headers or {})["traceparent"]).split("-")[1] == TRACEPARENT.split("-")[1]
    assert await queue.get(fail=False) is None


async def test_an_unroutable_row_is_kept_and_counted(engine: Any, broker: Broker, tenant_id: int) -> None:
    await add_rows(tenant_id, 1, routing_key=f"test.detector.nobody.{uuid.uuid4().hex[:8]}")
    assert await make_relay(engine, broker).relay_once() == (0, False)
    [row] = await Outbox.select(Outbox.published_at, Outbox.publish_attempts)
    assert (row["published_at"], row["publish_attempts"]) == (None, 1)


async def test_rows_wait_out_a_broker_outage_and_go_out_when_it_is_back(
    settings: Settings, engine: Any, queue: AbstractQueue, tenant_id: int
) -> None:
    target = urlsplit(settings.amqp_url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 5672)
    await proxy.start()
    proxied_url = urlunsplit(
        target._replace(
            netloc=f"{target.username}:{target.password}@127.0.0.1:{proxy.port}",
            query="reconnect_interval=0.2",
        )
    )
    proxied = await Broker.connect(proxied_url)
    relay = make_relay(engine, proxied, poll_seconds=0.05)
    relay.start()
    try:
        await proxy.cut()
        await add_rows(tenant_id, 2)
        relay.wakeup.notify()

        async def attempted() -> bool:
            return bool(await Outbox.count().where(Outbox.publish_attempts >= 2))

        await _wait_for(attempted)  # tried (and failed) more than once while the broker was unreachable
        assert await unpublished() == 2
        assert await queue.get(fail=False) is None

        await proxy.start()  # the same port: the robust connection finds its way back

        async def all_published() -> bool:
            return await unpublished() == 0

        await _wait_for(all_published, timeout=40)
        bodies = []
        for _ in range(2):
            message = await queue.get(timeout=5, fail=True)
            assert message is not None
            await message.ack()
            bodies.append(messages.decode(message.body, messages.RestockDetected).variant_id)
        assert bodies == [500, 501]
    finally:
        await relay.stop()
        await proxied.close()
        if proxy._server is not None:
            await proxy.cut()


async def test_webhook_events_made_during_an_outage_go_out_in_order_when_it_is_back(
    settings: Settings, engine: Any, broker: Broker, tenant_id: int
) -> None:
    """The same outage, with the events a webhook writes (``stock.changed`` and ``restock.detected`` of one
    variant whose wave line is open, so its changes are enqueued): none lost, and in the order they were
    committed."""
    await Rule(tenant=tenant_id, body=encode_rules(Rules(debounce_seconds=0))).save()
    await WavePlan(tenant=tenant_id, variant_id=77, status=WavePlanStatus.SOLD_OUT).save()
    channel = await broker.connection.channel()
    queue = await channel.declare_queue(f"test.detector.relay.{uuid.uuid4().hex[:8]}", exclusive=True)
    for key in (topology.RESTOCK_DETECTED, topology.STOCK_CHANGED):
        await queue.bind(topology.EXCHANGE, key)
    target = urlsplit(settings.amqp_url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 5672)
    await proxy.start()
    netloc = f"{target.username}:{target.password}@127.0.0.1:{proxy.port}"
    proxied = await Broker.connect(urlunsplit(target._replace(netloc=netloc, query="reconnect_interval=0.2")))
    relay = make_relay(engine, proxied, poll_seconds=0.05)
    secret = settings.shopify_api_secret.get_secret_value()
    handler = WebhookHandler(
        secret, PostgresWebhookStore(engine.pool), relay.wakeup, lambda: datetime.now(UTC)
    )
    relay.start()
    try:
        await proxy.cut()
        product = {"id": 1, "title": "Tee", "variants": [{"id": 77, "title": "M", "inventory_item_id": 770}]}
        statuses = [await _send(handler, secret, "products/update", product)]
        at = datetime(2026, 3, 1, tzinfo=UTC)
        for step, available in enumerate((0, 5, 2)):
            level = {
                "inventory_item_id": 770,
                "location_id": 1,
                "available": available,
                "updated_at": (at + timedelta(seconds=step)).isoformat(),
            }
            statuses.append(await _send(handler, secret, "inventory_levels/update", level))
        assert statuses == ["ok", "still_out", "restock", "was_available"]

        async def attempted() -> bool:
            return bool(await Outbox.count().where(Outbox.publish_attempts >= 2))

        await _wait_for(attempted)
        assert await unpublished() == 3
        await proxy.start()

        async def all_published() -> bool:
            return await unpublished() == 0

        await _wait_for(all_published, timeout=40)
        received = []
        for _ in range(3):
            message = await queue.get(timeout=5, fail=True)
            assert message is not None
            await message.ack()
            received.append(message)
    finally:
        await relay.stop()
        await proxied.close()
        if proxy._server is not None:
            await proxy.cut()
        await queue.delete(if_unused=False, if_empty=False)
        await channel.close()
    changes = [messages.decode(m.body, messages.StockChanged) for m in received[::2]]
    assert [m.routing_key for m in received] == [
        topology.STOCK_CHANGED,
        topology.RESTOCK_DETECTED,
        topology.STOCK_CHANGED,
    ]
    assert [(c.previous, c.available) for c in changes] == [(0, 5), (5, 2)]
    assert messages.decode(received[1].body, messages.RestockDetected).available == 5


async def _send(handler: WebhookHandler, secret: str, topic: str, payload: object) -> str:
    body = json.dumps(payload).encode()
    headers = {
        "X-Shopify-Topic": topic,
        "X-Shopify-Shop-Domain": "detector-relay.myshopify.com",
        "X-Shopify-Webhook-Id": str(uuid.uuid4()),
        "X-Shopify-Hmac-Sha256": signatures.shopify_webhook_hmac(secret, body),
    }
    result = await handler.handle_webhook(headers, body)
    return str(result.body["status"])


async def test_relays_take_turns_so_a_second_one_sees_what_the_first_batch_left(
    engine: Any, tenant_id: int
) -> None:
    """Two replicas' relays: the second claim waits for the first batch to end, then takes the rows after
    it. Side by side (each skipping the other's rows) they could publish two rows of one variant out of
    order."""
    rows = await add_rows(tenant_id, 3)
    store = PostgresOutboxStore(engine.pool, hold_limit_seconds=HOLD_LIMIT_SECONDS)

    async def claim_ids() -> list[int]:
        async with store.claim(10) as batch:
            return [row.id for row in batch.rows]

    async with store.claim(2) as first:
        assert [row.id for row in first.rows] == [row.id for row in rows[:2]]
        assert [row.ordering_key for row in first.rows] == [row.ordering_key for row in rows[:2]]
        second = asyncio.create_task(claim_ids())
        await asyncio.sleep(0.5)
        assert not second.done()  # waiting for its turn, not skipping ahead to row 3
        await first.mark_published([row.id for row in first.rows])
    assert await asyncio.wait_for(second, 10) == [rows[2].id]


async def test_postgresql_ends_a_frozen_relays_batch_and_the_next_relay_publishes_its_rows(
    settings: Settings, engine: Any, broker: Broker, queue: AbstractQueue, tenant_id: int
) -> None:
    """A relay frozen mid-batch (its process stopped, its connection open) would hold every relay's turn:
    PostgreSQL ends its session once it has been idle in the batch for the hold limit, its locks go with it,
    and the next relay publishes the rows. The frozen one, on waking, finds its connection gone."""
    rows = await add_rows(tenant_id, 3)
    frozen_pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=1)
    frozen = PostgresOutboxStore(frozen_pool, hold_limit_seconds=1.0)

    async def freeze_mid_batch_then_wake() -> None:
        async with frozen.claim(10) as batch:
            assert [row.id for row in batch.rows] == [row.id for row in rows]
            live = asyncio.create_task(make_relay(engine, broker).relay_once())
            await asyncio.sleep(0.3)
            assert not live.done()  # the frozen batch holds the rows
            assert await asyncio.wait_for(live, 20) == (3, True)
            await batch.mark_published([row.id for row in batch.rows])  # the frozen one wakes

    try:
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError)):
            await freeze_mid_batch_then_wake()
    finally:
        await asyncio.wait_for(frozen_pool.close(), 10)
    assert await unpublished() == 0
    for row in rows:
        message = await queue.get(timeout=5, fail=True)
        assert message is not None
        await message.ack()
        assert message.message_id == str(row.message_id)


async def test_a_window_of_confirms_publishes_every_row_once(
    engine: Any, broker: Broker, queue: AbstractQueue, tenant_id: int
) -> None:
    rows = await add_rows(tenant_id, 40)
    assert await make_relay(engine, broker, window=16).relay_once() == (40, True)
    assert await unpublished() == 0
    received = []
    for _ in rows:
        message = await queue.get(timeout=5, fail=True)
        assert message is not None
        await message.ack()
        received.append(message.message_id)
    assert sorted(received) == sorted(str(row.message_id) for row in rows)
    assert await queue.get(fail=False) is None
