"""The admin API's job reads on PostgreSQL. Every query is scoped to the caller's tenant; the contact
columns of ``subscriptions`` are never read."""

from __future__ import annotations

from collections.abc import Sequence

from restock_admin.jobs.schemas import LAST_ERROR_LENGTH, JobOut
from restock_common.db.tables import NotificationJob
from restock_common.telemetry import redact

_PAGE = f"""
SELECT id, state, channel, variant_id, subscription, attempt, decision, last_error_kind,
       left(last_error, {LAST_ERROR_LENGTH}) AS last_error, updated_at
  FROM notification_jobs
 WHERE tenant = {{}} AND state = ANY({{}}::text[]) AND ({{}}::bigint IS NULL OR id < {{}}::bigint)
 ORDER BY id DESC
 LIMIT {{}}
"""


class PiccoloJobReader:
    """``JobReader`` over ``notification_jobs`` (its ``(tenant, state)`` index)."""

    async def page(
        self, tenant_id: int, states: Sequence[str], limit: int, before_id: int | None
    ) -> list[JobOut]:
        rows = await NotificationJob.raw(_PAGE, tenant_id, list(states), before_id, before_id, limit)
        return [
            JobOut(
                id=row["id"],
                state=row["state"],
                channel=row["channel"],
                variant_id=row["variant_id"],
                subscription_id=row["subscription"],
                attempt=row["attempt"],
                decision=row["decision"],
                last_error_kind=row["last_error_kind"],
                # A provider's error may quote the recipient (an SMTP 550 names the address).
                last_error=redact(row["last_error"]) if row["last_error"] is not None else None,
                updated_at=row["updated_at"],
            )
            for row in rows
        ]
