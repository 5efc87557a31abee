"""The privacy ports on PostgreSQL."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from restock_admin.privacy.ports import ShopRules
from restock_common.db.tables import AuditLog, Tenant
from restock_common.rules import decode_rules

_SHOPS = "SELECT t.id, r.body FROM tenants t LEFT JOIN rules r ON r.tenant = t.id ORDER BY t.id"

_SUBSCRIPTIONS = """
SELECT id, variant_id, product_id, channel, email, phone, locale, quantity, state, source,
  consent_text_version, subscribed_at, confirmed_at, unsubscribed_at, notified_count, last_notified_at,
  fulfilled_at, redacted_at
FROM subscriptions WHERE tenant = {} AND contact_hash = {} ORDER BY id
"""

_CONSENT_EVENTS = """
SELECT id, subscription AS subscription_id, kind, source, consent_text_version, ip_hash, detail, occurred_at
FROM consent_events WHERE tenant = {} AND subscription = ANY({}::bigint[]) ORDER BY id
"""

# Metadata only: the rendered variables may hold the contact's name or address and are not exported here.
_LOGS = """
SELECT l.id, j.subscription AS subscription_id, l.job AS job_id, l.attempt, l.channel, l.outcome, l.provider,
  l.provider_message_id, l.error_kind, l.error_code, l.template_name, l.template_version, l.delivery_status,
  l.started_at, l.finished_at, l.opened_at, l.clicked_at
FROM notification_logs l JOIN notification_jobs j ON j.id = l.job
WHERE l.tenant = {} AND j.subscription = ANY({}::bigint[]) ORDER BY l.id
"""


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    out = {key: value.isoformat() if isinstance(value, datetime) else value for key, value in row.items()}
    if isinstance(out.get("detail"), str):  # JSONB read through a raw query comes back as text
        out["detail"] = json.loads(out["detail"])
    return out


class PiccoloShopRulesReader:
    """Tenants and their rules rows."""

    async def shops(self) -> list[ShopRules]:
        rows = await Tenant.raw(_SHOPS)
        return [ShopRules(row["id"], decode_rules(row["body"])) for row in rows]


class PiccoloContactData:
    """One contact's rows, read with their ids."""

    async def tenant_id(self, shop_domain: str) -> int | None:
        row = await Tenant.select(Tenant.id).where(Tenant.shop_domain == shop_domain).first()
        return None if row is None else int(row["id"])

    async def export(self, tenant_id: int, contact_hash: str) -> dict[str, list[dict[str, Any]]]:
        subscriptions = await Tenant.raw(_SUBSCRIPTIONS, tenant_id, contact_hash)
        ids = [row["id"] for row in subscriptions]
        events = await Tenant.raw(_CONSENT_EVENTS, tenant_id, ids)
        logs = await Tenant.raw(_LOGS, tenant_id, ids)
        return {
            "subscriptions": [_jsonable(row) for row in subscriptions],
            "consent_events": [_jsonable(row) for row in events],
            "notification_logs": [_jsonable(row) for row in logs],
        }

    async def audit_export(self, tenant_id: int, actor: str, subscription_ids: list[int]) -> None:
        await AuditLog(
            tenant=tenant_id,
            actor=actor,
            action="privacy.export",
            target_type="subscription",
            target_ids=subscription_ids,
            detail={"subscriptions": len(subscription_ids)},
        ).save()
