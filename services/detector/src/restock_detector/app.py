"""The detector's composition root: settings -> engine, broker -> store, handler, relay, armed-restock
scheduler -> Litestar app.

The only module that names concrete adapters. ``create_app`` builds the app that production runs; tests
pass their own engine and broker (which the app then neither opens nor closes) and, if they like, a clock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from litestar import Litestar
from litestar.di import Provide
from piccolo.engine.postgres import PostgresEngine

from restock_common.broker import Broker
from restock_common.db.engine import open_engine
from restock_common.faults import FaultPoints
from restock_common.service import Connections, health_routes, run
from restock_common.settings import Settings
from restock_detector.handler import Clock, WebhookHandler
from restock_detector.relay import OutboxRelay, OutboxWakeup
from restock_detector.scheduler import TICK_SECONDS, ArmedRestockScheduler
from restock_detector.store import PiccoloArmedStore, PiccoloOutboxStore, PiccoloWebhookStore
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
) -> Litestar:
    """The detector process as a Litestar app. Without ``engine``/``broker`` the lifespan opens its own
    from ``settings`` and closes them at shutdown."""
    faults = faults or FaultPoints(settings.fault_point)
    clock = clock or _utc_now
    runtime = Runtime()

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            runtime.engine = engine or await open_engine(settings)
            if engine is None:
                stack.push_async_callback(runtime.engine.close_connection_pool)
            runtime.broker = broker or await Broker.connect(
                settings.amqp_url, delivery_limit=settings.delivery_limit
            )
            if broker is None:
                stack.push_async_callback(runtime.broker.close)
            wakeup = OutboxWakeup()
            runtime.handler = WebhookHandler(
                settings.shopify_api_secret.get_secret_value(),
                PiccoloWebhookStore(runtime.engine),
                wakeup,
                clock,
            )
            relay = OutboxRelay(
                PiccoloOutboxStore(runtime.engine),
                runtime.broker,
                faults,
                wakeup,
                settings.outbox_poll_seconds,
            )
            relay.start()
            # Last in, first out: the scheduler settles its batch, then the relay publishes what is
            # committed, before the broker and the pool close.
            stack.push_async_callback(relay.stop)
            scheduler = ArmedRestockScheduler(
                PiccoloArmedStore(runtime.engine), wakeup, clock, scheduler_tick_seconds
            )
            scheduler.start()
            stack.push_async_callback(scheduler.stop)
            yield

    return Litestar(
        route_handlers=[*health_routes(runtime.checks()), ShopifyWebhookController],
        dependencies={"webhook_handler": Provide(runtime.webhook_handler, sync_to_thread=False)},
        lifespan=[lifespan],
        request_max_body_size=MAX_BODY_BYTES,
        logging_config=None,  # keep telemetry.setup_logging's JSON lines: Litestar's default replaces them
    )


def main() -> None:
    """Run the detector until SIGTERM."""
    run(SERVICE, create_app)
