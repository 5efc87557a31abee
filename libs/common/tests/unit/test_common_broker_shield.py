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
