"""``AdmissionStore`` in PostgreSQL: the pre-claim read of a batch and the deferral of its held-back jobs.

The read is one statement per batch (not per job): the shop, its rules and time zone, and the
recipient's domain and phone, for the jobs still ``pending``. The deferral is one statement per batch
too, and a compare-and-set like the claim (``state = 'pending'``): a job claimed meanwhile by another
replica is left alone. It leaves ``attempt``, ``priority_at`` and ``enqueued_at`` as they were; the
scheduler publishes the job again once ``next_attempt_at`` is due (``adapters/schedule_store.py``).
"""

from __future__ import annotations

from typing import Any

from piccolo.engine.postgres import PostgresEngine

from restock_common.db.tables import NotificationJob
from restock_common.rules import decode_rules
from restock_sender.delivery import Event, JobState, next_state
from restock_sender.ports import Deferral, JobRoute

_ROUTES = """
SELECT j.id, j.tenant, j.channel, lower(split_part(s.email, '@', 2)) AS domain, s.phone,
       t.timezone, r.body AS rules
  FROM notification_jobs j
  JOIN subscriptions s ON s.id = j.subscription
  JOIN tenants t ON t.id = j.tenant
  LEFT JOIN rules r ON r.tenant = j.tenant
 WHERE j.id = ANY({}::bigint[]) AND j.state = {}
"""

_DEFER = """
UPDATE notification_jobs j
   SET state = {}, next_attempt_at = d.until, decision = d.decision, updated_at = now()
  FROM unnest({}::bigint[], {}::timestamptz[], {}::text[]) AS d(id, until, decision)
 WHERE j.id = d.id AND j.state = {}
RETURNING j.id
"""

_DEFERRED_STATE = next_state(JobState.PENDING, Event.DEFER)


def _route(row: dict[str, Any]) -> JobRoute:
    return JobRoute(
        job_id=row["id"],
        tenant_id=row["tenant"],
        channel=row["channel"],
        recipient_domain=row["domain"] or None,
        phone=row["phone"],
        shop_timezone=row["timezone"],
        rules=decode_rules(row["rules"]),
    )


class PiccoloAdmissionStore:
    """``AdmissionStore`` over the Piccolo engine."""

    def __init__(self, engine: PostgresEngine) -> None:
        self.engine = engine

    async def routes(self, job_ids: list[int]) -> dict[int, JobRoute]:
        rows = await NotificationJob.raw(_ROUTES, job_ids, JobState.PENDING.value)
        return {int(row["id"]): _route(row) for row in rows}

    async def defer(self, deferrals: list[Deferral]) -> int:
        if not deferrals:
            return 0
        rows = await NotificationJob.raw(
            _DEFER,
            _DEFERRED_STATE.value,
            [deferral.job_id for deferral in deferrals],
            [deferral.until for deferral in deferrals],
            [deferral.decision for deferral in deferrals],
            JobState.PENDING.value,
        )
        return len(rows)
