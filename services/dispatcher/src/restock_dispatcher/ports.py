"""What the dispatcher's handler needs from the outside world, as small Protocols."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from restock_common.messages import Channel, JobBatch


@dataclass(frozen=True)
class Frozen:
    """The event's targets are frozen (now or by an earlier delivery, which then counts nothing new):
    ``created`` pending jobs and ``suppressed`` duplicate-suppressed rows were written by this call."""

    restock_event_id: int
    created: int
    suppressed: int = 0


@dataclass(frozen=True)
class EventMissing:
    """No restock event with this id: the message can never be processed."""

    restock_event_id: int


@dataclass(frozen=True)
class Cursor:
    """A keyset position in a FIFO scan of jobs: strictly after (priority_at, id)."""

    priority_at: datetime
    job_id: int


@dataclass(frozen=True)
class Page:
    """Up to one batch of pending job ids, FIFO, and where the next page starts."""

    job_ids: list[int]
    next: Cursor | None


class TargetStore(Protocol):
    """The notification jobs of restock events, in PostgreSQL."""

    async def freeze(self, restock_event_id: int, traceparent: str | None) -> Frozen | EventMissing:
        """Give every live confirmed subscription of the event's variant one row, in one transaction: a
        pending job, or a duplicate-suppressed row naming the job that already holds its notification
        key; then mark the event frozen. Idempotent: a second call writes nothing."""
        ...

    async def pending_page(
        self, restock_event_id: int, channel: Channel, after: Cursor | None, limit: int
    ) -> Page:
        """The next ``limit`` pending jobs of the event on ``channel`` after ``after``, FIFO."""
        ...

    async def mark_enqueued(self, job_ids: list[int]) -> None:
        """Record that these jobs are on the broker (the batch was confirmed)."""
        ...


class SweepStore(Protocol):
    """Pending jobs whose freeze committed but whose batch never reached the broker."""

    async def sweep(
        self,
        channel: Channel,
        older_than_seconds: float,
        limit: int,
        publish: Callable[[list[int]], Awaitable[None]],
    ) -> int:
        """In one transaction: lock (skipping rows another sweeper holds) up to ``limit`` pending,
        never-enqueued jobs on ``channel`` created more than ``older_than_seconds`` ago, FIFO; ``publish``
        their ids; mark them enqueued. Returns how many were published."""
        ...


class FastDedup(Protocol):
    """Redis' memory of which notification keys were claimed, and by which restock event. A hint that
    may lose everything at any time (see ``restock_dispatcher.dedup``)."""

    async def claim(self, keys: list[str], owner: int, ttl_seconds: int) -> list[bytes | str | None] | None:
        """``SET NX`` every key to ``owner`` in one round trip; the previous value of each key (``None``:
        claimed now). ``None`` when Redis cannot be reached: the caller falls back to PostgreSQL alone."""
        ...


class BatchPublisher(Protocol):
    """Puts job batches on the broker and returns once the broker confirmed them."""

    async def publish(self, batch: JobBatch, message_id: str) -> None:
        """Publish one batch to its channel's routing key, with a publisher confirm."""
        ...
