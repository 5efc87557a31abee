"""The storefront signup over HTTP, against this run's PostgreSQL: signature, freshness, validation,
idempotency, and that a refused request writes nothing."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from restock_admin.app import create_app
from restock_admin.storefront.signup import hash_ip
from restock_common.db.engine import bind_tables
from restock_common.db.tables import Tenant
from restock_common.settings import Settings
from restock_common.signatures import app_proxy_signature, contact_hash

pytestmark = pytest.mark.integration

SHOP = "signup-shop.myshopify.com"


def proxy_url(settings: Settings, shop: str = SHOP, *, age: int = 0, secret: str | None = None) -> str:
    """The URL Shopify's App Proxy would call, signed like Shopify signs it."""
    params = [
        ("shop", shop),
        ("logged_in_customer_id", ""),
        ("path_prefix", "/apps/restock"),
        ("timestamp", str(int(time.time()) - age)),
    ]
    key = secret if secret is not None else settings.shopify_api_secret.get_secret_value()
    params.append(("signature", app_proxy_signature(key, params)))
    return "/proxy/subscriptions?" + urlencode(params)


@pytest.fixture
async def client(settings: Settings, engine: object, clean_db: None) -> AsyncIterator[AsyncTestClient]:
    await Tenant.insert(Tenant(shop_domain=SHOP, access_token="shpat_test"))
    # AsyncTestClient serves the app on its own loop, where the app's lifespan opens its own pool and
    # binds the tables to it: this test reads the database with plain asyncpg (see ``db``), and the
    # tables go back to the session's engine afterwards, for the tests that follow.
    try:
        async with AsyncTestClient(create_app(settings)) as test_client:
            yield test_client
    finally:
        bind_tables(engine)


async def rows(db: asyncpg.Connection, table: str) -> list[asyncpg.Record]:
    return await db.fetch(f"SELECT * FROM {table} ORDER BY id")


async def counts(db: asyncpg.Connection) -> tuple[int, int]:
    return len(await rows(db, "subscriptions")), len(await rows(db, "consent_events"))


async def test_signed_signup_creates_a_confirmed_subscription_and_its_consent_event(
    client: AsyncTestClient, settings: Settings, db: asyncpg.Connection
) -> None:
    response = await client.post(
        proxy_url(settings),
        json={"variant_id": 4242, "email": "Ada@Example.com", "locale": "fr", "quantity": 2},
        headers={"X-Forwarded-For": "203.0.113.7, 10.0.0.1"},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"id", "variant_id", "channel", "state", "subscribed_at"}
    assert (body["variant_id"], body["channel"], body["state"]) == (4242, "email", "confirmed")

    subscriptions = await rows(db, "subscriptions")
    assert len(subscriptions) == 1
    row = subscriptions[0]
    tenant = await db.fetchrow("SELECT id FROM tenants WHERE shop_domain = $1", SHOP)
    assert (row["id"], row["tenant"]) == (body["id"], tenant["id"])
    assert (row["email"], row["contact_hash"]) == ("Ada@example.com", contact_hash("ada@example.com"))
    assert (row["state"], row["locale"], row["quantity"], row["source"]) == (
        "confirmed",
        "fr",
        2,
        "storefront",
    )
    assert row["confirmed_at"] == row["subscribed_at"]
    secret = settings.shopify_api_secret.get_secret_value()
    assert row["ip_hash"] == hash_ip("203.0.113.7", secret)

    events = await rows(db, "consent_events")
    assert len(events) == 1
    event = events[0]
    assert (event["subscription"], event["kind"], event["source"]) == (row["id"], "subscribed", "storefront")
    assert (event["consent_text_version"], event["ip_hash"]) == ("v1", row["ip_hash"])


async def test_repeat_signup_answers_200_with_the_same_subscription(
    client: AsyncTestClient, settings: Settings, db: asyncpg.Connection
) -> None:
    first = await client.post(proxy_url(settings), json={"variant_id": 7, "email": "ada@example.com"})
    again = await client.post(proxy_url(settings), json={"variant_id": 7, "email": "ADA@example.com"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert await counts(db) == (1, 1)
    other_variant = await client.post(proxy_url(settings), json={"variant_id": 8, "email": "ada@example.com"})
    assert other_variant.status_code == 201
    assert await counts(db) == (2, 2)


@pytest.mark.parametrize(
    ("url_kwargs", "strip_signature", "reason"),
    [
        ({"secret": "not-the-app-secret"}, False, "invalid signature"),
        ({}, True, "invalid signature"),
        ({"age": 6 * 60}, False, "stale signature"),
        ({"age": -5 * 60}, False, "stale signature"),
    ],
)
async def test_unauthentic_or_stale_requests_are_401_and_write_nothing(
    client: AsyncTestClient,
    settings: Settings,
    db: asyncpg.Connection,
    url_kwargs: dict,
    strip_signature: bool,
    reason: str,
) -> None:
    url = proxy_url(settings, **url_kwargs)
    if strip_signature:
        url = url.rsplit("&signature=", 1)[0]
    response = await client.post(url, json={"variant_id": 7, "email": "ada@example.com"})
    assert response.status_code == 401
    assert response.json()["detail"] == reason
    assert await counts(db) == (0, 0)


async def test_a_tampered_query_is_401(
    client: AsyncTestClient, settings: Settings, db: asyncpg.Connection
) -> None:
    url = proxy_url(settings).replace("shop=signup-shop", "shop=other-shop")
    response = await client.post(url, json={"variant_id": 7, "email": "ada@example.com"})
    assert response.status_code == 401
    assert await counts(db) == (0, 0)


async def test_unknown_shop_is_404(
    client: AsyncTestClient, settings: Settings, db: asyncpg.Connection
) -> None:
    response = await client.post(
        proxy_url(settings, shop="nobody.myshopify.com"), json={"variant_id": 7, "email": "ada@example.com"}
    )
    assert response.status_code == 404
    assert response.json()["detail"] == "unknown shop"
    assert await counts(db) == (0, 0)


async def test_uninstalled_shop_is_404(
    client: AsyncTestClient, settings: Settings, db: asyncpg.Connection
) -> None:
    await db.execute("UPDATE tenants SET uninstalled_at = now() WHERE shop_domain = $1", SHOP)
    response = await client.post(proxy_url(settings), json={"variant_id": 7, "email": "ada@example.com"})
    assert response.status_code == 404
    assert await counts(db) == (0, 0)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (json.dumps({"variant_id": 7, "email": "not-an-email"}), "invalid email"),
        (
            json.dumps({"variant_id": 7, "email": "ada@example.com", "channel": "sms"}),
            "channel sms not supported yet",
        ),
        (json.dumps({"variant_id": 7, "email": "ada@example.com", "channel": "fax"}), "channel"),
        (json.dumps({"email": "ada@example.com"}), "variant_id"),
        (json.dumps({"variant_id": 0, "email": "ada@example.com"}), "variant_id"),
        (json.dumps({"variant_id": "seven", "email": "ada@example.com"}), "variant_id"),
        (json.dumps({"variant_id": 7, "email": "ada@example.com", "quantity": 0}), "quantity"),
        ("this is not json", ""),
        (json.dumps([1, 2]), ""),
    ],
)
async def test_bad_bodies_are_400_with_a_reason_and_write_nothing(
    client: AsyncTestClient, settings: Settings, db: asyncpg.Connection, content: str, needle: str
) -> None:
    response = await client.post(
        proxy_url(settings), content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert needle in response.text
    assert "detail" in response.json()
    assert await counts(db) == (0, 0)


async def test_oversized_body_is_413(
    client: AsyncTestClient, settings: Settings, db: asyncpg.Connection
) -> None:
    body = json.dumps({"variant_id": 7, "email": "ada@example.com", "padding": "x" * 70_000})
    response = await client.post(
        proxy_url(settings), content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert await counts(db) == (0, 0)


async def test_readiness_checks_postgres_and_redis(client: AsyncTestClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"postgres": "ok", "redis": "ok"}
    assert (await client.get("/healthz")).status_code == 200
