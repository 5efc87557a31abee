"""What the dispatcher's handler needs from the outside world, as small Protocols."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from restock_common.messages import Channel, JobBatch


@dataclass(frozen=True)
class Frozen:
    """The event's targets are frozen (now or by an earlier delivery); ``created`` jobs were new."""

    restock_event_id: int
    created: int


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
        """Create one pending job per live confirmed subscription of the event's variant, in one
        transaction, and mark the event frozen. Idempotent: a second call creates nothing."""
        ...

    async def pending_page(
        self, restock_event_id: int, channel: Channel, after: Cursor | None, limit: int
    ) -> Page:
        """The next ``limit`` pending jobs of the event on ``channel`` after ``after``, FIFO."""
        ...

    async def mark_enqueued(self, job_ids: list[int]) -> None:
        """Record that these jobs are on the broker (the batch was confirmed)."""
        ...


class BatchPublisher(Protocol):
    """Puts job batches on the broker and returns once the broker confirmed them."""

    async def publish(self, batch: JobBatch, message_id: str) -> None:
        """Publish one batch to its channel's routing key, with a publisher confirm."""
        ...
