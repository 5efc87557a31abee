"""The detector's composition root: settings -> engine, broker, Admin API client -> stores, handler, relay,
armed-restock scheduler, reconciliation sync -> Litestar app.

The only module that names concrete adapters. ``create_app`` builds the app that production runs; tests
pass their own engine and broker (which the app then neither opens nor closes) and, if they like, a clock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import httpx
from litestar import Litestar
from litestar.di import Provide
from piccolo.engine.postgres import PostgresEngine

from restock_common import topology
from restock_common.broker import Broker
from restock_common.db.engine import close_engine, close_pool, open_engine
from restock_common.faults import FaultPoints
from restock_common.service import Connections, health_routes, log_server_error, run
from restock_common.settings import Settings
from restock_common.telemetry import http_telemetry_plugins
from restock_detector.admin_api import ShopifyAdminApi
from restock_detector.handler import Clock, WebhookHandler
from restock_detector.relay import OutboxRelay, OutboxWakeup
from restock_detector.scheduler import TICK_SECONDS, ArmedRestockScheduler
from restock_detector.store import (
    PostgresArmedStore,
    PostgresOutboxStore,
    PostgresSyncStore,
    PostgresWebhookStore,
    open_pool,
)
from restock_detector.sync import ReconciliationSync, SyncReport
from restock_detector.webhooks import MAX_BODY_BYTES, ShopifyWebhookController

SERVICE = "detector"


@dataclass
class Runtime(Connections):
    """What the lifespan opened: for the readiness checks and the route's dependency."""

    handler: WebhookHandler | None = None

    def webhook_handler(self) -> WebhookHandler:
        if self.handler is None:
            raise RuntimeError("not started")
        return self.handler


def _utc_now() -> datetime:
    return datetime.now(UTC)


def create_app(
    settings: Settings,
    engine: PostgresEngine | None = None,
    broker: Broker | None = None,
    *,
    clock: Clock | None = None,
    faults: FaultPoints | None = None,
    scheduler_tick_seconds: float = TICK_SECONDS,
    sync: bool = True,
) -> Litestar:
    """The detector process as a Litestar app. Without ``engine``/``broker`` the lifespan opens its own
    from ``settings`` and closes them at shutdown; ``sync=False`` leaves the reconciliation loop out."""
    faults = faults or FaultPoints(settings.fault_point)
    clock = clock or _utc_now
    runtime = Runtime()

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            # Piccolo's engine serves the readiness check; the detector's statements use its own pool.
            runtime.engine = engine or await open_engine(settings, pool_size=2)
            if engine is None:
                stack.push_async_callback(close_engine, runtime.engine)
            pool = await open_pool(settings.database_url)
            stack.push_async_callback(close_pool, pool)
            runtime.broker = broker or await Broker.connect(
                settings.amqp_url,
                delivery_limit=settings.delivery_limit,
                heartbeat=settings.amqp_heartbeat_seconds,
            )
            if broker is None:
                stack.push_async_callback(runtime.broker.close)
            await _declare_destinations(runtime.broker, settings)
            http = await stack.enter_async_context(httpx.AsyncClient())
            admin = ShopifyAdminApi(settings.shopify_api_base_url, http)
            wakeup = OutboxWakeup()
            runtime.handler = WebhookHandler(
                settings.shopify_api_secret.get_secret_value(),
                PostgresWebhookStore(pool),
                wakeup,
                clock,
                admin,
            )
            hold_limit = settings.outbox_hold_limit_seconds
            relay = OutboxRelay(
                PostgresOutboxStore(pool, hold_limit_seconds=hold_limit),
                runtime.broker,
                faults,
                wakeup,
                settings.outbox_poll_seconds,
                window=settings.outbox_publish_window,
                hold_limit_seconds=hold_limit,
            )
            relay.start()
            # Last in, first out: the scheduler settles its batch, then the relay publishes what is
            # committed, before the broker and the pool close.
            stack.push_async_callback(relay.stop)
            scheduler = ArmedRestockScheduler(
                PostgresArmedStore(pool), wakeup, clock, scheduler_tick_seconds, admin=admin
            )
            scheduler.start()
            stack.push_async_callback(scheduler.stop)
            if sync:
                reconciliation = _reconciliation(settings, pool, admin, wakeup, clock)
                reconciliation.start()
                stack.push_async_callback(reconciliation.stop)
            yield

    return Litestar(
        route_handlers=[*health_routes(runtime.checks()), ShopifyWebhookController],
        dependencies={"webhook_handler": Provide(runtime.webhook_handler, sync_to_thread=False)},
        lifespan=[lifespan],
        request_max_body_size=MAX_BODY_BYTES,
        logging_config=None,  # keep telemetry.setup_logging's JSON lines: Litestar's default replaces them
        after_exception=[log_server_error],
        plugins=http_telemetry_plugins(),
    )


async def _declare_destinations(broker: Broker, settings: Settings) -> None:
    """The queues of what the detector publishes, declared here as well as by their consumer (idempotent,
    the same topology values): the relay publishes in order with ``mandatory``, so one unroutable message
    (a dispatcher not deployed yet) would hold every message behind it; declared, they wait in the queue."""
    for spec in (
        topology.dispatcher_queue(settings.delivery_limit),
        topology.dispatcher_inventory_queue(settings.delivery_limit),
    ):
        await broker.declare_queue(spec)


def _reconciliation(
    settings: Settings, pool: asyncpg.Pool, admin: ShopifyAdminApi, wakeup: OutboxWakeup, clock: Clock
) -> ReconciliationSync:
    return ReconciliationSync(
        PostgresSyncStore(pool),
        admin,
        wakeup,
        clock,
        bulk_threshold=settings.sync_bulk_threshold,
        tick_seconds=settings.sync_poll_seconds,
    )


def main() -> None:
    """Run the detector until SIGTERM."""
    run(SERVICE, create_app)


async def sync_once(settings: Settings, shop_domain: str) -> SyncReport | None:
    """``python -m restock_detector sync <shop>``: sync one shop now, whether or not it is due (still never
    beside another process syncing it). Its events wait in the outbox for a running detector's relay."""
    pool = await open_pool(settings.database_url, max_size=3)
    try:
        async with httpx.AsyncClient() as http:
            admin = ShopifyAdminApi(settings.shopify_api_base_url, http)
            reconciliation = _reconciliation(settings, pool, admin, OutboxWakeup(), _utc_now)
            shop = await PostgresSyncStore(pool).shop_by_domain(shop_domain.strip().lower())
            return None if shop is None else await reconciliation.sync_shop(shop, force=True)
    finally:
        await pool.close()
