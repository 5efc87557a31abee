"""The sandbox's composition root: one process, one loop, an HTTP app (Shopify store and Admin API, Twilio
API, inbox) and the SMTP server beside it."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx
from litestar import Litestar
from litestar.di import Provide

from restock_common.service import DEFAULT_PORTS, health_routes, serve
from restock_common.settings import Settings
from restock_common.telemetry import setup_logging, setup_tracing
from restock_sandbox.otlp.routes import otlp_router
from restock_sandbox.otlp.spans import SpanStore
from restock_sandbox.shopify.admin_api import AdminApi
from restock_sandbox.shopify.admin_routes import AdminApiController, GraphQLControl
from restock_sandbox.shopify.proxy import ProxyForwarder
from restock_sandbox.shopify.routes import Shop, StoreController, WebhookFaultController
from restock_sandbox.shopify.store import Store
from restock_sandbox.shopify.webhooks import WebhookDeliverer
from restock_sandbox.smtp.inbox import Inbox
from restock_sandbox.smtp.routes import FaultController, InboxController
from restock_sandbox.smtp.server import InboxHandler, start_smtp_server
from restock_sandbox.twilio.peer import TwilioPeer
from restock_sandbox.twilio.routes import MessagesApi, TwilioControl

SERVICE = "sandbox"


def _utc_now() -> datetime:
    return datetime.now(UTC)


def http_port(settings: Settings) -> int:
    """The HTTP port: the one services reach the sandbox's Shopify at, so both agree by construction."""
    return urlsplit(settings.shopify_api_base_url).port or DEFAULT_PORTS["sandbox"]


def smtp_credentials(settings: Settings) -> tuple[str, str] | None:
    """The login the SMTP server requires: the sender's own ``RESTOCK_SMTP_USERNAME``/``PASSWORD``, so a
    stack started with one environment agrees by construction; unset, any login (or none) is good."""
    if settings.smtp_username is None:
        return None
    password = settings.smtp_password.get_secret_value() if settings.smtp_password is not None else ""
    return settings.smtp_username, password


def create_app(
    settings: Settings,
    *,
    clock: Callable[[], datetime] | None = None,
    monotonic: Callable[[], float] | None = None,
) -> Litestar:
    """The HTTP app; its lifespan starts the SMTP server on ``smtp_host:smtp_port`` in the same loop."""
    clock = clock or _utc_now
    monotonic = monotonic or time.monotonic
    secret = settings.shopify_api_secret.get_secret_value()
    http = httpx.AsyncClient()
    inbox = Inbox()
    store = Store(settings.sandbox_shop_domain, clock)
    admin_api = AdminApi(store, settings.sandbox_shopify_access_token, clock, monotonic)
    admin_api.bulk_seconds = settings.sandbox_bulk_seconds
    shop = Shop(
        store,
        WebhookDeliverer(settings.sandbox_webhook_url, http, clock),
        secret,
        clock,
    )
    twilio = TwilioPeer(
        settings.twilio_account_sid,
        settings.twilio_auth_token.get_secret_value(),
        settings.twilio_from,
        settings.sandbox_twilio_inbound_url,
        http,
        clock,
    )
    proxy = ProxyForwarder(settings.sandbox_proxy_url, settings.sandbox_shop_domain, secret, http, clock)
    servers = []

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        handler = InboxHandler(inbox, clock, credentials=smtp_credentials(settings))
        smtp = await start_smtp_server(handler, settings.smtp_host, settings.smtp_port)
        servers.append(smtp)
        try:
            yield
        finally:
            await shop.deliverer.flush()  # webhooks a fault still holds are sent, not lost
            await twilio.flush()  # and status callbacks in flight
            smtp.close()
            await smtp.wait_closed()
            await http.aclose()

    async def smtp_ready() -> object:
        if not (servers and servers[0].is_serving()):
            raise RuntimeError("SMTP server not listening")
        return True

    return Litestar(
        route_handlers=[
            *health_routes({"smtp": smtp_ready}),
            InboxController,
            FaultController,
            StoreController,
            WebhookFaultController,
            AdminApiController,
            GraphQLControl,
            MessagesApi,
            TwilioControl,
            otlp_router(SpanStore()),  # OTLP/HTTP traces (ADR 19)
        ],
        dependencies={
            "inbox": Provide(lambda: inbox, sync_to_thread=False, use_cache=True),
            "shop": Provide(lambda: shop, sync_to_thread=False, use_cache=True),
            "proxy": Provide(lambda: proxy, sync_to_thread=False, use_cache=True),
            "admin_api": Provide(lambda: admin_api, sync_to_thread=False, use_cache=True),
            "twilio": Provide(lambda: twilio, sync_to_thread=False, use_cache=True),
        },
        lifespan=[lifespan],
        logging_config=None,  # setup_logging already routes every logger as JSON
    )


def main() -> None:
    """Serve the sandbox until SIGTERM."""
    settings = Settings()
    setup_logging(SERVICE)
    # aiosmtpd logs every SMTP command, recipients' addresses included: keep addresses out of logs.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    setup_tracing(SERVICE)
    serve(create_app(settings), host=settings.http_host, port=http_port(settings))
