"""The wave planner's state in PostgreSQL (``WaveStore``): ``wave_plans`` rows and the ``waiting`` jobs.

Every decision about one variant's line is taken with its ``wave_plans`` row locked (``FOR UPDATE``), so a
restock's freeze, a stock change and the wave timer of any replica take turns per variant; the timer
skips rows another replica holds (``SKIP LOCKED``), so two replicas never release the same wave. A
release is one UPDATE of the next N waiting jobs of the line in FIFO order (``waiting -> pending``, with
``wave`` and ``decision``); the released jobs have no message yet (``enqueued_at IS NULL``): the caller
publishes them after the commit, and the publish sweeper covers a crash in between.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from piccolo.engine.postgres import PostgresEngine

from restock_common.db.engine import transaction
from restock_common.db.tables import WavePlan
from restock_common.keys import restock_window
from restock_common.rules import Rules, decode_rules
from restock_dispatcher import waves
from restock_dispatcher.ports import Released

_ENSURE_PLAN = (
    "INSERT INTO wave_plans (tenant, variant_id, wave, status, available, updated_at)"
    f" VALUES ({{}}, {{}}, 0, '{waves.Status.IDLE}', 0, now()) ON CONFLICT (tenant, variant_id) DO NOTHING"
)
# The detector's current total of the variant, its row locked to the freeze's commit. The detector
# enqueues a stock.changed only while a line is open (ADR 26), checked under that row's lock: a change
# committed before this read is in the total, and one made after it waits for the line this freeze opens,
# sees it, and is published. The read is an update so that the row's version moves (ADR 27): a detector
# write planned before this freeze, which checked for an open line before it existed, then fails its
# version check and is redone under the lock. Lock order: wave_plans, then variant_states; the detector
# takes no lock on wave_plans, so no cycle.
_CURRENT_TOTAL = (
    "UPDATE variant_states SET version = version + 1"
    " WHERE tenant = {} AND variant_id = {} RETURNING available"
)
_PLAN_COLUMNS = (
    "SELECT p.id, p.tenant, p.variant_id, p.restock_event, p.wave, p.status, p.available,"
    " p.wave_started_at, e.restock_window AS window, r.body AS rules"
    " FROM wave_plans p LEFT JOIN restock_events e ON e.id = p.restock_event"
    " LEFT JOIN rules r ON r.tenant = p.tenant"
)
_LOCK_PLAN = _PLAN_COLUMNS + " WHERE p.tenant = {} AND p.variant_id = {} FOR UPDATE OF p"
_LOCK_DUE = (
    _PLAN_COLUMNS + f" WHERE p.status = '{waves.Status.ACTIVE}' AND p.next_wave_at <= {{}}"
    " ORDER BY p.next_wave_at LIMIT {} FOR UPDATE OF p SKIP LOCKED"
)

# The line of one variant in one window: its waiting jobs (parameters: tenant, variant, tenant, variant,
# window). A waiting job of an older window is never released (its key names a window that is over).
_LINE = (
    " FROM notification_jobs j WHERE j.tenant = {} AND j.variant_id = {} AND j.state = 'waiting'"
    " AND j.restock_event IN (SELECT id FROM restock_events WHERE tenant = {} AND variant_id = {}"
    " AND restock_window = {})"
)
_COUNT_LINE = "SELECT count(*) AS n FROM (SELECT 1" + _LINE + " LIMIT {}) line"
# Parameters: the line's five, limit, wave, decision.
_RELEASE = (
    "WITH next AS (SELECT j.id" + _LINE + " ORDER BY j.priority_at, j.id LIMIT {} FOR UPDATE)"
    " UPDATE notification_jobs j SET state = 'pending', wave = {}, decision = {}, updated_at = now()"
    " FROM next WHERE j.id = next.id RETURNING j.id"
)
# Parameters: decision, the line's five, decision. Only rows whose recorded reason changes are written.
_HOLD = (
    "UPDATE notification_jobs SET decision = {}, updated_at = now() WHERE id IN (SELECT j.id"
    + _LINE
    + ") AND decision IS DISTINCT FROM {}"
)
_SAVE_PLAN = (
    "UPDATE wave_plans SET restock_event = coalesce({}, restock_event), wave = {}, status = {},"
    " available = {}, wave_started_at = {}, next_wave_at = {}, updated_at = now() WHERE id = {}"
)


def utc_now() -> datetime:
    return datetime.now(UTC)


class PiccoloWaveStore:
    """``WaveStore`` over the Piccolo engine; the clock is injected so tests can move past an interval."""

    def __init__(self, engine: PostgresEngine, clock: Callable[[], datetime] = utc_now) -> None:
        self.engine = engine
        self.clock = clock

    async def plan_restock(
        self,
        tenant_id: int,
        variant_id: int,
        restock_event_id: int,
        window: int,
        available: int,
        rules: Rules,
    ) -> waves.Decision:
        """A restock's wave, inside the freeze's transaction (its waiting rows are already written), with
        the variant's availability of now: ``available`` (the restock event's, at detection) only if the
        detector has no row for the variant."""
        await WavePlan.raw(_ENSURE_PLAN, tenant_id, variant_id)
        [row] = await WavePlan.raw(_LOCK_PLAN, tenant_id, variant_id)
        current = await WavePlan.raw(_CURRENT_TOTAL, tenant_id, variant_id)
        if current:
            available = current[0]["available"]
        return await self._replan(row, window, available, rules, restock_event_id)

    async def stock_changed(self, tenant_id: int, variant_id: int, available: int) -> Released | None:
        """Re-plan a variant's line with its new availability (None: the variant has no line)."""
        async with transaction(self.engine):
            rows = await WavePlan.raw(_LOCK_PLAN, tenant_id, variant_id)
            if not rows:
                return None
            row = rows[0]
            rules = decode_rules(row["rules"])
            if not rules.waves_enabled:
                return None
            window = restock_window(self.clock(), rules.restock_window_seconds)
            decision = await self._replan(row, window, available, rules, None)
        return Released(tenant_id, variant_id, window, decision.release, decision)

    async def release_due(self, limit: int) -> list[Released]:
        """Plan every line whose next wave is due (at most ``limit``, skipping lines another replica
        holds), with the last availability each was told."""
        released = []
        async with transaction(self.engine):
            for row in await WavePlan.raw(_LOCK_DUE, self.clock(), limit):
                rules = decode_rules(row["rules"])
                window = restock_window(self.clock(), rules.restock_window_seconds)
                decision = await self._replan(row, window, row["available"], rules, None)
                released.append(
                    Released(row["tenant"], row["variant_id"], window, decision.release, decision)
                )
        return released

    async def _replan(
        self, row: dict[str, Any], window: int, available: int, rules: Rules, event_id: int | None
    ) -> waves.Decision:
        tenant, variant = row["tenant"], row["variant_id"]
        line = (tenant, variant, tenant, variant, window)
        state = waves.PlanState(window=row["window"], wave=row["wave"], last_wave_at=row["wave_started_at"])
        cap = waves.wave_size(available, rules) + 1  # "more than one wave" is all the planner needs
        [count] = await WavePlan.raw(_COUNT_LINE, *line, cap)
        decision = waves.plan(
            state, window=window, available=available, waiting=int(count["n"]), rules=rules, now=self.clock()
        )
        if decision.release and decision.wave is not None:
            await WavePlan.raw(_RELEASE, *line, decision.release, decision.wave, f"wave:{decision.wave}")
        if decision.held_decision is not None:
            await WavePlan.raw(_HOLD, decision.held_decision, *line, decision.held_decision)
        stored = decision.state
        await WavePlan.raw(
            _SAVE_PLAN,
            event_id,
            stored.wave,
            decision.status.value,
            available,
            stored.last_wave_at,
            decision.next_wave_at,
            row["id"],
        )
        return decision
