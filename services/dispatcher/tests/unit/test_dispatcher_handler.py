"""The dispatcher's handler with recording fakes: freeze first, then FIFO batches per channel: the freeze's
jobs by the event's publish cursor, a page at a time, then jobs released one by one (a wave's)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from restock_common.broker import Outcome
from restock_common.faults import FaultPoints
from restock_common.messages import JobBatch, RestockDetected
from restock_dispatcher.handler import RestockHandler
from restock_dispatcher.ports import Cursor, EventMissing, Frozen, Page

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class FakeTargetStore:
    """Jobs (id, channel, priority_at) of one event: ``jobs`` made pending by its freeze (published by the
    event's cursor), ``released`` made pending one by one later (unpublished until a batch publish
    returns); every call is appended to ``calls``."""

    def __init__(
        self, jobs: list[tuple[int, str]] | None, calls: list[str], released: list[tuple[int, str]] = ()
    ) -> None:
        self.jobs = None if jobs is None else [(i, ch, T0 + timedelta(seconds=i)) for i, ch in jobs]
        self.released = [(i, ch, T0 + timedelta(seconds=i)) for i, ch in released]
        self.calls = calls
        self.enqueued: list[int] = []
        self.cursor: tuple[datetime, int] | None = None
        self.published = False

    async def publish_frozen(
        self,
        restock_event_id: int,
        limit: int,
        publish: Callable[[dict[str, list[int]]], Awaitable[None]],
    ) -> int | None:
        assert self.jobs is not None
        assert restock_event_id == 5
        if self.published:
            return None
        rows = sorted((at, i, ch) for i, ch, at in self.jobs)
        if self.cursor is not None:
            rows = [row for row in rows if row[:2] > self.cursor]
        rows = rows[:limit]
        by_channel: dict[str, list[int]] = {}
        for _, i, ch in rows:
            by_channel.setdefault(ch, []).append(i)
        if by_channel:
            await publish(by_channel)
        if len(rows) < limit:
            self.published = True
            self.calls.append("event published")
        else:
            self.cursor = rows[-1][:2]
            self.calls.append(f"cursor {self.cursor[1]}")
        return len(rows)

    async def freeze(self, restock_event_id: int, traceparent: str | None) -> Frozen | EventMissing:
        self.calls.append("freeze")
        if self.jobs is None:
            return EventMissing(restock_event_id)
        return Frozen(restock_event_id, 1, 42, 20000, len(self.jobs))

    async def window_events(self, tenant_id: int, variant_id: int, window: int) -> list[int]:
        self.calls.append(f"window {(tenant_id, variant_id, window)}")
        return [5]

    async def publish_unpublished(
        self,
        restock_event_id: int,
        channel: str,
        after: Cursor | None,
        limit: int,
        publish: Callable[[list[int]], Awaitable[None]],
    ) -> Page:
        assert restock_event_id == 5
        rows = [(at, i) for i, ch, at in sorted(self.released, key=lambda j: (j[2], j[0])) if ch == channel]
        rows = [row for row in rows if row[1] not in self.enqueued]
        if after is not None:
            rows = [row for row in rows if row > (after.priority_at, after.job_id)]
        rows = rows[:limit]
        if not rows:
            return Page([], None)
        await publish([i for _, i in rows])
        self.calls.append(f"enqueued {[i for _, i in rows]}")
        self.enqueued.extend(i for _, i in rows)
        more = Cursor(*rows[-1]) if len(rows) == limit else None
        return Page([i for _, i in rows], more)


class FakePublisher:
    def __init__(self, calls: list[str]) -> None:
        self.batches: list[JobBatch] = []
        self.calls = calls

    async def publish(self, batch: JobBatch, message_id: str) -> None:
        self.calls.append(f"publish {batch.channel} {batch.job_ids}")
        self.batches.append(batch)


class RecordingFaults(FaultPoints):
    def __init__(self, calls: list[str]) -> None:
        super().__init__(None)
        self.calls = calls

    def reach(self, name: str) -> None:
        self.calls.append(f"fault {name}")


EVENT = RestockDetected(
    restock_event_id=5,
    tenant_id=1,
    shop_domain="s.myshopify.com",
    variant_id=42,
    available=3,
    restock_window=20000,
    detected_at=T0,
)


async def test_freezes_then_publishes_fifo_batches_per_channel() -> None:
    calls: list[str] = []
    jobs = [(1, "email"), (2, "sms"), (3, "email"), (4, "email"), (5, "email"), (6, "email")]
    store, publisher = FakeTargetStore(jobs, calls), FakePublisher(calls)
    handler = RestockHandler(store, publisher, RecordingFaults(calls), batch_size=2)
    assert await handler(EVENT) is Outcome.ACK
    assert calls == [
        "freeze",
        "fault after_commit_before_publish",
        "window (1, 42, 20000)",
        # One page of up to 50 batches under the event's lock: its batches published per channel in FIFO
        # order (confirms awaited together), then the cursor committed at once.
        "publish email [1, 3]",
        "publish email [4, 5]",
        "publish email [6]",
        "publish sms [2]",
        # Every confirm in, the cursor not yet committed: the fault suite's kill point.
        "fault after_confirm_before_commit",
        "event published",
    ]


async def test_the_cursor_pages_the_freeze_and_released_jobs_follow_one_by_one() -> None:
    calls: list[str] = []
    jobs = [(i, "email") for i in range(1, 103)]  # a page is 50 batches of 2: 100 jobs
    store, publisher = FakeTargetStore(jobs, calls, released=[(200, "sms")]), FakePublisher(calls)
    assert await RestockHandler(store, publisher, FaultPoints(None), batch_size=2)(EVENT) is Outcome.ACK
    assert [call for call in calls if not call.startswith("publish")] == [
        "freeze",
        "window (1, 42, 20000)",
        "cursor 100",
        "event published",
        "enqueued [200]",
    ]
    published = [i for batch in publisher.batches for i in batch.job_ids]
    assert published == [*range(1, 103), 200]  # each once, FIFO


async def test_exact_multiple_of_batch_size_publishes_no_empty_batch() -> None:
    calls: list[str] = []
    store, publisher = FakeTargetStore([(1, "email"), (2, "email")], calls), FakePublisher(calls)
    assert await RestockHandler(store, publisher, FaultPoints(None), batch_size=2)(EVENT) is Outcome.ACK
    assert [batch.job_ids for batch in publisher.batches] == [[1, 2]]


async def test_no_targets_publishes_nothing_and_acks() -> None:
    calls: list[str] = []
    store, publisher = FakeTargetStore([], calls), FakePublisher(calls)
    assert await RestockHandler(store, publisher, FaultPoints(None), batch_size=10)(EVENT) is Outcome.ACK
    assert publisher.batches == []


async def test_a_redelivered_event_publishes_only_what_is_still_unpublished() -> None:
    calls: list[str] = []
    store, publisher = FakeTargetStore([(1, "email"), (2, "email"), (3, "sms")], calls), FakePublisher(calls)
    handler = RestockHandler(store, publisher, FaultPoints(None), batch_size=10)
    store.cursor = (T0 + timedelta(seconds=2), 2)  # the page up to job 2 was committed before the crash
    assert await handler(EVENT) is Outcome.ACK
    assert [(batch.channel, batch.job_ids) for batch in publisher.batches] == [("sms", [3])]
    publisher.batches.clear()
    assert await handler(EVENT) is Outcome.ACK  # delivered once more: everything is on the broker already
    assert publisher.batches == []


async def test_unknown_event_is_poison_and_publishes_nothing() -> None:
    calls: list[str] = []
    store, publisher = FakeTargetStore(None, calls), FakePublisher(calls)
    assert await RestockHandler(store, publisher, FaultPoints(None), batch_size=10)(EVENT) is Outcome.POISON
    assert calls == ["freeze"]
