"""The wave timer: a lifespan task that releases the waves whose time has come.

Every ``tick`` it asks the wave store for the lines whose ``next_wave_at`` has passed (each re-planned with
its row locked, ``SKIP LOCKED`` across replicas), then publishes what they released. A crash between the
release's commit and the publish leaves pending jobs with no message: the next tick's publish of that
variant or the publish sweeper sends them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from restock_common.db.engine import isolated
from restock_common.faults import FaultPoints
from restock_dispatcher.handler import VariantPublisher
from restock_dispatcher.ports import WaveStore

log = logging.getLogger(__name__)

FAULT_AFTER_RELEASE = "after_wave_release_before_publish"
DUE_PER_TICK = 50


class WaveTimer:
    """``run`` until ``stop`` is set; a tick in progress finishes first."""

    def __init__(
        self, store: WaveStore, publisher: VariantPublisher, faults: FaultPoints, *, tick_seconds: float
    ) -> None:
        self.store = store
        self.publisher = publisher
        self.faults = faults
        self.tick_seconds = tick_seconds

    async def tick(self) -> int:
        """Release every wave due now; how many jobs were released."""
        total = 0
        while True:
            due = await self.store.release_due(DUE_PER_TICK)
            for line in due:
                if line.released:
                    log.info(
                        "wave released",
                        extra={
                            "tenant_id": line.tenant_id,
                            "variant_id": line.variant_id,
                            "wave": line.decision.wave,
                            "released": line.released,
                        },
                    )
                self.faults.reach(FAULT_AFTER_RELEASE)
                origin = f"wave:{line.variant_id}"
                await self.publisher.publish(line.tenant_id, line.variant_id, line.window, origin)
                total += line.released
            if len(due) < DUE_PER_TICK:
                return total

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await isolated(self.tick())
            except Exception:  # the next tick retries; a broken tick must not end the task
                log.exception("wave tick failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.tick_seconds)
