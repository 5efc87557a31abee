"""The sender's composition root: settings -> engine, broker, SMTP pool -> handlers -> consumer, scheduler.

The only module that names concrete adapters. ``create_app`` builds the Litestar app (health routes, the
consumer of ``jobs.<channel>`` and the retry/reaper scheduler started and stopped in the lifespan) so tests
run what production runs.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime

from litestar import Litestar
from piccolo.engine.postgres import PostgresEngine

from restock_common import topology
from restock_common.broker import Broker
from restock_common.db.engine import open_engine
from restock_common.faults import FaultPoints
from restock_common.messages import Channel, JobBatch
from restock_common.service import Connections, health_routes, run
from restock_common.settings import Settings
from restock_sender.adapters.job_store import PiccoloJobStore
from restock_sender.adapters.publisher import BrokerJobPublisher
from restock_sender.adapters.schedule_store import PiccoloScheduleStore
from restock_sender.handler import BatchHandler, JobHandler
from restock_sender.providers.smtp import SmtpProvider
from restock_sender.scheduler import Scheduler
from restock_sender.templates import BUILTIN_EMAIL, JinjaRenderer

CHANNEL: Channel = "email"
SERVICE = f"sender-{CHANNEL}"


def smtp_provider(settings: Settings) -> SmtpProvider:
    """The SMTP pool, one session per concurrent job."""
    password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
    return SmtpProvider(
        host=settings.smtp_host,
        port=settings.smtp_port,
        sender=settings.smtp_from,
        username=settings.smtp_username,
        password=password,
        tls=settings.smtp_tls,
        pool_size=settings.sender_concurrency,
    )


def build_batch_handler(
    settings: Settings, engine: PostgresEngine, provider: SmtpProvider, faults: FaultPoints
) -> BatchHandler:
    """The consumer handler with its real adapters."""
    jobs = JobHandler(
        store=PiccoloJobStore(engine),
        provider=provider,
        renderer=JinjaRenderer(),
        template=BUILTIN_EMAIL,
        faults=faults,
        clock=lambda: datetime.now(UTC),
        rng=random.SystemRandom().random,
        lease_seconds=settings.lease_seconds,
    )
    return BatchHandler(jobs, CHANNEL, settings.sender_concurrency, faults)


def build_scheduler(settings: Settings, engine: PostgresEngine, broker: Broker) -> Scheduler:
    """Retries, unpublished jobs and the lease reaper of this channel, with their real adapters."""
    return Scheduler(
        PiccoloScheduleStore(engine),
        BrokerJobPublisher(broker),
        CHANNEL,
        batch_size=settings.job_batch_size,
        grace_seconds=settings.republish_grace_seconds,
        interval=settings.retry_poll_seconds,
    )


def create_app(settings: Settings, *, faults: FaultPoints | None = None) -> Litestar:
    """The email sender process as a Litestar app."""
    faults = faults or FaultPoints(settings.fault_point)
    runtime = Connections()

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            engine = await open_engine(settings, pool_size=settings.sender_concurrency + 2)
            stack.push_async_callback(engine.close_connection_pool)
            broker = await Broker.connect(settings.amqp_url, delivery_limit=settings.delivery_limit)
            stack.push_async_callback(broker.close)
            provider = smtp_provider(settings)
            stack.push_async_callback(provider.close)
            runtime.engine, runtime.broker = engine, broker
            consumer = await broker.consume(
                topology.sender_queue(CHANNEL, settings.delivery_limit),
                JobBatch,
                build_batch_handler(settings, engine, provider, faults),
                prefetch=settings.amqp_prefetch,
            )
            # Last in, first out: stop consuming and finish in-flight jobs before SMTP, broker and pool close.
            stack.push_async_callback(consumer.stop)
            scheduler = build_scheduler(settings, engine, broker)
            scheduler.start()
            stack.push_async_callback(scheduler.stop)
            yield

    # logging_config=None keeps telemetry.setup_logging's JSON lines: Litestar's default replaces them.
    return Litestar(route_handlers=health_routes(runtime.checks()), lifespan=[lifespan], logging_config=None)


def main() -> None:
    """Run the email sender until SIGTERM."""
    run(SERVICE, create_app)
