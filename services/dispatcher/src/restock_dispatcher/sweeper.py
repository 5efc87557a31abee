"""The publish sweeper: pending jobs frozen but never published get published, FIFO, in batches.

A dispatcher that dies between its freeze commit and its last confirmed batch leaves pending jobs with no
``enqueued_at``; the redelivered event publishes them, but an event that never comes back (dead-lettered,
purged) would strand them. Every ``interval`` the sweeper takes such jobs older than ``after`` seconds
(older than any live publish, so it does not race the handler) and publishes them with the handler's own
batch code. Rows are locked with ``SKIP LOCKED``, so replicas sweep disjoint batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from restock_common.db.engine import isolated
from restock_common.messages import CHANNELS, Channel
from restock_dispatcher.handler import publish_batch
from restock_dispatcher.ports import BatchPublisher, SweepStore

log = logging.getLogger(__name__)


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
