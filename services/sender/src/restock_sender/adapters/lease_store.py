"""``LeaseStore`` in PostgreSQL: expired SMS leases, and their resolution as one compare-and-set.

The read takes what the claim read (so the reaper re-renders the body exactly as the attempt did) plus
``updated_at``, which is the claim's time while a job is ``processing`` (nothing else writes the row
then). The resolution moves the job only if it is still that attempt, still ``processing``, still past
its lease; its log row and, when found sent, the subscription's counters commit with it.
"""

from __future__ import annotations

from typing import Any

from piccolo.engine.postgres import PostgresEngine

from restock_common.db.engine import transaction
from restock_common.db.tables import NotificationJob, Subscription
from restock_sender.adapters.job_store import _claimed  # the claim's row -> ClaimedJob mapping, defined once
from restock_sender.delivery import Event, JobState, next_state
from restock_sender.lease import ExpiredSms
from restock_sender.ports import SentSms

_EXPIRED = """
SELECT j.id, j.tenant, j.subscription, j.variant_id, j.channel, j.notification_key, j.attempt,
       j.traceparent, j.template, j.enqueued_at, j.updated_at AS claimed_at,
       t.shop_domain, s.email, s.state AS subscription_state, s.unsubscribed_at, s.phone, s.locale,
       s.fulfilled_at,
       (SELECT i.title FROM inventory_items i
         WHERE i.tenant = j.tenant AND i.variant_id = j.variant_id ORDER BY i.id LIMIT 1) AS product_title,
       r.body AS rules
  FROM notification_jobs j
  JOIN subscriptions s ON s.id = j.subscription
  JOIN tenants t ON t.id = j.tenant
  LEFT JOIN rules r ON r.tenant = j.tenant
 WHERE j.channel = 'sms' AND j.state = {} AND j.lease_until < now() AND j.provider_called_at IS NOT NULL
 ORDER BY j.lease_until, j.id
 LIMIT {}
"""

_RESOLVE = """
WITH resolved AS (
    UPDATE notification_jobs
       SET state = {}, decision = {}, lease_until = NULL, updated_at = now(),
           sent_at = CASE WHEN {} THEN now() ELSE sent_at END,
           enqueued_at = CASE WHEN {} THEN NULL ELSE enqueued_at END
     WHERE id = {} AND state = {} AND attempt = {} AND lease_until < now() AND provider_called_at IS NOT NULL
    RETURNING id, tenant, attempt, channel, traceparent
)
INSERT INTO notification_logs (tenant, job, attempt, channel, outcome, provider, provider_message_id,
    provider_response, error_detail, variables, trace_id, started_at, finished_at)
SELECT tenant, id, attempt, channel, {}, 'twilio', {}, {}, {}, jsonb_build_object(),
       split_part(traceparent, '-', 2), now(), now()
  FROM resolved
RETURNING job
"""

_NOTIFIED = (
    "UPDATE subscriptions SET notified_count = notified_count + 1, last_notified_at = now() WHERE id = {}"
)

DECISIONS = {Event.FOUND_AT_PROVIDER: "lease-expired:found", Event.NOT_AT_PROVIDER: "lease-expired:resend"}
_DETAILS = {
    Event.FOUND_AT_PROVIDER: "lease expired; twilio's message list shows it sent",
    Event.NOT_AT_PROVIDER: "lease expired; not in twilio's message list: sent again as a new attempt",
}


def _expired(row: dict[str, Any]) -> ExpiredSms:
    return ExpiredSms(_claimed(row), row["claimed_at"])


class PiccoloLeaseStore:
    """``LeaseStore`` over the Piccolo engine."""

    def __init__(self, engine: PostgresEngine) -> None:
        self.engine = engine

    async def expired_sms(self, limit: int) -> list[ExpiredSms]:
        rows = await NotificationJob.raw(_EXPIRED, JobState.PROCESSING.value, limit)
        return [_expired(row) for row in rows]

    async def resolve(self, expired: ExpiredSms, event: Event, message: SentSms | None) -> bool:
        job = expired.job
        state = next_state(job.state, event)
        sent = state is JobState.SENT
        async with transaction(self.engine):
            rows = await NotificationJob.raw(
                _RESOLVE,
                state.value,
                DECISIONS[event],
                sent,
                state is JobState.PENDING,
                job.job_id,
                JobState.PROCESSING.value,
                job.attempt,
                state.value,
                message.sid if message else None,
                f"{message.status} (found by the lease reaper)" if message else None,
                _DETAILS[event],
            )
            if rows and sent:
                await Subscription.raw(_NOTIFIED, job.subscription_id)
        return bool(rows)
