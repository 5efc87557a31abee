"""The dry run: "if this variant came back now with N units, who would be told, in which wave, and who
not, and why?", answered from the live data without writing anything.

One read-only, repeatable-read transaction streams the variant's subscriptions in FIFO pages (as the
freeze does); ``suppression`` says which the freeze would leave out, and the rest are labelled by the same
planner the dispatcher runs (``waves.schedule``: the planner asked at each next wave time, stock assumed
unchanged between waves). Redis is only read (``GET``), to flag targets whose fast-path key is held; the
freeze does not suppress on Redis alone, so neither does the dry run. The admin API will serve ``DryRun``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec
import redis.asyncio as aioredis
from piccolo.engine.postgres import PostgresEngine
from redis.exceptions import RedisError

from restock_common.db.engine import transaction
from restock_common.db.tables import Subscription
from restock_common.keys import notification_key, notification_key_sql, restock_window
from restock_common.rules import Rules, decode_rules
from restock_dispatcher import waves
from restock_dispatcher.dedup import redis_key

log = logging.getLogger(__name__)

Outcome = Literal["notify", "held", "suppressed"]


class DryRunTarget(msgspec.Struct, frozen=True, kw_only=True):
    """One subscription of the variant and what a restock now would do with it."""

    subscription_id: int
    channel: str
    subscribed_at: datetime
    outcome: Outcome
    wave: int | None = None  # None with waves off (everybody at once) or when not notified
    at: datetime | None = None  # when its wave would go
    reason: str | None = None  # held:<reason>, or why it is suppressed
    redis_key_held: bool = False  # the fast-path key of this window is claimed (a hint only)


class DryRun(msgspec.Struct, frozen=True, kw_only=True):
    """The whole answer: totals over every subscription, and the first ``limit`` of them in FIFO order."""

    tenant_id: int
    variant_id: int
    quantity: int
    window: int
    waves_enabled: bool
    wave_size: int | None  # None with waves off
    first_wave: str  # the planner's reason for the first decision (released, sold-out, ...)
    notify: int
    by_wave: dict[int, int]
    held: int
    suppressed: dict[str, int]
    redis_checked: bool
    targets: list[DryRunTarget]
    truncated: bool


def suppression(row: dict[str, Any], rules: Rules) -> str | None:
    """Why the freeze (or, for a waiting job, the line) would not notify this subscription now."""
    if row["state"] == "unsubscribed" or row["unsubscribed_at"] is not None:
        return "unsubscribed"
    if row["state"] != "confirmed":
        return "unconfirmed"
    if row["fulfilled_at"] is not None:
        return "fulfilled"
    if row["notified_count"] >= rules.max_notifications:
        return "notified-max-times"
    holder = row["holder_state"]
    if holder is not None and holder != "waiting":  # a waiting job of this window is still in line
        return "already-notified-in-window"
    return None


class Labeller:
    """Hands out the projected waves to the line, in FIFO order, one target at a time."""

    def __init__(self, decisions: Iterator[waves.Decision]) -> None:
        self.decisions = decisions
        self.current = next(decisions)
        self.used = 0

    def next(self) -> tuple[Outcome, int | None, datetime | None, str | None]:
        decision = self.current
        if decision.reason is waves.Reason.WAVES_OFF:
            return "notify", None, None, None
        while self.used >= decision.release and decision.next_wave_at is not None:
            decision, self.used = next(self.decisions), 0
            self.current = decision
        if self.used < decision.release:
            self.used += 1
            return "notify", decision.wave, decision.state.last_wave_at, None
        return "held", None, None, decision.held_decision or "waiting"


_RULES_AND_PLAN = (
    "SELECT r.body AS rules, p.wave, p.wave_started_at, e.restock_window AS window"
    " FROM tenants t LEFT JOIN rules r ON r.tenant = t.id"
    " LEFT JOIN wave_plans p ON p.tenant = t.id AND p.variant_id = {}"
    " LEFT JOIN restock_events e ON e.id = p.restock_event WHERE t.id = {}"
)
_WINDOW_KEY = notification_key_sql("s.variant_id", "s.id", "{}::bigint")
_SUBSCRIPTIONS = (
    "SELECT s.id, s.channel, s.subscribed_at, s.state, s.unsubscribed_at, s.fulfilled_at, s.notified_count,"
    " h.state AS holder_state FROM subscriptions s"
    f" LEFT JOIN notification_jobs h ON h.notification_key = {_WINDOW_KEY}"
    " WHERE s.tenant = {} AND s.variant_id = {}"
)
_FIRST = _SUBSCRIPTIONS + " ORDER BY s.subscribed_at, s.id LIMIT {}"
_NEXT = _SUBSCRIPTIONS + " AND (s.subscribed_at, s.id) > ({}, {}) ORDER BY s.subscribed_at, s.id LIMIT {}"


def utc_now() -> datetime:
    return datetime.now(UTC)


class DryRunner:
    """Runs dry runs against PostgreSQL (and Redis, read only)."""

    def __init__(
        self,
        engine: PostgresEngine,
        redis_client: aioredis.Redis | None,
        *,
        page_size: int = 1000,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.engine = engine
        self.redis = redis_client
        self.page_size = page_size
        self.clock = clock

    async def run(
        self, tenant_id: int, variant_id: int, quantity: int, *, limit: int = 1000
    ) -> DryRun | None:
        """The dry run (None: no such shop)."""
        result: DryRun | None = None
        async with transaction(self.engine):
            await Subscription.raw("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            rows = await Subscription.raw(_RULES_AND_PLAN, variant_id, tenant_id)
            if rows:
                result = await _Run(self, tenant_id, variant_id, quantity, rows[0], limit).stream()
        return result


class _Run:
    """One dry run in progress: totals, the listed targets, and the wave labeller."""

    def __init__(
        self,
        runner: DryRunner,
        tenant_id: int,
        variant_id: int,
        quantity: int,
        row: dict[str, Any],
        limit: int,
    ) -> None:
        self.runner = runner
        self.tenant_id, self.variant_id, self.quantity, self.limit = tenant_id, variant_id, quantity, limit
        self.rules = decode_rules(row["rules"])
        now = runner.clock()
        self.window = restock_window(now, self.rules.restock_window_seconds)
        state = waves.PlanState(
            window=row["window"], wave=row["wave"] or 0, last_wave_at=row["wave_started_at"]
        )
        self.labeller = Labeller(
            waves.schedule(state, window=self.window, available=quantity, rules=self.rules, now=now)
        )
        self.first_wave = self.labeller.current.reason.value
        self.by_wave: dict[int, int] = {}
        self.suppressed: dict[str, int] = {}
        self.notify = self.held = 0
        self.targets: list[DryRunTarget] = []
        self.truncated = False
        self.redis_checked = runner.redis is not None

    async def stream(self) -> DryRun:
        after: tuple[datetime, int] | None = None
        while True:
            page = await self._page(after)
            held_keys = await self._redis_held(page)
            for row, key_held in zip(page, held_keys, strict=True):
                self._account(row, key_held)
            if len(page) < self.runner.page_size:
                return self._result()
            after = (page[-1]["subscribed_at"], page[-1]["id"])

    async def _page(self, after: tuple[datetime, int] | None) -> list[dict[str, Any]]:
        size, base = self.runner.page_size, (self.window, self.tenant_id, self.variant_id)
        if after is None:
            rows: list[dict[str, Any]] = await Subscription.raw(_FIRST, *base, size)
        else:
            rows = await Subscription.raw(_NEXT, *base, after[0], after[1], size)
        return rows

    async def _redis_held(self, page: list[dict[str, Any]]) -> list[bool]:
        if not page or self.runner.redis is None or not self.redis_checked:
            return [False] * len(page)
        keys = [redis_key(notification_key(self.variant_id, row["id"], self.window)) for row in page]
        try:
            values = await self.runner.redis.mget(keys)
        except (RedisError, OSError) as error:
            log.warning("redis unavailable: dry run without key hints", extra={"error": type(error).__name__})
            self.redis_checked = False
            return [False] * len(page)
        return [value is not None for value in values]

    def _account(self, row: dict[str, Any], key_held: bool) -> None:
        reason = suppression(row, self.rules)
        if reason is not None:
            self.suppressed[reason] = self.suppressed.get(reason, 0) + 1
            self._list(row, "suppressed", None, None, reason, key_held)
            return
        outcome, wave, at, held = self.labeller.next()
        if outcome == "notify":
            self.notify += 1
            if wave is not None:
                self.by_wave[wave] = self.by_wave.get(wave, 0) + 1
        else:
            self.held += 1
        self._list(row, outcome, wave, at, held, key_held)

    def _list(
        self,
        row: dict[str, Any],
        outcome: Outcome,
        wave: int | None,
        at: datetime | None,
        reason: str | None,
        key_held: bool,
    ) -> None:
        if len(self.targets) >= self.limit:
            self.truncated = True
            return
        self.targets.append(
            DryRunTarget(
                subscription_id=row["id"],
                channel=row["channel"],
                subscribed_at=row["subscribed_at"],
                outcome=outcome,
                wave=wave,
                at=at,
                reason=reason,
                redis_key_held=key_held,
            )
        )

    def _result(self) -> DryRun:
        return DryRun(
            tenant_id=self.tenant_id,
            variant_id=self.variant_id,
            quantity=self.quantity,
            window=self.window,
            waves_enabled=self.rules.waves_enabled,
            wave_size=waves.wave_size(self.quantity, self.rules) if self.rules.waves_enabled else None,
            first_wave=self.first_wave,
            notify=self.notify,
            by_wave=self.by_wave,
            held=self.held,
            suppressed=self.suppressed,
            redis_checked=self.redis_checked,
            targets=self.targets,
            truncated=self.truncated,
        )
