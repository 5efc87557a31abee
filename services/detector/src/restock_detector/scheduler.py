"""The armed-restock scheduler: fires (or disarms) armed variants whose debounce has ended.

About once a second it locks the due armed ``variant_states`` rows (``FOR UPDATE SKIP LOCKED``: a
webhook deciding a variant holds its row, and settles an ended debounce itself; replicas share the
work), re-reads each variant's total from the snapshots and asks ``transitions.expire``: a restock is
recorded by the same code as an immediate one (``restocks.record_restock``) and disarms the variant;
anything else just disarms it. One transaction per batch; the relay is woken after it commits.

Shops with the ``confirm_with_admin_api`` rule: before the batch is locked, each due variant of theirs is
read from the Admin API (query (b), a few at a time, each with a deadline), outside any transaction. In
the batch, the levels read are saved as snapshots (source ``confirmation``, under the same stale rule) and
Shopify's total is the ``Confirmation`` that ``transitions.expire`` weighs. A restock it vetoes is logged,
audited (``restock.not_confirmed``, with both totals) and disarmed; the corrected total goes out as
``stock.changed`` like any other change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from restock_common import telemetry
from restock_common.rules import Rules
from restock_detector import transitions
from restock_detector.admin_api import AdminApiError
from restock_detector.admin_graphql import Level, ResponseError
from restock_detector.handler import Clock
from restock_detector.observation import stock_changed
from restock_detector.ports import (
    AdminApi,
    ArmedStore,
    ArmedVariant,
    AuditEntry,
    ConfirmationTarget,
    LevelObservation,
    OutboxSignal,
    UnitOfWork,
)
from restock_detector.restocks import record_restock

log = logging.getLogger(__name__)

BATCH_SIZE = 100
TICK_SECONDS = 1.0
CONFIRM_TIMEOUT_SECONDS = 5.0
CONFIRM_CONCURRENCY = 4


@dataclass(frozen=True)
class ConfirmationRead:
    """What the Admin API said of one armed variant: its levels, or ``reachable=False``."""

    reachable: bool
    levels: tuple[LevelObservation, ...] = ()

    def confirmation(self, rules: Rules) -> transitions.Confirmation:
        if not self.reachable:
            return transitions.Confirmation(None)
        excluded = set(rules.excluded_location_ids)
        return transitions.Confirmation(
            sum(lvl.available for lvl in self.levels if lvl.location_id not in excluded)
        )


class ArmedRestockScheduler:
    """The scheduler loop (see the module's rules): started in the app's lifespan, stopped at its shutdown."""

    def __init__(
        self,
        store: ArmedStore,
        signal: OutboxSignal,
        clock: Clock,
        tick_seconds: float = TICK_SECONDS,
        batch_size: int = BATCH_SIZE,
        admin: AdminApi | None = None,
    ) -> None:
        self.store = store
        self.signal = signal
        self.clock = clock
        self.tick_seconds = tick_seconds
        self.batch_size = batch_size
        self.admin = admin
        self._stopped = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="armed-restock-scheduler")

    async def stop(self) -> None:
        """Finish the current batch, then return."""
        self._stopped.set()
        if self._task is not None:
            await self._task

    async def run(self) -> None:
        while not self._stopped.is_set():
            try:
                settled = await self.tick()
            except Exception:
                log.exception("armed-restock scheduler failed; retrying")
                settled = 0
            if settled < self.batch_size:  # a full batch: more may be due, go on at once
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopped.wait(), self.tick_seconds)

    async def tick(self) -> int:
        """Settle one batch of due armed variants; returns how many were settled."""
        now = self.clock()
        reads = await self._confirmation_reads(now)
        enqueued = False
        async with self.store.claim_due(now, self.batch_size) as batch:
            for armed in batch.variants:
                read = reads.get((armed.tenant.id, armed.variant.variant_id))
                enqueued |= await self._settle(batch.work, armed, now, read)
        if enqueued:
            self.signal.notify()
        return len(batch.variants)

    async def _confirmation_reads(self, now: datetime) -> dict[tuple[int, int], ConfirmationRead]:
        if self.admin is None:
            return {}
        targets = await self.store.due_confirmations(now, self.batch_size)
        slots = asyncio.Semaphore(CONFIRM_CONCURRENCY)
        reads = await asyncio.gather(*(self._read(target, slots) for target in targets))
        return {(t.shop.tenant_id, t.variant_id): read for t, read in zip(targets, reads, strict=True)}

    async def _read(self, target: ConfirmationTarget, slots: asyncio.Semaphore) -> ConfirmationRead:
        assert self.admin is not None
        context = {"tenant_id": target.shop.tenant_id, "variant_id": target.variant_id}
        try:
            async with slots, asyncio.timeout(CONFIRM_TIMEOUT_SECONDS):
                variant = await self.admin.variant_levels(target.shop, target.variant_id)
        except (AdminApiError, ResponseError, TimeoutError) as error:
            failure = error.failure.value if isinstance(error, AdminApiError) else type(error).__name__
            log.warning("confirmation read failed", extra={**context, "failure": failure})
            return ConfirmationRead(reachable=False)
        if variant is None:  # deleted in Shopify: nothing to sell
            return ConfirmationRead(reachable=True)
        return ConfirmationRead(True, _levels(variant.levels))

    async def _settle(
        self, work: UnitOfWork, armed: ArmedVariant, now: datetime, read: ConfirmationRead | None
    ) -> bool:
        """Settle one armed variant; True when something was enqueued."""
        tenant, variant = armed.tenant, armed.variant
        rules = await work.rules_of(tenant.id)
        excluded = rules.excluded_location_ids
        ours = total = await work.variant_total(tenant.id, variant.variant_id, excluded)
        confirmation = read.confirmation(rules) if read is not None else None
        decision = transitions.expire(armed.armed_at, ours, armed.last_restock_at, now, rules, confirmation)
        if read is not None and read.reachable:
            # Shopify's levels replace ours (the stale rule still applies; the variant's row is locked), and
            # its total is remembered: a location it no longer reports must not keep a phantom alive.
            for level in read.levels:
                await work.save_snapshot(tenant.id, level)
            total = confirmation.available if confirmation and confirmation.available is not None else total
        armed_at: datetime | None = None
        if isinstance(decision, transitions.NoRestock):
            armed_at = armed.armed_at  # not due under the shop's current rules, or awaiting its read
        elif isinstance(decision, transitions.Restock):
            at = transitions.due_at(armed.armed_at, rules)
            await record_restock(work, tenant, variant, decision.available, at, rules)
        else:
            await self._disarmed(work, armed, decision, ours, confirmation)
        previous = total if armed.available is None else armed.available
        change = stock_changed(
            tenant, variant.variant_id, previous, total, now, "sync" if read else "webhook"
        )
        enqueued = await work.save_variant(tenant.id, variant.variant_id, total, now, armed_at, change)
        return isinstance(decision, transitions.Restock) or enqueued

    async def _disarmed(
        self,
        work: UnitOfWork,
        armed: ArmedVariant,
        decision: transitions.Disarm,
        total: int,
        confirmation: transitions.Confirmation | None,
    ) -> None:
        context = {
            "tenant_id": armed.tenant.id,
            "variant_id": armed.variant.variant_id,
            "reason": decision.reason.value,
        }
        if decision.reason is not transitions.Reason.NOT_CONFIRMED or confirmation is None:
            log.info("armed restock disarmed", extra=context)
            return
        totals = {"detector_total": total, "admin_api_total": confirmation.available}
        log.warning("restock not confirmed by the Admin API", extra={**context, **totals})
        await work.audit(
            AuditEntry(
                armed.tenant.id,
                "restock.not_confirmed",
                "variant",
                [armed.variant.variant_id],
                {**totals, "armed_at": armed.armed_at.isoformat()},
                telemetry.current_trace_id(),
            )
        )


def _levels(levels: Sequence[Level]) -> tuple[LevelObservation, ...]:
    return tuple(
        LevelObservation(
            lvl.inventory_item_id, lvl.location_id, lvl.available, lvl.updated_at, "confirmation"
        )
        for lvl in levels
    )
