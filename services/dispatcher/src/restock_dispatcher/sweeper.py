"""The publish sweeper: pending jobs frozen but never published get published, FIFO, in batches.

A dispatcher that dies between its freeze commit and its last confirmed batch leaves a frozen event whose
publish cursor never reached its end (ADR 24), or pending jobs with no ``enqueued_at`` (a wave's release);
the redelivered event publishes them, but an event that never comes back (dead-lettered, purged) would
strand them. Every ``interval`` the sweeper takes such events and jobs older than ``after`` seconds (older
than any live publish, so it does not race the handler) and publishes them with the handler's own batch
code. An event is carried on from its cursor under its row lock, so a sweeper and a late handler take turns
by page; job rows are locked with ``SKIP LOCKED``, so replicas sweep disjoint batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from restock_common.db.engine import isolated
from restock_common.faults import FaultPoints
from restock_common.messages import CHANNELS, Channel
from restock_dispatcher.handler import publish_batch, publish_frozen_event
from restock_dispatcher.ports import BatchPublisher, SweepStore

log = logging.getLogger(__name__)

STALE_EVENTS_PER_READ = 20


class PublishSweeper:
    """A lifespan task: ``run`` until ``stop`` is set; a sweep in progress finishes first."""

    def __init__(
        self,
        store: SweepStore,
        publisher: BatchPublisher,
        *,
        after_seconds: float,
        interval_seconds: float,
        batch_size: int,
        channels: tuple[Channel, ...] = CHANNELS,
    ) -> None:
        self.store = store
        self.publisher = publisher
        self.after_seconds = after_seconds
        self.interval_seconds = interval_seconds
        self.batch_size = batch_size
        self.channels = channels

    async def sweep_once(self) -> int:
        """Publish every stale job there is now; how many were published."""
        total = 0
        while events := await self.store.stale_events(self.after_seconds, STALE_EVENTS_PER_READ):
            for event_id in events:
                total += await publish_frozen_event(
                    self.store, self.publisher, event_id, self.batch_size, "jobs:sweep", FaultPoints(None)
                )
        for channel in self.channels:
            while True:
                published = await self.store.sweep(
                    channel, self.after_seconds, self.batch_size, self._publisher_for(channel)
                )
                total += published
                if published < self.batch_size:
                    break
        if total:
            log.warning("unpublished jobs swept", extra={"jobs": total})
        return total

    def _publisher_for(self, channel: Channel) -> Callable[[list[int]], Awaitable[None]]:
        async def publish(job_ids: list[int]) -> None:
            await publish_batch(self.publisher, channel, job_ids, "jobs:sweep")

        return publish

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await isolated(self.sweep_once())
            except Exception:  # the next sweep retries; a broken sweep must not end the task
                log.exception("publish sweep failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_seconds)
