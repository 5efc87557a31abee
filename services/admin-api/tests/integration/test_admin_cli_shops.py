"""``python -m restock_admin shops add`` as a real process against this run's database."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from restock_common.db.tables import Tenant

pytestmark = pytest.mark.integration


def run_cli(test_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "restock_admin", *args],
        env={**os.environ, **test_env},
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_shops_add_registers_the_tenant_and_prints_its_id(
    test_env: dict[str, str], engine: object, clean_db: None
) -> None:
    done = run_cli(
        test_env,
        "shops",
        "add",
        "cli-shop.myshopify.com",
        "--access-token",
        "shpat_1",
        "--timezone",
        "Europe/Paris",
    )
    assert done.returncode == 0, done.stderr
    tenant = await Tenant.select().where(Tenant.shop_domain == "cli-shop.myshopify.com").first()
    assert tenant is not None
    assert done.stdout.strip() == str(tenant["id"])
    assert (tenant["access_token"], tenant["timezone"], tenant["uninstalled_at"]) == (
        "shpat_1",
        "Europe/Paris",
        None,
    )
    assert "shpat_1" not in done.stdout + done.stderr


async def test_shops_add_again_updates_the_same_tenant_and_reinstalls_it(
    test_env: dict[str, str], engine: object, clean_db: None
) -> None:
    first = run_cli(test_env, "shops", "add", "again.myshopify.com", "--access-token", "old")
    await Tenant.raw("UPDATE tenants SET uninstalled_at = now() WHERE shop_domain = 'again.myshopify.com'")
    second = run_cli(test_env, "shops", "add", "again.myshopify.com", "--access-token", "new")
    assert (first.returncode, second.returncode) == (0, 0), second.stderr
    assert first.stdout == second.stdout
    rows = await Tenant.select().run()
    assert [(r["shop_domain"], r["access_token"], r["uninstalled_at"]) for r in rows] == [
        ("again.myshopify.com", "new", None)
    ]


async def test_a_bad_domain_exits_2_and_writes_nothing(
    test_env: dict[str, str], engine: object, clean_db: None
) -> None:
    done = run_cli(test_env, "shops", "add", "evil.example.com", "--access-token", "t")
    assert done.returncode == 2
    assert "invalid shop domain" in done.stderr
    assert await Tenant.count() == 0


async def test_shops_remove_deletes_the_shop_and_its_data_and_audits_it(
    test_env: dict[str, str], engine: object, clean_db: None
) -> None:
    from restock_common.db.tables import AuditLog, Subscription

    added = run_cli(test_env, "shops", "add", "gone.myshopify.com", "--access-token", "t")
    kept = run_cli(test_env, "shops", "add", "kept.myshopify.com", "--access-token", "t")
    for tenant_id in (int(added.stdout), int(kept.stdout)):
        await Subscription.insert(
            Subscription(
                tenant=tenant_id, variant_id=1, channel="email", email="a@example.com", contact_hash="h"
            )
        )

    refused = run_cli(test_env, "shops", "remove", "gone.myshopify.com")
    assert refused.returncode == 2  # --yes is required
    done = run_cli(test_env, "shops", "remove", "gone.myshopify.com", "--yes", "--actor", "ops@example.com")
    assert (done.returncode, done.stdout.strip()) == (0, "removed"), done.stderr

    assert [t["shop_domain"] for t in await Tenant.select().run()] == ["kept.myshopify.com"]
    assert [s["tenant"] for s in await Subscription.select().run()] == [int(kept.stdout)]
    audit = await AuditLog.select().run()
    assert [(a["actor"], a["action"], a["target_ids"]) for a in audit] == [
        ("ops@example.com", "shop.remove", f"[{int(added.stdout)}]")
    ]
    again = run_cli(test_env, "shops", "remove", "gone.myshopify.com", "--yes")
    assert (again.returncode, again.stdout.strip()) == (0, "not registered")
