"""Signup rate limits in the real Redis: a flood from one IP, one contact through many IPs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest
from litestar.testing import AsyncTestClient

from restock_admin.app import create_app
from restock_common.db.engine import bind_tables
from restock_common.db.tables import Tenant
from restock_common.settings import Settings

pytestmark = pytest.mark.integration

Signed = Callable[..., str]
SHOP = "signup-shop.myshopify.com"


async def test_a_thousand_signups_from_one_ip_are_mostly_429(
    client: AsyncTestClient, settings: Settings, signed: Signed, tables
) -> None:
    statuses: Counter[int] = Counter()
    retry_after: set[str] = set()
    for n in range(1_000):
        response = await client.post(
            signed(),
            json={"variant_id": 7, "email": f"victim{n}@example.com"},
            headers={"X-Forwarded-For": "203.0.113.99"},
        )
        statuses[response.status_code] += 1
        if response.status_code == 429:
            retry_after.add(response.headers["retry-after"])
            assert "too many signups (ip)" in response.json()["detail"]
    # The window may roll over during the run (then it admits a second batch): never more than that.
    assert statuses[201] in (settings.signup_ip_limit, 2 * settings.signup_ip_limit)
    assert statuses[429] == 1_000 - statuses[201]
    assert set(statuses) == {201, 429}
    assert all(1 <= int(value) <= settings.signup_ip_window_seconds for value in retry_after)
    assert await tables.counts() == (statuses[201], statuses[201])
    other_ip = await client.post(
        signed(),
        json={"variant_id": 7, "email": "someone@example.com"},
        headers={"X-Forwarded-For": "203.0.113.100"},
    )
    assert other_ip.status_code == 201


async def test_one_contact_through_many_ips_is_limited(
    client: AsyncTestClient, settings: Settings, signed: Signed, tables
) -> None:
    statuses = []
    for n in range(settings.signup_contact_limit + 3):
        response = await client.post(
            signed(),
            json={"variant_id": 100 + n, "email": "victim@example.com"},
            headers={"X-Forwarded-For": f"198.51.100.{n}"},
        )
        statuses.append(response.status_code)
    limit = settings.signup_contact_limit
    # Again, a window boundary during the run may admit up to one more batch.
    assert statuses[:limit] == [201] * limit
    assert 429 in statuses[limit:]
    subscriptions = await tables.rows("subscriptions")
    assert len(subscriptions) == statuses.count(201)
    other_contact = await client.post(
        signed(),
        json={"variant_id": 7, "email": "someone@example.com"},
        headers={"X-Forwarded-For": "198.51.100.1"},
    )
    assert other_contact.status_code == 201


async def test_rate_limit_keys_hold_no_contact_or_ip(
    client: AsyncTestClient, signed: Signed, redis_client
) -> None:
    await client.post(
        signed(),
        json={"variant_id": 7, "email": "ada@example.com"},
        headers={"X-Forwarded-For": "203.0.113.7"},
    )
    keys = [key.decode() for key in await redis_client.keys("signup-limit:*")]
    assert len(keys) == 2
    assert not any("ada" in key or "203.0.113.7" in key for key in keys)


async def test_signups_go_on_when_redis_is_unreachable(
    settings: Settings, engine: object, clean_db: None, signed: Signed, tables
) -> None:
    """Redis may lose state or be down (DESIGN.md): the limits are skipped and say so; PostgreSQL is the
    truth, so the signup itself must not fail."""
    await Tenant.insert(Tenant(shop_domain=SHOP, access_token="x"))
    unreachable = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    try:
        async with AsyncTestClient(create_app(unreachable, run_retention_task=False)) as client:
            for n in range(3):
                response = await client.post(signed(), json={"variant_id": 7, "email": f"ada{n}@example.com"})
                assert response.status_code == 201, response.text
            assert (await client.get("/readyz")).status_code == 503
    finally:
        bind_tables(engine)
    assert await tables.counts() == (3, 3)
