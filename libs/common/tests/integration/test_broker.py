"""The broker helpers against the real RabbitMQ: confirms, ack after handler, poison, requeue, stop."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import aio_pika

from restock_common import topology
from restock_common.broker import Broker, Outcome
from restock_common.messages import JobBatch, RestockDetected

pytestmark = __import__("pytest").mark.integration


async def _poison_count(broker: Broker) -> int:
    channel = await broker.connection.channel()
    queue = await channel.declare_queue(topology.POISON_QUEUE, passive=True)
    count = queue.declaration_result.message_count
    await channel.close()
    return count or 0


async def _wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_published_batch_is_consumed_and_acked(broker: Broker) -> None:
    spec = topology.QueueSpec("test.ack", ("test.ack",), topology.queue_arguments(3))
    seen: list[JobBatch] = []

    async def handler(batch: JobBatch) -> Outcome:
        seen.append(batch)
        return Outcome.ACK

    consumer = await broker.consume(spec, JobBatch, handler, prefetch=4)
    await broker.publish(JobBatch(channel="email", job_ids=[1, 2, 3]), "test.ack")

    async def consumed() -> bool:
        return len(seen) == 1

    await _wait_for(consumed)
    await consumer.stop()
    assert seen[0].job_ids == [1, 2, 3]
    channel = await broker.connection.channel()
    queue = await channel.declare_queue(spec.name, passive=True)
    assert queue.declaration_result.message_count == 0
    await channel.close()


async def test_undecodable_message_goes_to_poison_and_consumer_keeps_going(broker: Broker) -> None:
    spec = topology.QueueSpec("test.poison", ("test.poison",), topology.queue_arguments(3))
    seen: list[RestockDetected] = []

    async def handler(event: RestockDetected) -> Outcome:
        seen.append(event)
        return Outcome.ACK

    before = await _poison_count(broker)
    consumer = await broker.consume(spec, RestockDetected, handler, prefetch=4)
    channel = await broker.connection.channel()
    exchange = await channel.get_exchange(topology.EXCHANGE)
    await exchange.publish(aio_pika.Message(b"{not json"), routing_key="test.poison")
    await exchange.publish(aio_pika.Message(b'{"schema_version": 99}'), routing_key="test.poison")
    good = RestockDetected(
        restock_event_id=1,
        tenant_id=1,
        shop_domain="s.myshopify.com",
        variant_id=7,
        available=2,
        restock_window=1,
        detected_at=datetime.now(UTC),
    )
    await broker.publish(good, "test.poison")

    async def settled() -> bool:
        return len(seen) == 1 and await _poison_count(broker) == before + 2

    await _wait_for(settled)
    await consumer.stop()
    await channel.close()
    assert seen == [good]


async def test_failing_handler_requeues_until_delivery_limit_then_poison(broker: Broker) -> None:
    spec = topology.QueueSpec("test.requeue", ("test.requeue",), topology.queue_arguments(2))
    calls = 0

    async def handler(batch: JobBatch) -> Outcome:
        nonlocal calls
        calls += 1
        raise RuntimeError("boom")

    before = await _poison_count(broker)
    consumer = await broker.consume(spec, JobBatch, handler, prefetch=1)
    await broker.publish(JobBatch(channel="sms", job_ids=[9]), "test.requeue")

    async def poisoned() -> bool:
        return await _poison_count(broker) == before + 1

    await _wait_for(poisoned)
    await consumer.stop()
    assert calls == 3  # the first delivery and two redeliveries (x-delivery-limit = 2)


async def test_routed_consumer_picks_schema_by_routing_key_and_poisons_unknown_keys(broker: Broker) -> None:
    from restock_common.broker import Route

    spec = topology.QueueSpec(
        "test.routed", ("routed.a", "routed.b", "routed.c"), topology.queue_arguments(3)
    )
    seen: list[object] = []

    async def on_batch(batch: JobBatch) -> Outcome:
        seen.append(batch)
        return Outcome.ACK

    async def on_event(event: RestockDetected) -> Outcome:
        seen.append(event)
        return Outcome.ACK

    poisoned_before = await _poison_count(broker)
    consumer = await broker.consume_routes(
        spec,
        {"routed.a": Route(JobBatch, on_batch), "routed.b": Route(RestockDetected, on_event)},
        prefetch=1,
    )
    event = RestockDetected(
        restock_event_id=1,
        tenant_id=1,
        shop_domain="s.myshopify.com",
        variant_id=2,
        available=3,
        restock_window=4,
        detected_at=datetime.now(UTC),
    )
    await broker.publish(JobBatch(channel="sms", job_ids=[7]), "routed.a")
    await broker.publish(JobBatch(channel="sms", job_ids=[8]), "routed.c")  # no route: poison
    await broker.publish(JobBatch(channel="sms", job_ids=[9]), "routed.b")  # wrong schema: poison
    await broker.publish(event, "routed.b")

    async def settled() -> bool:
        return len(seen) == 2 and await _poison_count(broker) == poisoned_before + 2

    await _wait_for(settled)
    await consumer.stop()
    assert seen == [JobBatch(channel="sms", job_ids=[7]), event]
