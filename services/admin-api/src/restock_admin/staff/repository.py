"""The staff ports on PostgreSQL: ``tenants`` and ``staff_permissions``, every change with its ``audit_log``
row in the same transaction."""

from __future__ import annotations

from restock_admin.staff.ports import StaffAccess
from restock_common.db.engine import transaction
from restock_common.db.tables import AuditLog, StaffPermission

_ACCESS = """
SELECT t.id, p.role FROM tenants t
  LEFT JOIN staff_permissions p ON p.tenant = t.id AND p.user_id = {}
 WHERE t.shop_domain = {} AND t.uninstalled_at IS NULL
"""

# The previous role is read in the same statement (the row locked by the upsert), for the audit row.
_GRANT = """
WITH previous AS (
  SELECT p.role FROM staff_permissions p JOIN tenants t ON t.id = p.tenant
   WHERE t.shop_domain = {} AND p.user_id = {}
)
INSERT INTO staff_permissions (tenant, user_id, role, created_at, created_by)
SELECT id, {}, {}, now(), {} FROM tenants WHERE shop_domain = {}
ON CONFLICT (tenant, user_id) DO UPDATE SET role = EXCLUDED.role
RETURNING id, tenant, (SELECT role FROM previous) AS previous_role
"""

_REVOKE = """
DELETE FROM staff_permissions p USING tenants t
 WHERE p.tenant = t.id AND t.shop_domain = {} AND p.user_id = {}
RETURNING p.id, p.tenant, p.role
"""


class PiccoloStaffDirectory:
    """``StaffDirectory`` over ``tenants`` and ``staff_permissions``."""

    async def access(self, shop_domain: str, user_id: str) -> StaffAccess | None:
        rows = await StaffPermission.raw(_ACCESS, user_id, shop_domain)
        return StaffAccess(int(rows[0]["id"]), rows[0]["role"]) if rows else None


class PiccoloStaffGrants:
    """``StaffGrants`` over ``staff_permissions`` and ``audit_log``."""

    async def grant(self, shop_domain: str, user_id: str, role: str, actor: str) -> bool:
        async with transaction(StaffPermission._meta.db):
            rows = await StaffPermission.raw(_GRANT, shop_domain, user_id, user_id, role, actor, shop_domain)
            if rows:
                detail = {"user_id": user_id, "role": role, "previous_role": rows[0]["previous_role"]}
                await _audit(rows[0], actor, "staff.grant", detail)
        return bool(rows)

    async def revoke(self, shop_domain: str, user_id: str, actor: str) -> bool:
        async with transaction(StaffPermission._meta.db):
            rows = await StaffPermission.raw(_REVOKE, shop_domain, user_id)
            if rows:
                await _audit(rows[0], actor, "staff.revoke", {"user_id": user_id, "role": rows[0]["role"]})
        return bool(rows)


async def _audit(row: dict[str, object], actor: str, action: str, detail: dict[str, object]) -> None:
    await AuditLog.insert(
        AuditLog(
            tenant=row["tenant"],
            actor=actor,
            action=action,
            target_type="staff_permission",
            target_ids=[row["id"]],
            detail=detail,
        )
    )
