"""The freeze and the FIFO scans of jobs, in PostgreSQL (the dispatcher's ``TargetStore`` and ``SweepStore``).

The freeze gives every live, confirmed subscription of the restocked variant exactly one row for the
event, in one transaction, streamed page by page in subscription order (keyset, never the whole target
set in memory):
- a ``pending`` job keyed by ``restock_common.keys`` when the key is free (``ON CONFLICT DO NOTHING`` on
  the UNIQUE ``notification_key``: PostgreSQL is the arbiter), or
- a ``duplicate-suppressed`` row when another event's job holds the key; its key is the held key +
  ``:dup:`` + the event id (still unique, so the UNIQUE index keeps meaning "one real send per key") and
  its ``decision`` names the holder (``duplicate-of:<job id>``). See docs/adr/0008.
Each page first asks the Redis fast path (``dedup``), so a known duplicate is not even tried as a pending
insert. The event row is locked for the transaction and a frozen event is never frozen again, so a
redelivered event (even concurrent) writes nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from piccolo.engine.postgres import PostgresEngine

from restock_common.db.tables import NotificationJob, RestockEvent, Subscription
from restock_common.keys import notification_key, notification_key_sql
from restock_common.messages import Channel
from restock_common.rules import decode_rules
from restock_dispatcher import dedup
from restock_dispatcher.ports import Cursor, EventMissing, FastDedup, Frozen, Page

_LOCK_EVENT = (
    "SELECT e.tenant, e.variant_id, e.restock_window, e.frozen_at, r.body AS rules"
    " FROM restock_events e LEFT JOIN rules r ON r.tenant = e.tenant WHERE e.id = {} FOR UPDATE OF e"
)

_LIVE_TARGETS = (
    "SELECT s.id, s.subscribed_at FROM subscriptions s"
    " WHERE s.tenant = {} AND s.variant_id = {} AND s.state = 'confirmed'"
    " AND s.fulfilled_at IS NULL AND s.unsubscribed_at IS NULL"
)
_FIRST_TARGETS = _LIVE_TARGETS + " ORDER BY s.subscribed_at, s.id LIMIT {}"
_NEXT_TARGETS = (
    _LIVE_TARGETS + " AND (s.subscribed_at, s.id) > ({}, {}) ORDER BY s.subscribed_at, s.id LIMIT {}"
)

_KEY = notification_key_sql("s.variant_id", "s.id", "{}::bigint")
_COLUMNS = (
    "notification_jobs (tenant, restock_event, subscription, variant_id, channel, notification_key, state,"
    " decision, priority_at, traceparent, created_at, updated_at)"
)
# A target of the page that has no row for this event yet (parameters: event id, page ids).
_UNACCOUNTED = (
    " NOT EXISTS (SELECT 1 FROM notification_jobs j WHERE j.subscription = s.id AND j.restock_event = {})"
    " AND s.id = ANY({}::bigint[])"
)

# Parameters: event, window, traceparent, event, page ids, ids not to try (Redis suspects).
_INSERT_PENDING = (
    f"WITH inserted AS (INSERT INTO {_COLUMNS}"
    f" SELECT s.tenant, {{}}::bigint, s.id, s.variant_id, s.channel, {_KEY}, 'pending', NULL,"
    " s.subscribed_at, {}::varchar, now(), now()"
    f" FROM subscriptions s WHERE {_UNACCOUNTED} AND s.id <> ALL({{}}::bigint[])"
    " ORDER BY s.subscribed_at, s.id"
    " ON CONFLICT (notification_key) DO NOTHING RETURNING 1"
    ") SELECT count(*) AS n FROM inserted"
)

# Parameters: event, event, traceparent, window, event, page ids. Runs as its own statement after the
# pending insert, so its snapshot sees every holder that insert conflicted with (it waited for them).
_INSERT_SUPPRESSED = (
    f"WITH inserted AS (INSERT INTO {_COLUMNS}"
    " SELECT s.tenant, {}::bigint, s.id, s.variant_id, s.channel,"
    " h.notification_key || ':dup:' || {}::bigint::text,"
    f" '{dedup.DUPLICATE_STATE}', 'duplicate-of:' || h.id::text, s.subscribed_at, {{}}::varchar, now(), now()"
    f" FROM subscriptions s JOIN notification_jobs h ON h.notification_key = {_KEY}"
    f" WHERE {_UNACCOUNTED}"
    " ORDER BY s.subscribed_at, s.id"
    " ON CONFLICT (notification_key) DO NOTHING RETURNING 1"
    ") SELECT count(*) AS n FROM inserted"
)

_MARK_FROZEN = (
    "UPDATE restock_events SET frozen_at = now(), target_count = {} WHERE id = {} AND frozen_at IS NULL"
)

_JOB_COLUMNS = "SELECT id, priority_at FROM notification_jobs WHERE restock_event = {} AND channel = {}"
_FIRST_PAGE = _JOB_COLUMNS + " AND state = 'pending' ORDER BY priority_at, id LIMIT {}"
_NEXT_PAGE = (
    _JOB_COLUMNS + " AND state = 'pending' AND (priority_at, id) > ({}, {}) ORDER BY priority_at, id LIMIT {}"
)

_MARK_ENQUEUED = "UPDATE notification_jobs SET enqueued_at = now() WHERE id = ANY({}::bigint[])"

# FIFO across events; SKIP LOCKED so two dispatcher replicas never publish the same stale job at once.
_STALE = (
    "SELECT id FROM notification_jobs"
    " WHERE state = 'pending' AND enqueued_at IS NULL AND channel = {}"
    # Only jobs never published since their freeze; retried and replayed ones are the sender's (ADR 10).
    " AND attempt = 0 AND decision IS DISTINCT FROM 'replayed'"
    " AND created_at < now() - {}::float8 * interval '1 second'"
    " ORDER BY priority_at, id LIMIT {} FOR UPDATE SKIP LOCKED"
)


class PiccoloTargetStore:
    """``TargetStore`` and ``SweepStore`` over the Piccolo engine (queries join the open transaction via
    its contextvar), with the Redis fast path consulted per freeze page."""

    def __init__(
        self, engine: PostgresEngine, fast_dedup: FastDedup | None = None, page_size: int = 1000
    ) -> None:
        self.engine = engine
        self.fast_dedup = fast_dedup
        self.page_size = page_size

    async def freeze(self, restock_event_id: int, traceparent: str | None) -> Frozen | EventMissing:
        async with self.engine.transaction():
            rows = await RestockEvent.raw(_LOCK_EVENT, restock_event_id)
            if not rows:
                return EventMissing(restock_event_id)
            event = rows[0]
            if event["frozen_at"] is not None:
                return Frozen(restock_event_id, 0, 0)
            created, suppressed = await _EventFreeze(self, restock_event_id, event, traceparent).run()
            await RestockEvent.raw(_MARK_FROZEN, created + suppressed, restock_event_id)
        return Frozen(restock_event_id, created, suppressed)

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

    async def sweep(
        self,
        channel: Channel,
        older_than_seconds: float,
        limit: int,
        publish: Callable[[list[int]], Awaitable[None]],
    ) -> int:
        async with self.engine.transaction():
            rows = await NotificationJob.raw(_STALE, channel, older_than_seconds, limit)
            job_ids = [row["id"] for row in rows]
            if job_ids:
                # Published while the rows are locked; a commit lost after the confirm republishes them
                # later, which the sender's compare-and-set claim makes harmless.
                await publish(job_ids)
                await self.mark_enqueued(job_ids)
        return len(job_ids)


class _EventFreeze:
    """One freeze in progress: pages of targets, each claimed in Redis then written in PostgreSQL."""

    def __init__(
        self, store: PiccoloTargetStore, event_id: int, event: dict[str, Any], traceparent: str | None
    ) -> None:
        self.store = store
        self.event_id = event_id
        self.event = event
        self.traceparent = traceparent
        self.ttl = dedup.claim_ttl_seconds(decode_rules(event["rules"]).restock_window_seconds)
        self.fast_dedup = store.fast_dedup

    async def run(self) -> tuple[int, int]:
        created = suppressed = 0
        after: tuple[Any, int] | None = None
        while True:
            page = await self._targets(after)
            if not page:
                return created, suppressed
            page_created, page_suppressed = await self._freeze_page([row["id"] for row in page])
            created, suppressed = created + page_created, suppressed + page_suppressed
            if len(page) < self.store.page_size:
                return created, suppressed
            after = (page[-1]["subscribed_at"], page[-1]["id"])

    async def _targets(self, after: tuple[Any, int] | None) -> list[dict[str, Any]]:
        tenant, variant, size = self.event["tenant"], self.event["variant_id"], self.store.page_size
        if after is None:
            rows: list[dict[str, Any]] = await Subscription.raw(_FIRST_TARGETS, tenant, variant, size)
        else:
            rows = await Subscription.raw(_NEXT_TARGETS, tenant, variant, after[0], after[1], size)
        return rows

    async def _freeze_page(self, ids: list[int]) -> tuple[int, int]:
        skip = await self._suspects(ids)
        created = await self._insert_pending(ids, skip)
        suppressed = await self._insert_suppressed(ids)
        if skip and created + suppressed < len(ids):
            # Redis named a holder PostgreSQL does not show (lost, or its freeze never committed): try
            # those as pending too, and let the UNIQUE key decide.
            created += await self._insert_pending(ids, [])
            suppressed += await self._insert_suppressed(ids)
        return created, suppressed

    async def _suspects(self, ids: list[int]) -> list[int]:
        if self.fast_dedup is None:
            return []
        window = self.event["restock_window"]
        keys = [notification_key(self.event["variant_id"], sid, window) for sid in ids]
        previous = await self.fast_dedup.claim(keys, self.event_id, self.ttl)
        if previous is None:
            self.fast_dedup = None  # unreachable: the rest of this freeze goes to PostgreSQL alone
            return []
        return dedup.suspects(ids, previous, self.event_id)

    async def _insert_pending(self, ids: list[int], skip: list[int]) -> int:
        rows = await NotificationJob.raw(
            _INSERT_PENDING,
            self.event_id,
            self.event["restock_window"],
            self.traceparent,
            self.event_id,
            ids,
            skip,
        )
        return int(rows[0]["n"])

    async def _insert_suppressed(self, ids: list[int]) -> int:
        rows = await NotificationJob.raw(
            _INSERT_SUPPRESSED,
            self.event_id,
            self.event_id,
            self.traceparent,
            self.event["restock_window"],
            self.event_id,
            ids,
        )
        return int(rows[0]["n"])
