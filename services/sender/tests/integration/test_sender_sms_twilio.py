"""The SMS channel, stored templates, List-Unsubscribe and double opt-in confirmations over the wire: real
PostgreSQL, RabbitMQ and Redis, and the sandbox (its Twilio Messages API and its SMTP inbox) served
in-process on free ports, called through the official ``twilio`` client."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec
import pytest
import uvicorn
from litestar import Litestar, Request, post
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from pydantic import SecretStr
from twilio.request_validator import RequestValidator

from restock_common import keys, topology
from restock_common.broker import Broker, Outcome
from restock_common.db.engine import bind_tables
from restock_common.db.tables import (
    ConsentEvent,
    InventoryItem,
    NotificationJob,
    NotificationLog,
    RestockEvent,
    Rule,
    Subscription,
    Template,
    Tenant,
)
from restock_common.faults import FaultPoints
from restock_common.links import LinkSigner
from restock_common.messages import ConfirmationRequested, JobBatch
from restock_common.rules import Rules, encode_rules
from restock_common.settings import Settings
from restock_common.signatures import contact_hash
from restock_common.templating import CONFIRMATION_TEMPLATE, TemplateInUse, TemplateRejected, save_version
from restock_sandbox.app import create_app as create_sandbox
from restock_sender.app import (
    build_batch_handler,
    build_confirmation_handler,
    build_scheduler,
    create_app,
    smtp_provider,
    twilio_provider,
)
from restock_sender.delivery import Permanent, ProviderError, classify
from restock_sender.providers.twilio import TwilioProvider
from restock_sender.scheduler import Scheduler

pytestmark = pytest.mark.integration

SHOP = "sms-shop.myshopify.com"
VARIANT = 5150
SHOPPER = "+14155550123"
TRACEPARENT = "00-5bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
FAST_RETRIES = Rules(max_attempts=5, retry_base_seconds=0.05, retry_cap_seconds=0.1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(autouse=True, scope="module")
def tracing() -> None:
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(TracerProvider())


@pytest.fixture
async def sms_settings(settings: Settings) -> Settings:
    """One settings object for the sandbox and the sender: they agree on the Twilio account by design."""
    port = free_port()
    return settings.model_copy(
        update={
            "shopify_api_base_url": f"http://127.0.0.1:{port}",
            "twilio_base_url": f"http://127.0.0.1:{port}/twilio",
            "smtp_host": "127.0.0.1",
            "smtp_port": free_port(),
            "public_base_url": f"http://127.0.0.1:{free_port()}",  # nobody listens: callbacks are not ours
            "sandbox_webhook_url": f"http://127.0.0.1:{free_port()}/webhooks/shopify",
            "retry_poll_seconds": 0.05,
            "republish_grace_seconds": 3600.0,
            "link_secret": SecretStr("sms-test-link-secret"),
        }
    )


@pytest.fixture
async def sandbox(sms_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The sandbox app (Twilio peer, SMTP inbox) served by uvicorn on this loop; an HTTP client on it."""
    base = sms_settings.shopify_api_base_url
    config = uvicorn.Config(
        create_sandbox(sms_settings),
        host="127.0.0.1",
        port=int(base.rsplit(":", 1)[1]),
        log_config=None,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "sandbox failed to start"
        await asyncio.sleep(0.01)
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        yield client
    server.should_exit = True
    await task


@pytest.fixture
async def sms_queue(broker: Broker, sms_settings: Settings) -> AsyncIterator[Any]:
    queue = await broker.declare_queue(topology.sender_queue("sms", sms_settings.delivery_limit))
    await queue.purge()
    yield queue
    await queue.purge()


@dataclass
class Pipeline:
    provider: TwilioProvider
    scheduler: Scheduler
    consumer: Any


class KilledAt(BaseException):
    """Stands in for the SIGKILL of the fault suite at a named point: not an ``Exception``, so no handler
    cleans up after it (a killed process runs no code)."""


class DieOnceAt(FaultPoints):
    """The sender 'dies' (raises) the first time it reaches ``point``, leaving the job in ``processing``."""

    def __init__(self, point: str) -> None:
        super().__init__(None)
        self.point: str | None = point

    def reach(self, name: str) -> None:
        if name == self.point:
            self.point = None
            raise KilledAt(name)


async def start_pipeline(
    engine: Any, broker: Broker, settings: Settings, faults: FaultPoints | None = None, scheduler: bool = True
) -> Pipeline:
    provider = twilio_provider(settings)
    handler = build_batch_handler(settings, engine, provider, faults or FaultPoints(None))
    consumer = await broker.consume(
        topology.sender_queue("sms", settings.delivery_limit), JobBatch, handler, prefetch=4
    )
    scheduled = build_scheduler(settings, engine, broker, channel="sms", sms=provider)
    if scheduler:
        scheduled.start()
    return Pipeline(provider, scheduled, consumer)


async def stop_pipeline(pipeline: Pipeline) -> None:
    await pipeline.scheduler.stop()
    await pipeline.consumer.stop()
    await pipeline.provider.close()


@pytest.fixture
async def pipeline(
    clean_db: None,
    engine: Any,
    broker: Broker,
    sms_settings: Settings,
    sandbox: httpx.AsyncClient,
    sms_queue: Any,
) -> AsyncIterator[Pipeline]:
    running = await start_pipeline(engine, broker, sms_settings)
    yield running
    await stop_pipeline(running)


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
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
        return (await job(job_id))["state"] == state

    await wait_for(reached)


async def peer_messages(sandbox: httpx.AsyncClient, to: str = SHOPPER) -> list[dict[str, Any]]:
    response = await sandbox.get("/twilio/messages", params={"to": to})
    response.raise_for_status()
    return list(response.json())


async def inject(sandbox: httpx.AsyncClient, code: int, times: int = 1, to: str = SHOPPER) -> None:
    response = await sandbox.post(
        "/twilio/faults", json={"match": to, "mode": "error", "code": code, "times": times}
    )
    assert response.status_code == 201, response.text


@dataclass
class Shop:
    tenant_id: int
    restock_event_id: int
    window: int


async def seed_shop(rules: Rules = FAST_RETRIES) -> Shop:
    tenant = Tenant(shop_domain=SHOP)
    await tenant.save()
    await Rule(tenant=tenant.id, body=encode_rules(rules)).save()
    await InventoryItem(tenant=tenant.id, inventory_item_id=9, variant_id=VARIANT, title="Red Scarf").save()
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


async def seed_subscription(
    shop: Shop,
    *,
    channel: str = "sms",
    phone: str = SHOPPER,
    email: str | None = None,
    state: str = "confirmed",
) -> int:
    contact = phone if channel == "sms" else str(email)
    subscription = Subscription(
        tenant=shop.tenant_id,
        variant_id=VARIANT,
        channel=channel,
        phone=phone if channel == "sms" else None,
        email=email if channel == "email" else None,
        contact_hash=contact_hash(contact),
        state=state,
    )
    await subscription.save()
    return int(subscription.id)


async def seed_job(shop: Shop, *, phone: str = SHOPPER, channel: str = "sms", **columns: Any) -> int:
    subscription_id = await seed_subscription(
        shop, channel=channel, phone=phone, email=columns.pop("email", None)
    )
    row = NotificationJob(
        tenant=shop.tenant_id,
        restock_event=shop.restock_event_id,
        subscription=subscription_id,
        variant_id=VARIANT,
        channel=channel,
        notification_key=keys.notification_key(VARIANT, subscription_id, shop.window),
        priority_at=datetime.now(UTC),
        traceparent=TRACEPARENT,
        **columns,
    )
    await row.save()
    return int(row.id)


async def publish(broker: Broker, *job_ids: int, channel: str = "sms") -> None:
    await broker.publish(JobBatch(channel=channel, job_ids=list(job_ids)), topology.jobs_routing_key(channel))  # type: ignore[arg-type]


# --- the SMS channel -----------------------------------------------------------------------------------


async def test_an_sms_alert_goes_out_once_with_opt_out_text_segments_sid_and_trace(
    pipeline: Pipeline, broker: Broker, sandbox: httpx.AsyncClient
) -> None:
    job_id = await seed_job(await seed_shop())
    await publish(broker, job_id)
    await wait_state(job_id, "sent")
    await publish(broker, job_id)  # a redelivered batch sends nothing twice
    await asyncio.sleep(0.3)
    [message] = await peer_messages(sandbox)
    assert message["body"] == (
        f"{SHOP}: Red Scarf is back in stock. https://{SHOP}/variants/{VARIANT}\nReply STOP to opt out."
    )
    assert message["from"] == "+15005550006"
    assert message["status_callback"].endswith(f"/twilio/status?job={job_id}&attempt=1")
    assert message["traceparent"].split("-")[1] == TRACEPARENT.split("-")[1]  # the job's trace, carried on
    [log] = await logs(job_id)
    assert (log["outcome"], log["provider"], log["provider_message_id"]) == ("sent", "twilio", message["sid"])
    assert log["segments"] == message["segments"] == 1
    assert log["template_name"] == "builtin:restock-sms"
    assert SHOPPER not in msgspec.json.encode(log).decode()
    [subscription] = await Subscription.select().where(Subscription.phone == SHOPPER)
    assert subscription["notified_count"] == 1


async def test_the_sms_process_sends_an_alert_and_a_confirmation_through_its_app(
    clean_db: None,
    engine: Any,
    broker: Broker,
    sms_settings: Settings,
    sandbox: httpx.AsyncClient,
    sms_queue: Any,
) -> None:
    shop = await seed_shop()
    job_id = await seed_job(shop)
    pending = await seed_subscription(shop, phone="+14155550125", state="pending")
    app = create_app(
        sms_settings, channel="sms"
    )  # the composition root of `python -m restock_sender --channel sms`
    try:
        async with app.lifespan():
            await publish(broker, job_id)
            await broker.publish(
                ConfirmationRequested(
                    tenant_id=shop.tenant_id,
                    subscription_id=pending,
                    channel="sms",
                    requested_at=datetime.now(UTC),
                ),
                topology.confirm_routing_key("sms"),
            )
            await wait_state(job_id, "sent")

            async def confirmed_sent() -> bool:
                return bool(await peer_messages(sandbox, "+14155550125"))

            await wait_for(confirmed_sent)
    finally:
        bind_tables(engine)
    assert len(await peer_messages(sandbox)) == 1
    [confirmation] = await peer_messages(sandbox, "+14155550125")
    assert "reply YES" in confirmation["body"]


@pytest.mark.parametrize(
    ("code", "state", "error_kind"),
    [
        (21211, "failed-permanent", "permanent"),
        (21614, "failed-permanent", "permanent"),
        (21408, "failed-permanent", "permanent"),
        (20429, "failed-temporary", "temporary"),
        (500, "failed-temporary", "temporary"),
        (20003, "pending", "configuration"),
    ],
)
async def test_every_twilio_error_row_is_classified_over_http(
    clean_db: None,
    engine: Any,
    broker: Broker,
    sms_settings: Settings,
    sandbox: httpx.AsyncClient,
    sms_queue: Any,
    code: int,
    state: str,
    error_kind: str,
) -> None:
    running = await start_pipeline(
        engine, broker, sms_settings, scheduler=False
    )  # no retry: the first outcome
    try:
        await inject(sandbox, code, times=1_000)
        job_id = await seed_job(await seed_shop())
        await publish(broker, job_id)

        async def logged() -> bool:
            return bool(await logs(job_id))

        await wait_for(logged)
    finally:
        await stop_pipeline(running)
    [log] = await logs(job_id)
    assert (await job(job_id))["state"] == state
    assert (log["error_kind"], log["error_code"]) == (error_kind, str(20500 if code == 500 else code))
    assert SHOPPER not in (log["error_detail"] or "")  # Twilio echoes the number: redacted
    assert await peer_messages(sandbox) == []


@pytest.mark.parametrize("code", [30005, 30006])
async def test_a_carrier_failure_reaches_our_status_callback_signed_with_the_job_and_attempt(
    clean_db: None,
    engine: Any,
    broker: Broker,
    sms_settings: Settings,
    sandbox: httpx.AsyncClient,
    sms_queue: Any,
    code: int,
) -> None:
    """30005/30006 come after acceptance, in the status callback (the admin-api's ``/twilio/status``
    records them): the sender's part is a callback URL that names the attempt, which Twilio signs."""
    received: list[tuple[str, dict[str, str], str]] = []

    @post("/twilio/status", status_code=204)
    async def status(request: Request[Any, Any, Any]) -> None:
        form = {key: str(value) for key, value in (await request.form()).items()}
        received.append((str(request.url), form, request.headers.get("x-twilio-signature", "")))

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(Litestar([status]), host="127.0.0.1", port=port, log_config=None))
    serving = asyncio.create_task(server.serve())
    settings = sms_settings.model_copy(update={"public_base_url": f"http://127.0.0.1:{port}"})
    running = await start_pipeline(engine, broker, settings, scheduler=False)
    try:
        await inject(sandbox, code)
        job_id = await seed_job(await seed_shop())
        await publish(broker, job_id)
        await wait_state(job_id, "sent")  # Twilio accepted it: that is the sender's outcome

        async def undelivered() -> bool:
            return any(form.get("MessageStatus") == "undelivered" for _, form, _ in received)

        await wait_for(undelivered)
    finally:
        await stop_pipeline(running)
        server.should_exit = True
        await serving
    url, form, signature = next(item for item in received if item[1]["MessageStatus"] == "undelivered")
    assert url.endswith(f"/twilio/status?job={job_id}&attempt=1")
    assert form["ErrorCode"] == str(code)
    assert form["MessageSid"] == (await logs(job_id))[0]["provider_message_id"]
    assert RequestValidator(sms_settings.twilio_auth_token.get_secret_value()).validate(url, form, signature)
    assert isinstance(
        classify(ProviderError("response", form["ErrorCode"], "", provider="twilio")), Permanent
    )


async def test_21610_fails_the_job_and_unsubscribes_with_consent_evidence(
    pipeline: Pipeline, broker: Broker, sandbox: httpx.AsyncClient
) -> None:
    await inject(sandbox, 21610)
    job_id = await seed_job(await seed_shop())
    await publish(broker, job_id)
    await wait_state(job_id, "failed-permanent")
    [subscription] = await Subscription.select().where(Subscription.phone == SHOPPER)
    assert subscription["state"] == "unsubscribed"
    assert subscription["unsubscribed_at"] is not None
    [event] = await ConsentEvent.select().where(ConsentEvent.subscription == subscription["id"])
    assert (event["kind"], event["source"]) == ("unsubscribed", "provider")
    assert msgspec.json.decode(event["detail"]) == {"job_id": job_id, "error_code": "21610"}


async def test_a_temporary_failure_recovers_on_the_third_attempt(
    pipeline: Pipeline, broker: Broker, sandbox: httpx.AsyncClient
) -> None:
    await inject(sandbox, 20429, times=2)
    job_id = await seed_job(await seed_shop())
    await publish(broker, job_id)
    await wait_state(job_id, "sent")
    rows = await logs(job_id)
    assert [(row["attempt"], row["outcome"], row["error_code"]) for row in rows] == [
        (1, "failed-temporary", "20429"),
        (2, "failed-temporary", "20429"),
        (3, "sent", None),
    ]
    [message] = await peer_messages(sandbox)
    assert rows[2]["provider_message_id"] == message["sid"]


async def test_an_answer_lost_after_twilio_accepted_is_found_in_its_list_and_not_sent_twice(
    pipeline: Pipeline, broker: Broker, sandbox: httpx.AsyncClient
) -> None:
    response = await sandbox.post("/twilio/faults", json={"match": SHOPPER, "mode": "drop-after-accept"})
    assert response.status_code == 201, response.text
    job_id = await seed_job(await seed_shop())
    await publish(broker, job_id)
    await wait_state(job_id, "sent")
    await asyncio.sleep(0.3)  # a retry, were there one, would be due by now (FAST_RETRIES)
    [message] = await peer_messages(sandbox)
    [log] = await logs(job_id)
    assert (log["attempt"], log["provider_message_id"]) == (1, message["sid"])
    assert "found in the message list" in log["provider_response"]


async def test_an_invalid_number_is_refused_before_twilio_is_called(
    pipeline: Pipeline, broker: Broker, sandbox: httpx.AsyncClient
) -> None:
    job_id = await seed_job(await seed_shop(), phone="+1555")
    await publish(broker, job_id)
    await wait_state(job_id, "failed-permanent")
    [log] = await logs(job_id)
    assert (log["error_kind"], log["error_code"]) == ("permanent", "21211")
    assert (await sandbox.get("/twilio/messages")).json() == []


# --- the SMS lease reaper ------------------------------------------------------------------------------


async def expire_lease(job_id: int) -> None:
    await NotificationJob.raw(
        "UPDATE notification_jobs SET lease_until = now() - interval '1 second' WHERE id = {}", job_id
    )


async def test_the_reaper_records_an_sms_that_went_out_as_sent_with_its_sid_and_sends_nothing_again(
    clean_db: None,
    engine: Any,
    broker: Broker,
    sms_settings: Settings,
    sandbox: httpx.AsyncClient,
    sms_queue: Any,
) -> None:
    dying = await start_pipeline(
        engine, broker, sms_settings, DieOnceAt("after_provider_ok_before_commit"), scheduler=False
    )
    job_id = await seed_job(await seed_shop())
    try:
        await publish(broker, job_id)

        async def sent_at_peer() -> bool:
            return len(await peer_messages(sandbox)) == 1

        await wait_for(sent_at_peer)
        await asyncio.sleep(0.2)
    finally:
        await stop_pipeline(dying)
    assert (await job(job_id))["state"] == "processing"  # the sender 'died' before recording it
    await expire_lease(job_id)

    reaper = await start_pipeline(engine, broker, sms_settings, scheduler=False)
    try:
        report = await reaper.scheduler.tick()
        assert report.reaped == 1
        await asyncio.sleep(0.3)  # nothing published: nothing more may reach the peer
    finally:
        await stop_pipeline(reaper)
    [message] = await peer_messages(sandbox)
    row = await job(job_id)
    assert (row["state"], row["decision"], row["lease_until"]) == ("sent", "lease-expired:found", None)
    [log] = await logs(job_id)
    assert (log["outcome"], log["attempt"], log["provider_message_id"]) == ("sent", 1, message["sid"])
    [subscription] = await Subscription.select().where(Subscription.phone == SHOPPER)
    assert subscription["notified_count"] == 1


async def test_the_reaper_sends_again_an_sms_that_never_went_out(
    clean_db: None,
    engine: Any,
    broker: Broker,
    sms_settings: Settings,
    sandbox: httpx.AsyncClient,
    sms_queue: Any,
) -> None:
    dying = await start_pipeline(
        engine, broker, sms_settings, DieOnceAt("before_provider_call"), scheduler=False
    )
    job_id = await seed_job(await seed_shop())
    try:
        await publish(broker, job_id)

        async def claimed() -> bool:
            return (await job(job_id))["state"] == "processing"

        await wait_for(claimed)
        await asyncio.sleep(0.2)
    finally:
        await stop_pipeline(dying)
    await expire_lease(job_id)
    assert await peer_messages(sandbox) == []

    running = await start_pipeline(engine, broker, sms_settings)  # the scheduler reaps and republishes
    try:
        await wait_state(job_id, "sent")
    finally:
        await stop_pipeline(running)
    [message] = await peer_messages(sandbox)
    rows = await logs(job_id)
    assert [(row["attempt"], row["outcome"]) for row in rows] == [(1, "pending"), (2, "sent")]
    assert rows[0]["error_detail"].startswith("lease expired; not in twilio's message list")
    assert rows[1]["provider_message_id"] == message["sid"]


async def test_an_expired_lease_waits_while_twilio_cannot_be_asked(
    clean_db: None, engine: Any, broker: Broker, sms_settings: Settings, sms_queue: Any
) -> None:
    unreachable = sms_settings.model_copy(
        update={"twilio_base_url": f"http://127.0.0.1:{free_port()}/twilio"}
    )
    job_id = await seed_job(
        await seed_shop(), state="processing", attempt=1, provider_called_at=datetime.now(UTC)
    )
    await expire_lease(job_id)
    running = await start_pipeline(engine, broker, unreachable, scheduler=False)
    try:
        assert (await running.scheduler.tick()).reaped == 0
    finally:
        await stop_pipeline(running)
    row = await job(job_id)
    assert (row["state"], row["attempt"]) == ("processing", 1)  # never indeterminate for SMS
    assert await logs(job_id) == []


# --- stored templates ----------------------------------------------------------------------------------


async def test_a_pinned_stored_template_is_rendered_marked_used_and_logged(
    pipeline: Pipeline, broker: Broker, sandbox: httpx.AsyncClient
) -> None:
    shop = await seed_shop()
    saved = await save_version(
        tenant_id=shop.tenant_id,
        name="restock",
        channel="sms",
        locale="en",
        subject="",
        body_text="{{ product_title }} is back! {{ product_url }} Reply STOP to opt out.",
        body_html=None,
        created_by="merchant@example.com",
    )
    job_id = await seed_job(shop, template=saved.template_id, template_version=saved.version)
    await publish(broker, job_id)
    await wait_state(job_id, "sent")
    [message] = await peer_messages(sandbox)
    assert message["body"] == f"Red Scarf is back! https://{SHOP}/variants/{VARIANT} Reply STOP to opt out."
    [log] = await logs(job_id)
    assert (log["template"], log["template_name"], log["template_version"]) == (
        saved.template_id,
        "restock",
        1,
    )
    assert msgspec.json.decode(log["variables"])["product_title"] == "Red Scarf"
    [template] = await Template.select().where(Template.id == saved.template_id)
    assert template["first_used_at"] is not None

    with pytest.raises(TemplateInUse):  # used: immutable
        await save_version(
            tenant_id=shop.tenant_id,
            name="restock",
            channel="sms",
            locale="en",
            subject="",
            body_text="changed {{ product_title }}",
            body_html=None,
            created_by="merchant@example.com",
            rewrite_version=1,
        )
    again = await save_version(
        tenant_id=shop.tenant_id,
        name="restock",
        channel="sms",
        locale="en",
        subject="",
        body_text="changed {{ product_title }}",
        body_html=None,
        created_by="merchant@example.com",
    )
    assert again.version == 2
    with pytest.raises(TemplateRejected) as rejected:
        await save_version(
            tenant_id=shop.tenant_id,
            name="restock",
            channel="sms",
            locale="en",
            subject="",
            body_text="{{ customer_email }}",
            body_html=None,
            created_by="merchant@example.com",
        )
    assert rejected.value.problems == ["text: unknown variable 'customer_email'"]
    assert len(await Template.select().where(Template.tenant == shop.tenant_id)) == 2


async def test_a_pinned_template_that_fails_at_send_time_dead_letters_the_job_where_operators_see_it(
    pipeline: Pipeline, broker: Broker, sandbox: httpx.AsyncClient
) -> None:
    shop = await seed_shop()
    # Written around save_version (as by older code): it would have been refused when saved.
    broken = Template(tenant=shop.tenant_id, name="restock", channel="sms", version=1, body_text="{{ nope }}")
    await broken.save()
    job_id = await seed_job(shop, template=broken.id, template_version=1)
    await publish(broker, job_id)

    async def logged() -> bool:
        return bool(await logs(job_id))

    await wait_for(logged)
    [log] = await logs(job_id)
    stored = await job(job_id)
    assert (stored["state"], stored["decision"]) == ("dead-letter", "template-error")
    assert log["error_kind"] == "configuration"
    assert await peer_messages(sandbox) == []


# --- List-Unsubscribe and confirmations (email through the sandbox's SMTP inbox) -------------------------


async def inbox(sandbox: httpx.AsyncClient, to: str) -> list[dict[str, Any]]:
    response = await sandbox.get("/inbox", params={"to": to})
    response.raise_for_status()
    return list(response.json())


def header(message: dict[str, Any], name: str) -> str:
    [value] = [value for key, value in message["headers"] if key.lower() == name.lower()]
    return str(value)


async def test_every_alert_email_carries_one_click_unsubscribe_whose_token_verifies(
    clean_db: None,
    engine: Any,
    broker: Broker,
    sms_settings: Settings,
    sandbox: httpx.AsyncClient,
) -> None:
    queue = await broker.declare_queue(topology.sender_queue("email", sms_settings.delivery_limit))
    await queue.purge()
    provider = smtp_provider(sms_settings)
    handler = build_batch_handler(sms_settings, engine, provider, FaultPoints(None))
    consumer = await broker.consume(
        topology.sender_queue("email", sms_settings.delivery_limit), JobBatch, handler, prefetch=4
    )
    try:
        job_id = await seed_job(await seed_shop(), channel="email", email="ann@example.com")
        await publish(broker, job_id, channel="email")
        await wait_state(job_id, "sent")
    finally:
        await consumer.stop()
        await provider.close()
    [message] = await inbox(sandbox, "ann@example.com")
    url = header(message, "List-Unsubscribe")
    assert url.startswith(f"<{sms_settings.public_base_url}/u/")
    assert url.endswith(">")
    assert header(message, "List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"
    token = url[1:-1].rsplit("/", 1)[1]
    claims = LinkSigner("sms-test-link-secret").verify("unsubscribe", token)
    assert claims.subscription_id == (await job(job_id))["subscription"]
    assert url[1:-1] in message["text"]
    assert url[1:-1] in message["html"]


async def test_a_confirmation_email_arrives_once_with_a_link_whose_token_verifies(
    clean_db: None, sms_settings: Settings, sandbox: httpx.AsyncClient, redis_client: Any
) -> None:
    shop = await seed_shop()
    subscription_id = await seed_subscription(shop, channel="email", email="new@example.com", state="pending")
    request = ConfirmationRequested(
        tenant_id=shop.tenant_id,
        subscription_id=subscription_id,
        channel="email",
        requested_at=datetime.now(UTC),
    )
    provider = smtp_provider(sms_settings)
    handler = build_confirmation_handler(sms_settings, provider, redis_client)
    try:
        assert await handler(request) is Outcome.ACK
        assert await handler(request) is Outcome.ACK  # a redelivery sends nothing
        await redis_client.flushdb()  # Redis forgets: PostgreSQL still knows it was sent
        assert await handler(request) is Outcome.ACK
    finally:
        await provider.close()
    [message] = await inbox(sandbox, "new@example.com")
    assert message["subject"] == f"Confirm your back-in-stock alert from {SHOP}"
    link = next(line for line in message["text"].splitlines() if "/c/" in line).strip()
    assert link.startswith(f"{sms_settings.public_base_url}/c/")
    claims = LinkSigner("sms-test-link-secret").verify(
        "confirm", link.rsplit("/", 1)[1], max_age_seconds=3600
    )
    assert claims.subscription_id == subscription_id
    [event] = await ConsentEvent.select().where(ConsentEvent.subscription == subscription_id)
    assert (event["kind"], event["source"]) == ("confirmation-sent", "sender")
    detail = msgspec.json.decode(event["detail"])
    assert detail["message_id"] == message["message_id"]
    assert "new@example.com" not in msgspec.json.encode(event).decode()


async def test_a_confirmation_email_renders_the_shops_stored_confirmation_template(
    clean_db: None, sms_settings: Settings, sandbox: httpx.AsyncClient, redis_client: Any
) -> None:
    shop = await seed_shop()
    await save_version(
        tenant_id=shop.tenant_id,
        name=CONFIRMATION_TEMPLATE,
        channel="email",
        locale="en",
        subject="Please confirm: {{ product_title }}",
        body_text="Confirm here: {{ confirm_url }}\n",
        body_html=None,
        created_by="test",
    )
    subscription_id = await seed_subscription(shop, channel="email", email="own@example.com", state="pending")
    request = ConfirmationRequested(
        tenant_id=shop.tenant_id,
        subscription_id=subscription_id,
        channel="email",
        requested_at=datetime.now(UTC),
    )
    provider = smtp_provider(sms_settings)
    try:
        assert await build_confirmation_handler(sms_settings, provider, redis_client)(request) is Outcome.ACK
    finally:
        await provider.close()
    [message] = await inbox(sandbox, "own@example.com")
    assert message["subject"] == "Please confirm: Red Scarf"
    assert "Confirm here: " in message["text"]


async def test_an_sms_confirmation_asks_to_reply_yes_and_a_confirmed_subscription_gets_none(
    clean_db: None, sms_settings: Settings, sandbox: httpx.AsyncClient, redis_client: Any
) -> None:
    shop = await seed_shop()
    pending = await seed_subscription(shop, state="pending")
    confirmed = await seed_subscription(shop, phone="+14155550124", state="confirmed")
    provider = twilio_provider(sms_settings)
    handler = build_confirmation_handler(sms_settings, provider, redis_client)
    now = datetime.now(UTC)
    try:
        for subscription_id in (pending, confirmed):
            request = ConfirmationRequested(
                tenant_id=shop.tenant_id, subscription_id=subscription_id, channel="sms", requested_at=now
            )
            assert await handler(request) is Outcome.ACK
    finally:
        await provider.close()
    [message] = await peer_messages(sandbox)
    assert "reply YES to confirm" in message["body"]
    assert message["body"].endswith("Reply STOP to opt out.")
    assert await peer_messages(sandbox, "+14155550124") == []
    assert [e["kind"] for e in await ConsentEvent.select().where(ConsentEvent.subscription == pending)] == [
        "confirmation-sent"
    ]
    assert await ConsentEvent.select().where(ConsentEvent.subscription == confirmed) == []
