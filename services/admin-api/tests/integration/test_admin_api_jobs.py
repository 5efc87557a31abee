"""``/admin/api``: the real app (Litestar's AsyncTestClient) against this run's PostgreSQL, authenticated
by Shopify session tokens signed like Shopify signs them, with grants in ``staff_permissions``."""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import jwt
import msgspec
import pytest
from litestar.testing import AsyncTestClient

from restock_common.replay import PiccoloReplayStore
from restock_common.settings import Settings

from .conftest import OTHER_SHOP, SHOP

pytestmark = pytest.mark.integration

JOBS = "/admin/api/jobs"
REPLAY = "/admin/api/jobs/replay"
STAFF = "1001"


def session_token(settings: Settings, shop: str = SHOP, sub: str = STAFF, **changes: Any) -> dict[str, str]:
    """The ``Authorization`` header of a session token App Bridge would hold for ``sub`` at ``shop``."""
    now = int(time.time())
    claims = {
        "iss": f"https://{shop}/admin",
        "dest": f"https://{shop}",
        "aud": settings.shopify_api_key,
        "sub": sub,
        "exp": now + 60,
        "nbf": now - 5,
        "iat": now - 5,
        "jti": "jti",
        "sid": "sid",
        **changes,
    }
    secret = settings.shopify_api_secret.get_secret_value()
    return {"Authorization": "Bearer " + jwt.encode(claims, secret, algorithm="HS256")}


async def grant(db: asyncpg.Connection, role: str, shop: str = SHOP, user_id: str = STAFF) -> None:
    await db.execute(
        "INSERT INTO staff_permissions (tenant, user_id, role)"
        " SELECT id, $2, $3 FROM tenants WHERE shop_domain = $1",
        shop,
        user_id,
        role,
    )


async def seed_job(
    db: asyncpg.Connection, shop: str, state: str, consent: str = "confirmed", **job: Any
) -> int:
    """One job of ``shop`` in ``state``, for a subscription in ``consent`` (with an email on it)."""
    tenant = await db.fetchval("SELECT id FROM tenants WHERE shop_domain = $1", shop)
    event = await db.fetchval(
        "INSERT INTO restock_events (tenant, variant_id, available, restock_window, source, detected_at)"
        " VALUES ($1, 7, 1, 1, 'webhook', now()) RETURNING id",
        tenant,
    )
    subscription = await db.fetchval(
        "INSERT INTO subscriptions (tenant, variant_id, channel, email, contact_hash, locale, quantity,"
        " state, source, consent_text_version, subscribed_at, notified_count)"
        " VALUES ($1, 7, 'email', 'shopper@example.com', $2, 'en', 1, $3, 'storefront', 'v1', now(), 0)"
        " RETURNING id",
        tenant,
        f"hash-{event}",
        consent,
    )
    return int(
        await db.fetchval(
            "INSERT INTO notification_jobs (tenant, restock_event, subscription, variant_id, channel,"
            " notification_key, state, attempt, priority_at, last_error_kind, last_error, created_at,"
            " updated_at)"
            " VALUES ($1, $2, $3, 7, 'email', $4, $5, 6, now(), $6, $7, now(), now()) RETURNING id",
            tenant,
            event,
            subscription,
            f"7:{subscription}:{event}",
            state,
            job.get("last_error_kind", "temporary"),
            job.get("last_error", "451 4.3.0 try later"),
        )
    )


async def job_row(db: asyncpg.Connection, job_id: int) -> dict[str, Any]:
    row = await db.fetchrow(
        "SELECT state, attempt, decision, updated_at FROM notification_jobs WHERE id = $1", job_id
    )
    return dict(row)


async def audits(db: asyncpg.Connection) -> list[asyncpg.Record]:
    return await db.fetch("SELECT * FROM audit_log WHERE action = 'jobs.replay' ORDER BY id")


# ------------------------------------------------------------------------------------------ authentication


@pytest.mark.parametrize("path", [JOBS, REPLAY])
async def test_no_token_is_401(client: AsyncTestClient, path: str) -> None:
    response = await (
        client.get(path) if path == JOBS else client.post(path, json={"job_ids": [1], "reason": "r"})
    )
    assert response.status_code == 401, response.text
    assert response.json()["detail"] == "missing-token"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"aud": "another-app"}, "wrong-audience"),
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"iss": "https://other-shop.myshopify.com/admin"}, "issuer-mismatch"),
    ],
)
async def test_a_bad_token_is_401_with_its_reason_and_the_retry_header(
    settings: Settings, db: asyncpg.Connection, client: AsyncTestClient, changes: dict[str, Any], reason: str
) -> None:
    await grant(db, "operator")
    response = await client.get(JOBS, headers=session_token(settings, **changes))
    assert response.status_code == 401, response.text
    assert response.json()["detail"] == reason
    assert response.headers["x-shopify-retry-invalid-session-request"] == "1"


async def test_a_token_signed_with_another_secret_is_401(
    settings: Settings, db: asyncpg.Connection, client: AsyncTestClient
) -> None:
    await grant(db, "operator")
    forged = Settings(shopify_api_secret="not-the-app-secret-not-the-app-secret")
    response = await client.get(JOBS, headers=session_token(forged))
    assert response.status_code == 401, response.text
    assert response.json()["detail"] == "bad-signature"


async def test_a_shop_that_is_not_installed_is_401(settings: Settings, client: AsyncTestClient) -> None:
    response = await client.get(JOBS, headers=session_token(settings, shop="nowhere.myshopify.com"))
    assert response.status_code == 401, response.text
    assert response.json()["detail"] == "unknown-shop"


async def test_a_valid_token_without_a_grant_at_its_shop_is_403(
    settings: Settings, db: asyncpg.Connection, client: AsyncTestClient
) -> None:
    await grant(db, "operator", shop=OTHER_SHOP)  # a grant elsewhere opens nothing here
    response = await client.get(JOBS, headers=session_token(settings))
    assert response.status_code == 403, response.text
    assert response.json()["detail"] == "no-grant-for-this-shop"


# ---------------------------------------------------------------------------------------------- listing


async def test_a_viewer_lists_its_shops_jobs_that_need_an_operator_without_contacts(
    settings: Settings, db: asyncpg.Connection, client: AsyncTestClient
) -> None:
    await grant(db, "viewer")
    dead = await seed_job(db, SHOP, "dead-letter", last_error="550 5.1.1 <shopper@example.com>: no such user")
    lost = await seed_job(db, SHOP, "indeterminate", last_error_kind="unknown", last_error=None)
    await seed_job(db, SHOP, "sent")
    await seed_job(db, OTHER_SHOP, "dead-letter")
    await seed_job(db, OTHER_SHOP, "indeterminate")
    response = await client.get(JOBS, headers=session_token(settings))
    assert response.status_code == 200, response.text
    page = response.json()
    assert [job["id"] for job in page["jobs"]] == [lost, dead]  # newest first, its shop only
    assert page["next_after_id"] is None
    first = page["jobs"][1]
    assert (first["state"], first["channel"], first["variant_id"], first["attempt"]) == (
        "dead-letter",
        "email",
        7,
        6,
    )
    assert first["last_error"] == "550 5.1.1 <[email]>: no such user"
    assert first["subscription_id"] > 0
    assert first["last_error_kind"] == "temporary"
    assert "shopper@example.com" not in response.text


async def test_listing_filters_by_state_and_pages_by_id(
    settings: Settings, db: asyncpg.Connection, client: AsyncTestClient
) -> None:
    await grant(db, "viewer")
    ids = [await seed_job(db, SHOP, "dead-letter") for _ in range(3)]
    await seed_job(db, SHOP, "indeterminate")
    headers = session_token(settings)
    first = (await client.get(JOBS, params={"state": "dead-letter", "limit": 2}, headers=headers)).json()
    assert [job["id"] for job in first["jobs"]] == [ids[2], ids[1]]
    assert first["next_after_id"] == ids[1]
    params = {"state": "dead-letter", "limit": 2, "after_id": first["next_after_id"]}
    second = (await client.get(JOBS, params=params, headers=headers)).json()
    assert second == {"jobs": [second["jobs"][0]], "next_after_id": None}
    assert second["jobs"][0]["id"] == ids[0]


@pytest.mark.parametrize("params", [{"state": "lost"}, {"limit": 0}, {"limit": 201}, {"after_id": "x"}])
async def test_a_malformed_query_is_400(
    settings: Settings, db: asyncpg.Connection, client: AsyncTestClient, params: dict[str, Any]
) -> None:
    await grant(db, "viewer")
    response = await client.get(JOBS, params=params, headers=session_token(settings))
    assert response.status_code == 400, response.text


# ----------------------------------------------------------------------------------------------- replay


async def test_a_viewer_may_not_replay(
    settings: Settings, db: asyncpg.Connection, client: AsyncTestClient
) -> None:
    await grant(db, "viewer")
    dead = await seed_job(db, SHOP, "dead-letter")
    response = await client.post(
        REPLAY, json={"job_ids": [dead], "reason": "r"}, headers=session_token(settings)
    )
    assert response.status_code == 403, response.text
    assert response.json()["detail"] == "role-lacks:jobs.replay"
    assert (await job_row(db, dead))["state"] == "dead-letter"
    assert await audits(db) == []


async def test_an_operator_replays_its_shops_jobs_audited_and_never_another_shops(
    settings: Settings, db: asyncpg.Connection, client: AsyncTestClient
) -> None:
    await grant(db, "operator")
    dead = await seed_job(db, SHOP, "dead-letter")
    lost = await seed_job(db, SHOP, "indeterminate")
    gone = await seed_job(db, SHOP, "dead-letter", consent="unsubscribed")
    theirs = await seed_job(db, OTHER_SHOP, "dead-letter")
    before = await job_row(db, theirs)
    body = {"job_ids": [dead, lost, gone, theirs, 999_999], "reason": "  smtp outage over "}
    response = await client.post(REPLAY, json=body, headers=session_token(settings))
    assert response.status_code == 200, response.text
    assert response.json() == {
        "replayed": [dead, lost],
        "refused": {str(gone): "opted-out", str(theirs): "not-found", "999999": "not-found"},
    }
    assert [(await job_row(db, job))["state"] for job in (dead, lost, gone)] == [
        "pending",
        "pending",
        "dead-letter",
    ]
    assert (await job_row(db, dead))["decision"] == "replayed"
    assert await job_row(db, theirs) == before  # not touched: state, attempt, decision, updated_at
    [audit] = await audits(db)
    shop_tenant = await db.fetchval("SELECT id FROM tenants WHERE shop_domain = $1", SHOP)
    assert (audit["actor"], audit["tenant"]) == (f"shopify-staff:{SHOP}:{STAFF}", shop_tenant)
    assert msgspec.json.decode(audit["detail"])["reason"] == "smtp outage over"


async def test_the_replay_store_does_not_even_lock_another_shops_job(
    db: asyncpg.Connection, engine: object, clean_db: None
) -> None:
    for shop in (SHOP, OTHER_SHOP):
        await db.execute("INSERT INTO tenants (shop_domain, access_token) VALUES ($1, 'x')", shop)
    mine = await seed_job(db, SHOP, "dead-letter")
    theirs = await seed_job(db, OTHER_SHOP, "dead-letter")
    tenant = await db.fetchval("SELECT id FROM tenants WHERE shop_domain = $1", SHOP)
    store = PiccoloReplayStore()
    async with store.transaction():
        locked = await store.lock([mine, theirs], tenant)
        # Another session can still lock the other shop's row: the scoped lock never took it.
        assert (
            await db.fetchval("SELECT id FROM notification_jobs WHERE id = $1 FOR UPDATE NOWAIT", theirs)
            == theirs
        )
    assert [snapshot.job_id for snapshot in locked] == [mine]


@pytest.mark.parametrize(
    "body",
    [
        {"job_ids": [], "reason": "r"},
        {"job_ids": [1], "reason": " "},
        {"job_ids": list(range(1, 502)), "reason": "r"},
    ],
    ids=["no ids", "blank reason", "too many ids"],
)
async def test_a_malformed_replay_is_400_and_audits_nothing(
    settings: Settings, db: asyncpg.Connection, client: AsyncTestClient, body: dict[str, Any]
) -> None:
    await grant(db, "operator")
    response = await client.post(REPLAY, json=body, headers=session_token(settings))
    assert response.status_code == 400, response.text
    assert response.json()["detail"]
    assert await audits(db) == []
