"""The freeze and the FIFO scans of jobs, in PostgreSQL (the dispatcher's ``TargetStore``, ``SweepStore``
and ``FulfilmentStore``).

The freeze gives every live, confirmed subscription of the restocked variant exactly one row for the
event, in one transaction, streamed page by page in subscription order (keyset, never the whole target
set in memory):
- a job keyed by ``restock_common.keys`` when the key is free (``ON CONFLICT DO NOTHING`` on the UNIQUE
  ``notification_key``: PostgreSQL is the arbiter): ``pending``, or ``waiting`` when the shop uses waves
  (then, still in the transaction, the wave planner releases the first wave: ``wave_store``), or
- a ``duplicate-suppressed`` row when another event's job holds the key; its key is the held key +
  ``:dup:`` + the event id (still unique, so the UNIQUE index keeps meaning "one real send per key") and
  its ``decision`` names the holder (``duplicate-of:<job id>``). See docs/adr/0008.
Each job pins the shop's latest ``restock-alert`` template version for its channel and locale (falling
back to ``en``; NULL: the sender's built-in), in the same insert (one LATERAL join, not a query per job).
Before the targets are read, subscriptions notified ``max_notifications`` times are fulfilled, waiting
jobs of older restock windows are superseded, and with waves off this window's line is released
(docs/adr/0013). Each page's targets are first claimed in the Redis fast path (``dedup``), so a known
duplicate is not even tried as an insert; the next page's claims run while a page is written (ADR 14).
The event row is locked for the transaction and a frozen event is never frozen again, so a redelivered
event (even concurrent) writes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from piccolo.engine.postgres import PostgresEngine

from restock_common.db.engine import transaction
from restock_common.db.tables import NotificationJob, RestockEvent, Subscription
from restock_common.jobs import JobState
from restock_common.keys import notification_key, notification_key_sql
from restock_common.messages import Channel
from restock_common.rules import Rules, decode_rules
from restock_common.templating import ALERT_TEMPLATE
from restock_dispatcher import dedup
from restock_dispatcher.ports import (
    Cursor,
    EventMissing,
    FastDedup,
    Frozen,
    Fulfilled,
    Page,
    Publish,
    PublishByChannel,
)
from restock_dispatcher.wave_store import PiccoloWaveStore

TEMPLATE_NAME = ALERT_TEMPLATE  # the template a restock alert renders (the admin edits its versions)

_LOCK_EVENT = (
    "SELECT e.tenant, e.variant_id, e.restock_window, e.available, e.frozen_at, r.body AS rules"
    " FROM restock_events e LEFT JOIN rules r ON r.tenant = e.tenant WHERE e.id = {} FOR UPDATE OF e"
)

# Parameters: tenant, variant, max_notifications. Fulfilled here, in the freeze's transaction, because
# that is the one place that reads the whole line of a variant anyway and holds its event lock.
_FULFIL_EXHAUSTED = (
    "UPDATE subscriptions SET fulfilled_at = now() WHERE tenant = {} AND variant_id = {}"
    " AND state = 'confirmed' AND fulfilled_at IS NULL AND notified_count >= {}"
)

# Waiting jobs of the variant from another restock window: their window is over, the new event's rows
# carry their place in line (parameters: event, tenant, variant, tenant, variant, window).
_SUPERSEDE_WAITING = (
    f"UPDATE notification_jobs SET state = '{JobState.DUPLICATE_SUPPRESSED}',"
    " decision = 'superseded:' || {}::bigint::text, updated_at = now()"
    f" WHERE tenant = {{}} AND variant_id = {{}} AND state = '{JobState.WAITING}'"
    " AND restock_event IN (SELECT id FROM restock_events WHERE tenant = {} AND variant_id = {}"
    " AND restock_window <> {})"
)

# A shop that turned waves off: its line of this window goes now, with the restock's own jobs (parameters:
# tenant, variant; run after the supersede, so only this window's waiting jobs are left).
_RELEASE_LINE = (
    f"UPDATE notification_jobs SET state = '{JobState.PENDING}', decision = 'released:waves-off',"
    f" updated_at = now() WHERE tenant = {{}} AND variant_id = {{}} AND state = '{JobState.WAITING}'"
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
    " decision, template, template_version, priority_at, traceparent, created_at, updated_at, enqueued_at)"
)
# A publish page's statements get a plan for their actual event and cursor: a generic plan (chosen by
# PostgreSQL after a few executions of a prepared statement) is blind to how the table grew in the freeze.
_CUSTOM_PLANS = "SET LOCAL plan_cache_mode = force_custom_plan"
# The latest version of the shop's alert for the subscription's channel, in its locale or else in ``en``.
_TEMPLATE = (
    " LEFT JOIN LATERAL (SELECT t.id, t.version FROM templates t"
    f" WHERE t.tenant = s.tenant AND t.name = '{TEMPLATE_NAME}' AND t.channel = s.channel"
    " AND t.locale IN (s.locale, 'en') ORDER BY t.locale = s.locale DESC, t.version DESC LIMIT 1) tpl ON true"
)

# Parameters: event, window, state, decision, traceparent, whether the event's cursor publishes them, the ids
# to insert (targets of the page with no row for this event yet: the caller knows them, so no anti-join over
# the event's rows is needed). A job the event's cursor publishes is enqueued as it is written (ADR 24).
_INSERT_JOBS = (
    f"WITH inserted AS (INSERT INTO {_COLUMNS}"
    f" SELECT s.tenant, {{}}::bigint, s.id, s.variant_id, s.channel, {_KEY}, {{}}::varchar, {{}}::varchar,"
    " tpl.id, tpl.version, s.subscribed_at, {}::varchar, now(), now(), CASE WHEN {}::boolean THEN now() END"
    f" FROM subscriptions s {_TEMPLATE} WHERE s.id = ANY({{}}::bigint[])"
    " ORDER BY s.subscribed_at, s.id"
    " ON CONFLICT (notification_key) DO NOTHING RETURNING subscription"
    ") SELECT array_agg(subscription) AS ids FROM inserted"
)

# Parameters: event, event, traceparent, window, the ids still without a row. Runs as its own statement
# after the job insert, so its snapshot sees every holder that insert conflicted with (it waited for them).
_INSERT_SUPPRESSED = (
    f"WITH inserted AS (INSERT INTO {_COLUMNS}"
    " SELECT s.tenant, {}::bigint, s.id, s.variant_id, s.channel,"
    " h.notification_key || ':dup:' || {}::bigint::text,"
    f" '{dedup.DUPLICATE_STATE}', 'duplicate-of:' || h.id::text, NULL, NULL, s.subscribed_at, {{}}::varchar,"
    " now(), now(), NULL"
    f" FROM subscriptions s JOIN notification_jobs h ON h.notification_key = {_KEY}"
    " WHERE s.id = ANY({}::bigint[])"
    " ORDER BY s.subscribed_at, s.id"
    " ON CONFLICT (notification_key) DO NOTHING RETURNING subscription"
    ") SELECT array_agg(subscription) AS ids FROM inserted"
)

# The event is published at once when its freeze made nothing pending (waves hold the line: the planner's
# releases are published job by job) or nothing at all (parameters: count, published, event).
_MARK_FROZEN = (
    "UPDATE restock_events SET frozen_at = now(), target_count = {},"
    " published_at = CASE WHEN {}::boolean THEN now() END WHERE id = {} AND frozen_at IS NULL"
)

# The event's publish cursor, its row locked for the page: a second publisher of the event (a redelivery,
# the sweeper) waits and carries on from where this page ends, so no page is published twice.
_LOCK_PUBLISH = (
    "SELECT published_at, published_through_at, published_through_id FROM restock_events"
    " WHERE id = {} AND frozen_at IS NOT NULL FOR UPDATE"
)
# The jobs the freeze made pending, FIFO from the cursor on, still pending and never attempted (a job sent,
# deferred by the sender or given back since has had its message). The (restock_event, state, priority_at,
# id) index seeks to the cursor and hands the rows over in order, so a page costs its own rows.
_FROZEN = (
    "SELECT id, channel, priority_at FROM notification_jobs WHERE restock_event = {} AND state = 'pending'"
    " AND attempt = 0 AND decision IS NULL"
)
_FIRST_FROZEN = _FROZEN + " ORDER BY priority_at, id LIMIT {}"
_NEXT_FROZEN = (
    _FROZEN + " AND priority_at >= {} AND (priority_at, id) > ({}, {}) ORDER BY priority_at, id LIMIT {}"
)
_ADVANCE = "UPDATE restock_events SET published_through_at = {}, published_through_id = {} WHERE id = {}"
_PUBLISHED = "UPDATE restock_events SET published_at = now() WHERE id = {}"
_STALE_EVENTS = (
    "SELECT id FROM restock_events WHERE published_at IS NULL AND frozen_at IS NOT NULL"
    " AND frozen_at < now() - {}::float8 * interval '1 second' ORDER BY frozen_at, id LIMIT {}"
)

_MARK_ENQUEUED = "UPDATE notification_jobs SET enqueued_at = now() WHERE id = ANY({}::bigint[])"

_WINDOW_EVENTS = (
    "SELECT id FROM restock_events WHERE tenant = {} AND variant_id = {} AND restock_window = {} ORDER BY id"
)

# Jobs of one event never published since they became pending (its freeze or a wave): the handler's and
# the wave timer's publish. Same ownership rule as the sweeper (ADR 10); SKIP LOCKED so the sweeper or
# another replica publishing the same rows is skipped, never waited for nor doubled. In FIFO order from the
# cursor on (``priority_at >=`` is a range an index in (priority_at, id) order can seek to: the unpublished
# partial index, or (restock_event, state, priority_at)), so a page costs its own rows, not the event's.
_UNPUBLISHED = (
    "SELECT id, priority_at FROM notification_jobs WHERE restock_event = {} AND state = 'pending'"
    " AND channel = {} AND enqueued_at IS NULL AND attempt = 0 AND decision IS DISTINCT FROM 'replayed'"
)
# Marked in the statement that picks (and locks) them, before the publish: the transaction commits only
# after every confirm, so a failed publish rolls the marks back.
_MARK = (
    "UPDATE notification_jobs j SET enqueued_at = now() FROM ({}) page WHERE j.id = page.id"
    " RETURNING j.id, j.priority_at"
)
_FIRST_UNPUBLISHED = _MARK.format(_UNPUBLISHED + " ORDER BY priority_at, id LIMIT {} FOR UPDATE SKIP LOCKED")
_NEXT_UNPUBLISHED = _MARK.format(
    _UNPUBLISHED + " AND priority_at >= {} AND (priority_at, id) > ({}, {}) ORDER BY priority_at, id LIMIT {}"
    " FOR UPDATE SKIP LOCKED"
)

# FIFO across events; SKIP LOCKED so two dispatcher replicas never publish the same stale job at once.
_STALE = (
    "SELECT id FROM notification_jobs"
    " WHERE state = 'pending' AND enqueued_at IS NULL AND channel = {}"
    # Only jobs never published since their freeze; retried and replayed ones are the sender's (ADR 10).
    " AND attempt = 0 AND decision IS DISTINCT FROM 'replayed'"
    " AND created_at < now() - {}::float8 * interval '1 second'"
    " ORDER BY priority_at, id LIMIT {} FOR UPDATE SKIP LOCKED"
)

# An order: the buyer's subscriptions of the bought variants end, and their waiting jobs leave the line
# (parameters: tenant, contact hashes, variant ids). Pending ones are the sender's (its opt-out re-check).
_FULFIL_ORDER = (
    "WITH fulfilled AS (UPDATE subscriptions SET fulfilled_at = now() WHERE tenant = {}"
    " AND contact_hash = ANY({}::varchar[]) AND variant_id = ANY({}::bigint[]) AND fulfilled_at IS NULL"
    " RETURNING id), skipped AS ("
    f" UPDATE notification_jobs j SET state = '{JobState.SKIPPED_OPTED_OUT}', decision = 'fulfilled',"
    f" updated_at = now() FROM fulfilled f WHERE j.subscription = f.id AND j.state = '{JobState.WAITING}'"
    " RETURNING j.id)"
    " SELECT (SELECT count(*) FROM fulfilled) AS subscriptions, (SELECT count(*) FROM skipped) AS jobs"
)


class PiccoloTargetStore:
    """``TargetStore``, ``SweepStore`` and ``FulfilmentStore`` over the Piccolo engine (queries join the
    open transaction via its contextvar), with the Redis fast path consulted per freeze page."""

    def __init__(
        self,
        engine: PostgresEngine,
        fast_dedup: FastDedup | None = None,
        page_size: int = 1000,
        wave_store: PiccoloWaveStore | None = None,
    ) -> None:
        self.engine = engine
        self.fast_dedup = fast_dedup
        self.page_size = page_size
        self.wave_store = wave_store or PiccoloWaveStore(engine)

    async def freeze(self, restock_event_id: int, traceparent: str | None) -> Frozen | EventMissing:
        async with transaction(self.engine):
            rows = await RestockEvent.raw(_LOCK_EVENT, restock_event_id)
            if not rows:
                return EventMissing(restock_event_id)
            event = rows[0]
            tenant, variant = event["tenant"], event["variant_id"]
            window = event["restock_window"]
            if event["frozen_at"] is not None:
                return Frozen(restock_event_id, tenant, variant, window, 0, 0)
            rules = decode_rules(event["rules"])
            # No ``_CUSTOM_PLANS`` here: the setting reaches the foreign-key triggers' own queries too, and
            # re-planning three checks per inserted job made the freeze 2.7x slower (ADR 24). Its statements
            # need no custom plan since ADR 14 removed the anti-join: ids, keys and keysets seek by index.
            await self._prepare_line(restock_event_id, event, rules)
            created, suppressed = await _EventFreeze(self, restock_event_id, event, rules, traceparent).run()
            nothing_pending = rules.waves_enabled or created == 0
            await RestockEvent.raw(_MARK_FROZEN, created + suppressed, nothing_pending, restock_event_id)
            released = 0
            if rules.waves_enabled:
                decision = await self.wave_store.plan_restock(
                    tenant, variant, restock_event_id, event["restock_window"], event["available"], rules
                )
                released = decision.release
        return Frozen(restock_event_id, tenant, variant, window, created, suppressed, released)

    async def _prepare_line(self, event_id: int, event: dict[str, Any], rules: Rules) -> None:
        tenant, variant = event["tenant"], event["variant_id"]
        await Subscription.raw(_FULFIL_EXHAUSTED, tenant, variant, rules.max_notifications)
        await NotificationJob.raw(
            _SUPERSEDE_WAITING, event_id, tenant, variant, tenant, variant, event["restock_window"]
        )
        if not rules.waves_enabled:
            await NotificationJob.raw(_RELEASE_LINE, tenant, variant)

    async def window_events(self, tenant_id: int, variant_id: int, window: int) -> list[int]:
        rows = await RestockEvent.raw(_WINDOW_EVENTS, tenant_id, variant_id, window)
        return [row["id"] for row in rows]

    async def publish_unpublished(
        self, restock_event_id: int, channel: Channel, after: Cursor | None, limit: int, publish: Publish
    ) -> Page:
        async with transaction(self.engine):
            await NotificationJob.raw(_CUSTOM_PLANS)
            if after is None:
                rows = await NotificationJob.raw(_FIRST_UNPUBLISHED, restock_event_id, channel, limit)
            else:
                at, job_id = after.priority_at, after.job_id
                rows = await NotificationJob.raw(
                    _NEXT_UNPUBLISHED, restock_event_id, channel, at, at, job_id, limit
                )
            if not rows:
                return Page([], None)
            rows.sort(key=lambda row: (row["priority_at"], row["id"]))  # RETURNING keeps no order
            job_ids = [row["id"] for row in rows]
            await publish(job_ids)
        last = rows[-1]
        more = Cursor(last["priority_at"], last["id"]) if len(rows) == limit else None
        return Page(job_ids, more)

    async def publish_frozen(
        self, restock_event_id: int, limit: int, publish: PublishByChannel
    ) -> int | None:
        async with transaction(self.engine):
            rows = await RestockEvent.raw(_LOCK_PUBLISH, restock_event_id)
            if not rows or rows[0]["published_at"] is not None:
                return None
            await NotificationJob.raw(_CUSTOM_PLANS)
            at, after = rows[0]["published_through_at"], rows[0]["published_through_id"]
            if at is None:
                jobs = await NotificationJob.raw(_FIRST_FROZEN, restock_event_id, limit)
            else:
                jobs = await NotificationJob.raw(_NEXT_FROZEN, restock_event_id, at, at, after, limit)
            by_channel: dict[Channel, list[int]] = {}
            for job in jobs:  # FIFO: the statement's own ORDER BY
                by_channel.setdefault(job["channel"], []).append(job["id"])
            if by_channel:
                await publish(by_channel)
            if len(jobs) < limit:
                await RestockEvent.raw(_PUBLISHED, restock_event_id)
            else:
                last = jobs[-1]
                await RestockEvent.raw(_ADVANCE, last["priority_at"], last["id"], restock_event_id)
        return len(jobs)

    async def stale_events(self, older_than_seconds: float, limit: int) -> list[int]:
        rows = await RestockEvent.raw(_STALE_EVENTS, older_than_seconds, limit)
        return [row["id"] for row in rows]

    async def mark_enqueued(self, job_ids: list[int]) -> None:
        await NotificationJob.raw(_MARK_ENQUEUED, job_ids)

    async def sweep(
        self,
        channel: Channel,
        older_than_seconds: float,
        limit: int,
        publish: Callable[[list[int]], Awaitable[None]],
    ) -> int:
        async with transaction(self.engine):
            rows = await NotificationJob.raw(_STALE, channel, older_than_seconds, limit)
            job_ids = [row["id"] for row in rows]
            if job_ids:
                # Published while the rows are locked; a commit lost after the confirm republishes them
                # later, which the sender's compare-and-set claim makes harmless.
                await publish(job_ids)
                await self.mark_enqueued(job_ids)
        return len(job_ids)

    async def fulfil(self, tenant_id: int, variant_ids: list[int], contact_hashes: list[str]) -> Fulfilled:
        if not variant_ids or not contact_hashes:
            return Fulfilled(0, 0)
        [row] = await Subscription.raw(_FULFIL_ORDER, tenant_id, contact_hashes, variant_ids)
        return Fulfilled(int(row["subscriptions"]), int(row["jobs"]))


class _EventFreeze:
    """One freeze in progress: pages of targets, each claimed in Redis then written in PostgreSQL."""

    def __init__(
        self,
        store: PiccoloTargetStore,
        event_id: int,
        event: dict[str, Any],
        rules: Rules,
        traceparent: str | None,
    ) -> None:
        self.store = store
        self.event_id = event_id
        self.event = event
        self.traceparent = traceparent
        self.ttl = dedup.claim_ttl_seconds(rules.restock_window_seconds)
        # Waves: the jobs wait in line for the planner; otherwise they go at once.
        self.state: str
        self.decision: str | None
        self.state, self.decision = (
            (JobState.WAITING.value, "waiting") if rules.waves_enabled else (JobState.PENDING.value, None)
        )
        self.fast_dedup = store.fast_dedup

    async def run(self) -> tuple[int, int]:
        created = suppressed = 0
        page = await self._targets(None)
        claim = self._claim(page)
        try:
            while page:
                # The next page is read and its Redis claims sent while this page is written: Redis and
                # PostgreSQL work at the same time (the claims are hints, independent of the writes).
                full = len(page) == self.store.page_size
                upcoming = await self._targets((page[-1]["subscribed_at"], page[-1]["id"])) if full else []
                upcoming_claim = self._claim(upcoming)
                page_created, page_suppressed = await self._freeze_page(
                    [row["id"] for row in page], await claim
                )
                created, suppressed = created + page_created, suppressed + page_suppressed
                page, claim = upcoming, upcoming_claim
        finally:
            claim.cancel()  # only still running when a write failed: the transaction rolls back
        return created, suppressed

    def _claim(self, page: list[dict[str, Any]]) -> asyncio.Task[list[int]]:
        return asyncio.create_task(self._suspects([row["id"] for row in page]))

    async def _targets(self, after: tuple[Any, int] | None) -> list[dict[str, Any]]:
        tenant, variant, size = self.event["tenant"], self.event["variant_id"], self.store.page_size
        if after is None:
            rows: list[dict[str, Any]] = await Subscription.raw(_FIRST_TARGETS, tenant, variant, size)
        else:
            rows = await Subscription.raw(_NEXT_TARGETS, tenant, variant, after[0], after[1], size)
        return rows

    async def _freeze_page(self, ids: list[int], suspects: list[int]) -> tuple[int, int]:
        skip = set(suspects)
        created = await self._insert_jobs([i for i in ids if i not in skip])
        suppressed = await self._insert_suppressed([i for i in ids if i not in created])
        unaccounted = [i for i in ids if i not in created and i not in suppressed]
        if unaccounted:
            # Redis named a holder PostgreSQL does not show (lost, or its freeze never committed): try
            # those as jobs too, and let the UNIQUE key decide.
            retried = await self._insert_jobs(unaccounted)
            created |= retried
            suppressed |= await self._insert_suppressed([i for i in unaccounted if i not in retried])
        return len(created), len(suppressed)

    async def _suspects(self, ids: list[int]) -> list[int]:
        if self.fast_dedup is None or not ids:
            return []
        window = self.event["restock_window"]
        keys = [notification_key(self.event["variant_id"], sid, window) for sid in ids]
        previous = await self.fast_dedup.claim(keys, self.event_id, self.ttl)
        if previous is None:
            self.fast_dedup = None  # unreachable: the rest of this freeze goes to PostgreSQL alone
            return []
        return dedup.suspects(ids, previous, self.event_id)

    async def _insert_jobs(self, ids: list[int]) -> set[int]:
        """Insert a job for each of ``ids`` whose key is free; the subscriptions that got one."""
        if not ids:
            return set()
        rows = await NotificationJob.raw(
            _INSERT_JOBS,
            self.event_id,
            self.event["restock_window"],
            self.state,
            self.decision,
            self.traceparent,
            self.state == JobState.PENDING.value,
            ids,
        )
        return set(rows[0]["ids"] or ())

    async def _insert_suppressed(self, ids: list[int]) -> set[int]:
        """Insert a duplicate-suppressed row for each of ``ids`` whose key a visible job holds."""
        if not ids:
            return set()
        rows = await NotificationJob.raw(
            _INSERT_SUPPRESSED,
            self.event_id,
            self.event_id,
            self.traceparent,
            self.event["restock_window"],
            ids,
        )
        return set(rows[0]["ids"] or ())
