"""The dispatcher against the real PostgreSQL and RabbitMQ: the freeze, its idempotence, the batches."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from restock_common import keys, topology
from restock_common.broker import Broker, Outcome
from restock_common.db.engine import bind_tables
from restock_common.db.tables import (
    InventoryItem,
    NotificationJob,
    RestockEvent,
    Subscription,
    Tenant,
)
from restock_common.faults import FaultPoints
from restock_common.messages import JobBatch, RestockDetected
from restock_common.settings import Settings
from restock_common.signatures import contact_hash
from restock_dispatcher.app import create_app
from restock_dispatcher.freeze import PiccoloTargetStore
from restock_dispatcher.handler import RestockHandler
from restock_dispatcher.publisher import BrokerBatchPublisher

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
VARIANT = 4242


@pytest.fixture(autouse=True, scope="module")
def tracing() -> None:
    """A recording tracer provider, as ``setup_tracing`` installs in the process (once per process)."""
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(TracerProvider())


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def subscribe(
    tenant: Tenant,
    email: str,
    *,
    at: datetime,
    variant: int = VARIANT,
    state: str = "confirmed",
    **extra: object,
) -> int:
    row = Subscription(
        tenant=tenant.id,
        variant_id=variant,
        channel="email",
        email=email,
        contact_hash=contact_hash(email),
        state=state,
        subscribed_at=at,
        **extra,
    )
    await row.save()
    return row.id


async def seed() -> tuple[Tenant, RestockEvent, list[int]]:
    """A shop, a restocked variant, and subscriptions of which only four are live targets."""
    tenant = Tenant(shop_domain="fifo-shop.myshopify.com")
    await tenant.save()
    await InventoryItem(tenant=tenant.id, inventory_item_id=1, variant_id=VARIANT, title="Red Scarf").save()
    # Inserted out of time order: FIFO must follow subscribed_at (then id), not insertion.
    third = await subscribe(tenant, "c@example.com", at=T0 + timedelta(minutes=3))
    first = await subscribe(tenant, "a@example.com", at=T0 + timedelta(minutes=1))
    tie_a = await subscribe(tenant, "d@example.com", at=T0 + timedelta(minutes=4))
    tie_b = await subscribe(tenant, "e@example.com", at=T0 + timedelta(minutes=4))
    await subscribe(tenant, "pending@example.com", at=T0, state="pending")
    await subscribe(tenant, "gone@example.com", at=T0, state="unsubscribed", unsubscribed_at=T0)
    await subscribe(tenant, "done@example.com", at=T0, fulfilled_at=T0)
    await subscribe(tenant, "other@example.com", at=T0, variant=VARIANT + 1)
    window = keys.restock_window(T0 + timedelta(days=1))
    event = RestockEvent(
        tenant=tenant.id,
        variant_id=VARIANT,
        available=5,
        restock_window=window,
        source="webhook",
        detected_at=T0 + timedelta(days=1),
    )
    await event.save()
    return tenant, event, [first, third, tie_a, tie_b]


def detected(tenant: Tenant, event: RestockEvent) -> RestockDetected:
    return RestockDetected(
        restock_event_id=event.id,
        tenant_id=tenant.id,
        shop_domain=tenant.shop_domain,
        variant_id=VARIANT,
        available=5,
        restock_window=event.restock_window,
        detected_at=event.detected_at,
    )


async def jobs_of(event: RestockEvent) -> list[dict[str, object]]:
    return (
        await NotificationJob.select()
        .where(NotificationJob.restock_event == event.id)
        .order_by(NotificationJob.id)
    )


async def test_freeze_targets_live_confirmed_subscriptions_fifo_and_publishes_batches(
    clean_db: None, engine: object, broker: Broker, settings: Settings, email_queue: object
) -> None:
    tenant, event, fifo = await seed()
    handler = RestockHandler(
        PiccoloTargetStore(engine),
        BrokerBatchPublisher(broker),  # type: ignore[arg-type]
        FaultPoints(None),
        batch_size=3,
    )
    consumer = await broker.consume(
        topology.dispatcher_queue(settings.delivery_limit), RestockDetected, handler, prefetch=4
    )
    try:
        await broker.publish(detected(tenant, event), topology.RESTOCK_DETECTED)

        async def frozen() -> bool:
            rows = await RestockEvent.select(RestockEvent.frozen_at).where(RestockEvent.id == event.id)
            return rows[0]["frozen_at"] is not None

        await wait_for(frozen)

        async def enqueued() -> bool:
            return all(job["enqueued_at"] is not None for job in await jobs_of(event))

        await wait_for(enqueued)
    finally:
        await consumer.stop()

    jobs = await jobs_of(event)
    assert [job["subscription"] for job in jobs] == fifo
    assert {job["state"] for job in jobs} == {"pending"}
    for job in jobs:
        assert job["notification_key"] == keys.notification_key(
            VARIANT, job["subscription"], event.restock_window
        )
        assert job["traceparent"]
        assert job["traceparent"].startswith("00-")
    [row] = await RestockEvent.select().where(RestockEvent.id == event.id)
    assert row["target_count"] == 4
    batches = await email_queue()  # type: ignore[operator]
    job_ids = [job["id"] for job in jobs]
    assert [batch.job_ids for batch in batches] == [job_ids[:3], job_ids[3:]]
    assert {batch.channel for batch in batches} == {"email"}


async def test_redelivered_event_creates_no_second_job_and_publishes_each_job_once(
    clean_db: None, engine: object, broker: Broker, settings: Settings, email_queue: object
) -> None:
    tenant, event, _ = await seed()
    store = PiccoloTargetStore(engine)  # type: ignore[arg-type]
    handler = RestockHandler(store, BrokerBatchPublisher(broker), FaultPoints(None), batch_size=100)
    await store.freeze(event.id, None)  # the first delivery died after its commit, before its publish
    for _ in range(2):  # the redelivery, and one more
        assert await handler(detected(tenant, event)) is Outcome.ACK

    jobs = await jobs_of(event)
    assert len(jobs) == 4
    batches = await email_queue()  # type: ignore[operator]
    assert [batch.job_ids for batch in batches] == [[job["id"] for job in jobs]]
    assert all(job["enqueued_at"] is not None for job in jobs)
    [row] = await RestockEvent.select().where(RestockEvent.id == event.id)
    assert row["target_count"] == 4


async def test_jobs_no_longer_pending_are_not_republished(
    clean_db: None, engine: object, broker: Broker, email_queue: object
) -> None:
    tenant, event, _ = await seed()
    store = PiccoloTargetStore(engine)  # type: ignore[arg-type]
    handler = RestockHandler(store, BrokerBatchPublisher(broker), FaultPoints(None), batch_size=100)
    await store.freeze(event.id, None)
    first = (await jobs_of(event))[0]["id"]
    await NotificationJob.update({NotificationJob.state: "sent"}).where(NotificationJob.id == first)
    await handler(detected(tenant, event))
    [batch] = await email_queue()  # type: ignore[operator]
    assert first not in batch.job_ids
    assert len(batch.job_ids) == 3


async def test_app_is_ready_and_dispatches_through_its_lifespan(
    clean_db: None, engine: object, settings: Settings, broker: Broker, email_queue: object
) -> None:
    tenant, event, _ = await seed()
    app = create_app(settings)
    try:
        async with app.lifespan():
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://dispatcher") as client:
                ready = await client.get("/readyz")
                assert ready.status_code == 200, ready.text
                assert ready.json()["checks"] == {"postgresql": "ok", "broker": "ok", "redis": "ok"}
                assert (await client.get("/healthz")).status_code == 200
            await broker.publish(detected(tenant, event), topology.RESTOCK_DETECTED)
            batches: list[JobBatch] = []

            async def published() -> bool:
                batches.extend(await email_queue())  # type: ignore[operator]
                return bool(batches)

            await wait_for(published)
    finally:
        # The app bound every table to its own (now closed) engine; give them back to the test's.
        bind_tables(engine)
    assert len(batches[0].job_ids) == 4
