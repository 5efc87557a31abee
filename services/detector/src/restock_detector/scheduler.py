"""The armed-restock scheduler: fires (or disarms) armed variants whose debounce has ended.

About once a second it locks the due armed ``variant_states`` rows (``FOR UPDATE SKIP LOCKED``: a
webhook deciding a variant holds its row, and settles an ended debounce itself; replicas share the
work), re-reads each variant's total from the snapshots and asks ``transitions.expire``: a restock is
recorded by the same code as an immediate one (``restocks.record_restock``) and disarms the variant;
anything else just disarms it. One transaction per batch; the relay is woken after it commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime

from restock_detector import transitions
from restock_detector.handler import Clock
from restock_detector.ports import ArmedStore, ArmedVariant, OutboxSignal, UnitOfWork
from restock_detector.restocks import record_restock

log = logging.getLogger(__name__)

BATCH_SIZE = 100
TICK_SECONDS = 1.0


class ArmedRestockScheduler:
    """The scheduler loop (see the module's rules): started in the app's lifespan, stopped at its shutdown."""

    def __init__(
        self,
        store: ArmedStore,
        signal: OutboxSignal,
        clock: Clock,
        tick_seconds: float = TICK_SECONDS,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self.store = store
        self.signal = signal
        self.clock = clock
        self.tick_seconds = tick_seconds
        self.batch_size = batch_size
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
        fired = 0
        async with self.store.claim_due(now, self.batch_size) as batch:
            for armed in batch.variants:
                fired += await self._settle(batch.work, armed, now)
        if fired:
            self.signal.notify()
        return len(batch.variants)

    async def _settle(self, work: UnitOfWork, armed: ArmedVariant, now: datetime) -> int:
        tenant, variant = armed.tenant, armed.variant
        rules = await work.rules_of(tenant.id)
        total = await work.variant_total(tenant.id, variant.variant_id, rules.excluded_location_ids)
        decision = transitions.expire(armed.armed_at, total, armed.last_restock_at, now, rules)
        if isinstance(decision, transitions.NoRestock):
            return 0  # not due under the shop's current rules: left armed
        if isinstance(decision, transitions.Restock):
            at = transitions.due_at(armed.armed_at, rules)
            await record_restock(work, tenant, variant, decision.available, at, rules)
        else:
            log.info(
                "armed restock disarmed",
                extra={
                    "tenant_id": tenant.id,
                    "variant_id": variant.variant_id,
                    "reason": decision.reason.value,
                },
            )
        await work.save_variant(tenant.id, variant.variant_id, total, now, None)
        return int(isinstance(decision, transitions.Restock))
