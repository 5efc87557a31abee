"""What the dispatcher's handler needs from the outside world, as small Protocols."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from restock_common.messages import Channel, JobBatch
from restock_dispatcher.waves import Decision


@dataclass(frozen=True)
class Frozen:
    """The event's targets are frozen (now or by an earlier delivery, which then counts nothing new):
    ``created`` jobs (pending, or waiting with waves of which ``released`` went in the first wave) and
    ``suppressed`` duplicate-suppressed rows were written by this call."""

    restock_event_id: int
    tenant_id: int
    variant_id: int
    window: int
    created: int
    suppressed: int = 0
    released: int = 0


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


Publish = Callable[[list[int]], Awaitable[None]]
# One page of an event's frozen jobs: the ids per channel, each list FIFO.
PublishByChannel = Callable[[dict[Channel, list[int]]], Awaitable[None]]


@dataclass(frozen=True)
class Released:
    """What one re-plan of a variant's line decided (``released`` jobs are pending, not yet published)."""

    tenant_id: int
    variant_id: int
    window: int
    released: int
    decision: Decision


@dataclass(frozen=True)
class Fulfilled:
    """An order's effect: subscriptions newly fulfilled and their waiting jobs taken out of line."""

    subscriptions: int
    jobs_skipped: int


class TargetStore(Protocol):
    """The notification jobs of restock events, in PostgreSQL."""

    async def freeze(self, restock_event_id: int, traceparent: str | None) -> Frozen | EventMissing:
        """Give every live confirmed subscription of the event's variant one row, in one transaction: a
        pending job (a waiting one when the shop uses waves, then the first wave is released), or a
        duplicate-suppressed row naming the job that already holds its notification key; then mark the
        event frozen. Idempotent: a second call writes nothing."""
        ...

    async def window_events(self, tenant_id: int, variant_id: int, window: int) -> list[int]:
        """The restock events of the variant in one restock window (their jobs share the window's line)."""
        ...

    async def publish_unpublished(
        self, restock_event_id: int, channel: Channel, after: Cursor | None, limit: int, publish: Publish
    ) -> Page:
        """In one transaction: lock (skipping rows another publisher holds) the next ``limit`` pending,
        never-published jobs of the event on ``channel`` after ``after``, FIFO; ``publish`` their ids;
        mark them enqueued. Returns the ids published and where the next page starts."""
        ...

    async def publish_frozen(
        self, restock_event_id: int, limit: int, publish: PublishByChannel
    ) -> int | None:
        """In one transaction holding the event's row: the next ``limit`` jobs its freeze made pending
        (after the event's publish cursor, FIFO, still pending and never attempted) are given to
        ``publish``, then the cursor moves past them, or the event is marked published when fewer were
        left. Returns how many were published, or None once the event is published (nothing to do)."""
        ...


class WaveStore(Protocol):
    """The wave planner's state (``wave_plans``) and the waiting jobs it releases."""

    async def stock_changed(self, tenant_id: int, variant_id: int, available: int) -> Released | None:
        """Re-plan the variant's line with its new availability; None when it has none (waves off)."""
        ...

    async def release_due(self, limit: int) -> list[Released]:
        """Release the waves whose time has come (``next_wave_at`` passed), each line locked once."""
        ...


class FulfilmentStore(Protocol):
    """Subscriptions that end because the shopper bought the variant."""

    async def fulfil(self, tenant_id: int, variant_ids: list[int], contact_hashes: list[str]) -> Fulfilled:
        """Mark the matching subscriptions fulfilled and their waiting jobs ``skipped-opted-out``
        (decision ``fulfilled``), in one transaction. Idempotent."""
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

    async def stale_events(self, older_than_seconds: float, limit: int) -> list[int]:
        """Restock events frozen more than ``older_than_seconds`` ago whose publish never finished (the
        dispatcher that froze them died and their message never came back), oldest first."""
        ...

    async def publish_frozen(
        self, restock_event_id: int, limit: int, publish: PublishByChannel
    ) -> int | None:
        """As ``TargetStore.publish_frozen``."""
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
