"""The admin-api's composition root: the only place that builds settings and names concrete adapters."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import redis.asyncio as aioredis
from litestar import Litestar

from restock_admin.jobs.replay_report import exit_code, report
from restock_admin.shops.registry import PiccoloShopRegistry
from restock_admin.storefront.controllers import storefront_router
from restock_admin.storefront.repository import PiccoloSubscriptionStore, PiccoloTenantDirectory
from restock_admin.storefront.services import SignupService
from restock_common.db.engine import make_engine, open_engine
from restock_common.db.tables import Tenant
from restock_common.replay import PiccoloReplayStore, ReplayResult, replay
from restock_common.service import DEFAULT_PORTS, health_routes, serve
from restock_common.settings import Settings
from restock_common.telemetry import setup_logging, setup_tracing

SERVICE = "admin-api"


def _utc_now() -> datetime:
    return datetime.now(UTC)


def create_app(settings: Settings, *, clock: Callable[[], datetime] | None = None) -> Litestar:
    """The HTTP app. Its database pool and Redis connections are opened in (and closed with) its lifespan,
    on the loop that serves it."""
    clock = clock or _utc_now
    redis_client = aioredis.from_url(settings.redis_url)
    secret = settings.shopify_api_secret.get_secret_value()
    signups = SignupService(PiccoloTenantDirectory(), PiccoloSubscriptionStore(), secret, clock)

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        engine = await open_engine(settings)
        try:
            yield
        finally:
            await engine.close_connection_pool()
            await redis_client.aclose()

    async def postgres_ready() -> object:
        return await Tenant.raw("SELECT 1")

    async def redis_ready() -> object:
        return await redis_client.ping()

    return Litestar(
        route_handlers=[
            *health_routes({"postgres": postgres_ready, "redis": redis_ready}),
            storefront_router(signups, secret, clock),
        ],
        lifespan=[lifespan],
        logging_config=None,  # setup_logging already routes every logger as JSON
    )


async def add_shop(settings: Settings, shop: str, access_token: str, timezone: str) -> int:
    """Register a shop; its tenant id."""
    make_engine(settings)  # binds the tables; one short command needs no pool (a connection per query)
    return await PiccoloShopRegistry().register(shop, access_token, timezone)


async def remove_shop(settings: Settings, shop: str, actor: str) -> bool:
    """Delete a shop and its data (audited); False when it was not registered."""
    make_engine(settings)
    return await PiccoloShopRegistry().remove(shop, actor)


async def replay_jobs(settings: Settings, job_ids: list[int], actor: str, reason: str) -> ReplayResult:
    """Replay jobs (audited); the sender's scheduler publishes the replayed ones."""
    make_engine(settings)
    return await replay(PiccoloReplayStore(), job_ids, actor, reason)


def main(args: argparse.Namespace) -> int:
    """Run the parsed command; the process exit code."""
    settings = Settings()
    if args.command == "shops" and args.shops_command == "add":
        tenant_id = asyncio.run(add_shop(settings, args.shop, args.access_token, args.timezone))
        print(tenant_id)
        return 0
    if args.command == "shops" and args.shops_command == "remove":
        removed = asyncio.run(remove_shop(settings, args.shop, args.actor))
        print("removed" if removed else "not registered")
        return 0
    if args.command == "jobs" and args.jobs_command == "replay":
        result = asyncio.run(replay_jobs(settings, args.job_ids, args.actor, args.reason))
        print(report(result))
        return exit_code(result)
    setup_logging(SERVICE)
    setup_tracing(SERVICE)
    serve(create_app(settings), host=settings.http_host, port=settings.http_port or DEFAULT_PORTS["admin"])
    return 0
