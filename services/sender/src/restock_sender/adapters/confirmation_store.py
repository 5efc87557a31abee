"""The confirmation consumer's adapters: ``ConfirmationStore`` in PostgreSQL, ``SendGuard`` in Redis."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from redis.asyncio import Redis

from restock_common.db.tables import ConsentEvent, Subscription, Template
from restock_common.messages import Channel
from restock_common.rules import decode_rules
from restock_common.templating import CONFIRMATION_TEMPLATE, TemplateRecord
from restock_sender.confirmations import ConfirmationTarget

# The shop's newest ``confirmation`` template for the subscription's channel and locale, if it has one.
_TARGET = """
SELECT s.id, s.tenant, s.state, s.email, s.phone, s.variant_id, t.shop_domain, r.body AS rules,
       (SELECT i.title FROM inventory_items i
         WHERE i.tenant = s.tenant AND i.variant_id = s.variant_id ORDER BY i.id LIMIT 1) AS product_title,
       tp.id AS template_id, tp.name AS template_name, tp.version AS template_version,
       tp.subject AS template_subject, tp.body_text AS template_text, tp.body_html AS template_html
  FROM subscriptions s
  JOIN tenants t ON t.id = s.tenant
  LEFT JOIN rules r ON r.tenant = s.tenant
  LEFT JOIN LATERAL (
      SELECT id, name, version, subject, body_text, body_html FROM templates
       WHERE tenant = s.tenant AND channel = s.channel AND locale = s.locale AND name = {}
       ORDER BY version DESC LIMIT 1
  ) tp ON true
 WHERE s.id = {} AND s.channel = {}
"""

_MARK_USED = "UPDATE templates SET first_used_at = now() WHERE id = {} AND first_used_at IS NULL"

_ALREADY_SENT = """
SELECT 1 FROM consent_events
 WHERE subscription = {} AND kind = 'confirmation-sent' AND detail->>'requested_at' = {}
 LIMIT 1
"""

_RECORD_SENT = """
INSERT INTO consent_events (tenant, subscription, kind, source, detail)
VALUES ({}, {}, 'confirmation-sent', 'sender', {}::jsonb)
"""


def _template(row: dict[str, Any]) -> TemplateRecord | None:
    if row["template_id"] is None:
        return None
    return TemplateRecord(
        name=row["template_name"],
        version=row["template_version"],
        subject=row["template_subject"],
        body_text=row["template_text"],
        body_html=row["template_html"],
        template_id=row["template_id"],
    )


class PiccoloConfirmationStore:
    """``ConfirmationStore`` over the Piccolo engine."""

    async def target(self, subscription_id: int, channel: Channel) -> ConfirmationTarget | None:
        rows = await Subscription.raw(_TARGET, CONFIRMATION_TEMPLATE, subscription_id, channel)
        if not rows:
            return None
        row = rows[0]
        template = _template(row)
        if template is not None:
            await Template.raw(_MARK_USED, template.template_id)
        return ConfirmationTarget(
            subscription_id=row["id"],
            tenant_id=row["tenant"],
            state=row["state"],
            shop_domain=row["shop_domain"],
            variant_id=row["variant_id"],
            product_title=row["product_title"],
            email=row["email"],
            phone=row["phone"],
            sms_opt_out_text=decode_rules(row["rules"]).sms_opt_out_text,
            template=template,
        )

    async def already_sent(self, subscription_id: int, requested_at: datetime) -> bool:
        return bool(await ConsentEvent.raw(_ALREADY_SENT, subscription_id, requested_at.isoformat()))

    async def record_sent(
        self, target: ConfirmationTarget, channel: Channel, requested_at: datetime, message_id: str
    ) -> None:
        detail = {"channel": channel, "requested_at": requested_at.isoformat(), "message_id": message_id}
        await ConsentEvent.raw(_RECORD_SENT, target.tenant_id, target.subscription_id, json.dumps(detail))


class RedisSendGuard:
    """``SendGuard`` as ``SET key 1 NX EX seconds`` (Redis may forget it: PostgreSQL has the truth)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def acquire(self, key: str, seconds: int) -> bool:
        return bool(await self.redis.set(key, "1", nx=True, ex=seconds))

    async def release(self, key: str) -> None:
        await self.redis.delete(key)
