"""The admin-api's composition root: the only place that builds settings and names concrete adapters."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from litestar import Litestar, Request
from litestar.openapi import OpenAPIConfig

from restock_admin.jobs.controllers import SECURITY_COMPONENTS, admin_router
from restock_admin.jobs.replay_report import exit_code, report
from restock_admin.jobs.repository import PiccoloJobReader
from restock_admin.jobs.services import JobService
from restock_admin.ledger import PiccoloConsentLedger
from restock_admin.privacy.jobs import RetentionTask, UnknownShopError, export_contact, run_retention
from restock_admin.privacy.repository import PiccoloContactData, PiccoloShopRulesReader
from restock_admin.public.controllers import public_router
from restock_admin.public.repository import PiccoloLinkReader
from restock_admin.public.services import LinkService
from restock_admin.shops.registry import PiccoloShopRegistry
from restock_admin.staff.guard import TokenCheck, staff_guard
from restock_admin.staff.repository import PiccoloStaffDirectory, PiccoloStaffGrants
from restock_admin.storefront.controllers import storefront_router
from restock_admin.storefront.counters import PiccoloViewCounter, RedisHitCounter
from restock_admin.storefront.limits import Limit
from restock_admin.storefront.repository import PiccoloShopDirectory, PiccoloSubscriptionStore
from restock_admin.storefront.services import SignupLimits, SignupService, ViewService
from restock_admin.storefront.signup import (
    SignupRejected,
    client_ip,
    hash_ip,
    normalise_email,
    normalise_phone,
)
from restock_admin.twilio.controllers import TwilioAuth, twilio_router
from restock_admin.twilio.repository import PiccoloDeliveryReceipts
from restock_admin.twilio.services import InboundService, StatusService
from restock_common.db.engine import close_engine, make_engine, open_engine
from restock_common.db.tables import Tenant
from restock_common.links import LinkSigner
from restock_common.replay import PiccoloReplayStore, ReplayResult, replay
from restock_common.service import DEFAULT_PORTS, health_routes, log_server_error, serve
from restock_common.settings import Settings
from restock_common.telemetry import http_telemetry_plugins, setup_logging, setup_tracing

SERVICE = "admin-api"


def _utc_now() -> datetime:
    return datetime.now(UTC)


def signup_limits(settings: Settings) -> SignupLimits:
    """The signup rate limits of the settings."""
    return SignupLimits(
        per_ip=Limit("ip", settings.signup_ip_limit, settings.signup_ip_window_seconds),
        per_contact=Limit("contact", settings.signup_contact_limit, settings.signup_contact_window_seconds),
    )


def _public_ip_hasher(settings: Settings) -> Callable[[Request[Any, Any, Any]], str | None]:
    """The hashed client IP of a public link request: these come straight to our ingress, not through
    Shopify's proxy, so one hop fewer is trusted in X-Forwarded-For."""
    secret = settings.shopify_api_secret.get_secret_value()
    hops = max(settings.forwarded_for_trusted_hops - 1, 0)

    def ip_hash(request: Request[Any, Any, Any]) -> str | None:
        peer = request.client.host if request.client else None
        return hash_ip(client_ip(request.headers.get("x-forwarded-for", ""), peer, hops), secret)

    return ip_hash


def create_app(
    settings: Settings, *, clock: Callable[[], datetime] | None = None, run_retention_task: bool = True
) -> Litestar:
    """The HTTP app. Its database pool, Redis connections and retention task are opened in (and closed with)
    its lifespan, on the loop that serves it."""
    clock = clock or _utc_now
    redis_client = aioredis.from_url(settings.redis_url)
    secret = settings.shopify_api_secret.get_secret_value()
    ledger = PiccoloConsentLedger()
    signups = SignupService(
        PiccoloShopDirectory(),
        PiccoloSubscriptionStore(),
        RedisHitCounter(redis_client),
        signup_limits(settings),
        secret,
        clock,
    )
    views = ViewService(PiccoloViewCounter(), clock)
    links = LinkService(
        LinkSigner(settings.link_secret.get_secret_value()),
        ledger,
        PiccoloLinkReader(),
        settings.confirm_link_max_age_seconds,
        clock,
    )
    twilio_auth = TwilioAuth(settings.twilio_auth_token.get_secret_value(), settings.public_base_url)
    retention = RetentionTask(PiccoloShopRulesReader(), ledger, clock, settings.retention_interval_seconds)
    staff = staff_guard(TokenCheck(secret, settings.shopify_api_key, clock), PiccoloStaffDirectory())

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        engine = await open_engine(settings)
        if run_retention_task:
            retention.start()
        try:
            yield
        finally:
            if run_retention_task:
                await retention.stop()
            await close_engine(engine)
            await redis_client.aclose()

    async def postgres_ready() -> object:
        return await Tenant.raw("SELECT 1")

    async def redis_ready() -> object:
        return await redis_client.ping()

    return Litestar(
        plugins=http_telemetry_plugins(),
        after_exception=[log_server_error],
        route_handlers=[
            *health_routes({"postgres": postgres_ready, "redis": redis_ready}),
            storefront_router(signups, views, secret, clock, settings.forwarded_for_trusted_hops),
            public_router(links, _public_ip_hasher(settings)),
            twilio_router(
                twilio_auth,
                InboundService(ledger, clock),
                StatusService(PiccoloDeliveryReceipts(), ledger, clock),
            ),
            admin_router(JobService(PiccoloJobReader(), PiccoloReplayStore()), staff),
        ],
        openapi_config=OpenAPIConfig(
            title="Restock admin-api", version="0.1.0", components=SECURITY_COMPONENTS
        ),
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


async def grant_staff(settings: Settings, shop: str, user_id: str, role: str, actor: str) -> bool:
    """Give a shop's staff user a role in the admin API (audited); False when the shop is not registered."""
    make_engine(settings)
    return await PiccoloStaffGrants().grant(shop, user_id, role, actor)


async def revoke_staff(settings: Settings, shop: str, user_id: str, actor: str) -> bool:
    """Take a staff user's role at a shop away (audited); False when there was none."""
    make_engine(settings)
    return await PiccoloStaffGrants().revoke(shop, user_id, actor)


def _staff(settings: Settings, args: argparse.Namespace) -> int:
    if args.staff_command == "grant":
        granted = asyncio.run(grant_staff(settings, args.shop, args.user_id, args.role, args.actor))
        print("granted" if granted else "refused: shop not registered")
        return 0 if granted else 2
    revoked = asyncio.run(revoke_staff(settings, args.shop, args.user_id, args.actor))
    print("revoked" if revoked else "no grant")
    return 0


async def retention_pass(settings: Settings) -> dict[int, int]:
    """One retention pass now; subscriptions erased per tenant id."""
    make_engine(settings)
    return await run_retention(PiccoloShopRulesReader(), PiccoloConsentLedger(), _utc_now())


async def privacy_export(settings: Settings, shop: str, contact: str, actor: str) -> str:
    """One contact's data at one shop, as JSON (audited)."""
    make_engine(settings)
    return await export_contact(PiccoloContactData(), shop, contact, actor)


def _export(settings: Settings, args: argparse.Namespace) -> int:
    try:
        contact = normalise_email(args.email) if args.email else normalise_phone(args.phone, args.country)
        print(asyncio.run(privacy_export(settings, args.shop, contact, args.actor)))
    except (SignupRejected, UnknownShopError) as refused:
        print(f"refused: {refused}")
        return 2
    return 0


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
    if args.command == "staff":
        return _staff(settings, args)
    if args.command == "retention":
        print(json.dumps({"erased": asyncio.run(retention_pass(settings))}))
        return 0
    if args.command == "privacy":
        return _export(settings, args)
    setup_logging(SERVICE)
    setup_tracing(SERVICE)
    serve(create_app(settings), host=settings.http_host, port=settings.http_port or DEFAULT_PORTS["admin"])
    return 0
