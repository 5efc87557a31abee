"""The event's publish cursor (ADR 24) against the real PostgreSQL and RabbitMQ: a freeze's jobs are
enqueued as they are written and published a page at a time from the event's cursor; a publish cut short
is carried on from the cursor by a redelivered event or, when the event never comes back, by the sweeper;
two publishers of one event take turns by page and never publish a page twice."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest

from restock_common import keys
from restock_common.broker import Broker
from restock_common.db.tables import NotificationJob, RestockEvent, Subscription, Tenant
from restock_common.faults import FaultPoints
from restock_common.messages import JobBatch, RestockDetected
from restock_common.signatures import contact_hash
from restock_dispatcher.freeze import PiccoloTargetStore
from restock_dispatcher.handler import RestockHandler, publish_batches
from restock_dispatcher.publisher import BrokerBatchPublisher
from restock_dispatcher.sweeper import PublishSweeper

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
VARIANT = 6262
TARGETS = 7

Drain = Callable[[], Awaitable[list[JobBatch]]]


async def frozen_event(engine: object) -> tuple[PiccoloTargetStore, RestockEvent, list[int]]:
    """A shop with TARGETS subscriptions (inserted against FIFO order), one restock frozen with waves off
    and nothing published yet: (store, event, the jobs' ids in FIFO order)."""
    tenant = Tenant(shop_domain="cursor-shop.myshopify.com")
    await tenant.save()
    for n in reversed(range(TARGETS)):
        email = f"cursor{n}@example.com"
        await Subscription(
            tenant=tenant.id,
            variant_id=VARIANT,
            channel="email",
            email=email,
            contact_hash=contact_hash(email),
            state="confirmed",
            subscribed_at=T0 + timedelta(minutes=n),
        ).save()
    event = RestockEvent(
        tenant=tenant.id,
        variant_id=VARIANT,
        available=3,
        restock_window=keys.restock_window(T0),
        source="webhook",
        detected_at=T0,
    )
    await event.save()
    store = PiccoloTargetStore(engine, page_size=3)  # type: ignore[arg-type]
    await store.freeze(event.id, None)
    jobs = await NotificationJob.select(NotificationJob.id).order_by(NotificationJob.priority_at)
    return store, event, [job["id"] for job in jobs]


async def stored_event(event: RestockEvent) -> dict[str, object]:
    [row] = await RestockEvent.select().where(RestockEvent.id == event.id)
    return row


def published_ids(batches: list[JobBatch]) -> list[int]:
    return [job_id for batch in batches for job_id in batch.job_ids]


async def test_a_freeze_enqueues_its_jobs_as_written_and_leaves_the_event_to_its_cursor(
    clean_db: None, engine: object
) -> None:
    _, event, jobs = await frozen_event(engine)
    rows = await NotificationJob.select().order_by(NotificationJob.priority_at)
    assert [row["id"] for row in rows] == jobs
    assert len(jobs) == TARGETS
    assert all(row["state"] == "pending" and row["enqueued_at"] is not None for row in rows)
    stored = await stored_event(event)
    assert stored["frozen_at"] is not None
    assert stored["published_at"] is None
    assert stored["published_through_id"] is None


async def test_a_redelivered_event_carries_on_from_the_cursor(
    clean_db: None, engine: object, broker: Broker, email_queue: Drain
) -> None:
    store, event, jobs = await frozen_event(engine)
    publisher = BrokerBatchPublisher(broker)

    async def send(by_channel: dict[str, list[int]]) -> None:
        for channel, ids in by_channel.items():
            await publish_batches(publisher, channel, ids, 2, "jobs:test")  # type: ignore[arg-type]

    # The first page of a publish that died after committing it.
    assert await store.publish_frozen(event.id, 3, send) == 3
    assert (await stored_event(event))["published_through_id"] == jobs[2]
    first = published_ids(await email_queue())
    assert first == jobs[:3]

    handler = RestockHandler(store, publisher, FaultPoints(None), batch_size=2)
    message = RestockDetected(
        restock_event_id=event.id,
        tenant_id=event.tenant,
        shop_domain="cursor-shop.myshopify.com",
        variant_id=VARIANT,
        available=3,
        restock_window=event.restock_window,
        detected_at=T0,
    )
    await handler(message)
    rest = published_ids(await email_queue())
    assert rest == jobs[3:]  # the rest, FIFO, nothing twice
    assert (await stored_event(event))["published_at"] is not None
    await handler(message)  # delivered once more: everything is on the broker already
    assert await email_queue() == []


async def test_a_publish_that_fails_before_its_commit_leaves_the_cursor_where_it_was(
    clean_db: None, engine: object, broker: Broker, email_queue: Drain
) -> None:
    store, event, _jobs = await frozen_event(engine)

    async def lost(by_channel: dict[str, list[int]]) -> None:
        raise ConnectionError("broker gone before the confirms")

    with pytest.raises(ConnectionError):
        await store.publish_frozen(event.id, 3, lost)
    stored = await stored_event(event)
    assert stored["published_through_id"] is None
    assert stored["published_at"] is None


async def test_the_sweeper_finishes_an_event_whose_publish_never_finished(
    clean_db: None, engine: object, broker: Broker, email_queue: Drain
) -> None:
    store, event, jobs = await frozen_event(engine)
    publisher = BrokerBatchPublisher(broker)

    def sweeper() -> PublishSweeper:
        return PublishSweeper(store, publisher, after_seconds=60, interval_seconds=1, batch_size=1)

    async def send(by_channel: dict[str, list[int]]) -> None:
        for channel, ids in by_channel.items():
            await publish_batches(publisher, channel, ids, 1, "jobs:test")  # type: ignore[arg-type]

    assert await store.publish_frozen(event.id, 2, send) == 2  # then the dispatcher died
    assert await sweeper().sweep_once() == 0  # frozen just now: its own publish may still be under way

    await RestockEvent.update({RestockEvent.frozen_at: datetime.now(UTC) - timedelta(hours=1)}).where(
        RestockEvent.id == event.id
    )
    # Two replicas at once: the event's row lock makes them take turns, each page once.
    swept = await asyncio.gather(sweeper().sweep_once(), sweeper().sweep_once())
    assert sum(swept) == TARGETS - 2
    assert await sweeper().sweep_once() == 0
    seen = Counter(published_ids(await email_queue()))
    assert seen == Counter(jobs), "each job exactly once"
    assert (await stored_event(event))["published_at"] is not None
