"""The outbox relay: publishes committed outbox rows to the broker, in order, and marks them published.

A row is marked only after the broker confirmed it, in the transaction that locked it, so a crash between
the two publishes it again (at least once; consumers deduplicate by ``message_id`` and the notification
key). Relays take turns, one batch at a time (``OutboxStore.claim``), so any number of detector replicas
relay side by side without two of them publishing rows of one variant out of order.

Within a batch, up to ``window`` publishes await their confirm at once (``RESTOCK_OUTBOX_PUBLISH_WINDOW``;
one by default, ADR 22: this relay shares the webhooks' event loop, and a faster relay does its work inside
a burst of restocks instead of after it), but never two rows of one ordering key: a row waits for the
confirm of the previous row of its key. So a failure can never let a later message of a
variant reach the broker before an earlier one; after a failure no further row starts, the rows already
out are awaited, those confirmed are marked, and the rest stay for the next round, after a backoff.

A batch holds its rows' locks, so it is bounded in time: the relay starts no publish after half of
``hold_limit_seconds`` (``RESTOCK_OUTBOX_HOLD_LIMIT_SECONDS``; the rest waits for the next batch, nothing is
counted as failed), and its last publish ends within ``OUTBOX_PUBLISH_TIMEOUT_SECONDS`` of that. PostgreSQL
ends a session that stays idle in a batch's transaction for the whole limit (``PostgresOutboxStore.claim``):
a relay frozen mid-batch (a stopped process whose connection stays open) can then hold every relay's turn
for that long at most, and what it published without marking is published again by the next (ADR 22).

The relay wakes when a webhook committed a row (then lingers ``LINGER_SECONDS``, so that under load one
claim takes the rows of several webhooks instead of four round trips each), and polls otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from restock_common.faults import FaultPoints
from restock_common.settings import OUTBOX_PUBLISH_TIMEOUT_SECONDS
from restock_detector.ports import OutboxBatch, OutboxRow, OutboxStore, Publisher

log = logging.getLogger(__name__)

BATCH_SIZE = 100
MAX_BACKOFF_SECONDS = 30.0
LINGER_SECONDS = 0.02


class OutboxWakeup:
    """``ports.OutboxSignal`` over an ``asyncio.Event`` shared with the relay."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def notify(self) -> None:
        self.event.set()


class OutboxRelay:
    """The relay loop (see the module's rules): started in the app's lifespan, stopped at its shutdown."""

    def __init__(
        self,
        outbox: OutboxStore,
        publisher: Publisher,
        faults: FaultPoints,
        wakeup: OutboxWakeup,
        poll_seconds: float,
        batch_size: int = BATCH_SIZE,
        *,
        window: int,
        hold_limit_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``window`` and ``hold_limit_seconds``: ``Settings.outbox_publish_window`` and
        ``Settings.outbox_hold_limit_seconds``, where their defaults and reasons live."""
        if window < 1:
            raise ValueError("the publish window holds at least one message")
        if hold_limit_seconds < 2 * OUTBOX_PUBLISH_TIMEOUT_SECONDS:
            # Half the limit to start publishes, then one publish's timeout for the last of them.
            raise ValueError(f"a batch's hold limit is at least {2 * OUTBOX_PUBLISH_TIMEOUT_SECONDS:.0f} s")
        self.outbox = outbox
        self.publisher = publisher
        self.faults = faults
        self.wakeup = wakeup
        self.poll_seconds = poll_seconds
        self.batch_size = batch_size
        self.window = window
        self.publish_budget_seconds = hold_limit_seconds / 2
        self.clock = clock
        self._stopping = False
        self._stopped = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def is_running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="outbox-relay")

    async def stop(self) -> None:
        """Finish the current batch, then return."""
        self._stopping = True
        self._stopped.set()
        self.wakeup.event.set()
        if self._task is not None:
            await self._task

    async def run(self) -> None:
        backoff = self.poll_seconds
        while not self._stopping:
            self.wakeup.event.clear()
            try:
                published, complete = await self.relay_once()
            except Exception:
                log.exception("outbox relay failed; retrying", extra={"backoff_seconds": backoff})
                complete = False
            if not complete:
                # Only a stop ends a backoff early: new rows must not hammer a broker that is down.
                await self._pause(self._stopped, backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                continue
            backoff = self.poll_seconds
            if published < self.batch_size:
                await self._pause(self.wakeup.event, self.poll_seconds)
                await self._pause(self._stopped, LINGER_SECONDS)

    async def relay_once(self) -> tuple[int, bool]:
        """Publish one batch; returns (rows published, whether no publish failed). A batch its time budget
        cut short is not a failure: its unstarted rows go with the next batch, without a backoff."""
        async with self.outbox.claim(self.batch_size) as batch:
            published, failed = await self._publish(batch)
            return published, not failed

    async def _publish(self, batch: OutboxBatch) -> tuple[int, bool]:
        """Publish the batch's rows in id order with up to ``window`` confirms outstanding, but never two
        rows of one ordering key at once: a row waits for the confirm of the previous row of its key, so a
        failure can never let a later message of a variant reach the broker before an earlier one. After a
        failure, or once the batch's publish budget is spent, no further row starts; the rows already out
        are awaited and those confirmed are marked. Returns (rows confirmed, whether a publish failed)."""
        confirmed: list[int] = []
        failed: list[int] = []
        window = asyncio.Semaphore(self.window)
        last_of_key: dict[str, asyncio.Task[None]] = {}
        out: set[asyncio.Task[None]] = set()
        started_at = self.clock()
        try:
            for started, row in enumerate(batch.rows):
                previous = last_of_key.get(row.ordering_key) if row.ordering_key is not None else None
                if previous is not None:
                    await asyncio.wait([previous])
                await window.acquire()
                if failed:
                    window.release()
                    break
                if self.clock() - started_at > self.publish_budget_seconds:
                    window.release()
                    log.warning(
                        "outbox batch out of time; its other rows go with the next batch",
                        extra={"started": started, "left": len(batch.rows) - started},
                    )
                    break
                task = asyncio.create_task(self._publish_row(row, window, confirmed, failed))
                out.add(task)
                task.add_done_callback(out.discard)
                if row.ordering_key is not None:
                    last_of_key[row.ordering_key] = task
            if out:
                await asyncio.wait(set(out))
        finally:
            for task in out:
                task.cancel()
            if out:
                await asyncio.wait(set(out))
            for row_id in failed:
                await batch.note_failure(row_id)
            # One statement for the batch's confirmed rows, in the batch's transaction.
            if confirmed:
                await batch.mark_published(confirmed)
        return len(confirmed), bool(failed)

    async def _publish_row(
        self, row: OutboxRow, window: asyncio.Semaphore, confirmed: list[int], failed: list[int]
    ) -> None:
        try:
            async with asyncio.timeout(OUTBOX_PUBLISH_TIMEOUT_SECONDS):
                await self.publisher.publish_raw(
                    row.payload, row.routing_key, message_id=row.message_id, traceparent=row.traceparent
                )
        except Exception as error:
            log.warning(
                "outbox publish failed; row kept",
                extra={"outbox_id": row.id, "message_id": row.message_id, "error": repr(error)[:200]},
            )
            failed.append(row.id)
            return
        finally:
            window.release()
        self.faults.reach("after_confirm_before_outbox_mark")
        confirmed.append(row.id)

    async def _pause(self, event: asyncio.Event, seconds: float) -> None:
        """Sleep until ``event`` is set (stop sets both) or ``seconds`` pass."""
        if self._stopping:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)
