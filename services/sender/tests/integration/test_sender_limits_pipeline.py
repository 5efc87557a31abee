"""The production sender app (admission, Redis limiter, channel monitor, scheduler, /metrics) against real
PostgreSQL, RabbitMQ, Redis and the sandbox SMTP server with its fault table.

- A saturated domain's jobs are deferred unclaimed while another domain's mail goes straight through,
  and every job is still sent exactly once, each on its first attempt.
- SMTP 535 pauses the channel (row, ERROR line), loses nothing and burns nothing; fixed, the probe
  resumes it and every job is sent exactly once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from restock_common import topology
from restock_common.broker import Broker
from restock_common.db.engine import bind_tables
from restock_common.db.tables import (
    ChannelPause,
    NotificationJob,
    NotificationLog,
)
from restock_common.messages import JobBatch
from restock_common.settings import Settings
from restock_sandbox.smtp.inbox import FaultRule, Inbox
from restock_sender.app import create_app

# The integration conftest's fixtures: (shop, variant, addresses) -> the jobs seeded, FIFO; and ``inbox``.
SeedEmailJobs = Callable[[str, int, Sequence[str]], Awaitable[list[NotificationJob]]]

pytestmark = pytest.mark.integration

SHOP = "limits-shop.myshopify.com"
VARIANT = 9191


@pytest.fixture
async def fresh(
    clean_db: None, broker: Broker, settings: Settings, redis_client: aioredis.Redis
) -> AsyncIterator[None]:
    queue = await broker.declare_queue(topology.sender_queue("email", settings.delivery_limit))
    await queue.purge()
    yield
    await queue.purge()


def sender_settings(settings: Settings, smtp_port: int, **changes: Any) -> Settings:
    return settings.model_copy(
        update={
            "smtp_host": "127.0.0.1",
            "smtp_port": smtp_port,
            "retry_poll_seconds": 0.05,
            "republish_grace_seconds": 3600.0,
            **changes,
        }
    )


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def jobs(job_ids: list[int]) -> list[dict[str, Any]]:
    return (
        await NotificationJob.select().where(NotificationJob.id.is_in(job_ids)).order_by(NotificationJob.id)
    )


def sample(metrics: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text (0 when absent)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    for line in metrics.splitlines():
        if line.startswith(f"{name}{{{wanted}}} ") or (not labels and line.startswith(f"{name} ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_saturated_domain_is_deferred_while_other_mail_goes_through_and_all_are_sent_once(
    fresh: None,
    engine: Any,
    broker: Broker,
    settings: Settings,
    inbox: tuple[Inbox, int],
    seed_email_jobs: SeedEmailJobs,
) -> None:
    mailbox, port = inbox
    slow = [f"s{i}@slow.test" for i in range(6)]
    fast = [f"f{i}@fast.test" for i in range(4)]
    # the slow domain's jobs are first in line
    job_ids = [job.id for job in await seed_email_jobs(SHOP, VARIANT, [*slow, *fast])]
    app = create_app(
        sender_settings(settings, port, email_domain_limits={"slow.test": 2.0}, limit_queue_seconds=0.6)
    )
    try:
        async with app.lifespan():
            await broker.publish(
                JobBatch(channel="email", job_ids=job_ids), topology.jobs_routing_key("email")
            )

            async def fast_all_sent() -> bool:
                return all(mailbox.received(address) for address in fast)

            await wait_for(fast_all_sent)
            # 2/s on slow.test: at most two of its six can be out before 0.5 s passed, and the first
            # fast.test mail did not wait for any of them (no head-of-line blocking).
            order = [message.rcpt_tos[0] for message in mailbox.received()]
            assert order.index(fast[0]) < order.index(slow[2]) if slow[2] in order else True
            # Beyond the 0.6 s line, slow.test's jobs wait in PostgreSQL, pending and never claimed.
            waiting = [row for row in await jobs(job_ids[:6]) if row["state"] == "pending"]
            assert "rate-limited:domain" in {row["decision"] for row in waiting}
            assert {row["attempt"] for row in waiting} == {0}

            async def all_sent() -> bool:
                return {row["state"] for row in await jobs(job_ids)} == {"sent"}

            await wait_for(all_sent)
            transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # Litestar's narrower ASGI types
            metrics = ""
            async with httpx.AsyncClient(transport=transport, base_url="http://sender") as client:
                # A send is counted by its task once its record has committed, one step after the row
                # reads `sent`: wait for the tenth count (an eleventh would still fail below).
                async def all_counted() -> bool:
                    nonlocal metrics
                    metrics = (await client.get("/metrics")).text
                    sent = sample(metrics, "restock_sender_attempts_total", channel="email", outcome="sent")
                    return sent >= 10

                await wait_for(all_counted)
    finally:
        bind_tables(engine)
    assert sorted(message.rcpt_tos[0] for message in mailbox.received()) == sorted(slow + fast)  # once each
    rows = await jobs(job_ids)
    assert [row["attempt"] for row in rows] == [1] * 10  # a deferral never spent an attempt
    assert await NotificationLog.count() == 10
    assert sample(metrics, "restock_sender_attempts_total", channel="email", outcome="sent") == 10
    assert (
        sample(metrics, "restock_sender_deferrals_total", channel="email", decision="rate-limited:domain")
        >= 4
    )
    assert sample(metrics, "restock_sender_queue_latency_seconds_count", channel="email") == 10
    assert sample(metrics, "restock_sender_dead_letter_backlog", channel="email") == 0
    # slow.test's second job joined the domain's line and slept to its turn, 0.5 s after the first (2/s):
    # the wait observed is the planned one, so this is a lower bound, not a timing.
    assert sample(metrics, "restock_sender_deferrals_total", channel="email", decision="queued:domain") >= 1
    assert sample(metrics, "restock_sender_limit_wait_seconds_count", channel="email") >= 1
    assert sample(metrics, "restock_sender_limit_wait_seconds_sum", channel="email") >= 0.4


async def test_smtp_535_pauses_the_channel_loses_nothing_and_resumes_when_fixed(
    fresh: None,
    engine: Any,
    broker: Broker,
    settings: Settings,
    inbox: tuple[Inbox, int],
    caplog: pytest.LogCaptureFixture,
    seed_email_jobs: SeedEmailJobs,
) -> None:
    mailbox, port = inbox
    addresses = [f"shopper{i}@example.com" for i in range(5)]
    job_ids = [job.id for job in await seed_email_jobs(SHOP, VARIANT, addresses)]
    mailbox.add_fault(FaultRule("*", 535, "5.7.8 Authentication credentials invalid", times=None))
    app = create_app(sender_settings(settings, port, channel_probe_seconds=0.3))
    routing_key = topology.jobs_routing_key("email")
    try:
        async with app.lifespan():
            with caplog.at_level(logging.ERROR, logger="restock_sender.pause"):
                await broker.publish(JobBatch(channel="email", job_ids=job_ids[:3]), routing_key)

                async def paused() -> bool:
                    rows = await ChannelPause.select().where(ChannelPause.channel == "email")
                    return bool(rows) and rows[0]["paused"]

                await wait_for(paused)
            assert any("channel paused" in record.getMessage() for record in caplog.records)
            [pause] = await ChannelPause.select().where(ChannelPause.channel == "email")
            assert pause["error_code"] == "535"
            # A batch published while paused is not consumed (or is deferred): nothing is attempted.
            await broker.publish(JobBatch(channel="email", job_ids=job_ids[3:]), routing_key)
            await asyncio.sleep(
                1.0
            )  # several probe intervals, all refused: a state, not a timing, is checked
            assert {row["state"] for row in await jobs(job_ids)} == {"pending"}
            # Only sends already in flight when the first 535 came back met it too; each went back to pending.
            refused = await NotificationLog.select(NotificationLog.outcome, NotificationLog.error_code)
            assert 1 <= len(refused) <= 3
            assert {(row["outcome"], row["error_code"]) for row in refused} == {("pending", "535")}
            assert mailbox.received() == []

            mailbox.clear_faults()  # the operator fixed the credentials

            async def all_sent() -> bool:
                return {row["state"] for row in await jobs(job_ids)} == {"sent"}

            await wait_for(all_sent)
            [pause] = await ChannelPause.select().where(ChannelPause.channel == "email")
    finally:
        bind_tables(engine)
    assert pause["paused"] is False
    assert pause["resumed_at"] is not None
    assert sorted(message.rcpt_tos[0] for message in mailbox.received()) == sorted(addresses)  # once each
    states = await NotificationLog.select(NotificationLog.outcome).order_by(NotificationLog.id)
    assert [row["outcome"] for row in states] == ["pending"] * len(refused) + ["sent"] * 5
