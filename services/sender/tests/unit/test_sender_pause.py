"""The channel monitor with recording fakes: it follows the pause row, probes while paused, resumes when
the probe passes, and switches the consumer accordingly."""

from __future__ import annotations

from typing import Any

import pytest

from restock_sender.delivery import ProviderError
from restock_sender.pause import ChannelMonitor, ChannelPause, ConsumerSwitch
from restock_sender.ports import OperatorBacklog, PauseRecord
from restock_sender.scheduler import Scheduler

REFUSED = ProviderError("response", "535", "5.7.8 Authentication credentials invalid")


class FakePauseStore:
    def __init__(self, paused: bool | None) -> None:
        self.row = None if paused is None else PauseRecord("email", paused, "auth", "535")
        self.resumed = 0
        self.backlog = OperatorBacklog(dead_letter=3, indeterminate=1)

    async def read(self, channel: str) -> PauseRecord | None:
        return self.row

    async def pause(self, channel: str, reason: str, error_code: str | None) -> None:
        self.row = PauseRecord(channel, True, reason, error_code)

    async def resume(self, channel: str) -> bool:
        if self.row is None or not self.row.paused:
            return False
        self.row = PauseRecord(channel, False, self.row.reason, self.row.error_code)
        self.resumed += 1
        return True

    async def operator_backlog(self, channel: str) -> OperatorBacklog:
        return self.backlog


class FakeProbe:
    def __init__(self, *answers: ProviderError | None) -> None:
        self.answers = list(answers)
        self.calls = 0

    async def probe(self) -> ProviderError | None:
        self.calls += 1
        return self.answers.pop(0)


class FakeConsumer:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def stop(self) -> None:
        self.log.append("stop")


def monitor(store: FakePauseStore, probe: FakeProbe, log: list[str]) -> tuple[ChannelMonitor, ChannelPause]:
    async def start() -> Any:
        log.append("start")
        return FakeConsumer(log)

    pause = ChannelPause("email", store)
    backlog: list[OperatorBacklog] = []
    watcher = ChannelMonitor(
        pause, probe, ConsumerSwitch(start), interval=30.0, backlog=lambda _, n: backlog.append(n)
    )
    return watcher, pause


@pytest.mark.parametrize(
    ("row", "answers", "paused", "probes", "resumed", "consumer"),
    [
        (None, [], False, 0, 0, ["start"]),  # never paused: consume, no probe
        (False, [], False, 0, 0, ["start"]),  # resumed by an operator: consume
        (True, [REFUSED], True, 1, 0, []),  # paused, the provider still refuses: no consumer
        (True, [None], False, 1, 1, ["start"]),  # paused, the probe passes: resume the row, consume
    ],
)
async def test_one_tick(
    row: bool | None,
    answers: list[ProviderError | None],
    paused: bool,
    probes: int,
    resumed: int,
    consumer: list[str],
) -> None:
    store, probe, log = FakePauseStore(row), FakeProbe(*answers), list[str]()
    watcher, pause = monitor(store, probe, log)
    assert await watcher.tick() is paused
    assert pause.paused is paused
    assert (probe.calls, store.resumed, log) == (probes, resumed, consumer)


async def test_a_pause_stops_the_consumer_and_a_passing_probe_restarts_it() -> None:
    store, probe, log = FakePauseStore(None), FakeProbe(REFUSED, None), list[str]()
    watcher, pause = monitor(store, probe, log)
    await watcher.tick()
    await pause.pause("authentication or policy refused (535)", "535")  # the handler met a 535
    assert pause.paused
    assert pause.changed.is_set()  # wakes the monitor at once
    await watcher.tick()  # probe refused
    await watcher.tick()  # probe passes
    assert log == ["start", "stop", "start"]
    assert store.resumed == 1
    assert not pause.paused


async def test_pausing_twice_writes_once() -> None:
    store = FakePauseStore(None)
    pause = ChannelPause("email", store)
    await pause.pause("auth", "535")
    store.row = None
    await pause.pause("auth", "535")
    assert store.row is None  # the second call, while paused, wrote nothing


class RecordingScheduleStore:
    """A ScheduleStore with one due retry and one deferred job due; records which steps ran."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def requeue_due(self, channel: str, limit: int) -> list[int]:
        self.calls.append("requeue")
        return []

    async def mark_enqueued(self, job_ids: list[int]) -> None:
        self.calls.append("mark")

    async def publish_unqueued(
        self, channel: str, limit: int, grace_seconds: float, publish: Any
    ) -> list[int]:
        self.calls.append("publish")
        return []

    async def reap_unstarted(self, channel: str, limit: int) -> list[int]:
        self.calls.append("reap-unstarted")
        return []

    async def reap_expired(self, channel: str, state: Any, limit: int) -> list[int]:
        self.calls.append("reap")
        return []


class NoPublisher:
    async def publish(self, channel: Any, job_ids: list[int]) -> None:
        raise AssertionError("nothing is published while paused")


@pytest.mark.parametrize(
    ("paused", "steps"),
    [(False, ["requeue", "publish", "reap-unstarted", "reap"]), (True, ["reap-unstarted", "reap"])],
)
async def test_a_paused_channels_scheduler_publishes_nothing(paused: bool, steps: list[str]) -> None:
    store = RecordingScheduleStore()
    scheduler = Scheduler(
        store, NoPublisher(), "email", batch_size=10, grace_seconds=30.0, interval=1.0, paused=lambda: paused
    )
    await scheduler.tick()
    assert store.calls == steps
