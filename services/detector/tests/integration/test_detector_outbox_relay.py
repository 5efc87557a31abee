"""The outbox relay against the real PostgreSQL and RabbitMQ: rows go out in order with their exact bytes,
are marked once confirmed, and survive a broker outage (a TCP proxy in front of RabbitMQ that the test
cuts and restores) to go out when it is back."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from aio_pika.abc import AbstractQueue

from restock_common import messages, topology
from restock_common.broker import Broker
from restock_common.db.tables import Outbox, Tenant
from restock_common.faults import FaultPoints
from restock_common.settings import Settings
from restock_detector.relay import OutboxRelay, OutboxWakeup
from restock_detector.store import PiccoloOutboxStore

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


def make_relay(engine: Any, broker: Broker, poll_seconds: float = 30.0) -> OutboxRelay:
    return OutboxRelay(PiccoloOutboxStore(engine), broker, FaultPoints(None), OutboxWakeup(), poll_seconds)


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
