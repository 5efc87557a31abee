"""The outbox relay with recording fakes: order, marks only after confirms, a failure keeps the rest."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from restock_common.faults import FaultPoints
from restock_detector.ports import OutboxRow
from restock_detector.relay import OutboxRelay, OutboxWakeup


class FakeBatch:
    def __init__(self, outbox: FakeOutbox, rows: Sequence[OutboxRow]) -> None:
        self.outbox = outbox
        self.rows = rows

    async def mark_published(self, row_ids: Sequence[int]) -> None:
        self.outbox.published.extend(row_ids)
        self.outbox.mark_calls += 1

    async def note_failure(self, row_id: int) -> None:
        self.outbox.failures.append(row_id)


class FakeOutbox:
    def __init__(self, count: int) -> None:
        self.rows = [
            OutboxRow(i, f"m-{i}", "restock.detected", f"payload-{i}".encode(), f"tp-{i}")
            for i in range(1, count + 1)
        ]
        self.published: list[int] = []
        self.failures: list[int] = []
        self.mark_calls = 0

    def add(self, count: int) -> None:
        start = len(self.rows) + 1
        self.rows += [
            OutboxRow(i, f"m-{i}", "restock.detected", b"{}", None) for i in range(start, start + count)
        ]

    @asynccontextmanager
    async def claim(self, limit: int) -> AsyncIterator[FakeBatch]:
        pending = [row for row in self.rows if row.id not in self.published]
        yield FakeBatch(self, pending[:limit])


class FakePublisher:
    def __init__(self, fail_on: set[str] | None = None) -> None:
        self.fail_on = fail_on or set()
        self.sent: list[tuple[bytes, str, str, str | None]] = []

    async def publish_raw(
        self, body: bytes, routing_key: str, *, message_id: str, traceparent: str | None = None
    ) -> None:
        if message_id in self.fail_on:
            raise ConnectionError("broker unreachable")
        self.sent.append((body, routing_key, message_id, traceparent))


def relay(outbox: FakeOutbox, publisher: FakePublisher, batch_size: int = 100) -> OutboxRelay:
    return OutboxRelay(
        outbox, publisher, FaultPoints(None), OutboxWakeup(), poll_seconds=60, batch_size=batch_size
    )


async def test_rows_are_published_in_order_with_their_bytes_and_trace_then_marked() -> None:
    outbox, publisher = FakeOutbox(3), FakePublisher()
    assert await relay(outbox, publisher).relay_once() == (3, True)
    assert publisher.sent == [
        (f"payload-{i}".encode(), "restock.detected", f"m-{i}", f"tp-{i}") for i in (1, 2, 3)
    ]
    assert outbox.published == [1, 2, 3]
    assert outbox.mark_calls == 1  # one statement for the batch


async def test_a_failed_publish_ends_the_batch_and_keeps_it_and_the_rest() -> None:
    outbox, publisher = FakeOutbox(4), FakePublisher(fail_on={"m-2"})
    assert await relay(outbox, publisher).relay_once() == (1, False)
    assert outbox.published == [1]
    assert outbox.failures == [2]
    publisher.fail_on.clear()  # the broker is back
    assert await relay(outbox, publisher).relay_once() == (3, True)
    assert outbox.published == [1, 2, 3, 4]
    assert [sent[2] for sent in publisher.sent] == ["m-1", "m-2", "m-3", "m-4"]


async def test_batches_are_bounded() -> None:
    outbox, publisher = FakeOutbox(5), FakePublisher()
    assert await relay(outbox, publisher, batch_size=2).relay_once() == (2, True)
    assert outbox.published == [1, 2]


async def test_the_loop_wakes_on_a_commit_and_stops_cleanly() -> None:
    outbox, publisher = FakeOutbox(0), FakePublisher()
    loop_relay = relay(
        outbox, publisher
    )  # polls only every 60 s: only the wakeup can explain a quick publish
    loop_relay.start()
    assert loop_relay.is_running
    await asyncio.sleep(0)
    outbox.add(2)
    loop_relay.wakeup.notify()
    deadline = asyncio.get_running_loop().time() + 5
    while outbox.published != [1, 2]:
        assert asyncio.get_running_loop().time() < deadline, "relay did not wake up"
        await asyncio.sleep(0.01)
    await asyncio.wait_for(loop_relay.stop(), 5)
    assert not loop_relay.is_running
