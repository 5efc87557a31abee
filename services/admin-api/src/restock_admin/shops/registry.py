"""Registering a shop in PostgreSQL: an upsert, so running ``shops add`` twice is harmless."""

from __future__ import annotations

from typing import Protocol

from restock_common.db.engine import transaction
from restock_common.db.tables import AuditLog, Tenant


class ShopRegistry(Protocol):
    """Where tenants are registered."""

    async def register(self, shop_domain: str, access_token: str, timezone: str) -> int:
        """Create or update the tenant (reinstalling it if it was uninstalled); its id."""
        ...

    async def remove(self, shop_domain: str, actor: str) -> bool:
        """Delete the tenant and all its data, recording who did it; False when it did not exist."""
        ...


class PiccoloShopRegistry:
    """The tenants table."""

    async def register(self, shop_domain: str, access_token: str, timezone: str) -> int:
        # A re-registration is a reinstall: new token, and the shop is live again.
        rows = await Tenant.raw(
            "INSERT INTO tenants (shop_domain, access_token, timezone, installed_at) "
            "VALUES ({}, {}, {}, now()) "
            "ON CONFLICT (shop_domain) DO UPDATE SET access_token = EXCLUDED.access_token, "
            "timezone = EXCLUDED.timezone, uninstalled_at = NULL, installed_at = "
            "CASE WHEN tenants.uninstalled_at IS NULL THEN tenants.installed_at ELSE now() END "
            "RETURNING id",
            shop_domain,
            access_token,
            timezone,
        )
        return int(rows[0]["id"])

    async def remove(self, shop_domain: str, actor: str) -> bool:
        # Every table references tenants ON DELETE CASCADE, so one DELETE removes the shop's data; the audit
        # row outlives it (tenant NULL) and names the shop and the ids it had.
        async with transaction(Tenant._meta.db):
            rows = await Tenant.raw("DELETE FROM tenants WHERE shop_domain = {} RETURNING id", shop_domain)
            if rows:
                await AuditLog.insert(
                    AuditLog(
                        actor=actor,
                        action="shop.remove",
                        target_type="tenant",
                        target_ids=[int(rows[0]["id"])],
                        detail={"shop_domain": shop_domain},
                    )
                )
        return bool(rows)
