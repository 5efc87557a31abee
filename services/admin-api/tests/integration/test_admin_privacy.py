"""Retention and export against this run's PostgreSQL: what is erased when, that evidence survives, that a
second pass does nothing, and the export of one contact's data (in process and through the CLI)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from restock_admin.app import create_app
from restock_admin.ledger import PiccoloConsentLedger
from restock_admin.privacy.jobs import export_contact, run_retention
from restock_admin.privacy.repository import PiccoloContactData, PiccoloShopRulesReader
from restock_common.db.engine import bind_tables
from restock_common.db.tables import Subscription, Tenant
from restock_common.settings import Settings
from restock_common.signatures import contact_hash

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
SHOP = "privacy-shop.myshopify.com"
SHORT_SHOP = "short-retention.myshopify.com"


async def tenant(shop: str, rules: dict | None = None) -> int:
    tenant_id = (await Tenant.insert(Tenant(shop_domain=shop, access_token="x")).returning(Tenant.id))[0][
        "id"
    ]
    if rules:
        await Tenant.raw(
            "INSERT INTO rules (tenant, body) VALUES ({}, {}::jsonb)", tenant_id, json.dumps(rules)
        )
    return int(tenant_id)


async def subscription(tenant_id: int, email: str, state: str, variant_id: int = 7, **ages: timedelta) -> int:
    """A subscription with timestamps ``ages`` ago (subscribed_at defaults to 200 days ago)."""
    stamps = {"subscribed_at": NOW - ages.pop("subscribed", timedelta(days=200))}
    stamps |= {f"{name}_at": NOW - age for name, age in ages.items()}
    columns = ", ".join(stamps)
    placeholders = ", ".join("{}" for _ in stamps)
    rows = await Subscription.raw(
        f"INSERT INTO subscriptions (tenant, variant_id, channel, email, contact_hash, state, {columns})"
        f" VALUES ({{}}, {{}}, 'email', {{}}, {{}}, {{}}, {placeholders}) RETURNING id",
        tenant_id,
        variant_id,
        email,
        contact_hash(email),
        state,
        *stamps.values(),
    )
    subscription_id = int(rows[0]["id"])
    await Subscription.raw(
        "INSERT INTO consent_events (tenant, subscription, kind, source, ip_hash, occurred_at)"
        " VALUES ({}, {}, 'subscribed', 'storefront', 'iphash', {})",
        tenant_id,
        subscription_id,
        stamps["subscribed_at"],
    )
    return subscription_id


async def snapshot(subscription_id: int) -> tuple[str, str | None, bool, list[str]]:
    row = (
        await Subscription.raw(
            "SELECT state, email, redacted_at FROM subscriptions WHERE id = {}", subscription_id
        )
    )[0]
    kinds = await Subscription.raw(
        "SELECT kind FROM consent_events WHERE subscription = {} ORDER BY id", subscription_id
    )
    return row["state"], row["email"], row["redacted_at"] is not None, [k["kind"] for k in kinds]


async def test_retention_erases_what_is_due_and_nothing_else(engine: object, clean_db: None) -> None:
    shop = await tenant(SHOP)
    short = await tenant(SHORT_SHOP, {"retention_days": 7, "unconfirmed_ttl_hours": 1})
    ids = {
        "pending-49h": await subscription(shop, "a@example.com", "pending", subscribed=timedelta(hours=49)),
        "pending-47h": await subscription(shop, "b@example.com", "pending", subscribed=timedelta(hours=47)),
        "fulfilled-91d": await subscription(shop, "c@example.com", "confirmed", fulfilled=timedelta(days=91)),
        "notified-91d": await subscription(
            shop, "d@example.com", "confirmed", last_notified=timedelta(days=91)
        ),
        "notified-10d": await subscription(
            shop, "e@example.com", "confirmed", last_notified=timedelta(days=10)
        ),
        "unsubscribed-91d": await subscription(
            shop, "f@example.com", "unsubscribed", unsubscribed=timedelta(days=91)
        ),
        "unsubscribed-89d": await subscription(
            shop, "g@example.com", "unsubscribed", unsubscribed=timedelta(days=89)
        ),
        "erased-before": await subscription(
            shop, "h@example.com", "unsubscribed", unsubscribed=timedelta(days=100)
        ),
        "short-8d": await subscription(
            short, "i@example.com", "unsubscribed", unsubscribed=timedelta(days=8)
        ),
        "short-pending-2h": await subscription(
            short, "j@example.com", "pending", subscribed=timedelta(hours=2)
        ),
    }
    await Subscription.raw(
        "UPDATE subscriptions SET redacted_at = {}::timestamptz - interval '1 day' WHERE id = {}",
        NOW,
        ids["erased-before"],
    )
    await Subscription.raw("UPDATE subscriptions SET email = NULL WHERE id = {}", ids["erased-before"])

    erased = await run_retention(PiccoloShopRulesReader(), PiccoloConsentLedger(), NOW, batch=2)
    assert erased == {shop: 4, short: 2}

    expired = ("unsubscribed", None, True, ["subscribed", "expired", "redacted"])
    assert await snapshot(ids["pending-49h"]) == expired
    assert await snapshot(ids["fulfilled-91d"]) == expired
    assert await snapshot(ids["notified-91d"]) == expired
    assert await snapshot(ids["short-pending-2h"]) == expired
    assert await snapshot(ids["unsubscribed-91d"]) == ("unsubscribed", None, True, ["subscribed", "redacted"])
    assert await snapshot(ids["short-8d"]) == ("unsubscribed", None, True, ["subscribed", "redacted"])
    assert await snapshot(ids["pending-47h"]) == ("pending", "b@example.com", False, ["subscribed"])
    assert await snapshot(ids["notified-10d"]) == ("confirmed", "e@example.com", False, ["subscribed"])
    assert await snapshot(ids["unsubscribed-89d"]) == ("unsubscribed", "g@example.com", False, ["subscribed"])
    # Erased before (a customers/redact): no second erasure, no second evidence row.
    assert await snapshot(ids["erased-before"]) == (
        "unsubscribed",
        None,
        True,
        ["subscribed"],
    )  # erased before: untouched
    # The consent evidence stays, with its hashed IP; the retention rows say who erased.
    sources = await Subscription.raw(
        "SELECT DISTINCT source FROM consent_events WHERE kind IN ('expired', 'redacted')"
    )
    assert [row["source"] for row in sources] == ["retention"]
    assert len(await Subscription.raw("SELECT 1 FROM consent_events WHERE ip_hash = 'iphash'")) == len(ids)

    assert await run_retention(PiccoloShopRulesReader(), PiccoloConsentLedger(), NOW) == {}


async def test_export_of_one_contact(engine: object, clean_db: None) -> None:
    shop = await tenant(SHOP)
    other_shop = await tenant(SHORT_SHOP)
    mine = [
        await subscription(shop, "ada@example.com", "confirmed", variant_id=7),
        await subscription(
            shop, "ada@example.com", "unsubscribed", variant_id=8, unsubscribed=timedelta(days=1)
        ),
    ]
    await subscription(shop, "bob@example.com", "confirmed")
    await subscription(other_shop, "ada@example.com", "confirmed")
    event = await Subscription.raw(
        "INSERT INTO restock_events (tenant, variant_id, available, restock_window, source)"
        " VALUES ({}, 7, 3, 1, 'webhook') RETURNING id",
        shop,
    )
    job = await Subscription.raw(
        "INSERT INTO notification_jobs (tenant, restock_event, subscription, variant_id, channel,"
        " notification_key, state, priority_at)"
        " VALUES ({}, {}, {}, 7, 'email', 'k1', 'sent', now()) RETURNING id",
        shop,
        event[0]["id"],
        mine[0],
    )
    await Subscription.raw(
        "INSERT INTO notification_logs (tenant, job, attempt, channel, outcome, provider, variables,"
        " template_name)"
        " VALUES ({}, {}, 1, 'email', 'sent', 'smtp', '{{\"first_name\": \"Ada\"}}'::jsonb, 'alert')",
        shop,
        job[0]["id"],
    )

    document = json.loads(await export_contact(PiccoloContactData(), SHOP, "ada@example.com", "support@shop"))
    assert document["contact_hash"] == contact_hash("ada@example.com")
    assert [s["id"] for s in document["subscriptions"]] == mine
    assert {s["email"] for s in document["subscriptions"]} == {"ada@example.com"}
    assert {e["subscription_id"] for e in document["consent_events"]} == set(mine)
    assert [(log["job_id"], log["template_name"]) for log in document["notification_logs"]] == [
        (job[0]["id"], "alert")
    ]
    assert "variables" not in document["notification_logs"][0]
    audit = await Subscription.raw("SELECT actor, action, target_ids, detail FROM audit_log")
    assert [(row["actor"], row["action"]) for row in audit] == [("support@shop", "privacy.export")]
    assert "ada" not in audit[0]["detail"]
    assert json.loads(audit[0]["target_ids"]) == mine


def _cli(test_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "restock_admin", *args],
        env={**os.environ, **test_env},
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_the_cli_runs_retention_and_exports(
    test_env: dict[str, str], engine: object, clean_db: None
) -> None:
    shop = await tenant(SHOP)
    due = await subscription(shop, "ada@example.com", "unsubscribed", unsubscribed=timedelta(days=100))
    await subscription(shop, "+14155552671", "confirmed")

    retention = _cli(test_env, "retention", "run")
    assert retention.returncode == 0, retention.stderr
    assert json.loads(retention.stdout) == {"erased": {str(shop): 1}}
    assert (await snapshot(due))[1:3] == (None, True)

    exported = _cli(test_env, "privacy", "export", "--shop", SHOP, "--email", "ADA@example.com")
    assert exported.returncode == 0, exported.stderr
    assert [s["id"] for s in json.loads(exported.stdout)["subscriptions"]] == [due]

    refused = _cli(
        test_env, "privacy", "export", "--shop", "nobody.myshopify.com", "--email", "ada@example.com"
    )
    assert (refused.returncode, refused.stdout.strip()) == (2, "refused: nobody.myshopify.com")
    bad = _cli(test_env, "privacy", "export", "--shop", SHOP, "--phone", "12")
    assert bad.returncode == 2
    assert "invalid phone" in bad.stdout
    assert "ada@example.com" not in retention.stderr + exported.stderr


async def test_the_serving_process_runs_retention_in_the_background(
    settings: Settings, engine: object, clean_db: None, redis_client: object
) -> None:
    shop = await tenant(SHOP, {"unconfirmed_ttl_hours": 1})
    due = await subscription(shop, "ada@example.com", "pending", subscribed=timedelta(hours=2))
    db = await asyncpg.connect(settings.database_url)
    try:
        async with AsyncTestClient(
            create_app(settings.model_copy(update={"retention_interval_seconds": 0.2}))
        ):
            deadline = time.monotonic() + 60
            while await db.fetchval("SELECT redacted_at FROM subscriptions WHERE id = $1", due) is None:
                assert time.monotonic() < deadline, "the retention task did not run"
                await asyncio.sleep(0.1)
        row = await db.fetchrow("SELECT state, email FROM subscriptions WHERE id = $1", due)
        assert (row["state"], row["email"]) == ("unsubscribed", None)
    finally:
        await db.close()
        bind_tables(engine)
