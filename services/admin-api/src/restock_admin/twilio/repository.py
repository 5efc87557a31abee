"""``ports.DeliveryReceipts`` on PostgreSQL."""

from __future__ import annotations

from datetime import datetime

from restock_admin.twilio.receipts import Receipt, supersedes
from restock_common.db.engine import transaction
from restock_common.db.tables import NotificationLog

_LOCK = """
SELECT l.id, l.delivery_status, j.subscription FROM notification_logs l
JOIN notification_jobs j ON j.id = l.job
WHERE l.provider_message_id = {} FOR UPDATE OF l
"""

_UPDATE = """
UPDATE notification_logs SET delivery_status = {}, error_code = COALESCE({}, error_code),
  error_kind = COALESCE({}, error_kind),
  error_detail = CASE WHEN {}::text IS NULL THEN error_detail ELSE 'twilio status ' || {} || ' ' || {} END,
  finished_at = COALESCE(finished_at, {})
WHERE id = ANY({}::bigint[])
"""


class PiccoloDeliveryReceipts:
    """Receipts on ``notification_logs`` (by ``provider_message_id``)."""

    async def record(self, receipt: Receipt, error_kind: str | None, now: datetime) -> list[int] | None:
        async with transaction(NotificationLog._meta.db):
            rows = await NotificationLog.raw(_LOCK, receipt.message_sid)
            if not rows:
                return None
            newer = [row["id"] for row in rows if supersedes(receipt.status, row["delivery_status"])]
            if newer:
                code = receipt.error_code
                await NotificationLog.raw(
                    _UPDATE, receipt.status, code, error_kind, code, receipt.status, code, now, newer
                )
            return sorted({row["subscription"] for row in rows})
