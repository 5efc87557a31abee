"""The freeze and the FIFO scan of a restock's jobs, in PostgreSQL (the dispatcher's ``TargetStore``).

The freeze is one set-based statement: every live, confirmed subscription of the variant becomes a
pending job, in subscription order, keyed by ``restock_common.keys``. ``ON CONFLICT DO NOTHING`` on the
UNIQUE ``notification_key`` makes a redelivered event (or a second restock in the same window) create no
second job. The event row is locked for the transaction, so two deliveries of one event freeze in turn.
"""

from __future__ import annotations

from piccolo.engine.postgres import PostgresEngine

from restock_common.db.tables import NotificationJob, RestockEvent
from restock_common.keys import notification_key_sql
from restock_common.messages import Channel
from restock_dispatcher.ports import Cursor, EventMissing, Frozen, Page

_LOCK_EVENT = "SELECT tenant, variant_id, restock_window FROM restock_events WHERE id = {} FOR UPDATE"

_FREEZE = (
    "WITH inserted AS ("
    " INSERT INTO notification_jobs (tenant, restock_event, subscription, variant_id, channel,"
    " notification_key, state, priority_at, traceparent, created_at, updated_at)"
    " SELECT s.tenant, {}::bigint, s.id, s.variant_id, s.channel, "
    + notification_key_sql("s.variant_id", "s.id", "{}::bigint")
    + ", 'pending', s.subscribed_at, {}::varchar, now(), now()"
    " FROM subscriptions s"
    " WHERE s.tenant = {} AND s.variant_id = {} AND s.state = 'confirmed'"
    " AND s.fulfilled_at IS NULL AND s.unsubscribed_at IS NULL"
    " ORDER BY s.subscribed_at, s.id"
    " ON CONFLICT (notification_key) DO NOTHING"
    " RETURNING 1"
    ") SELECT count(*) AS created FROM inserted"
)

_MARK_FROZEN = (
    "UPDATE restock_events SET frozen_at = now(), target_count = {} WHERE id = {} AND frozen_at IS NULL"
)

_COLUMNS = "SELECT id, priority_at FROM notification_jobs WHERE restock_event = {} AND channel = {}"
_FIRST_PAGE = _COLUMNS + " AND state = 'pending' ORDER BY priority_at, id LIMIT {}"
_NEXT_PAGE = (
    _COLUMNS + " AND state = 'pending' AND (priority_at, id) > ({}, {}) ORDER BY priority_at, id LIMIT {}"
)

_MARK_ENQUEUED = "UPDATE notification_jobs SET enqueued_at = now() WHERE id = ANY({}::bigint[])"


class PiccoloTargetStore:
    """``TargetStore`` over the Piccolo engine (queries join the open transaction via its contextvar)."""

    def __init__(self, engine: PostgresEngine) -> None:
        self.engine = engine

    async def freeze(self, restock_event_id: int, traceparent: str | None) -> Frozen | EventMissing:
        async with self.engine.transaction():
            rows = await RestockEvent.raw(_LOCK_EVENT, restock_event_id)
            if not rows:
                return EventMissing(restock_event_id)
            event = rows[0]
            inserted = await NotificationJob.raw(
                _FREEZE,
                restock_event_id,
                event["restock_window"],
                traceparent,
                event["tenant"],
                event["variant_id"],
            )
            created = int(inserted[0]["created"])
            await RestockEvent.raw(_MARK_FROZEN, created, restock_event_id)
        return Frozen(restock_event_id, created)

    async def pending_page(
        self, restock_event_id: int, channel: Channel, after: Cursor | None, limit: int
    ) -> Page:
        if after is None:
            rows = await NotificationJob.raw(_FIRST_PAGE, restock_event_id, channel, limit)
        else:
            rows = await NotificationJob.raw(
                _NEXT_PAGE, restock_event_id, channel, after.priority_at, after.job_id, limit
            )
        if not rows:
            return Page([], None)
        last = rows[-1]
        more = Cursor(last["priority_at"], last["id"]) if len(rows) == limit else None
        return Page([row["id"] for row in rows], more)

    async def mark_enqueued(self, job_ids: list[int]) -> None:
        await NotificationJob.raw(_MARK_ENQUEUED, job_ids)
