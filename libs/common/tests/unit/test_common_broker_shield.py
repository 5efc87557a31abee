"""A lost broker connection cancels aio-pika's callback; the handler's work must still finish (and commit)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

from restock_common.broker import ANY_ROUTING_KEY, Consumer, Outcome, Route
from restock_common.messages import JobBatch, encode


@dataclass
class FakeQueue:
    name: str = "jobs.email"


@dataclass
class FakeMessage:
    body: bytes
    routing_key: str = "jobs.email"
    message_id: str = "m-1"
    headers: dict[str, Any] | None = None


async def test_cancelling_the_callback_does_not_cancel_the_handler_it_started() -> None:
    started, release = asyncio.Event(), asyncio.Event()
    finished: list[list[int]] = []

    async def handler(batch: JobBatch) -> Outcome:
        started.set()
        await release.wait()  # a provider call and a commit in flight
        finished.append(batch.job_ids)
        return Outcome.ACK

    consumer = Consumer(None, FakeQueue(), {ANY_ROUTING_KEY: Route(JobBatch, handler)})  # type: ignore[arg-type]
    message = FakeMessage(encode(JobBatch(channel="email", job_ids=[1, 2])))
    callback = asyncio.create_task(consumer._outcome(message))  # type: ignore[arg-type]
    await started.wait()

    callback.cancel()  # the connection went away
    with pytest.raises(asyncio.CancelledError):
        await callback
    release.set()
    for _ in range(100):
        if finished:
            break
        await asyncio.sleep(0.01)
    assert finished == [[1, 2]]
    assert not consumer._handlers  # done, and forgotten


class SilentBroker:
    """A queue and channel whose broker never answers (a half-open connection)."""

    name = "jobs.email"

    async def cancel(self, tag: str) -> None:
        await asyncio.Event().wait()

    async def close(self) -> None:
        await asyncio.Event().wait()


async def test_stopping_does_not_hang_on_a_broker_that_never_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("restock_common.broker.SHUTDOWN_STEP_SECONDS", 0.05)
    silent = SilentBroker()
    consumer = Consumer(silent, silent, {})  # type: ignore[arg-type]
    consumer._tag = "ctag-1"
    async with asyncio.timeout(5):
        await consumer.stop(timeout=0.05)
    assert consumer._tag is None
