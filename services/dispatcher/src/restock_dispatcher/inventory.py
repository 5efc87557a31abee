"""The dispatcher's second queue (``dispatcher.inventory``): stock changes re-plan a variant's waves, orders
fulfil the buyer's subscriptions.

Both message kinds share one queue (declared in ``restock_common.topology``): ``Broker.consume_routes``
picks the schema and handler by the routing key; an unknown key is poison, like an undecodable body.
"""

from __future__ import annotations

import logging
from typing import Any

from restock_common import topology
from restock_common.broker import Broker, Consumer, Outcome, Route
from restock_common.messages import OrderCreated, StockChanged
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


async def consume_inventory(
    broker: Broker,
    delivery_limit: int,
    prefetch: int,
    stock: StockChangedHandler,
    orders: OrderCreatedHandler,
) -> Consumer:
    """Declare and consume ``dispatcher.inventory``; returns the running consumer (stop it to shut down)."""
    spec = topology.dispatcher_inventory_queue(delivery_limit)
    routes: dict[str | None, Route[Any]] = {
        topology.STOCK_CHANGED: Route(StockChanged, stock),
        topology.ORDER_CREATED: Route(OrderCreated, orders),
    }
    return await broker.consume_routes(spec, routes, prefetch=prefetch)
