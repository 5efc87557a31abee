"""The dispatcher's composition root: settings -> engine, broker, Redis -> stores, publisher -> handlers ->
consumers (``restock.detected``; ``stock.changed`` and ``order.created``), the publish sweeper and the wave
timer.

The only module that names concrete adapters. ``create_app`` builds the Litestar app (health routes, the
consumers and the background tasks started and stopped in the lifespan) so tests run exactly what
production runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from litestar import Litestar
from piccolo.engine.postgres import PostgresEngine

from restock_common import topology
from restock_common.broker import Broker
from restock_common.db.engine import close_engine, open_engine
from restock_common.faults import FaultPoints
from restock_common.messages import CHANNELS, RestockDetected
from restock_common.service import Connections, health_routes, log_server_error, run
from restock_common.settings import Settings
from restock_common.telemetry import http_telemetry_plugins
from restock_dispatcher.fast_dedup import RedisFastDedup
from restock_dispatcher.freeze import PiccoloTargetStore
from restock_dispatcher.handler import RestockHandler, VariantPublisher
from restock_dispatcher.inventory import OrderCreatedHandler, StockChangedHandler, consume_inventory
from restock_dispatcher.publisher import BrokerBatchPublisher
from restock_dispatcher.sweeper import PublishSweeper
from restock_dispatcher.wave_store import PiccoloWaveStore
from restock_dispatcher.wave_timer import WaveTimer

SERVICE = "dispatcher"
# Redis is only a fast path: a dead one must cost a freeze a second, not stall it.
REDIS_TIMEOUT_SECONDS = 1.0
# Stock changes of one variant are applied in the order the detector published them (one at a time).
INVENTORY_PREFETCH = 1


async def declare_job_queues(broker: Broker, settings: Settings) -> None:
    """Declare every channel's job queue, so a batch published before its sender first started is kept
    (published with ``mandatory``, an unroutable batch would otherwise fail the event)."""
    for channel in CHANNELS:
        await broker.declare_queue(topology.sender_queue(channel, settings.delivery_limit))


@dataclass(frozen=True)
class Parts:
    """The dispatcher's handlers and background loops, wired to the real adapters."""

    restock: RestockHandler
    stock: StockChangedHandler
    orders: OrderCreatedHandler
    sweeper: PublishSweeper
    timer: WaveTimer


def build_parts(
    settings: Settings,
    engine: PostgresEngine,
    broker: Broker,
    redis_client: aioredis.Redis,
    faults: FaultPoints,
) -> Parts:
    waves = PiccoloWaveStore(engine)
    store = PiccoloTargetStore(
        engine, RedisFastDedup(redis_client), settings.freeze_page_size, wave_store=waves
    )
    publisher = BrokerBatchPublisher(broker)
    variant_publisher = VariantPublisher(store, publisher, settings.job_batch_size, faults=faults)
    return Parts(
        restock=RestockHandler(store, publisher, faults, settings.job_batch_size),
        stock=StockChangedHandler(waves, variant_publisher),
        orders=OrderCreatedHandler(store),
        sweeper=PublishSweeper(
            store,
            publisher,
            after_seconds=settings.publish_sweep_after_seconds,
            interval_seconds=settings.publish_sweep_interval_seconds,
            batch_size=settings.job_batch_size,
        ),
        timer=WaveTimer(waves, variant_publisher, faults, tick_seconds=settings.wave_tick_seconds),
    )


def run_in_background(
    stack: AsyncExitStack, loops: dict[str, Callable[[asyncio.Event], Coroutine[Any, Any, None]]]
) -> None:
    """Start each ``loop(stop)`` as a task; on exit set ``stop`` and wait (a pass in progress ends)."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(loop(stop), name=name) for name, loop in loops.items()]

    async def stop_all() -> None:
        stop.set()
        await asyncio.gather(*tasks)

    stack.push_async_callback(stop_all)


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
            stack.push_async_callback(close_engine, engine)
            broker = await Broker.connect(
                settings.amqp_url,
                delivery_limit=settings.delivery_limit,
                heartbeat=settings.amqp_heartbeat_seconds,
            )
            stack.push_async_callback(broker.close)
            runtime.engine, runtime.broker = engine, broker
            await declare_job_queues(broker, settings)
            parts = build_parts(settings, engine, broker, redis_client, faults)
            run_in_background(stack, {"publish-sweeper": parts.sweeper.run, "wave-timer": parts.timer.run})
            restocks = await broker.consume(
                topology.dispatcher_queue(settings.delivery_limit),
                RestockDetected,
                parts.restock,
                prefetch=settings.amqp_prefetch,
            )
            inventory = await consume_inventory(
                broker, settings.delivery_limit, INVENTORY_PREFETCH, parts.stock, parts.orders
            )
            # Last in, first out: stop consuming (in-flight events finish), then the background loops (their
            # pass in progress finishes), before the broker, the pool and Redis close.
            stack.push_async_callback(restocks.stop)
            stack.push_async_callback(inventory.stop)
            yield

    async def redis_ready() -> object:
        return await redis_client.ping()

    checks = {**runtime.checks(), "redis": redis_ready}
    # logging_config=None keeps telemetry.setup_logging's JSON lines: Litestar's default replaces them.
    return Litestar(
        route_handlers=health_routes(checks),
        lifespan=[lifespan],
        logging_config=None,
        after_exception=[log_server_error],
        plugins=http_telemetry_plugins(),
    )


def main() -> None:
    """Run the dispatcher until SIGTERM."""
    run(SERVICE, create_app)
