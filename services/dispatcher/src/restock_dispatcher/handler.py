"""One ``RestockDetected``: freeze its targets, then publish its pending jobs in FIFO batches per channel.

The freeze commits before anything is published, so a crash between the two loses nothing: the
redelivered event freezes nothing new (a frozen event is never frozen again) and publishes every job still
pending, and should the event never come back the publish sweeper (``sweeper``) publishes its jobs. A job
published twice is harmless because the sender's claim is a compare-and-set. The message is acked only
after every batch was confirmed by the broker.
"""

from __future__ import annotations

import logging

from restock_common.broker import Outcome
from restock_common.faults import FaultPoints
from restock_common.messages import CHANNELS, Channel, JobBatch, RestockDetected
from restock_common.telemetry import current_traceparent
from restock_dispatcher.ports import BatchPublisher, Cursor, EventMissing, TargetStore

log = logging.getLogger(__name__)


async def publish_batch(publisher: BatchPublisher, channel: Channel, job_ids: list[int], origin: str) -> None:
    """Publish one batch of job ids; its message id (``origin:channel:first id``) is stable per batch."""
    await publisher.publish(JobBatch(channel=channel, job_ids=job_ids), f"{origin}:{channel}:{job_ids[0]}")


class RestockHandler:
    """The consumer handler of ``restock.detected``."""

    def __init__(
        self,
        store: TargetStore,
        publisher: BatchPublisher,
        faults: FaultPoints,
        batch_size: int,
        channels: tuple[Channel, ...] = CHANNELS,
    ) -> None:
        self.store = store
        self.publisher = publisher
        self.faults = faults
        self.batch_size = batch_size
        self.channels = channels

    async def __call__(self, event: RestockDetected) -> Outcome:
        frozen = await self.store.freeze(event.restock_event_id, current_traceparent())
        if isinstance(frozen, EventMissing):
            log.error("restock event not found", extra={"restock_event_id": event.restock_event_id})
            return Outcome.POISON
        log.info(
            "targets frozen",
            extra={
                "restock_event_id": frozen.restock_event_id,
                "jobs_created": frozen.created,
                "duplicates_suppressed": frozen.suppressed,
            },
        )
        self.faults.reach("after_commit_before_publish")
        for channel in self.channels:
            published = await self._publish_pending(event.restock_event_id, channel)
            if published:
                log.info(
                    "jobs published",
                    extra={"restock_event_id": event.restock_event_id, "channel": channel, "jobs": published},
                )
        return Outcome.ACK

    async def _publish_pending(self, restock_event_id: int, channel: Channel) -> int:
        """Stream the pending jobs page by page (keyset), one confirmed batch per page."""
        published = 0
        after: Cursor | None = None
        while True:
            page = await self.store.pending_page(restock_event_id, channel, after, self.batch_size)
            if page.job_ids:
                await publish_batch(self.publisher, channel, page.job_ids, f"jobs:{restock_event_id}")
                await self.store.mark_enqueued(page.job_ids)
                published += len(page.job_ids)
            if page.next is None:
                return published
            after = page.next
