"""``python -m restock_admin staff grant|revoke`` as a real process against this run's database."""

from __future__ import annotations

import msgspec
import pytest

from restock_common.db.tables import AuditLog, StaffPermission, Tenant

from .test_admin_cli_jobs_replay import run_cli

pytestmark = pytest.mark.integration

SHOP = "staff-cli.myshopify.com"


async def grants() -> list[tuple[str, str]]:
    rows = await StaffPermission.select(StaffPermission.user_id, StaffPermission.role).order_by(
        StaffPermission.id
    )
    return [(row["user_id"], row["role"]) for row in rows]


async def test_grant_change_and_revoke_are_each_audited(
    test_env: dict[str, str], engine: object, clean_db: None
) -> None:
    await Tenant.insert(Tenant(shop_domain=SHOP))
    granted = run_cli(test_env, "staff", "grant", SHOP, "77", "viewer", "--actor", "ops")
    assert (granted.returncode, granted.stdout.strip()) == (0, "granted"), granted.stderr
    changed = run_cli(test_env, "staff", "grant", SHOP, "77", "operator", "--actor", "ops")
    assert changed.returncode == 0, changed.stderr
    assert await grants() == [("77", "operator")]
    revoked = run_cli(test_env, "staff", "revoke", SHOP, "77", "--actor", "ops")
    assert (revoked.returncode, revoked.stdout.strip()) == (0, "revoked"), revoked.stderr
    assert await grants() == []
    again = run_cli(test_env, "staff", "revoke", SHOP, "77")
    assert (again.returncode, again.stdout.strip()) == (0, "no grant")
    rows = await AuditLog.select().where(AuditLog.target_type == "staff_permission").order_by(AuditLog.id)
    assert [(row["action"], row["actor"], msgspec.json.decode(row["detail"])) for row in rows] == [
        ("staff.grant", "ops", {"user_id": "77", "role": "viewer", "previous_role": None}),
        ("staff.grant", "ops", {"user_id": "77", "role": "operator", "previous_role": "viewer"}),
        ("staff.revoke", "ops", {"user_id": "77", "role": "operator"}),
    ]
    [tenant] = await Tenant.select(Tenant.id)
    assert {row["tenant"] for row in rows} == {tenant["id"]}


async def test_grant_at_an_unregistered_shop_is_refused_and_writes_nothing(
    test_env: dict[str, str], engine: object, clean_db: None
) -> None:
    done = run_cli(test_env, "staff", "grant", "nowhere.myshopify.com", "77", "operator")
    assert done.returncode == 2
    assert done.stdout.strip() == "refused: shop not registered"
    assert await grants() == []
    assert await AuditLog.select() == []


@pytest.mark.parametrize(
    "args",
    [
        ("grant", SHOP, "77", "admin"),  # not a role
        ("grant", "Not A Shop", "77", "viewer"),
        ("grant", SHOP, "a b", "viewer"),  # not a staff user id
        ("revoke", SHOP),
    ],
)
def test_invalid_arguments_exit_2(test_env: dict[str, str], args: tuple[str, ...]) -> None:
    done = run_cli(test_env, "staff", *args)
    assert done.returncode == 2, done.stdout
