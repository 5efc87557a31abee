"""The dispatcher's composition root: settings -> engine, broker -> store, publisher -> handler -> consumer.

The only module that names concrete adapters. ``create_app`` builds the Litestar app (health routes, the
consumer started and stopped in the lifespan) so tests run exactly what production runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from litestar import Litestar

from restock_common import topology
from restock_common.broker import Broker
from restock_common.db.engine import open_engine
from restock_common.faults import FaultPoints
from restock_common.messages import CHANNELS, RestockDetected
from restock_common.service import Connections, health_routes, run
from restock_common.settings import Settings
from restock_dispatcher.freeze import PiccoloTargetStore
from restock_dispatcher.handler import RestockHandler
from restock_dispatcher.publisher import BrokerBatchPublisher

SERVICE = "dispatcher"


async def declare_job_queues(broker: Broker, settings: Settings) -> None:
    """Declare every channel's job queue, so a batch published before its sender first started is kept
    (published with ``mandatory``, an unroutable batch would otherwise fail the event)."""
    for channel in CHANNELS:
        await broker.declare_queue(topology.sender_queue(channel, settings.delivery_limit))


def create_app(settings: Settings, *, faults: FaultPoints | None = None) -> Litestar:
    """The dispatcher process as a Litestar app."""
    faults = faults or FaultPoints(settings.fault_point)
    runtime = Connections()

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            engine = await open_engine(settings)
            stack.push_async_callback(engine.close_connection_pool)
            broker = await Broker.connect(settings.amqp_url, delivery_limit=settings.delivery_limit)
            stack.push_async_callback(broker.close)
            runtime.engine, runtime.broker = engine, broker
            await declare_job_queues(broker, settings)
            handler = RestockHandler(
                PiccoloTargetStore(engine), BrokerBatchPublisher(broker), faults, settings.job_batch_size
            )
            consumer = await broker.consume(
                topology.dispatcher_queue(settings.delivery_limit),
                RestockDetected,
                handler,
                prefetch=settings.amqp_prefetch,
            )
            # Last in, first out: stop consuming (in-flight events finish) before the broker and pool close.
            stack.push_async_callback(consumer.stop)
            yield

    # logging_config=None keeps telemetry.setup_logging's JSON lines: Litestar's default replaces them.
    return Litestar(route_handlers=health_routes(runtime.checks()), lifespan=[lifespan], logging_config=None)


def main() -> None:
    """Run the dispatcher until SIGTERM."""
    run(SERVICE, create_app)
