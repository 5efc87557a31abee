"""``JobStore`` in PostgreSQL through Piccolo.

The claim is one compare-and-set statement: it moves the job from ``pending`` to ``processing`` (attempt
+ 1, a lease) and, in the same round trip, reads what sending needs (the subscription's address and
consent, the variant's title, the shop, its retry rules). No row comes back when another sender, or an
earlier delivery of the same batch, got there first. A job claimed was published, so it was enqueued at the
latest now: a retry claimed before the scheduler's enqueued mark committed (it publishes, then marks) is read
as enqueued at its claim, instead of not at all and no queue-latency sample (the column keeps its writers:
the dispatcher and the scheduler). The record is also guarded by
``state = 'processing'`` and the attempt number: a job whose lease was taken over is not overwritten, but
its attempt is still logged.
"""

from __future__ import annotations

import json
from typing import Any

from piccolo.engine.postgres import PostgresEngine

from restock_common.db.engine import transaction
from restock_common.db.retry import retry_on_connection_loss
from restock_common.db.tables import NotificationJob, Subscription
from restock_common.rules import decode_rules
from restock_sender.delivery import Event, JobState, RetryPolicy, next_state
from restock_sender.ports import AttemptRecord, ClaimedJob, NotClaimable

_CLAIM = """
WITH claimed AS (
    UPDATE notification_jobs
       SET state = {}, attempt = attempt + 1, lease_until = now() + {}::int * interval '1 second',
           provider_called_at = NULL, updated_at = now()
     WHERE id = {} AND state = {}
 RETURNING id, tenant, subscription, variant_id, channel, notification_key, attempt, traceparent, template,
           enqueued_at
)
SELECT c.id, c.tenant, c.subscription, c.variant_id, c.channel, c.notification_key, c.attempt,
       c.traceparent, t.shop_domain, s.email, s.state AS subscription_state, s.unsubscribed_at,
       s.phone, s.locale, c.template, COALESCE(c.enqueued_at, now()) AS enqueued_at, s.fulfilled_at,
       (SELECT i.title FROM inventory_items i
         WHERE i.tenant = c.tenant AND i.variant_id = c.variant_id ORDER BY i.id LIMIT 1) AS product_title,
       r.body AS rules
  FROM claimed c
  JOIN subscriptions s ON s.id = c.subscription
  JOIN tenants t ON t.id = c.tenant
  LEFT JOIN rules r ON r.tenant = c.tenant
"""

# An attempt's record in one statement, so one round trip (a sender keeps its email sends between the
# provider-call mark and this record few, ADR 21, so its cost is paid per message): the job's new state
# (only if still processing *this* attempt: a job whose lease was reaped and claimed again belongs to the
# newer attempt, which this late record must not overwrite; its attempt is still logged), the log row, and
# on ``sent`` the subscription's counters. ``updated``: whether the job moved.
_RECORD_CTES = """
WITH job AS (
    UPDATE notification_jobs
       SET state = {}, attempt = attempt - CASE WHEN {} THEN 1 ELSE 0 END, lease_until = NULL,
           next_attempt_at = {}, decision = {}, last_error_kind = {},
           last_error = {}, sent_at = CASE WHEN {} THEN now() ELSE sent_at END,
           template_version = COALESCE({}, template_version), updated_at = now()
     WHERE id = {} AND state = {} AND attempt = {}
    RETURNING id, subscription, state
), logged AS (
    INSERT INTO notification_logs (tenant, job, attempt, channel, outcome, provider, provider_message_id,
        provider_response, error_kind, error_code, error_detail, template, template_name, template_version,
        variables, trace_id, started_at, finished_at, segments)
    VALUES ({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}::jsonb, {}, COALESCE({}, now()), now(),
            {})
), notified AS (
    UPDATE subscriptions SET notified_count = notified_count + 1, last_notified_at = now()
     WHERE id IN (SELECT subscription FROM job WHERE state = 'sent')
)
"""

_RECORD = _RECORD_CTES + "SELECT count(*) AS updated FROM job\n"

# The provider-call mark (ADR 21), only on this claimed attempt while its lease runs: once the lease has
# expired the reaper may be sending the job back (or already did), and the attempt must not call the provider.
# Idempotent (COALESCE), so a try whose answer was lost with its connection can be run again.
_MARK_PROVIDER_CALL = """
UPDATE notification_jobs
   SET provider_called_at = COALESCE(provider_called_at, now())
 WHERE id = {} AND state = 'processing' AND attempt = {} AND lease_until > now()
RETURNING id
"""

# An attempt's record and the next send's provider-call mark (the statement above), committed together:
# the provider-call window handed over (``restock_sender.call_window``, ADR 25). Two different jobs' rows.
_RECORD_AND_MARK = (
    _RECORD_CTES
    + f", marked AS ({_MARK_PROVIDER_CALL})\n"
    + "SELECT (SELECT count(*) FROM job) AS updated, (SELECT count(*) FROM marked) AS marked\n"
)

# A claim given back before the provider was called: the attempt is not counted, and ``enqueued_at`` is
# cleared so the scheduler publishes the job again should its batch never come back.
_RELEASE = """
UPDATE notification_jobs
   SET state = {}, attempt = attempt - 1, lease_until = NULL, enqueued_at = NULL, decision = 'released',
       provider_called_at = NULL, updated_at = now()
 WHERE id = {} AND state = 'processing' AND attempt = {}
RETURNING id
"""

# Whether this attempt's log row (its attempt number and start instant) is already there, and if so whether
# the job holds the state it recorded.
_ALREADY_RECORDED = """
SELECT j.state = {} AS applied
  FROM notification_logs l JOIN notification_jobs j ON j.id = l.job
 WHERE l.job = {} AND l.attempt = {} AND l.started_at = {}
 LIMIT 1
"""

# Twilio 21610: the number replied STOP to our sender. The provider's word is consent evidence like any other.
_PROVIDER_OPT_OUT = """
WITH unsubscribed AS (
    UPDATE subscriptions SET state = 'unsubscribed', unsubscribed_at = now()
     WHERE id = {} AND unsubscribed_at IS NULL
    RETURNING id, tenant
)
INSERT INTO consent_events (tenant, subscription, kind, source, detail)
SELECT tenant, id, 'unsubscribed', 'provider',
       jsonb_build_object('job_id', {}::bigint, 'error_code', {}::text)
  FROM unsubscribed
"""

_CLAIMED_STATE = next_state(JobState.PENDING, Event.CLAIM)


def _claimed(row: dict[str, Any]) -> ClaimedJob:
    rules = decode_rules(row["rules"])
    return ClaimedJob(
        job_id=row["id"],
        tenant_id=row["tenant"],
        subscription_id=row["subscription"],
        variant_id=row["variant_id"],
        channel=row["channel"],
        notification_key=row["notification_key"],
        attempt=row["attempt"],
        traceparent=row["traceparent"],
        shop_domain=row["shop_domain"],
        product_title=row["product_title"],
        email=row["email"],
        subscription_state=row["subscription_state"],
        unsubscribed_at=row["unsubscribed_at"],
        phone=row["phone"],
        template_id=row["template"],
        locale=row["locale"],
        sms_opt_out_text=rules.sms_opt_out_text,
        state=_CLAIMED_STATE,
        enqueued_at=row["enqueued_at"],
        fulfilled_at=row["fulfilled_at"],
        policy=RetryPolicy(rules.max_attempts, rules.retry_base_seconds, rules.retry_cap_seconds),
    )


class PiccoloJobStore:
    """``JobStore`` over the Piccolo engine."""

    def __init__(self, engine: PostgresEngine) -> None:
        self.engine = engine

    async def claim(self, job_id: int, lease_seconds: int) -> ClaimedJob | NotClaimable:
        rows = await NotificationJob.raw(
            _CLAIM, _CLAIMED_STATE.value, lease_seconds, job_id, JobState.PENDING.value
        )
        return _claimed(rows[0]) if rows else NotClaimable(job_id)

    async def release(self, job: ClaimedJob) -> bool:
        rows = await retry_on_connection_loss(
            lambda _: NotificationJob.raw(
                _RELEASE, next_state(JobState.PROCESSING, Event.NOT_SENT).value, job.job_id, job.attempt
            ),
            what="release claim",
        )
        return bool(rows)

    async def mark_provider_call(self, job: ClaimedJob) -> bool:
        rows = await retry_on_connection_loss(
            lambda _: NotificationJob.raw(_MARK_PROVIDER_CALL, job.job_id, job.attempt),
            what="mark provider call",
        )
        return bool(rows)

    async def record(self, record: AttemptRecord) -> bool:
        # The provider's answer is in memory only: a lost connection must not turn it into an indeterminate
        # job (restock_common.db.retry).
        return await retry_on_connection_loss(
            lambda number: self._record(record, retrying=number > 1), what="record attempt"
        )

    async def record_and_mark(self, record: AttemptRecord, next_job: ClaimedJob) -> tuple[bool, bool]:
        return await retry_on_connection_loss(
            lambda number: self._record_and_mark(record, next_job, retrying=number > 1),
            what="record attempt and mark the next provider call",
        )

    async def _record_and_mark(
        self, record: AttemptRecord, next_job: ClaimedJob, *, retrying: bool
    ) -> tuple[bool, bool]:
        if retrying:
            applied = await self._already_recorded(record)
            if applied is not None:  # committed with the mark, its answer lost: the mark is idempotent
                return applied, await self.mark_provider_call(next_job)
        [row] = await NotificationJob.raw(
            _RECORD_AND_MARK, *self._record_values(record), next_job.job_id, next_job.attempt
        )
        return bool(row["updated"]), bool(row["marked"])

    async def _already_recorded(self, record: AttemptRecord) -> bool | None:
        """Whether this attempt's log row is there (and if so whether the job holds its state)."""
        job = record.job
        done = await NotificationJob.raw(
            _ALREADY_RECORDED, record.state.value, job.job_id, job.attempt, record.started_at
        )
        return bool(done[0]["applied"]) if done else None

    async def _record(self, record: AttemptRecord, *, retrying: bool) -> bool:
        job = record.job
        if retrying:
            # The previous try may have committed, its answer lost with the connection: never log twice.
            applied = await self._already_recorded(record)
            if applied is not None:
                return applied
        statement = NotificationJob.raw(_RECORD, *self._record_values(record))
        if not record.opted_out_at_provider:
            [row] = await statement
            return bool(row["updated"])
        async with transaction(self.engine):  # rare (Twilio 21610): the unsubscribe commits with the record
            [row] = await statement
            await Subscription.raw(_PROVIDER_OPT_OUT, job.subscription_id, job.job_id, record.error_code)
        return bool(row["updated"])

    @staticmethod
    def _record_values(record: AttemptRecord) -> tuple[Any, ...]:
        """``_RECORD_CTES``' values, in order."""
        job = record.job
        template = record.template
        return (
            record.state.value,
            not record.attempt_spent,  # given back, as a released claim's is (delivery.spends_attempt)
            record.next_attempt_at,
            record.decision,
            record.error_kind,
            record.error_detail,
            record.state is JobState.SENT,
            template.version if template else None,
            job.job_id,
            job.state.value,
            job.attempt,
            job.tenant_id,
            job.job_id,
            job.attempt,
            job.channel,
            record.state.value,
            record.provider or "",
            record.receipt.message_id if record.receipt else None,
            record.receipt.response if record.receipt else None,
            record.error_kind,
            record.error_code,
            record.error_detail,
            template.template_id if template else None,
            template.name if template else None,
            template.version if template else None,
            json.dumps(dict(record.variables), default=str),
            record.trace_id,
            record.started_at,
            record.segments,
        )
