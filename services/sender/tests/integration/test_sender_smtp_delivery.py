"""The email sender against real PostgreSQL, RabbitMQ and an SMTP server (aiosmtpd) on a loopback port."""

from __future__ import annotations

import asyncio
import email
import email.message
import email.policy
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from aiosmtpd.smtp import SMTP as SMTPServer
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from restock_common import keys, topology
from restock_common.broker import Broker, Consumer
from restock_common.db.engine import bind_tables
from restock_common.db.tables import (
    InventoryItem,
    NotificationJob,
    NotificationLog,
    RestockEvent,
    Subscription,
    Tenant,
)
from restock_common.faults import FaultPoints
from restock_common.messages import JobBatch, RestockDetected
from restock_common.settings import Settings
from restock_common.signatures import contact_hash
from restock_dispatcher.app import create_app as create_dispatcher
from restock_sender.app import build_batch_handler, create_app, smtp_provider
from restock_sender.ports import EmailMessage
from restock_sender.providers.smtp import SmtpProvider

pytestmark = pytest.mark.integration

SHOP = "smtp-shop.myshopify.com"
VARIANT = 777
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@dataclass
class RecordingSmtp:
    """An aiosmtpd handler: records accepted messages; answers a chosen reply for chosen recipients."""

    messages: list[email.message.Message] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 2.0.0 Message accepted for delivery"


@pytest.fixture(autouse=True, scope="module")
def tracing() -> None:
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(TracerProvider())


@pytest.fixture
async def smtp_peer() -> AsyncIterator[tuple[RecordingSmtp, int]]:
    peer = RecordingSmtp()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTPServer(peer, hostname="localhost", loop=loop), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    yield peer, port
    server.close()
    await server.wait_closed()


@pytest.fixture
def sender_settings(settings: Settings, smtp_peer: tuple[RecordingSmtp, int]) -> Settings:
    return settings.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": smtp_peer[1]})


@pytest.fixture
async def email_queue(broker: Broker, settings: Settings) -> AsyncIterator[Any]:
    spec = topology.sender_queue("email", settings.delivery_limit)
    queue = await broker.declare_queue(spec)
    await queue.purge()
    yield queue
    await queue.purge()


@pytest.fixture
async def sender(
    clean_db: None, engine: Any, broker: Broker, sender_settings: Settings, email_queue: Any
) -> AsyncIterator[Consumer]:
    """The production batch handler with its real adapters, consuming the real email queue."""
    provider = smtp_provider(sender_settings)
    handler = build_batch_handler(sender_settings, engine, provider, FaultPoints(None))
    consumer = await broker.consume(
        topology.sender_queue("email", sender_settings.delivery_limit), JobBatch, handler, prefetch=4
    )
    yield consumer
    await consumer.stop()
    await provider.close()


def one_session_provider(server: asyncio.Server, sender: str, **options: float) -> SmtpProvider:
    """A provider with one pooled session to a local test server, no TLS, no auth."""
    return SmtpProvider(
        host="127.0.0.1",
        port=server.sockets[0].getsockname()[1],
        sender=sender,
        username=None,
        password=None,
        tls="none",
        pool_size=1,
        **options,
    )


async def test_pooled_connection_dropped_by_the_server_is_reopened() -> None:
    peer = RecordingSmtp()
    sessions: list[SMTPServer] = []
    loop = asyncio.get_running_loop()

    def session() -> SMTPServer:
        sessions.append(SMTPServer(peer, hostname="localhost", loop=loop))
        return sessions[-1]

    server = await loop.create_server(session, "127.0.0.1", 0)
    provider = one_session_provider(server, "a@restock.test", idle_probe_seconds=0)
    message = EmailMessage(
        to="ann@example.com",
        subject="s",
        text="t",
        html=None,
        notification_key="1:2:3",
        shop_domain=SHOP,
        traceparent=None,
    )
    try:
        await provider.send(message)
        assert len(sessions) == 1
        sessions[0].transport.close()  # the server drops the idle session
        receipt = await provider.send(message)
    finally:
        await provider.close()
        server.close()
        await server.wait_closed()
    assert len(sessions) == 2
    assert len(peer.messages) == 2
    assert receipt.message_id == peer.messages[1]["Message-ID"]


@pytest.mark.parametrize(
    "to",
    [
        "zoe@example.com",  # compat32, 7-bit
        "zoë@exämple.com",  # an internationalized address: SMTPUTF8
    ],
)
@pytest.mark.parametrize("staged", [False, True])
async def test_either_composition_is_delivered_on_a_fresh_session(to: str, staged: bool) -> None:
    """Staged (alerts) or at once (``send``, confirmations): on a fresh session the extensions are read
    after EHLO, so an internationalized address goes with SMTPUTF8, and the peer gets the headers either
    composer wrote."""
    peer = RecordingSmtp()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTPServer(peer, hostname="localhost", loop=loop, enable_SMTPUTF8=True), "127.0.0.1", 0
    )
    provider = one_session_provider(server, "Café <a@restock.test>")
    message = EmailMessage(to, "Größe M ist zurück", "12 €", "<p>€</p>", "1:2:3", SHOP, None)
    try:
        if staged:
            receipt = await (await provider.prepare_staged(message)()).finish()
        else:
            receipt = await provider.send(message)
    finally:
        await provider.close()
        server.close()
        await server.wait_closed()
    [received] = peer.messages
    parsed = email.message_from_bytes(received.as_bytes(), policy=email.policy.default)
    assert (str(parsed["Subject"]), str(parsed["To"])) == ("Größe M ist zurück", to)
    assert receipt.message_id == parsed["Message-ID"]
    body = parsed.get_body(preferencelist=("plain",))
    assert body is not None
    assert body.get_content().strip() == "12 €"


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def seed_jobs(*emails: str, unsubscribed: tuple[str, ...] = ()) -> list[int]:
    """A shop, a restock of one variant and one pending job per address (``unsubscribed`` ones opted out
    after the freeze)."""
    tenant = Tenant(shop_domain=SHOP)
    await tenant.save()
    await InventoryItem(tenant=tenant.id, inventory_item_id=9, variant_id=VARIANT, title="Green Hat").save()
    detected_at = datetime(2026, 5, 1, tzinfo=UTC)
    window = keys.restock_window(detected_at)
    event = RestockEvent(
        tenant=tenant.id,
        variant_id=VARIANT,
        available=3,
        restock_window=window,
        source="webhook",
        detected_at=detected_at,
    )
    await event.save()
    job_ids = []
    for offset, address in enumerate(emails):
        gone = address in unsubscribed
        subscription = Subscription(
            tenant=tenant.id,
            variant_id=VARIANT,
            channel="email",
            email=address,
            contact_hash=contact_hash(address),
            state="unsubscribed" if gone else "confirmed",
            subscribed_at=detected_at - timedelta(days=1, minutes=-offset),
            unsubscribed_at=detected_at if gone else None,
        )
        await subscription.save()
        job = NotificationJob(
            tenant=tenant.id,
            restock_event=event.id,
            subscription=subscription.id,
            variant_id=VARIANT,
            channel="email",
            notification_key=keys.notification_key(VARIANT, subscription.id, window),
            state="pending",
            priority_at=subscription.subscribed_at,
            traceparent=TRACEPARENT,
        )
        await job.save()
        job_ids.append(job.id)
    return job_ids


async def job(job_id: int) -> dict[str, Any]:
    [row] = await NotificationJob.select().where(NotificationJob.id == job_id)
    return row


async def logs(job_id: int) -> list[dict[str, Any]]:
    return await NotificationLog.select().where(NotificationLog.job == job_id).order_by(NotificationLog.id)


async def wait_states(job_ids: list[int], *states: str) -> None:
    async def settled() -> bool:
        return [(await job(job_id))["state"] for job_id in job_ids] == list(states)

    await wait_for(settled)


async def test_sends_one_message_per_job_with_deterministic_message_id_and_logs_it(
    sender: Consumer, broker: Broker, smtp_peer: tuple[RecordingSmtp, int]
) -> None:
    peer, _ = smtp_peer
    job_ids = await seed_jobs("ann@example.com", "bob@example.com")
    await broker.publish(JobBatch(channel="email", job_ids=job_ids), topology.jobs_routing_key("email"))
    await wait_states(job_ids, "sent", "sent")

    assert sorted(message["To"] for message in peer.messages) == ["ann@example.com", "bob@example.com"]
    for job_id in job_ids:
        row = await job(job_id)
        assert row["sent_at"] is not None
        assert row["attempt"] == 1
        assert row["lease_until"] is None
        digest = hashlib.sha256(row["notification_key"].encode()).hexdigest()[:32]
        expected_id = f"<{digest}@restock.{SHOP}>"
        [message] = [m for m in peer.messages if m["Message-ID"] == expected_id]
        assert message["Subject"] == "Green Hat is back in stock"
        assert message["traceparent"].split("-")[1] == TRACEPARENT.split("-")[1]
        assert message.is_multipart()
        [log] = await logs(job_id)
        assert (log["outcome"], log["provider"], log["attempt"]) == ("sent", "smtp", 1)
        assert log["provider_message_id"] == expected_id
        assert "accepted" in log["provider_response"]
        assert (log["template_name"], log["template_version"]) == ("builtin:restock-email", 1)
        assert '"product_url": "https://smtp-shop.myshopify.com/variants/777"' in log["variables"]
        assert log["trace_id"] == TRACEPARENT.split("-")[1]
        [subscription] = await Subscription.select().where(Subscription.id == row["subscription"])
        assert subscription["notified_count"] == 1
        assert subscription["last_notified_at"] is not None


async def test_the_same_batch_delivered_twice_sends_nothing_twice(
    sender: Consumer, broker: Broker, smtp_peer: tuple[RecordingSmtp, int], email_queue: Any
) -> None:
    peer, _ = smtp_peer
    job_ids = await seed_jobs("ann@example.com", "bob@example.com", "cy@example.com")
    batch = JobBatch(channel="email", job_ids=job_ids)
    await broker.publish(batch, topology.jobs_routing_key("email"))
    await broker.publish(batch, topology.jobs_routing_key("email"))
    await wait_states(job_ids, "sent", "sent", "sent")
    await sender.stop()  # graceful: both deliveries are handled and acked before it returns
    declared = await email_queue.channel.declare_queue(email_queue.name, passive=True)
    assert declared.declaration_result.message_count == 0
    assert len(peer.messages) == 3
    assert len({message["Message-ID"] for message in peer.messages}) == 3
    assert [len(await logs(job_id)) for job_id in job_ids] == [1, 1, 1]


async def test_unsubscribed_subscription_is_skipped_and_nothing_is_sent(
    sender: Consumer, broker: Broker, smtp_peer: tuple[RecordingSmtp, int]
) -> None:
    peer, _ = smtp_peer
    [job_id] = await seed_jobs("gone@example.com", unsubscribed=("gone@example.com",))
    await broker.publish(JobBatch(channel="email", job_ids=[job_id]), topology.jobs_routing_key("email"))
    await wait_states([job_id], "skipped-opted-out")
    assert peer.messages == []
    [log] = await logs(job_id)
    assert log["outcome"] == "skipped-opted-out"
    assert (await job(job_id))["decision"] == "opted-out"


async def test_a_subscription_fulfilled_after_the_freeze_is_skipped_and_nothing_is_sent(
    sender: Consumer, broker: Broker, smtp_peer: tuple[RecordingSmtp, int]
) -> None:
    peer, _ = smtp_peer
    [job_id] = await seed_jobs("bought@example.com")
    # The shopper bought the variant between the freeze and the send (the dispatcher's order.created).
    await Subscription.update({Subscription.fulfilled_at: datetime.now(UTC)}).where(
        Subscription.email == "bought@example.com"
    )
    await broker.publish(JobBatch(channel="email", job_ids=[job_id]), topology.jobs_routing_key("email"))
    await wait_states([job_id], "skipped-opted-out")
    assert peer.messages == []
    assert (await job(job_id))["decision"] == "fulfilled"


async def test_550_recipient_ends_failed_permanent_with_a_log_row(
    sender: Consumer, broker: Broker, smtp_peer: tuple[RecordingSmtp, int]
) -> None:
    peer, _ = smtp_peer
    peer.refuse["nobody@example.com"] = "550 5.1.1 <nobody@example.com>: Recipient address rejected"
    ok, refused = await seed_jobs("ann@example.com", "nobody@example.com")
    await broker.publish(JobBatch(channel="email", job_ids=[ok, refused]), topology.jobs_routing_key("email"))
    await wait_states([ok, refused], "sent", "failed-permanent")
    assert [message["To"] for message in peer.messages] == ["ann@example.com"]
    [log] = await logs(refused)
    assert (log["outcome"], log["error_kind"], log["error_code"]) == ("failed-permanent", "permanent", "550")
    assert "Recipient address rejected" in log["error_detail"]
    assert "nobody@example.com" not in log["error_detail"]
    row = await job(refused)
    assert row["last_error_kind"] == "permanent"
    assert row["next_attempt_at"] is None


async def test_451_recipient_ends_failed_temporary_with_next_attempt_in_the_future(
    sender: Consumer, broker: Broker, smtp_peer: tuple[RecordingSmtp, int]
) -> None:
    peer, _ = smtp_peer
    peer.refuse["busy@example.com"] = "451 4.3.0 Temporary local problem, try again"
    [job_id] = await seed_jobs("busy@example.com")
    await broker.publish(JobBatch(channel="email", job_ids=[job_id]), topology.jobs_routing_key("email"))
    await wait_states([job_id], "failed-temporary")
    row = await job(job_id)
    [log] = await logs(job_id)
    # Full jitter: anywhere in [attempt start, attempt start + 30 s] (rules: base 30 s, attempt 1), so it
    # may already be past by now; what matters is that it was scheduled from the attempt, within the cap.
    assert row["next_attempt_at"] is not None
    assert log["started_at"] <= row["next_attempt_at"] <= log["started_at"] + timedelta(seconds=30)
    assert (log["outcome"], log["error_kind"], log["error_code"]) == ("failed-temporary", "temporary", "451")
    assert peer.messages == []


# Issue 7's SMTP classification table, every row answered by a real SMTP server to a real send: the reply
# at RCPT (basic code and, where servers send one, the enhanced status) -> the job's state and error kind.
SMTP_TABLE = [
    ("421 4.4.2 Service not available, closing channel", "failed-temporary", "temporary", "421"),
    ("450 4.2.1 Mailbox temporarily unavailable", "failed-temporary", "temporary", "450"),
    ("451 4.7.1 Greylisted, try again later", "failed-temporary", "temporary", "451"),
    ("452 4.2.2 Mailbox full", "failed-temporary", "temporary", "452"),
    ("550 5.1.1 No such user", "failed-permanent", "permanent", "550"),
    ("551 5.1.6 User not local", "failed-permanent", "permanent", "551"),
    ("553 5.1.3 Mailbox name not allowed", "failed-permanent", "permanent", "553"),
    ("554 5.7.1 Message refused by policy", "failed-permanent", "permanent", "554"),
    ("550 5.7.1 Sender rejected by recipient's policy", "failed-permanent", "permanent", "550"),
]


async def test_every_smtp_row_of_the_classification_table_over_the_wire(
    sender: Consumer, broker: Broker, smtp_peer: tuple[RecordingSmtp, int]
) -> None:
    peer, _ = smtp_peer
    addresses = [f"row{i}@example.com" for i in range(len(SMTP_TABLE))]
    for address, (reply, _, _, _) in zip(addresses, SMTP_TABLE, strict=True):
        peer.refuse[address] = reply
    job_ids = await seed_jobs(*addresses)
    await broker.publish(JobBatch(channel="email", job_ids=job_ids), topology.jobs_routing_key("email"))
    await wait_states(job_ids, *(state for _, state, _, _ in SMTP_TABLE))
    for job_id, (reply, state, kind, code) in zip(job_ids, SMTP_TABLE, strict=True):
        [log] = await logs(job_id)
        assert ((await job(job_id))["state"], log["error_kind"], log["error_code"]) == (state, kind, code), (
            reply
        )
    assert peer.messages == []


async def test_dispatcher_and_sender_apps_deliver_a_restock_end_to_end(
    clean_db: None,
    engine: Any,
    broker: Broker,
    sender_settings: Settings,
    email_queue: Any,
    smtp_peer: tuple[RecordingSmtp, int],
) -> None:
    peer, _ = smtp_peer
    job_ids = await seed_jobs("ann@example.com")
    [existing] = await NotificationJob.select().where(NotificationJob.id == job_ids[0])
    await NotificationJob.delete().where(NotificationJob.id == job_ids[0])  # let the dispatcher freeze it
    [event] = await RestockEvent.select().where(RestockEvent.id == existing["restock_event"])
    dispatcher, sender_app = create_dispatcher(sender_settings), create_app(sender_settings)
    try:
        async with dispatcher.lifespan(), sender_app.lifespan():
            transport = httpx.ASGITransport(app=sender_app)
            async with httpx.AsyncClient(transport=transport, base_url="http://sender") as client:
                ready = await client.get("/readyz")
                assert ready.status_code == 200, ready.text
            await broker.publish(
                RestockDetected(
                    restock_event_id=event["id"],
                    tenant_id=event["tenant"],
                    shop_domain=SHOP,
                    variant_id=VARIANT,
                    available=3,
                    restock_window=event["restock_window"],
                    detected_at=event["detected_at"],
                ),
                topology.RESTOCK_DETECTED,
            )

            async def delivered() -> bool:
                return len(peer.messages) == 1

            await wait_for(delivered)
    finally:
        bind_tables(engine)
    [message] = peer.messages
    assert message["To"] == "ann@example.com"
    [row] = await NotificationJob.select().where(NotificationJob.restock_event == event["id"])
    assert row["state"] == "sent"
    assert message["traceparent"].split("-")[1] == row["traceparent"].split("-")[1]
