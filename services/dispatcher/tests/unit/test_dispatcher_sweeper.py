"""The publish sweeper with recording fakes: stale events from their cursor, then stale jobs per channel, in
FIFO batches, until none is left."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from restock_common.messages import JobBatch
from restock_dispatcher.sweeper import PublishSweeper


class FakeSweepStore:
    """Stale job ids per channel, handed out oldest first; records each call's arguments."""

    def __init__(
        self, stale: dict[str, list[int]], events: dict[int, list[tuple[int, str]]] | None = None
    ) -> None:
        self.stale = stale
        self.events = events or {}  # stale events: their unpublished (job id, channel), FIFO
        self.calls: list[tuple[str, float, int]] = []
        self.enqueued: list[int] = []

    async def stale_events(self, older_than_seconds: float, limit: int) -> list[int]:
        assert older_than_seconds == 60.0
        return sorted(self.events)[:limit]

    async def publish_frozen(
        self, restock_event_id: int, limit: int, publish: Callable[[dict[str, list[int]]], Awaitable[None]]
    ) -> int | None:
        if restock_event_id not in self.events:
            return None
        page, rest = self.events[restock_event_id][:limit], self.events[restock_event_id][limit:]
        by_channel: dict[str, list[int]] = {}
        for job_id, channel in page:
            by_channel.setdefault(channel, []).append(job_id)
        await publish(by_channel)
        self.enqueued.extend(job_id for job_id, _ in page)
        if len(page) < limit:
            del self.events[restock_event_id]
        else:
            self.events[restock_event_id] = rest
        return len(page)

    async def sweep(
        self,
        channel: str,
        older_than_seconds: float,
        limit: int,
        publish: Callable[[list[int]], Awaitable[None]],
    ) -> int:
        self.calls.append((channel, older_than_seconds, limit))
        taken, self.stale[channel] = self.stale[channel][:limit], self.stale[channel][limit:]
        if taken:
            await publish(taken)
            self.enqueued.extend(taken)
        return len(taken)


class FakePublisher:
    def __init__(self) -> None:
        self.published: list[tuple[JobBatch, str]] = []

    async def publish(self, batch: JobBatch, message_id: str) -> None:
        self.published.append((batch, message_id))


def sweeper(store: FakeSweepStore, publisher: FakePublisher, batch_size: int = 2) -> PublishSweeper:
    return PublishSweeper(
        store,  # type: ignore[arg-type]
        publisher,
        after_seconds=60.0,
        interval_seconds=0.01,
        batch_size=batch_size,
    )


async def test_sweeps_every_stale_job_in_fifo_batches_per_channel() -> None:
    store, publisher = FakeSweepStore({"email": [1, 2, 3, 4, 5], "sms": [6]}), FakePublisher()
    assert await sweeper(store, publisher).sweep_once() == 6
    assert [(b.channel, b.job_ids, mid) for b, mid in publisher.published] == [
        ("email", [1, 2], "jobs:sweep:email:1"),
        ("email", [3, 4], "jobs:sweep:email:3"),
        ("email", [5], "jobs:sweep:email:5"),
        ("sms", [6], "jobs:sweep:sms:6"),
    ]
    assert store.enqueued == [1, 2, 3, 4, 5, 6]
    assert {(after, limit) for _, after, limit in store.calls} == {(60.0, 2)}


async def test_stale_events_are_carried_on_from_their_cursor_before_stale_jobs() -> None:
    events = {7: [(1, "email"), (2, "sms"), (3, "email")], 9: [(8, "email")]}
    store, publisher = FakeSweepStore({"email": [20], "sms": []}, events), FakePublisher()
    assert await sweeper(store, publisher).sweep_once() == 5
    assert [(b.channel, b.job_ids, mid) for b, mid in publisher.published] == [
        ("email", [1, 3], "jobs:sweep:email:1"),
        ("sms", [2], "jobs:sweep:sms:2"),
        ("email", [8], "jobs:sweep:email:8"),
        ("email", [20], "jobs:sweep:email:20"),
    ]
    assert store.events == {}


async def test_nothing_stale_publishes_nothing() -> None:
    store, publisher = FakeSweepStore({"email": [], "sms": []}), FakePublisher()
    assert await sweeper(store, publisher).sweep_once() == 0
    assert publisher.published == []


async def test_run_sweeps_until_stopped_and_survives_a_failed_sweep() -> None:
    class FlakyStore(FakeSweepStore):
        failed = False

        async def sweep(self, *args: object, **kwargs: object) -> int:
            if not self.failed:
                self.failed = True
                raise ConnectionError("database gone")
            return await super().sweep(*args, **kwargs)  # type: ignore[arg-type]

    store, publisher = FlakyStore({"email": [1], "sms": []}), FakePublisher()
    stop = asyncio.Event()
    task = asyncio.create_task(sweeper(store, publisher).run(stop))
    deadline = asyncio.get_running_loop().time() + 5
    while not publisher.published:
        assert asyncio.get_running_loop().time() < deadline, "never swept after the failure"
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert [b.job_ids for b, _ in publisher.published] == [[1]]
