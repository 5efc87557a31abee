"""The dispatcher's second queue (``dispatcher.inventory``): stock changes re-plan a variant's waves, orders
fulfil the buyer's subscriptions.

Both message kinds share one queue (declared in ``restock_common.topology``), so the consumer picks the
schema by the message's routing key; an unknown key is poison, like an undecodable body.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from restock_common import topology
from restock_common.broker import Broker, Consumer, Outcome
from restock_common.messages import Message, OrderCreated, StockChanged, decode
from restock_dispatcher.handler import VariantPublisher
from restock_dispatcher.ports import FulfilmentStore, WaveStore

log = logging.getLogger(__name__)


class StockChangedHandler:
    """Re-plan the variant's line; publish what a wave released."""

    def __init__(self, waves: WaveStore, publisher: VariantPublisher) -> None:
        self.waves = waves
        self.publisher = publisher

    async def __call__(self, change: StockChanged) -> Outcome:
        released = await self.waves.stock_changed(change.tenant_id, change.variant_id, change.available)
        if released is None:
            return Outcome.ACK
        log.info(
            "waves re-planned",
            extra={
                "tenant_id": change.tenant_id,
                "variant_id": change.variant_id,
                "available": change.available,
                "reason": released.decision.reason.value,
                "wave": released.decision.wave,
                "released": released.released,
            },
        )
        # Also after a plan that released nothing: a crash after an earlier release's commit is recovered.
        origin = f"wave:{change.variant_id}"
        await self.publisher.publish(change.tenant_id, change.variant_id, released.window, origin)
        return Outcome.ACK


class OrderCreatedHandler:
    """Fulfil the buyer's subscriptions of the variants bought (idempotent on redelivery)."""

    def __init__(self, store: FulfilmentStore) -> None:
        self.store = store

    async def __call__(self, order: OrderCreated) -> Outcome:
        variants = sorted({line.variant_id for line in order.lines})
        fulfilled = await self.store.fulfil(order.tenant_id, variants, list(order.contact_hashes))
        log.info(
            "order fulfilled subscriptions",
            extra={
                "tenant_id": order.tenant_id,
                "order_id": order.order_id,
                "subscriptions": fulfilled.subscriptions,
                "waiting_jobs_skipped": fulfilled.jobs_skipped,
            },
        )
        return Outcome.ACK


async def _never_called(_: Message) -> Outcome:  # the routed consumer picks each route's handler
    return Outcome.POISON


@dataclass(frozen=True)
class Route:
    """The schema and handler of one routing key."""

    kind: type[Message]
    handler: Callable[[Any], Awaitable[Outcome]]


class RoutedConsumer(Consumer):
    """A ``Consumer`` whose schema and handler depend on the routing key (``Broker.consume`` takes one
    kind per queue). Decoding failures and handler exceptions keep the shared consumer's fates."""

    def __init__(self, channel: AbstractChannel, queue: AbstractQueue, routes: dict[str, Route]) -> None:
        super().__init__(channel, queue, Message, _never_called)
        self.routes = routes

    async def _outcome(self, message: AbstractIncomingMessage) -> Outcome:
        route = self.routes.get(message.routing_key or "")
        if route is None:
            log.error("poison message", extra={"queue": self.queue.name, "reason": "unknown routing key"})
            return Outcome.POISON
        try:
            decoded = decode(message.body, route.kind)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as error:
            log.error(
                "poison message",
                extra={"queue": self.queue.name, "message_id": message.message_id, "reason": str(error)},
            )
            return Outcome.POISON
        try:
            return await route.handler(decoded)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "handler failed; message requeued",
                extra={"queue": self.queue.name, "message_id": message.message_id},
            )
            return Outcome.REQUEUE


async def consume_inventory(
    broker: Broker,
    delivery_limit: int,
    prefetch: int,
    stock: StockChangedHandler,
    orders: OrderCreatedHandler,
) -> Consumer:
    """Declare and consume ``dispatcher.inventory``; returns the running consumer (stop it to shut down)."""
    spec = topology.dispatcher_inventory_queue(delivery_limit)
    routes = {
        topology.STOCK_CHANGED: Route(StockChanged, stock),
        topology.ORDER_CREATED: Route(OrderCreated, orders),
    }
    channel = await broker.connection.channel(publisher_confirms=False)
    await channel.set_qos(prefetch_count=prefetch)
    queue = await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments)
    for key in spec.routing_keys:
        await queue.bind(topology.EXCHANGE, key)
    consumer = RoutedConsumer(channel, queue, routes)
    await consumer.start()
    return consumer
