"""Retries, the lease reaper and replay against real PostgreSQL, RabbitMQ and an SMTP peer (aiosmtpd)."""

from __future__ import annotations

import asyncio
import email
import email.message
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec
import pytest
from aiosmtpd.smtp import SMTP as SMTPServer
from prometheus_client.parser import text_string_to_metric_families

from restock_common import keys, topology
from restock_common.broker import Broker
from restock_common.db.engine import bind_tables
from restock_common.db.tables import (
    AuditLog,
    InventoryItem,
    NotificationJob,
    NotificationLog,
    RestockEvent,
    Rule,
    Subscription,
    Tenant,
)
from restock_common.faults import FaultPoints
from restock_common.messages import JobBatch
from restock_common.replay import PiccoloReplayStore, ReplayResult, replay
from restock_common.rules import Rules, encode_rules
from restock_common.settings import Settings
from restock_common.signatures import contact_hash
from restock_sender.adapters.schedule_store import PiccoloScheduleStore
from restock_sender.app import build_batch_handler, build_scheduler, create_app, smtp_provider
from restock_sender.scheduler import Scheduler

pytestmark = pytest.mark.integration

SHOP = "retry-shop.myshopify.com"
VARIANT = 4242
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
FAST_RETRIES = Rules(max_attempts=5, retry_base_seconds=0.05, retry_cap_seconds=0.1)


@dataclass
class FlakySmtp:
    """An SMTP peer that answers 451 to a recipient as many times as asked, then accepts."""

    messages: list[email.message.Message] = field(default_factory=list)
    temporary_refusals: dict[str, int] = field(default_factory=dict)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if self.temporary_refusals.get(address, 0) > 0:
            self.temporary_refusals[address] -= 1
            return "451 4.3.0 Temporary local problem, try again"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 2.0.0 Message accepted for delivery"

    def sent_to(self, address: str) -> int:
        return sum(1 for message in self.messages if message["To"] == address)


@pytest.fixture
async def peer() -> AsyncIterator[tuple[FlakySmtp, int]]:
    smtp = FlakySmtp()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTPServer(smtp, hostname="localhost", loop=loop), "127.0.0.1", 0
    )
    yield smtp, server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


@pytest.fixture
def fast_settings(settings: Settings, peer: tuple[FlakySmtp, int]) -> Settings:
    return settings.model_copy(
        update={
            "smtp_host": "127.0.0.1",
            "smtp_port": peer[1],
            "retry_poll_seconds": 0.05,
            "republish_grace_seconds": 3600.0,  # only replays are published at once
        }
    )


@pytest.fixture
async def email_queue(broker: Broker, settings: Settings) -> AsyncIterator[Any]:
    queue = await broker.declare_queue(topology.sender_queue("email", settings.delivery_limit))
    await queue.purge()
    yield queue
    await queue.purge()


@dataclass
class Pipeline:
    """The production consumer and scheduler of the email channel, running."""

    scheduler: Scheduler
    consumer: Any


@pytest.fixture
async def pipeline(
    clean_db: None, engine: Any, broker: Broker, fast_settings: Settings, email_queue: Any
) -> AsyncIterator[Pipeline]:
    provider = smtp_provider(fast_settings)
    handler = build_batch_handler(fast_settings, engine, provider, FaultPoints(None))
    consumer = await broker.consume(
        topology.sender_queue("email", fast_settings.delivery_limit), JobBatch, handler, prefetch=4
    )
    scheduler = build_scheduler(fast_settings, engine, broker)
    scheduler.start()
    yield Pipeline(scheduler, consumer)
    await scheduler.stop()
    await consumer.stop()
    await provider.close()


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def job(job_id: int) -> dict[str, Any]:
    [row] = await NotificationJob.select().where(NotificationJob.id == job_id)
    return row


async def logs(job_id: int) -> list[dict[str, Any]]:
    return await NotificationLog.select().where(NotificationLog.job == job_id).order_by(NotificationLog.id)


async def wait_state(job_id: int, state: str) -> None:
    async def reached() -> bool:
        return bool((await job(job_id))["state"] == state)

    await wait_for(reached)


@dataclass
class Shop:
    tenant_id: int
    restock_event_id: int
    window: int


async def seed_shop(rules: Rules = FAST_RETRIES) -> Shop:
    tenant = Tenant(shop_domain=SHOP)
    await tenant.save()
    await Rule(tenant=tenant.id, body=encode_rules(rules)).save()
    await InventoryItem(tenant=tenant.id, inventory_item_id=5, variant_id=VARIANT, title="Red Scarf").save()
    detected_at = datetime(2026, 6, 1, tzinfo=UTC)
    window = keys.restock_window(detected_at)
    event = RestockEvent(
        tenant=tenant.id,
        variant_id=VARIANT,
        available=2,
        restock_window=window,
        source="webhook",
        detected_at=detected_at,
    )
    await event.save()
    return Shop(tenant.id, event.id, window)


async def seed_job(
    shop: Shop,
    address: str,
    *,
    state: str = "pending",
    consent: str = "confirmed",
    channel: str = "email",
    priority_at: datetime | None = None,
    **columns: Any,
) -> int:
    subscription = Subscription(
        tenant=shop.tenant_id,
        variant_id=VARIANT,
        channel=channel,
        email=address if channel == "email" else None,
        phone="+15005550006" if channel == "sms" else None,
        contact_hash=contact_hash(address),
        state=consent,
        unsubscribed_at=datetime.now(UTC) if consent == "unsubscribed" else None,
    )
    await subscription.save()
    row = NotificationJob(
        tenant=shop.tenant_id,
        restock_event=shop.restock_event_id,
        subscription=subscription.id,
        variant_id=VARIANT,
        channel=channel,
        notification_key=keys.notification_key(VARIANT, subscription.id, shop.window),
        state=state,
        priority_at=priority_at or subscription.subscribed_at,
        traceparent=TRACEPARENT,
        **columns,
    )
    await row.save()
    return int(row.id)


async def publish(broker: Broker, *job_ids: int) -> None:
    await broker.publish(JobBatch(channel="email", job_ids=list(job_ids)), topology.jobs_routing_key("email"))


def metric(exposition: str, name: str, **labels: str) -> float:
    """One sample's value in the app's ``/metrics`` text (0 when absent)."""
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


async def test_a_temporary_failure_recovers_on_the_third_attempt_through_the_app(
    clean_db: None,
    engine: Any,
    broker: Broker,
    fast_settings: Settings,
    email_queue: Any,
    peer: tuple[FlakySmtp, int],
) -> None:
    """Beside it, a job that never recovers dead-letters; the app's /metrics counts both."""
    smtp, _ = peer
    smtp.temporary_refusals["ann@example.com"] = 2
    smtp.temporary_refusals["bob@example.com"] = 1_000
    shop = await seed_shop()
    job_id, lost_id = await seed_job(shop, "ann@example.com"), await seed_job(shop, "bob@example.com")
    # The scheduler runs in the app's lifespan, beside the consumer; the channel monitor, which refreshes
    # the dead-letter backlog, ticks every 0.1 s.
    app = create_app(fast_settings.model_copy(update={"channel_probe_seconds": 0.1}))
    exposition = ""
    try:
        async with app.lifespan():
            await publish(broker, job_id, lost_id)
            await wait_state(job_id, "sent")
            await wait_state(lost_id, "dead-letter")
            transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # Litestar's narrower ASGI types
            async with httpx.AsyncClient(transport=transport, base_url="http://sender") as client:
                # An attempt is counted once its record committed, a step after the row shows its state; the
                # backlog, once the monitor ticked after the dead-letter. Wait for both last attempts and it.
                async def counted() -> bool:
                    nonlocal exposition
                    exposition = (await client.get("/metrics")).text
                    return all(
                        metric(exposition, name, channel="email", **labels) == 1
                        for name, labels in [
                            ("restock_sender_attempts_total", {"outcome": "sent"}),
                            ("restock_sender_attempts_total", {"outcome": "dead-letter"}),
                            ("restock_sender_dead_letter_backlog", {}),
                        ]
                    )

                await wait_for(counted)
    finally:
        bind_tables(engine)
    assert smtp.sent_to("ann@example.com") == 1
    rows = await logs(job_id)
    assert [(row["attempt"], row["outcome"]) for row in rows] == [
        (1, "failed-temporary"),
        (2, "failed-temporary"),
        (3, "sent"),
    ]
    assert [row["error_code"] for row in rows] == ["451", "451", None]
    assert (await job(job_id))["attempt"] == 3
    assert [row["outcome"] for row in await logs(lost_id)] == ["failed-temporary"] * 4 + ["dead-letter"]
    email = {"channel": "email"}
    assert metric(exposition, "restock_sender_attempts_total", **email, outcome="failed-temporary") == 6
    # ann's two refusals and all five of bob's: each a temporary failure, the last one dead-lettering
    assert metric(exposition, "restock_sender_failures_total", **email, kind="temporary") == 7
    assert metric(exposition, "restock_sender_failures_total", **email, kind="permanent") == 0
    assert metric(exposition, "restock_sender_retry_recoveries_total", **email) == 1
    assert metric(exposition, "restock_sender_dead_letter_backlog", **email) == 1
    # ann's send, a retry: observed even when claimed before the scheduler's enqueued mark committed.
    assert metric(exposition, "restock_sender_queue_latency_seconds_count", **email) == 1


async def test_exhausted_retries_end_dead_letter_and_a_replay_sends_it_once_with_an_audit_row(
    pipeline: Pipeline, broker: Broker, peer: tuple[FlakySmtp, int]
) -> None:
    smtp, _ = peer
    smtp.temporary_refusals["bob@example.com"] = 1_000
    shop = await seed_shop(Rules(max_attempts=2, retry_base_seconds=0.05, retry_cap_seconds=0.1))
    job_id = await seed_job(shop, "bob@example.com")
    await publish(broker, job_id)
    await wait_state(job_id, "dead-letter")
    assert [(row["attempt"], row["outcome"]) for row in await logs(job_id)] == [
        (1, "failed-temporary"),
        (2, "dead-letter"),
    ]
    assert smtp.messages == []

    smtp.temporary_refusals.clear()  # the peer recovered
    result = await replay(PiccoloReplayStore(), [job_id], "ops@example.com", "peer recovered")
    assert result == ReplayResult([job_id], {})
    await wait_state(job_id, "sent")  # published by the scheduler at once: a replayed, unpublished job
    assert smtp.sent_to("bob@example.com") == 1
    row = await job(job_id)
    assert row["attempt"] == 1  # a new attempt series
    assert [r["outcome"] for r in await logs(job_id)] == ["failed-temporary", "dead-letter", "sent"]
    [audit] = await AuditLog.select().where(AuditLog.action == "jobs.replay")
    assert (audit["actor"], audit["tenant"], audit["target_type"]) == (
        "ops@example.com",
        shop.tenant_id,
        "notification_job",
    )
    assert msgspec.json.decode(audit["target_ids"]) == [job_id]
    assert msgspec.json.decode(audit["detail"]) == {
        "reason": "peer recovered",
        "replayed": [job_id],
        "refused": {},
    }


async def test_replay_refuses_opted_out_and_non_replayable_jobs(
    pipeline: Pipeline, peer: tuple[FlakySmtp, int]
) -> None:
    smtp, _ = peer
    shop = await seed_shop()
    gone = await seed_job(shop, "gone@example.com", state="dead-letter", consent="unsubscribed", attempt=5)
    unconfirmed = await seed_job(shop, "maybe@example.com", state="indeterminate", consent="pending")
    done = await seed_job(shop, "done@example.com", state="sent")
    lost = await seed_job(shop, "lost@example.com", state="indeterminate", attempt=1)

    result = await replay(PiccoloReplayStore(), [gone, unconfirmed, done, lost], "ops@example.com", "")
    assert result.replayed == [lost]
    assert result.refused == {
        gone: "opted-out",
        unconfirmed: "not-confirmed",
        done: "not-replayable-in-state:sent",
    }
    await wait_state(lost, "sent")
    assert [(await job(j))["state"] for j in (gone, unconfirmed, done)] == [
        "dead-letter",
        "indeterminate",
        "sent",
    ]
    assert (await job(gone))["attempt"] == 5
    assert [message["To"] for message in smtp.messages] == ["lost@example.com"]
    [audit] = await AuditLog.select().where(AuditLog.action == "jobs.replay")
    assert msgspec.json.decode(audit["detail"])["refused"] == {
        str(gone): "opted-out",
        str(unconfirmed): "not-confirmed",
        str(done): "not-replayable-in-state:sent",
    }


async def test_an_expired_lease_past_the_provider_call_becomes_indeterminate_and_is_never_sent(
    pipeline: Pipeline, broker: Broker, peer: tuple[FlakySmtp, int]
) -> None:
    smtp, _ = peer
    shop = await seed_shop()
    past, future = datetime.now(UTC) - timedelta(minutes=1), datetime.now(UTC) + timedelta(minutes=5)
    expired = await seed_job(
        shop, "lost@example.com", state="processing", attempt=1, lease_until=past, provider_called_at=past
    )
    held = await seed_job(
        shop, "held@example.com", state="processing", attempt=1, lease_until=future, provider_called_at=past
    )
    sms = await seed_job(
        shop,
        "sms-contact",
        channel="sms",
        state="processing",
        attempt=1,
        lease_until=past,
        provider_called_at=past,
    )
    control = await seed_job(shop, "control@example.com")

    await wait_state(expired, "indeterminate")
    row = await job(expired)
    assert (row["decision"], row["lease_until"], row["attempt"]) == ("lease-expired", None, 1)
    [log] = await logs(expired)
    assert (log["outcome"], log["error_kind"], log["error_detail"], log["attempt"], log["provider"]) == (
        "indeterminate",
        None,
        "lease expired after the provider call started; outcome unknown",
        1,
        "smtp",
    )
    assert log["trace_id"] == TRACEPARENT.split("-")[1]

    await publish(broker, expired, control)  # a stale delivery of its batch must not send it
    await wait_state(control, "sent")
    await pipeline.consumer.stop()  # graceful: the whole batch is handled before it returns
    await pipeline.scheduler.tick()
    assert smtp.sent_to("lost@example.com") == 0
    assert [message["To"] for message in smtp.messages] == ["control@example.com"]
    assert (await job(expired))["state"] == "indeterminate"
    assert [(await job(j))["state"] for j in (held, sms)] == ["processing", "processing"]
    assert await logs(held) == []
    assert await logs(sms) == []


async def test_an_expired_lease_before_the_provider_call_is_sent_again_once(
    pipeline: Pipeline, peer: tuple[FlakySmtp, int]
) -> None:
    """ADR 21: its sender died (or stalled) between the claim and the provider-call mark: nothing was sent,
    so the reaper gives the job back and the scheduler publishes it at once; it is sent exactly once."""
    smtp, _ = peer
    shop = await seed_shop()
    past = datetime.now(UTC) - timedelta(minutes=1)
    unstarted = await seed_job(
        shop, "unstarted@example.com", state="processing", attempt=1, lease_until=past, enqueued_at=past
    )

    await wait_state(unstarted, "sent")
    row = await job(unstarted)
    assert (row["attempt"], row["lease_until"], row["provider_called_at"] is not None) == (2, None, True)
    reaped, sent = await logs(unstarted)
    assert (reaped["outcome"], reaped["attempt"], reaped["error_detail"], reaped["provider"]) == (
        "pending",
        1,
        "lease expired before the provider call; sent again",
        "smtp",
    )
    assert reaped["trace_id"] == TRACEPARENT.split("-")[1]
    assert (sent["outcome"], sent["attempt"]) == ("sent", 2)
    assert smtp.sent_to("unstarted@example.com") == 1


async def test_due_retries_are_published_fifo_once_and_only_when_due(
    clean_db: None, engine: Any, broker: Broker, fast_settings: Settings, email_queue: Any
) -> None:
    shop = await seed_shop()
    now = datetime.now(UTC)
    late = await seed_job(
        shop, "late@example.com", state="failed-temporary", next_attempt_at=now, priority_at=now
    )
    early = await seed_job(
        shop,
        "early@example.com",
        state="failed-temporary",
        next_attempt_at=now,
        priority_at=now - timedelta(days=1),
    )
    later = await seed_job(
        shop, "later@example.com", state="failed-temporary", next_attempt_at=now + timedelta(hours=1)
    )
    scheduler = build_scheduler(fast_settings, engine, broker)

    report = await scheduler.tick()
    assert (report.requeued, report.published) == (2, 0)
    message = await email_queue.get(timeout=5)
    await message.ack()
    assert msgspec.json.decode(message.body, type=JobBatch).job_ids == [early, late]
    assert [(await job(j))["state"] for j in (early, late, later)] == [
        "pending",
        "pending",
        "failed-temporary",
    ]
    assert (await job(early))["enqueued_at"] is not None

    assert (await scheduler.tick()).requeued == 0  # moved once: nothing left to publish
    assert await email_queue.get(fail=False, timeout=1) is None


async def test_a_retry_moved_but_never_published_is_published_by_the_sweep(
    clean_db: None, engine: Any
) -> None:
    shop = await seed_shop()
    job_id = await seed_job(
        shop, "x@example.com", state="failed-temporary", next_attempt_at=datetime.now(UTC), attempt=1
    )
    store = PiccoloScheduleStore(engine)
    assert await store.requeue_due("email", 10) == [job_id]  # then the process dies before publishing
    row = await job(job_id)
    assert (row["state"], row["enqueued_at"]) == ("pending", None)

    async def broker_down(job_ids: list[int]) -> None:
        raise ConnectionError("broker down")

    with pytest.raises(ConnectionError):
        await store.publish_unqueued("email", 10, 0, broker_down)
    assert (await job(job_id))["enqueued_at"] is None  # the failed publish rolled the mark back
    published: list[list[int]] = []

    async def record(job_ids: list[int]) -> None:
        published.append(job_ids)

    assert await store.publish_unqueued("email", 10, 0, record) == [job_id]
    assert published == [[job_id]]


async def test_unpublished_pending_jobs_wait_for_the_grace_period_unless_replayed(
    clean_db: None, engine: Any
) -> None:
    shop = await seed_shop()
    fresh = await seed_job(shop, "new@example.com", attempt=1)  # a retry whose publish did not happen
    await seed_job(shop, "frozen@example.com")  # never published since its freeze: the dispatcher's (ADR 10)
    replayed = await seed_job(shop, "again@example.com", decision="replayed")
    published: list[list[int]] = []

    async def record(job_ids: list[int]) -> None:
        published.append(job_ids)

    store = PiccoloScheduleStore(engine)
    assert await store.publish_unqueued("email", 10, 3600, record) == [replayed]
    assert await store.publish_unqueued("email", 10, 3600, record) == []
    assert await store.publish_unqueued("email", 10, 0, record) == [fresh]
    assert await store.publish_unqueued("email", 10, 0, record) == []
    assert published == [[replayed], [fresh]]
    assert (await job(fresh))["enqueued_at"] is not None
