"""Fixtures of the dispatcher's integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from restock_common import topology
from restock_common.broker import Broker
from restock_common.messages import JobBatch, decode
from restock_common.settings import Settings
from restock_dispatcher.app import declare_job_queues

Drain = Callable[[], Awaitable[list[JobBatch]]]


@pytest.fixture
async def email_queue(broker: Broker, settings: Settings) -> AsyncIterator[Drain]:
    """The email job queue (and the dispatcher's own, for a dispatcher process started later), empty at
    the start; yields a function draining it into decoded batches."""
    await declare_job_queues(broker, settings)
    await broker.declare_queue(topology.dispatcher_queue(settings.delivery_limit))
    channel = await broker.connection.channel()
    queue = await channel.declare_queue(
        topology.sender_queue("email", settings.delivery_limit).name, passive=True
    )
    await queue.purge()

    async def drain() -> list[JobBatch]:
        batches = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            batches.append(decode(message.body, JobBatch))
        return batches

    yield drain
    await queue.purge()
    await channel.close()
