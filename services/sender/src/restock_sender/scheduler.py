"""The sender's scheduler: a loop beside the consumer that keeps every job of its channel moving.

Each tick, for this process's channel:

1. **Retries**: due ``failed-temporary`` jobs go back to ``pending`` (``delivery.TRANSITIONS``:
   ``(failed-temporary, retry-due) -> pending``), committed, then published as ``JobBatch``es, FIFO by
   priority, and marked enqueued once the broker confirmed. Every send still starts with the one claim.
2. **Unpublished jobs**: ``pending`` jobs never published are published: a replay's at once, the others
   (a retry whose publish failed or whose process died before it; a dispatcher that died between its
   freeze and its publish) once untouched for ``grace_seconds``, so a live dispatcher is not raced.
   Deferred jobs (admission held them back: a rate limit, a send window, a paused channel) are published
   again once their ``next_attempt_at`` is due, FIFO by priority. Steps 1 and 2 wait while the channel
   is paused.
3. **Lease reaper**: ``processing`` jobs past their lease whose provider call was never marked (ADR 21)
   go back to ``pending`` and are published: nothing was sent. Marked ones get the channel's
   ``delivery.reaped_state`` (email: ``indeterminate``, never re-sent automatically); SMS jobs are resolved
   by asking Twilio (``restock_sender.lease``): ``sent`` when it has the message, else back to
   ``pending`` and published.

Publishing a job twice is harmless (the claim is a compare-and-set); losing one is not, so every step
publishes before it commits. A tick that fails is logged and retried at the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from restock_common.db.engine import isolated
from restock_common.messages import Channel
from restock_sender.delivery import reaped_state
from restock_sender.lease import SmsLeaseReaper
from restock_sender.ports import JobPublisher, ScheduleStore

log = logging.getLogger(__name__)

# Batches per step and tick: a large backlog drains over several ticks without starving the other steps.
MAX_BATCHES_PER_TICK = 10

_Step = Callable[[], Awaitable[list[int]]]


@dataclass(frozen=True)
class TickReport:
    """What one tick did (counts of jobs)."""

    requeued: int = 0
    published: int = 0
    reaped: int = 0


class Scheduler:
    """Retries, unpublished jobs and expired leases of one channel, every ``interval`` seconds."""

    def __init__(
        self,
        store: ScheduleStore,
        publisher: JobPublisher,
        channel: Channel,
        *,
        batch_size: int,
        grace_seconds: float,
        interval: float,
        paused: Callable[[], bool] | None = None,
        lease_reaper: SmsLeaseReaper | None = None,
    ) -> None:
        self.store = store
        self.lease_reaper = lease_reaper  # channels whose provider can be asked (sms, ADR 15)
        # A paused channel (ADR 16) publishes nothing: its due jobs wait in PostgreSQL until it resumes.
        self.paused = paused or (lambda: False)
        self.publisher = publisher
        self.channel = channel
        self.batch_size = batch_size
        self.grace_seconds = grace_seconds
        self.interval = interval
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _publish(self, job_ids: list[int]) -> None:
        await self.publisher.publish(self.channel, job_ids)

    async def _send_out(self, job_ids: list[int]) -> None:
        """Publish jobs already committed ``pending`` and unpublished, then mark them enqueued once the
        broker confirmed. Should the publish fail (or the process die), or the channel be paused, they wait
        pending and unpublished for step 2."""
        if job_ids and not self.paused():
            await self._publish(job_ids)
            await self.store.mark_enqueued(job_ids)

    async def _requeue(self) -> list[int]:
        job_ids = await self.store.requeue_due(self.channel, self.batch_size)
        await self._send_out(job_ids)
        return job_ids

    async def _resend_unstarted(self) -> list[int]:
        """Expired claims that never reached the provider call (ADR 21) go back to pending and out again."""
        job_ids = await self.store.reap_unstarted(self.channel, self.batch_size)
        await self._send_out(job_ids)
        return job_ids

    async def tick(self) -> TickReport:
        """One pass of the three steps."""
        requeued = published = 0
        if not self.paused():
            requeued = await self._drain(self._requeue)
            published = await self._drain(
                lambda: self.store.publish_unqueued(
                    self.channel, self.batch_size, self.grace_seconds, self._publish
                )
            )
        reaped = await self._drain(self._resend_unstarted)
        state = reaped_state(self.channel)
        if state is not None:
            reaped += await self._drain(lambda: self.store.reap_expired(self.channel, state, self.batch_size))
        elif self.lease_reaper is not None:
            reaped += await self._resolve_leases(self.lease_reaper)
        report = TickReport(requeued, published, reaped)
        if report != TickReport():
            log.info("scheduler tick", extra={"channel": self.channel, **report.__dict__})
        return report

    async def _resolve_leases(self, reaper: SmsLeaseReaper) -> int:
        """One pass (a job Twilio could not be asked about is asked again next tick, not in a loop); the jobs
        sent back to pending are published like retries (or by step 2 when this publish fails)."""
        resolution = await reaper.reap(self.batch_size)
        await self._send_out(resolution.resend)
        return len(resolution.sent) + len(resolution.resend)

    async def _drain(self, step: _Step) -> int:
        total = 0
        for _ in range(MAX_BATCHES_PER_TICK):
            done = len(await step())
            total += done
            if done < self.batch_size:
                break
        return total

    async def run(self) -> None:
        """Tick until ``stop``; a failed tick is logged, never fatal (PostgreSQL or the broker may be back
        at the next one)."""
        while not self._stopping.is_set():
            try:
                await isolated(self.tick())
            except Exception:
                log.exception("scheduler tick failed", extra={"channel": self.channel})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval)

    def start(self) -> None:
        """Run in the background (the sender's lifespan)."""
        self._task = asyncio.create_task(self.run(), name=f"scheduler-{self.channel}")

    async def stop(self) -> None:
        """Let the current tick finish, then end the loop."""
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None
