"""The scheduler's tick and loop with a recording store and publisher: no database, no broker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from restock_common.messages import Channel
from restock_sender.delivery import JobState
from restock_sender.ports import PublishJobs
from restock_sender.scheduler import MAX_BATCHES_PER_TICK, Scheduler, TickReport


@dataclass
class FakeScheduleStore:
    """Hands out queued ids batch by batch and records every call."""

    due: list[int] = field(default_factory=list)
    unqueued: list[int] = field(default_factory=list)
    expired: list[int] = field(default_factory=list)
    unstarted: list[int] = field(default_factory=list)  # expired before their provider-call mark
    calls: list[tuple[object, ...]] = field(default_factory=list)
    states: dict[int, JobState] = field(default_factory=dict)

    async def requeue_due(self, channel: str, limit: int) -> list[int]:
        self.calls.append(("requeue_due", channel, limit))
        batch = self.due[:limit]
        del self.due[: len(batch)]
        self.unqueued.extend(batch)  # pending, committed, not yet published
        return batch

    async def mark_enqueued(self, job_ids: list[int]) -> None:
        self.calls.append(("mark_enqueued", list(job_ids)))
        self.unqueued = [job_id for job_id in self.unqueued if job_id not in job_ids]

    async def publish_unqueued(
        self, channel: str, limit: int, grace_seconds: float, publish: PublishJobs
    ) -> list[int]:
        self.calls.append(("publish_unqueued", channel, limit, grace_seconds))
        batch = self.unqueued[:limit]
        await publish(batch) if batch else None
        del self.unqueued[: len(batch)]
        return batch

    async def reap_unstarted(self, channel: str, limit: int) -> list[int]:
        self.calls.append(("reap_unstarted", channel, limit))
        batch = self.unstarted[:limit]
        del self.unstarted[: len(batch)]
        self.states.update(dict.fromkeys(batch, JobState.PENDING))
        self.unqueued.extend(batch)
        return batch

    async def reap_expired(self, channel: str, state: JobState, limit: int) -> list[int]:
        self.calls.append(("reap_expired", channel, state, limit))
        batch = self.expired[:limit]
        del self.expired[: len(batch)]
        self.states.update(dict.fromkeys(batch, state))
        return batch


@dataclass
class FakePublisher:
    batches: list[tuple[Channel, list[int]]] = field(default_factory=list)
    fail: bool = False

    async def publish(self, channel: Channel, job_ids: list[int]) -> None:
        if self.fail:
            raise ConnectionError("broker gone")
        self.batches.append((channel, list(job_ids)))


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def scheduler(
    store: FakeScheduleStore, publisher: FakePublisher, channel: Channel = "email", batch_size: int = 2
) -> Scheduler:
    return Scheduler(store, publisher, channel, batch_size=batch_size, grace_seconds=7.0, interval=0.01)


async def test_tick_requeues_publishes_and_reaps_in_batches() -> None:
    store = FakeScheduleStore(due=[1, 2, 3], unqueued=[4], expired=[5])
    publisher = FakePublisher()
    report = await scheduler(store, publisher).tick()
    assert report == TickReport(requeued=3, published=1, reaped=1)
    assert publisher.batches == [("email", [1, 2]), ("email", [3]), ("email", [4])]
    assert ("mark_enqueued", [3]) in store.calls
    assert store.states == {5: JobState.INDETERMINATE}
    assert ("publish_unqueued", "email", 2, 7.0) in store.calls


@pytest.mark.parametrize("channel", ["email", "sms"])
async def test_expired_claims_that_never_reached_the_provider_go_back_to_pending_and_out_at_once(
    channel: Channel,
) -> None:
    store = FakeScheduleStore(unstarted=[7, 8, 9], expired=[5])
    publisher = FakePublisher()
    report = await scheduler(store, publisher, channel=channel).tick()
    assert publisher.batches == [(channel, [7, 8]), (channel, [9])]
    assert ("mark_enqueued", [7, 8]) in store.calls
    assert ("mark_enqueued", [9]) in store.calls
    assert store.unqueued == []
    assert {job: store.states[job] for job in (7, 8, 9)} == dict.fromkeys((7, 8, 9), JobState.PENDING)
    # Email's marked expired job is indeterminate; SMS leaves it for the reaper that asks Twilio.
    assert report.reaped == (4 if channel == "email" else 3)
    assert store.states.get(5) == (JobState.INDETERMINATE if channel == "email" else None)


async def test_unstarted_claims_of_a_paused_channel_wait_unpublished_for_its_resume() -> None:
    store = FakeScheduleStore(unstarted=[7])
    publisher = FakePublisher()
    running = Scheduler(
        store, publisher, "email", batch_size=2, grace_seconds=7.0, interval=0.01, paused=lambda: True
    )
    await running.tick()
    assert publisher.batches == []
    assert store.states == {7: JobState.PENDING}
    assert store.unqueued == [7]


async def test_sms_expired_jobs_are_left_alone_until_the_provider_can_be_asked() -> None:
    store = FakeScheduleStore(expired=[5])
    report = await scheduler(store, FakePublisher(), channel="sms").tick()
    assert report.reaped == 0
    assert store.expired == [5]
    assert not [call for call in store.calls if call[0] == "reap_expired"]


async def test_a_backlog_drains_at_most_a_bounded_number_of_batches_per_tick() -> None:
    store = FakeScheduleStore(due=list(range(100)))
    publisher = FakePublisher()
    report = await scheduler(store, publisher, batch_size=3).tick()
    assert report.requeued == 3 * MAX_BATCHES_PER_TICK
    assert len(publisher.batches) == MAX_BATCHES_PER_TICK


async def test_a_retry_is_marked_enqueued_only_after_its_publish() -> None:
    store = FakeScheduleStore(due=[1, 2])
    await scheduler(store, FakePublisher()).tick()
    assert ("mark_enqueued", [1, 2]) in store.calls
    assert store.unqueued == []


async def test_a_failed_publish_leaves_the_retry_to_the_unpublished_sweep_and_the_loop_keeps_going() -> None:
    store = FakeScheduleStore(due=[1])
    publisher = FakePublisher(fail=True)
    with pytest.raises(ConnectionError):
        await scheduler(store, publisher).tick()
    assert store.unqueued == [1]
    assert not [call for call in store.calls if call[0] == "mark_enqueued"]

    running = scheduler(store, publisher)
    running.start()
    await until(lambda: len([call for call in store.calls if call[0] == "publish_unqueued"]) >= 2)
    publisher.fail = False
    await until(lambda: not store.unqueued)
    await running.stop()
    assert publisher.batches == [("email", [1])]


async def test_stop_ends_the_loop_promptly() -> None:
    running = Scheduler(
        FakeScheduleStore(), FakePublisher(), "email", batch_size=10, grace_seconds=0, interval=3600
    )
    running.start()
    await asyncio.sleep(0)
    await asyncio.wait_for(running.stop(), timeout=2)
