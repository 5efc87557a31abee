"""What every service process shares: its HTTP port, health and readiness routes, and how it is served.

Every service is a Litestar app served by uvicorn: the HTTP services (detector, admin-api) for their
routes, the workers (dispatcher, sender) for ``/healthz``, ``/readyz`` and ``/metrics`` beside a consumer
started in the app's lifespan. uvicorn turns SIGTERM into a graceful shutdown: it stops accepting
requests, then runs the lifespan's shutdown, where a worker stops consuming and lets in-flight work finish.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import msgspec
import uvicorn
from litestar import Litestar, get
from litestar.exceptions import HTTPException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.response import Response
from litestar.types import Scope
from piccolo.engine.postgres import PostgresEngine

from restock_common.broker import Broker
from restock_common.db.tables import Tenant
from restock_common.settings import Settings
from restock_common.telemetry import setup_logging, setup_tracing

DEFAULT_PORTS = {
    "admin": 8000,
    "detector": 8001,
    "dispatcher": 8002,
    "sender-email": 8003,
    "sender-sms": 8004,
    "sandbox": 8025,
}

ReadinessCheck = Callable[[], Awaitable[object]]

log = logging.getLogger(__name__)


async def log_server_error(exception: Exception, scope: Scope) -> None:
    """Litestar ``after_exception`` hook: every request that ends in a 5xx leaves an ERROR line with the
    exception (the services run Litestar with ``logging_config=None`` so that every line is our JSON, which
    also silences Litestar's own exception logging). A 4xx is the caller's problem, answered with a reason,
    and not logged here. Contacts and link tokens are redacted by the log formatter."""
    if isinstance(exception, HTTPException) and exception.status_code < 500:
        return
    route = scope.get("path_template") or scope.get("path", "")
    log.error(
        "request failed",
        extra={"method": scope.get("method", ""), "route": route},
        exc_info=(type(exception), exception, exception.__traceback__),
    )


class Health(msgspec.Struct):
    """``/healthz``'s body (for the OpenAPI schema)."""

    status: Literal["ok"]


class Readiness(msgspec.Struct):
    """``/readyz``'s body (for the OpenAPI schema): each check's ``ok``, or the error it met."""

    ready: bool
    checks: dict[str, str]


def health_routes(checks: Mapping[str, ReadinessCheck], timeout: float = 2.0) -> list[HTTPRouteHandler]:
    """``/healthz`` (the process answers) and ``/readyz`` (every dependency answers within ``timeout``).

    Both are in the service's OpenAPI schema: operators and orchestrators call them like any other route.
    """

    @get(
        "/healthz",
        sync_to_thread=False,
        responses={200: ResponseSpec(Health, description="The process answers.", generate_examples=False)},
    )
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @get(
        "/readyz",
        responses={
            200: ResponseSpec(Readiness, description="Every dependency answers.", generate_examples=False),
            503: ResponseSpec(
                Readiness, description="A dependency does not answer (see checks).", generate_examples=False
            ),
        },
    )
    async def readyz() -> Response[dict[str, object]]:
        results: dict[str, str] = {}
        for name, check in checks.items():
            try:
                await asyncio.wait_for(check(), timeout)
                results[name] = "ok"
            except Exception as error:  # a readiness probe reports any failure as data
                results[name] = f"{type(error).__name__}: {error}"[:200]
        ready = all(value == "ok" for value in results.values())
        return Response({"ready": ready, "checks": results}, status_code=200 if ready else 503)

    return [healthz, readyz]


@dataclass
class Connections:
    """What a service's lifespan opened, read by its readiness checks (``None`` until started)."""

    engine: PostgresEngine | None = None
    broker: Broker | None = None

    async def database_ready(self) -> None:
        """PostgreSQL answers a query through the service's pool."""
        if self.engine is None:
            raise RuntimeError("not started")
        await Tenant.raw("SELECT 1")

    async def broker_ready(self) -> None:
        """The broker connection is open."""
        if self.broker is None or not self.broker.is_open:
            raise ConnectionError("broker connection closed")

    def checks(self) -> dict[str, ReadinessCheck]:
        """The readiness checks of a service that uses PostgreSQL and the broker."""
        return {"postgresql": self.database_ready, "broker": self.broker_ready}


def run(service: str, create_app: Callable[[Settings], Litestar]) -> None:
    """A service's ``main``: settings from the environment, JSON logs, tracing, then serve on
    ``RESTOCK_HTTP_PORT`` or the service's default port until SIGTERM."""
    settings = Settings()
    setup_logging(service)
    setup_tracing(service)
    port = settings.http_port or DEFAULT_PORTS[service]
    serve(create_app(settings), host=settings.http_host, port=port)


def serve(app: Litestar, *, host: str, port: int, graceful_seconds: int = 30) -> None:
    """Serve until SIGTERM/SIGINT, then shut down gracefully (see the module's rules)."""
    # After its graceful shutdown uvicorn re-raises the signal it caught, under the handler that was in
    # place before it started: with the default one a clean SIGTERM shutdown would end in death by signal
    # (exit -15). A graceful stop is a success, so that re-raised SIGTERM is ignored and we exit 0.
    signal.signal(signal.SIGTERM, lambda *_: None)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=graceful_seconds,
    )
