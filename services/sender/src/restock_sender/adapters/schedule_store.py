"""``ScheduleStore`` in PostgreSQL through Piccolo: the scheduler's three set-based statements.

Each statement picks its jobs with ``FOR UPDATE SKIP LOCKED`` in a sub-select (so the schedulers of
several replicas take disjoint jobs and never wait on each other), ordered FIFO by ``priority_at``, and
changes them in the same statement.

A retry's move to ``pending`` commits *before* it is published. Were it published inside the transaction,
a claim arriving before the commit would not wait for the row lock: its snapshot shows
``failed-temporary``, the row does not match ``state = 'pending'``, and the message would be dropped with
the job left pending and never sent. The unpublished-jobs sweep publishes inside its transaction instead:
its rows are already ``pending`` in every snapshot, so such a claim waits for the commit and then claims.
"""

from __future__ import annotations

from typing import Any

from piccolo.engine.postgres import PostgresEngine

from restock_common.db.engine import transaction
from restock_common.db.tables import NotificationJob
from restock_common.replay import REPLAYED_DECISION
from restock_sender.delivery import (
    LEASE_EXPIRED_DECISION,
    LEASE_EXPIRED_DETAIL,
    LEASE_UNSTARTED_DECISION,
    LEASE_UNSTARTED_DETAIL,
    Event,
    JobState,
    next_state,
)
from restock_sender.ports import PublishJobs

_RETRIED_STATE = next_state(JobState.FAILED_TEMPORARY, Event.RETRY_DUE)

_REQUEUE_DUE = """
WITH due AS (
    SELECT id FROM notification_jobs
     WHERE channel = {} AND state = {} AND next_attempt_at <= now()
     ORDER BY priority_at, id
     LIMIT {}
       FOR UPDATE SKIP LOCKED
)
UPDATE notification_jobs j
   SET state = {}, next_attempt_at = NULL, enqueued_at = NULL, updated_at = now()
  FROM due
 WHERE j.id = due.id
RETURNING j.id, j.priority_at
"""

_MARK_ENQUEUED = (
    "UPDATE notification_jobs SET enqueued_at = now() WHERE id = ANY({}::bigint[]) AND enqueued_at IS NULL"
)

_PUBLISH_UNQUEUED = """
WITH unqueued AS (
    SELECT id FROM notification_jobs
     WHERE channel = {} AND state = {}
       AND ((enqueued_at IS NULL AND next_attempt_at IS NULL
             -- Ours: replayed jobs, and retries (attempt > 0) whose publish did not happen. Jobs never
             -- published since their freeze (attempt 0) belong to the dispatcher's sweeper (ADR 10).
             AND (decision = {} OR (attempt > 0 AND updated_at < now() - {}::float8 * interval '1 second')))
            -- Deferred unclaimed by admission (a rate limit, a send window, a paused channel; ADR 16), due.
            OR next_attempt_at <= now())
     ORDER BY priority_at, id
     LIMIT {}
       FOR UPDATE SKIP LOCKED
)
UPDATE notification_jobs j
   SET enqueued_at = COALESCE(j.enqueued_at, now()), next_attempt_at = NULL
  FROM unqueued
 WHERE j.id = unqueued.id
RETURNING j.id, j.priority_at
"""

# The log row says what is known: an attempt reached the provider call and its outcome was never recorded.
_REAP_EXPIRED = """
WITH expired AS (
    SELECT id FROM notification_jobs
     WHERE channel = {} AND state = {} AND lease_until < now() AND provider_called_at IS NOT NULL
     ORDER BY lease_until, id
     LIMIT {}
       FOR UPDATE SKIP LOCKED
), reaped AS (
    UPDATE notification_jobs j
       SET state = {}, decision = {}, lease_until = NULL, updated_at = now()
      FROM expired
     WHERE j.id = expired.id
    RETURNING j.id, j.tenant, j.attempt, j.channel, j.traceparent
)
INSERT INTO notification_logs (tenant, job, attempt, channel, outcome, provider, error_kind, error_detail,
    variables, trace_id, started_at, finished_at)
SELECT tenant, id, attempt, channel, {}, {}, NULL, {}, jsonb_build_object(), split_part(traceparent, '-', 2),
       now(), now()
  FROM reaped
RETURNING job
"""

# A lease that ended before the provider call was marked (ADR 21): nothing was sent, the job goes back to
# pending, unpublished (the scheduler publishes it at once), and the log row says why.
_REAP_UNSTARTED = """
WITH expired AS (
    SELECT id FROM notification_jobs
     WHERE channel = {} AND state = {} AND lease_until < now() AND provider_called_at IS NULL
     ORDER BY lease_until, id
     LIMIT {}
       FOR UPDATE SKIP LOCKED
), reaped AS (
    UPDATE notification_jobs j
       SET state = {}, decision = {}, lease_until = NULL, enqueued_at = NULL, updated_at = now()
      FROM expired
     WHERE j.id = expired.id
    RETURNING j.id, j.tenant, j.attempt, j.channel, j.traceparent, j.priority_at
), logged AS (
    INSERT INTO notification_logs (tenant, job, attempt, channel, outcome, provider, error_kind, error_detail,
        variables, trace_id, started_at, finished_at)
    SELECT tenant, id, attempt, channel, {}, {}, NULL, {}, jsonb_build_object(),
           split_part(traceparent, '-', 2), now(), now()
      FROM reaped
)
SELECT id, priority_at FROM reaped
"""

_PROVIDERS = {"email": "smtp", "sms": "twilio"}


def _fifo(rows: list[dict[str, Any]]) -> list[int]:
    return [int(row["id"]) for row in sorted(rows, key=lambda row: (row["priority_at"], row["id"]))]


class PiccoloScheduleStore:
    """``ScheduleStore`` over the Piccolo engine."""

    def __init__(self, engine: PostgresEngine) -> None:
        self.engine = engine

    async def _publish_in_transaction(self, publish: PublishJobs, query: str, *args: Any) -> list[int]:
        async with transaction(self.engine):
            job_ids = _fifo(await NotificationJob.raw(query, *args))
            if job_ids:
                await publish(job_ids)
        return job_ids

    async def requeue_due(self, channel: str, limit: int) -> list[int]:
        rows = await NotificationJob.raw(
            _REQUEUE_DUE, channel, JobState.FAILED_TEMPORARY.value, limit, _RETRIED_STATE.value
        )
        return _fifo(rows)

    async def mark_enqueued(self, job_ids: list[int]) -> None:
        await NotificationJob.raw(_MARK_ENQUEUED, job_ids)

    async def publish_unqueued(
        self, channel: str, limit: int, grace_seconds: float, publish: PublishJobs
    ) -> list[int]:
        return await self._publish_in_transaction(
            publish,
            _PUBLISH_UNQUEUED,
            channel,
            JobState.PENDING.value,
            REPLAYED_DECISION,
            grace_seconds,
            limit,
        )

    async def reap_unstarted(self, channel: str, limit: int) -> list[int]:
        pending = next_state(JobState.PROCESSING, Event.NOT_SENT)
        rows = await NotificationJob.raw(
            _REAP_UNSTARTED,
            channel,
            JobState.PROCESSING.value,
            limit,
            pending.value,
            LEASE_UNSTARTED_DECISION,
            pending.value,
            _PROVIDERS.get(channel, channel),
            LEASE_UNSTARTED_DETAIL,
        )
        return _fifo(rows)

    async def reap_expired(self, channel: str, state: JobState, limit: int) -> list[int]:
        rows = await NotificationJob.raw(
            _REAP_EXPIRED,
            channel,
            JobState.PROCESSING.value,
            limit,
            state.value,
            LEASE_EXPIRED_DECISION,
            state.value,
            _PROVIDERS.get(channel, channel),
            LEASE_EXPIRED_DETAIL,
        )
        return [int(row["job"]) for row in rows]
