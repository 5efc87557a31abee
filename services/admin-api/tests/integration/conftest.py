"""The admin-api served by Litestar's AsyncTestClient against this run's PostgreSQL and Redis, and helpers
to sign requests as Shopify's App Proxy and Twilio sign them."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlencode

import asyncpg
import pytest
import redis.asyncio as aioredis
from litestar.testing import AsyncTestClient

from restock_admin.app import create_app
from restock_common.db.engine import bind_tables
from restock_common.db.tables import Tenant
from restock_common.settings import Settings
from restock_common.signatures import app_proxy_signature

SHOP = "signup-shop.myshopify.com"
OTHER_SHOP = "other-shop.myshopify.com"


def proxy_url(
    settings: Settings,
    path: str = "subscriptions",
    shop: str = SHOP,
    *,
    age: int = 0,
    secret: str | None = None,
) -> str:
    """The URL Shopify's App Proxy would call, signed like Shopify signs it."""
    params = [
        ("shop", shop),
        ("logged_in_customer_id", ""),
        ("path_prefix", "/apps/restock"),
        ("timestamp", str(int(time.time()) - age)),
    ]
    key = secret if secret is not None else settings.shopify_api_secret.get_secret_value()
    params.append(("signature", app_proxy_signature(key, params)))
    return f"/proxy/{path}?" + urlencode(params)


@pytest.fixture
async def client(
    settings: Settings, engine: object, clean_db: None, redis_client: aioredis.Redis
) -> AsyncIterator[AsyncTestClient]:
    await Tenant.insert(
        Tenant(shop_domain=SHOP, access_token="shpat_test"), Tenant(shop_domain=OTHER_SHOP, access_token="x")
    )
    # AsyncTestClient serves the app on its own loop, where the app's lifespan opens its own pool and
    # binds the tables to it: tests read the database with plain asyncpg (see ``db``), and the tables go
    # back to the session's engine afterwards, for the tests that follow.
    try:
        async with AsyncTestClient(create_app(settings, run_retention_task=False)) as test_client:
            yield test_client
    finally:
        bind_tables(engine)


class Tables:
    """Reads (and rule writes) of this run's database for assertions, over a plain asyncpg connection."""

    def __init__(self, db: asyncpg.Connection) -> None:
        self.db = db

    async def rows(self, table: str) -> list[asyncpg.Record]:
        return await self.db.fetch(f"SELECT * FROM {table} ORDER BY id")

    async def counts(self) -> tuple[int, int]:
        """(subscriptions, consent events)."""
        return len(await self.rows("subscriptions")), len(await self.rows("consent_events"))

    async def kinds(self, subscription_id: int) -> list[str]:
        """The consent event kinds of one subscription, in order."""
        records = await self.db.fetch(
            "SELECT kind FROM consent_events WHERE subscription = $1 ORDER BY id", subscription_id
        )
        return [record["kind"] for record in records]

    async def state(self, subscription_id: int) -> str:
        return await self.db.fetchval("SELECT state FROM subscriptions WHERE id = $1", subscription_id)

    async def set_rules(self, shop: str = SHOP, **fields: object) -> None:
        """Merge ``fields`` into a shop's rules row (the admin API's rule editor will own this)."""
        await self.db.execute(
            "INSERT INTO rules (tenant, body, version, updated_at, updated_by) "
            "SELECT id, $2::jsonb, 1, now(), 'test' FROM tenants WHERE shop_domain = $1 "
            "ON CONFLICT (tenant) DO UPDATE SET body = rules.body || EXCLUDED.body",
            shop,
            json.dumps(fields),
        )


@pytest.fixture
def tables(db: asyncpg.Connection) -> Tables:
    return Tables(db)


@pytest.fixture
def signed(settings: Settings) -> Callable[..., str]:
    """``signed(path="subscriptions", shop=..., age=..., secret=...)``: a signed App Proxy URL."""
    return lambda path="subscriptions", **kwargs: proxy_url(settings, path, **kwargs)
