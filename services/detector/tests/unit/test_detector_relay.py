"""The outbox relay with recording fakes: order, marks only after confirms, a failure keeps the rest, and
the publish window: several confirms outstanding, never two of one ordering key."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import pytest
from pydantic import ValidationError

from restock_common.faults import FaultPoints
from restock_common.settings import Settings
from restock_detector.ports import OutboxRow, Publisher
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


def relay(
    outbox: FakeOutbox,
    publisher: Publisher,
    batch_size: int = 100,
    window: int = 1,
    clock: Callable[[], float] = time.monotonic,
) -> OutboxRelay:
    return OutboxRelay(
        outbox,
        publisher,
        FaultPoints(None),
        OutboxWakeup(),
        poll_seconds=60,
        batch_size=batch_size,
        window=window,
        hold_limit_seconds=30,
        clock=clock,
    )


class GatedPublisher:
    """Confirms a publish only when the test releases it; records what was out at once, and when."""

    def __init__(self, keys: dict[str, str | None], fail_on: set[str] | None = None) -> None:
        self.keys = keys  # message id -> ordering key
        self.fail_on = fail_on or set()
        self.started: list[str] = []
        self.confirmed: list[str] = []
        self.out: dict[str, asyncio.Future[None]] = {}
        self.most_out = 0

    async def publish_raw(
        self, body: bytes, routing_key: str, *, message_id: str, traceparent: str | None = None
    ) -> None:
        key = self.keys[message_id]
        assert key is None or key not in {self.keys[other] for other in self.out}, "two of one key out"
        self.started.append(message_id)
        self.out[message_id] = asyncio.get_running_loop().create_future()
        self.most_out = max(self.most_out, len(self.out))
        try:
            await self.out[message_id]
        finally:
            del self.out[message_id]
        if message_id in self.fail_on:
            raise ConnectionError("nacked")
        self.confirmed.append(message_id)

    async def settle(self, message_id: str) -> None:
        """Let the broker answer ``message_id`` (once it is out)."""
        await _until(lambda: message_id in self.out)
        self.out[message_id].set_result(None)

    async def settle_all(self, batch: asyncio.Task[tuple[int, bool]]) -> tuple[int, bool]:
        """Answer every publish, as it goes out, until the batch is over."""
        while not batch.done():
            for future in list(self.out.values()):
                if not future.done():
                    future.set_result(None)
            await asyncio.sleep(0)
        return await batch


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never met")


def keyed_outbox(keys: Sequence[str | None]) -> tuple[FakeOutbox, dict[str, str | None]]:
    """Rows 1..n with these ordering keys."""
    outbox = FakeOutbox(0)
    outbox.rows = [
        OutboxRow(i, f"m-{i}", "stock.changed", b"{}", None, key) for i, key in enumerate(keys, start=1)
    ]
    return outbox, {f"m-{i}": key for i, key in enumerate(keys, start=1)}


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


class SlowBroker:
    """Confirms each publish 10 s later on a clock of its own (the relay's): a broker that has slowed."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sent: list[str] = []

    async def publish_raw(
        self, body: bytes, routing_key: str, *, message_id: str, traceparent: str | None = None
    ) -> None:
        self.now += 10.0
        self.sent.append(message_id)


async def test_a_batch_starts_no_publish_after_half_its_hold_limit_and_the_rest_goes_next() -> None:
    outbox, broker = FakeOutbox(5), SlowBroker()
    slow = relay(outbox, broker, clock=lambda: broker.now)  # holds a batch 30 s at most: 15 s to start
    # Publishes start at 0 and 10 s; at 20 s the budget is spent: two rows, and no failure.
    assert await slow.relay_once() == (2, True)
    assert (outbox.published, outbox.failures) == ([1, 2], [])
    assert await slow.relay_once() == (2, True)  # a new batch, a new budget
    assert await slow.relay_once() == (1, True)
    assert broker.sent == ["m-1", "m-2", "m-3", "m-4", "m-5"]
    assert outbox.published == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("hold_limit", [0, 19.9])
def test_a_hold_limit_too_short_for_one_publish_is_refused(hold_limit: float) -> None:
    with pytest.raises(ValueError, match="hold limit"):
        OutboxRelay(
            FakeOutbox(0),
            FakePublisher(),
            FaultPoints(None),
            OutboxWakeup(),
            poll_seconds=1,
            window=1,
            hold_limit_seconds=hold_limit,
        )


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


async def test_the_window_has_several_confirms_outstanding_for_different_keys() -> None:
    outbox, keys = keyed_outbox(["v1", "v2", "v3", "v4", "v5", "v6"])
    publisher = GatedPublisher(keys)
    batch = asyncio.create_task(relay(outbox, publisher, window=4).relay_once())
    await _until(lambda: len(publisher.out) == 4)
    assert publisher.started == ["m-1", "m-2", "m-3", "m-4"]  # in id order, and no more than the window
    await publisher.settle("m-2")  # a confirm frees a place for the next row
    await _until(lambda: "m-5" in publisher.out)
    assert len(publisher.out) == 4
    assert await publisher.settle_all(batch) == (6, True)
    assert sorted(outbox.published) == [1, 2, 3, 4, 5, 6]
    assert outbox.mark_calls == 1
    assert publisher.most_out == 4


async def test_a_row_waits_for_the_confirm_of_the_previous_row_of_its_key() -> None:
    # v1's second row (3) must not go out while its first (1) is unconfirmed; rows behind it wait too
    # (publishes start in id order), rows of no key have no such constraint.
    outbox, keys = keyed_outbox(["v1", "v2", "v1", None, None])
    publisher = GatedPublisher(keys)
    batch = asyncio.create_task(relay(outbox, publisher, window=8).relay_once())
    await _until(lambda: publisher.started == ["m-1", "m-2"])
    for _ in range(20):
        await asyncio.sleep(0)
    assert "m-3" not in publisher.started
    await publisher.settle("m-1")
    await _until(lambda: publisher.started == ["m-1", "m-2", "m-3", "m-4", "m-5"])
    assert await publisher.settle_all(batch) == (5, True)
    # Per key, the broker saw the rows in id order.
    assert [m for m in publisher.confirmed if keys[m] == "v1"] == ["m-1", "m-3"]


async def test_after_a_failure_no_row_starts_and_those_out_are_awaited_and_marked() -> None:
    outbox, keys = keyed_outbox(["v1", "v2", "v3", "v1", "v4"])
    publisher = GatedPublisher(keys, fail_on={"m-1"})
    batch = asyncio.create_task(relay(outbox, publisher, window=3).relay_once())
    await _until(lambda: len(publisher.out) == 3)
    await publisher.settle("m-1")  # nacked: v1's next row (4) must never go out before it, nor row 5
    for _ in range(20):
        await asyncio.sleep(0)
    assert publisher.started == ["m-1", "m-2", "m-3"]
    assert await publisher.settle_all(batch) == (2, False)
    assert sorted(outbox.published) == [2, 3]  # confirmed while the failure happened: marked
    assert outbox.failures == [1]
    # The next round starts again at row 1, in order, with row 4 still behind it.
    publisher.fail_on.clear()
    retry = asyncio.create_task(relay(outbox, publisher, window=3).relay_once())
    await _until(lambda: publisher.started[3:] == ["m-1"])
    assert await publisher.settle_all(retry) == (3, True)
    assert publisher.started[3:] == ["m-1", "m-4", "m-5"]
    assert [m for m in publisher.confirmed if keys[m] == "v1"] == ["m-1", "m-4"]


async def test_a_window_of_one_is_one_confirm_at_a_time() -> None:
    outbox, keys = keyed_outbox(["v1", "v2", "v3"])
    publisher = GatedPublisher(keys)
    batch = asyncio.create_task(relay(outbox, publisher).relay_once())
    assert await publisher.settle_all(batch) == (3, True)
    assert publisher.most_out == 1


def test_a_window_holds_at_least_one_message() -> None:
    with pytest.raises(ValueError, match="at least one"):
        relay(FakeOutbox(0), FakePublisher(), window=0)


def test_the_window_setting_is_one_confirm_at_a_time_unless_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RESTOCK_OUTBOX_PUBLISH_WINDOW", raising=False)
    assert Settings().outbox_publish_window == 1  # the relay shares the webhooks' event loop (ADR 22)
    monkeypatch.setenv("RESTOCK_OUTBOX_PUBLISH_WINDOW", "32")
    assert Settings().outbox_publish_window == 32
    with pytest.raises(ValidationError):
        Settings(outbox_publish_window=0)


def test_the_hold_limit_setting_is_a_minute_and_never_shorter_than_two_publish_timeouts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RESTOCK_OUTBOX_HOLD_LIMIT_SECONDS", raising=False)
    assert Settings().outbox_hold_limit_seconds == 60
    monkeypatch.setenv("RESTOCK_OUTBOX_HOLD_LIMIT_SECONDS", "120")
    assert Settings().outbox_hold_limit_seconds == 120
    with pytest.raises(ValidationError):
        Settings(outbox_hold_limit_seconds=19)
