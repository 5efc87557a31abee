"""The dispatcher's composition root: settings -> engine, broker, Redis -> store, publisher -> handler ->
consumer, and the publish sweeper.

The only module that names concrete adapters. ``create_app`` builds the Litestar app (health routes, the
consumer and the sweeper started and stopped in the lifespan) so tests run exactly what production runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import redis.asyncio as aioredis
from litestar import Litestar

from restock_common import topology
from restock_common.broker import Broker
from restock_common.db.engine import open_engine
from restock_common.faults import FaultPoints
from restock_common.messages import CHANNELS, RestockDetected
from restock_common.service import Connections, health_routes, run
from restock_common.settings import Settings
from restock_dispatcher.fast_dedup import RedisFastDedup
from restock_dispatcher.freeze import PiccoloTargetStore
from restock_dispatcher.handler import RestockHandler
from restock_dispatcher.publisher import BrokerBatchPublisher
from restock_dispatcher.sweeper import PublishSweeper

SERVICE = "dispatcher"
# Redis is only a fast path: a dead one must cost a freeze a second, not stall it.
REDIS_TIMEOUT_SECONDS = 1.0


async def declare_job_queues(broker: Broker, settings: Settings) -> None:
    """Declare every channel's job queue, so a batch published before its sender first started is kept
    (published with ``mandatory``, an unroutable batch would otherwise fail the event)."""
    for channel in CHANNELS:
        await broker.declare_queue(topology.sender_queue(channel, settings.delivery_limit))


def create_app(settings: Settings, *, faults: FaultPoints | None = None) -> Litestar:
    """The dispatcher process as a Litestar app."""
    faults = faults or FaultPoints(settings.fault_point)
    runtime = Connections()
    redis_client = aioredis.from_url(
        settings.redis_url,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
    )

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            stack.push_async_callback(redis_client.aclose)
            engine = await open_engine(settings)
            stack.push_async_callback(engine.close_connection_pool)
            broker = await Broker.connect(settings.amqp_url, delivery_limit=settings.delivery_limit)
            stack.push_async_callback(broker.close)
            runtime.engine, runtime.broker = engine, broker
            await declare_job_queues(broker, settings)
            store = PiccoloTargetStore(engine, RedisFastDedup(redis_client), settings.freeze_page_size)
            publisher = BrokerBatchPublisher(broker)
            handler = RestockHandler(store, publisher, faults, settings.job_batch_size)
            sweeper = PublishSweeper(
                store,
                publisher,
                after_seconds=settings.publish_sweep_after_seconds,
                interval_seconds=settings.publish_sweep_interval_seconds,
                batch_size=settings.job_batch_size,
            )
            stop_sweeping = asyncio.Event()
            sweeping = asyncio.create_task(sweeper.run(stop_sweeping), name="publish-sweeper")

            async def stop_sweeper() -> None:
                stop_sweeping.set()
                await sweeping

            stack.push_async_callback(stop_sweeper)
            consumer = await broker.consume(
                topology.dispatcher_queue(settings.delivery_limit),
                RestockDetected,
                handler,
                prefetch=settings.amqp_prefetch,
            )
            # Last in, first out: stop consuming (in-flight events finish), then the sweeper (its batch in
            # progress finishes), before the broker, the pool and Redis close.
            stack.push_async_callback(consumer.stop)
            yield

    async def redis_ready() -> object:
        return await redis_client.ping()

    checks = {**runtime.checks(), "redis": redis_ready}
    # logging_config=None keeps telemetry.setup_logging's JSON lines: Litestar's default replaces them.
    return Litestar(route_handlers=health_routes(checks), lifespan=[lifespan], logging_config=None)


def main() -> None:
    """Run the dispatcher until SIGTERM."""
    run(SERVICE, create_app)
