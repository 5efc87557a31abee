"""One ``RestockDetected``: freeze its targets, then publish the variant's unpublished jobs in FIFO batches
per channel.

The freeze commits before anything is published, so a crash between the two loses nothing: the
redelivered event freezes nothing new (a frozen event is never frozen again) and publishes every job still
unpublished, and should the event never come back the publish sweeper (``sweeper``) publishes its jobs.
The jobs a freeze makes pending are published by the event's cursor (ADR 24): a page at a time with the
event's row locked, the cursor moved in the page's transaction after its confirms. Jobs made pending one
by one later (a wave, a released line) are published with their rows locked and marked enqueued in the
same transaction. Either way the handler, the wave timer and the sweeper never publish one job twice (a
commit lost after the confirm aside, which the sender's compare-and-set claim makes harmless). The message
is acked only after every batch was confirmed by the broker.
"""

from __future__ import annotations

import asyncio
import logging

from restock_common.broker import Outcome
from restock_common.faults import FaultPoints
from restock_common.messages import CHANNELS, Channel, JobBatch, RestockDetected
from restock_common.telemetry import current_traceparent
from restock_dispatcher.ports import (
    BatchPublisher,
    Cursor,
    EventMissing,
    Publish,
    SweepStore,
    TargetStore,
)

log = logging.getLogger(__name__)

FAULT_AFTER_COMMIT = "after_commit_before_publish"
# The broker confirmed a page's batches; the transaction marking them enqueued has not committed.
FAULT_AFTER_CONFIRM = "after_confirm_before_commit"
# Batches locked, published and marked per transaction: their confirms overlap, and the database sees one
# lock and one update per page instead of per batch (bench/dispatch.py).
BATCHES_PER_PAGE = 50


async def publish_batch(publisher: BatchPublisher, channel: Channel, job_ids: list[int], origin: str) -> None:
    """Publish one batch of job ids; its message id (``origin:channel:first id``) is stable per batch."""
    await publisher.publish(JobBatch(channel=channel, job_ids=job_ids), f"{origin}:{channel}:{job_ids[0]}")


async def publish_batches(
    publisher: BatchPublisher, channel: Channel, job_ids: list[int], batch_size: int, origin: str
) -> None:
    """``job_ids`` (FIFO) in batches, started in order, so they reach the channel (and the queue) in that
    order; the confirms are awaited together."""
    batches = [job_ids[start : start + batch_size] for start in range(0, len(job_ids), batch_size)]
    await asyncio.gather(*(publish_batch(publisher, channel, ids, origin) for ids in batches))


async def publish_frozen_event(
    store: TargetStore | SweepStore,
    publisher: BatchPublisher,
    event_id: int,
    batch_size: int,
    origin: str,
    faults: FaultPoints,
) -> int:
    """Every job the event's freeze made pending and its cursor has not published yet; how many."""

    async def send(by_channel: dict[Channel, list[int]]) -> None:
        await asyncio.gather(
            *(
                publish_batches(publisher, channel, ids, batch_size, origin)
                for channel, ids in by_channel.items()
            )
        )
        faults.reach(FAULT_AFTER_CONFIRM)

    published = 0
    while (page := await store.publish_frozen(event_id, batch_size * BATCHES_PER_PAGE, send)) is not None:
        published += page
    return published


class VariantPublisher:
    """Publishes the pending jobs that have no message yet of a variant's restock window (the events whose
    jobs form its line), per event and channel, FIFO, in batches."""

    def __init__(
        self,
        store: TargetStore,
        publisher: BatchPublisher,
        batch_size: int,
        channels: tuple[Channel, ...] = CHANNELS,
        faults: FaultPoints | None = None,
    ) -> None:
        self.store = store
        self.publisher = publisher
        self.batch_size = batch_size
        self.channels = channels
        self.faults = faults or FaultPoints(None)

    async def publish(self, tenant_id: int, variant_id: int, window: int, origin: str) -> int:
        """Every unpublished job of the variant's window now; how many were published."""
        total = 0
        for event_id in await self.store.window_events(tenant_id, variant_id, window):
            total += await self._publish_event(tenant_id, variant_id, event_id, origin)
        return total

    async def _publish_event(self, tenant_id: int, variant_id: int, event_id: int, origin: str) -> int:
        where = {"tenant_id": tenant_id, "variant_id": variant_id, "restock_event_id": event_id}
        total = await publish_frozen_event(
            self.store, self.publisher, event_id, self.batch_size, origin, self.faults
        )
        if total:
            log.info("jobs published", extra={**where, "jobs": total, "by": "event cursor"})
        for channel in self.channels:
            published = await self._publish_channel(event_id, channel, origin)
            if published:
                log.info("jobs published", extra={**where, "channel": channel, "jobs": published})
            total += published
        return total

    async def _publish_channel(self, event_id: int, channel: Channel, origin: str) -> int:
        published = 0
        after: Cursor | None = None
        send = self._sender(channel, origin)
        while True:
            page = await self.store.publish_unpublished(
                event_id, channel, after, self.batch_size * BATCHES_PER_PAGE, send
            )
            published += len(page.job_ids)
            if page.next is None:
                return published
            after = page.next

    def _sender(self, channel: Channel, origin: str) -> Publish:
        async def send(job_ids: list[int]) -> None:
            await publish_batches(self.publisher, channel, job_ids, self.batch_size, origin)
            self.faults.reach(FAULT_AFTER_CONFIRM)

        return send


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
        self.faults = faults
        self.variant_publisher = VariantPublisher(store, publisher, batch_size, channels, faults)

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
                "wave_released": frozen.released,
            },
        )
        self.faults.reach(FAULT_AFTER_COMMIT)
        origin = f"jobs:{frozen.restock_event_id}"
        await self.variant_publisher.publish(frozen.tenant_id, frozen.variant_id, frozen.window, origin)
        return Outcome.ACK
