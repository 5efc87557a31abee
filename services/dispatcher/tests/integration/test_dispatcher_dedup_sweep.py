"""Duplicate-suppressed rows, the Redis fast path and the publish sweeper, against the real PostgreSQL,
Redis and RabbitMQ."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from restock_common import keys
from restock_common.broker import Broker
from restock_common.db.engine import bind_tables
from restock_common.db.tables import NotificationJob, RestockEvent, Subscription, Tenant
from restock_common.faults import FaultPoints
from restock_common.messages import JobBatch, RestockDetected
from restock_common.settings import Settings
from restock_common.signatures import contact_hash
from restock_dispatcher.app import create_app
from restock_dispatcher.dedup import redis_key
from restock_dispatcher.fast_dedup import RedisFastDedup
from restock_dispatcher.freeze import PiccoloTargetStore
from restock_dispatcher.handler import RestockHandler
from restock_dispatcher.publisher import BrokerBatchPublisher
from restock_dispatcher.sweeper import PublishSweeper

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
VARIANT = 5151
TARGETS = 5


async def seed(targets: int = TARGETS) -> tuple[Tenant, list[int]]:
    """A shop with ``targets`` live subscriptions of VARIANT (FIFO order) and one that is not a target."""
    tenant = Tenant(shop_domain="dedup-shop.myshopify.com")
    await tenant.save()
    ids = []
    for n in range(targets):
        email = f"shopper{n}@example.com"
        row = Subscription(
            tenant=tenant.id,
            variant_id=VARIANT,
            channel="email",
            email=email,
            contact_hash=contact_hash(email),
            state="confirmed",
            subscribed_at=T0 + timedelta(minutes=n),
        )
        await row.save()
        ids.append(row.id)
    await Subscription(
        tenant=tenant.id,
        variant_id=VARIANT,
        channel="email",
        email="pending@example.com",
        contact_hash=contact_hash("pending@example.com"),
        state="pending",
        subscribed_at=T0,
    ).save()
    return tenant, ids


async def restock(tenant: Tenant, at: datetime) -> RestockEvent:
    event = RestockEvent(
        tenant=tenant.id,
        variant_id=VARIANT,
        available=3,
        restock_window=keys.restock_window(at),
        source="webhook",
        detected_at=at,
    )
    await event.save()
    return event


async def rows_of(event: RestockEvent) -> list[dict[str, object]]:
    return (
        await NotificationJob.select()
        .where(NotificationJob.restock_event == event.id)
        .order_by(NotificationJob.priority_at, NotificationJob.id)
    )


async def all_rows() -> list[dict[str, object]]:
    return await NotificationJob.select().order_by(NotificationJob.id)


def store_with(engine: object, client: aioredis.Redis, page_size: int = 2) -> PiccoloTargetStore:
    # A page smaller than the target set, so the keyset paging is exercised.
    return PiccoloTargetStore(engine, RedisFastDedup(client), page_size=page_size)  # type: ignore[arg-type]


async def assert_one_pending_and_one_suppressed_per_extra_event(
    first: RestockEvent, extras: list[RestockEvent], targets: list[int]
) -> None:
    """Every target: one pending job (the first event's) and one suppressed row per extra event."""
    holders = await rows_of(first)
    assert [row["subscription"] for row in holders] == targets
    assert {row["state"] for row in holders} == {"pending"}
    holder_of = {row["subscription"]: row for row in holders}
    for extra in extras:
        suppressed = await rows_of(extra)
        assert [row["subscription"] for row in suppressed] == targets  # FIFO, every target accounted for
        for row in suppressed:
            holder = holder_of[row["subscription"]]
            assert row["state"] == "duplicate-suppressed"
            assert row["decision"] == f"duplicate-of:{holder['id']}"
            assert row["notification_key"] == f"{holder['notification_key']}:dup:{extra.id}"
            assert row["enqueued_at"] is None
    for event in [first, *extras]:
        [stored] = await RestockEvent.select().where(RestockEvent.id == event.id)
        assert stored["frozen_at"] is not None
        assert stored["target_count"] == len(targets)
    pending = [row for row in await all_rows() if row["state"] == "pending"]
    assert sorted(row["subscription"] for row in pending) == sorted(targets)  # never two real sends


async def test_second_and_third_restock_in_one_window_are_suppressed_per_target(
    clean_db: None, engine: object, redis_client: aioredis.Redis
) -> None:
    tenant, targets = await seed()
    store = store_with(engine, redis_client)
    first = await restock(tenant, T0 + timedelta(days=1))
    extras = [await restock(tenant, T0 + timedelta(days=1, minutes=m)) for m in (5, 10)]
    assert first.restock_window == extras[0].restock_window == extras[1].restock_window

    frozen = await store.freeze(first.id, None)
    assert (frozen.created, frozen.suppressed) == (TARGETS, 0)  # type: ignore[union-attr]
    for extra in extras:
        frozen = await store.freeze(extra.id, None)
        assert (frozen.created, frozen.suppressed) == (0, TARGETS)  # type: ignore[union-attr]

    await assert_one_pending_and_one_suppressed_per_extra_event(first, extras, targets)
    # The fast path: Redis holds every key, claimed by the first event (and kept for the window).
    for subscription in targets:
        key = redis_key(keys.notification_key(VARIANT, subscription, first.restock_window))
        assert await redis_client.get(key) == str(first.id).encode()
        assert 0 < await redis_client.ttl(key) <= 86_400


async def test_redis_flushed_between_events_the_unique_key_still_suppresses(
    clean_db: None, engine: object, redis_client: aioredis.Redis
) -> None:
    tenant, targets = await seed()
    store = store_with(engine, redis_client)
    first = await restock(tenant, T0 + timedelta(days=1))
    second = await restock(tenant, T0 + timedelta(days=1, minutes=5))
    await store.freeze(first.id, None)
    await redis_client.flushdb()
    frozen = await store.freeze(second.id, None)
    assert (frozen.created, frozen.suppressed) == (0, TARGETS)  # type: ignore[union-attr]
    await assert_one_pending_and_one_suppressed_per_extra_event(first, [second], targets)


async def test_redis_down_falls_back_to_postgresql_alone(
    clean_db: None, engine: object, redis_client: aioredis.Redis
) -> None:
    tenant, targets = await seed()
    dead = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5, socket_timeout=0.5)
    store = store_with(engine, dead)
    try:
        first = await restock(tenant, T0 + timedelta(days=1))
        second = await restock(tenant, T0 + timedelta(days=1, minutes=5))
        assert (await store.freeze(first.id, None)).created == TARGETS  # type: ignore[union-attr]
        assert (await store.freeze(second.id, None)).suppressed == TARGETS  # type: ignore[union-attr]
    finally:
        await dead.aclose()
    await assert_one_pending_and_one_suppressed_per_extra_event(first, [second], targets)


async def test_a_redis_claim_without_a_committed_job_does_not_suppress(
    clean_db: None, engine: object, redis_client: aioredis.Redis
) -> None:
    """Redis names a holder whose freeze never committed (it died): the targets are still notified."""
    tenant, targets = await seed()
    event = await restock(tenant, T0 + timedelta(days=1))
    for subscription in targets:
        key = keys.notification_key(VARIANT, subscription, event.restock_window)
        await redis_client.set(redis_key(key), "999999")
    frozen = await store_with(engine, redis_client).freeze(event.id, None)
    assert (frozen.created, frozen.suppressed) == (TARGETS, 0)  # type: ignore[union-attr]
    assert [row["state"] for row in await rows_of(event)] == ["pending"] * TARGETS


async def test_redelivered_events_change_nothing(
    clean_db: None, engine: object, redis_client: aioredis.Redis
) -> None:
    tenant, _ = await seed()
    store = store_with(engine, redis_client)
    first = await restock(tenant, T0 + timedelta(days=1))
    second = await restock(tenant, T0 + timedelta(days=1, minutes=5))
    await store.freeze(first.id, None)
    await store.freeze(second.id, None)
    before = await all_rows()
    [second_before] = await RestockEvent.select().where(RestockEvent.id == second.id)
    await redis_client.flushdb()  # a redelivery after Redis lost everything, too
    for event in (second, first, second):
        frozen = await store.freeze(event.id, None)
        assert (frozen.created, frozen.suppressed) == (0, 0)  # type: ignore[union-attr]
    # Two deliveries of one event at once: the event row lock makes them take turns.
    await asyncio.gather(store.freeze(second.id, None), store.freeze(second.id, None))
    assert await all_rows() == before
    [second_after] = await RestockEvent.select().where(RestockEvent.id == second.id)
    assert second_after == second_before


async def test_concurrent_restocks_of_one_window_hold_each_key_once(
    clean_db: None, engine: object, redis_client: aioredis.Redis
) -> None:
    tenant, targets = await seed(targets=40)
    store = store_with(engine, redis_client, page_size=7)
    events = [await restock(tenant, T0 + timedelta(days=1, minutes=m)) for m in range(3)]
    await asyncio.gather(*(store.freeze(event.id, None) for event in events))
    rows = await all_rows()
    assert len(rows) == 3 * len(targets)
    pending = [row for row in rows if row["state"] == "pending"]
    assert sorted(row["subscription"] for row in pending) == targets
    by_id = {row["id"]: row for row in rows}
    for row in rows:
        if row["state"] == "duplicate-suppressed":
            holder = by_id[int(str(row["decision"]).removeprefix("duplicate-of:"))]
            assert holder["state"] == "pending"
            assert holder["subscription"] == row["subscription"]


# --- the publish sweeper ------------------------------------------------------------------------------


Drain = Callable[[], Awaitable[list[JobBatch]]]


async def stranded_jobs(tenant: Tenant, targets: list[int]) -> tuple[list[int], list[int]]:
    """Jobs as a dispatcher that died between freeze commit and publish leaves them (created long ago,
    never enqueued), and jobs the sweeper must leave alone. Returns (stranded ids FIFO, other ids)."""
    event = await restock(tenant, T0 + timedelta(days=1))
    old = datetime.now(UTC) - timedelta(hours=1)
    stranded, others = [], []
    # Inserted against FIFO order: the sweeper must follow priority_at.
    for n, subscription in reversed(list(enumerate(targets))):
        job = NotificationJob(
            tenant=tenant.id,
            restock_event=event.id,
            subscription=subscription,
            variant_id=VARIANT,
            channel="email",
            notification_key=keys.notification_key(VARIANT, subscription, event.restock_window),
            state="pending",
            priority_at=T0 + timedelta(minutes=n),
            created_at=old,
        )
        await job.save()
        stranded.insert(0, job.id)
    leave_alone = [
        {"created_at": datetime.now(UTC)},  # just frozen: its own publish is still under way
        {"created_at": old, "enqueued_at": old},  # published already
        {"created_at": old, "state": "sent"},  # done
        {"created_at": old, "state": "duplicate-suppressed"},  # never sent at all
        {"created_at": old, "attempt": 1},  # a retry: the sender's scheduler publishes it (ADR 10)
        {"created_at": old, "decision": "replayed"},  # a replay: the sender's too
    ]
    for n, extra in enumerate(leave_alone):
        job = NotificationJob(
            tenant=tenant.id,
            restock_event=event.id,
            subscription=targets[0],
            variant_id=VARIANT,
            channel="email",
            notification_key=f"other:{n}",
            priority_at=T0,
            **extra,
        )
        await job.save()
        others.append(job.id)
    return stranded, others


async def test_sweeper_publishes_stranded_jobs_once_each_in_fifo_batches(
    clean_db: None,
    engine: object,
    broker: Broker,
    email_queue: Drain,
) -> None:
    tenant, targets = await seed(targets=7)
    stranded, others = await stranded_jobs(tenant, targets)
    store = PiccoloTargetStore(engine)  # type: ignore[arg-type]

    def sweeper() -> PublishSweeper:
        return PublishSweeper(
            store, BrokerBatchPublisher(broker), after_seconds=60, interval_seconds=1, batch_size=3
        )

    # Two replicas at once: SKIP LOCKED gives them disjoint batches.
    swept = await asyncio.gather(sweeper().sweep_once(), sweeper().sweep_once())
    assert sum(swept) == len(stranded)
    assert await sweeper().sweep_once() == 0  # marked: never swept again

    batches = await email_queue()
    published = [job_id for batch in batches for job_id in batch.job_ids]
    assert sorted(published) == sorted(stranded)  # each exactly once, nothing else
    for batch in batches:  # FIFO within each batch
        assert batch.job_ids == sorted(batch.job_ids, key=stranded.index)
    rows = {row["id"]: row for row in await all_rows()}
    assert all(rows[job_id]["enqueued_at"] is not None for job_id in stranded)
    assert not set(published) & set(others)


async def test_app_lifespan_runs_the_sweeper_and_stops_it(
    clean_db: None,
    engine: object,
    settings: Settings,
    email_queue: Drain,
) -> None:
    tenant, targets = await seed(targets=4)
    stranded, _ = await stranded_jobs(tenant, targets)
    fast = {"publish_sweep_after_seconds": 60, "publish_sweep_interval_seconds": 0.05}
    app = create_app(settings.model_copy(update=fast))
    batches: list[JobBatch] = []
    try:
        async with app.lifespan():
            deadline = asyncio.get_running_loop().time() + 10

            while sorted(j for b in batches for j in b.job_ids) != sorted(stranded):
                assert asyncio.get_running_loop().time() < deadline, "stranded jobs not swept"
                batches.extend(await email_queue())
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)  # several more sweep intervals: nothing is published again
    finally:
        bind_tables(engine)  # type: ignore[arg-type]
    batches.extend(await email_queue())
    assert sorted(j for b in batches for j in b.job_ids) == sorted(stranded)


async def test_handler_publishes_pending_jobs_only(
    clean_db: None,
    engine: object,
    broker: Broker,
    redis_client: aioredis.Redis,
    email_queue: Drain,
) -> None:
    tenant, _ = await seed()
    first = await restock(tenant, T0 + timedelta(days=1))
    second = await restock(tenant, T0 + timedelta(days=1, minutes=5))
    handler = RestockHandler(
        store_with(engine, redis_client), BrokerBatchPublisher(broker), FaultPoints(None), batch_size=100
    )
    for event in (first, second):
        await handler(
            RestockDetected(
                restock_event_id=event.id,
                tenant_id=tenant.id,
                shop_domain=tenant.shop_domain,
                variant_id=VARIANT,
                available=3,
                restock_window=event.restock_window,
                detected_at=event.detected_at,
            )
        )
    [batch] = await email_queue()
    assert batch.job_ids == [row["id"] for row in await rows_of(first)]


class FlushingDedup(RedisFastDedup):
    """The real fast path, with Redis losing everything right after the first page's claims."""

    def __init__(self, client: aioredis.Redis) -> None:
        super().__init__(client)
        self.claims = 0

    async def claim(self, keys: list[str], owner: int, ttl_seconds: int) -> list[bytes | str | None] | None:
        previous = await super().claim(keys, owner, ttl_seconds)
        self.claims += 1
        if self.claims == 1:
            await self.client.flushdb()
        return previous


async def test_redis_flushed_in_the_middle_of_a_freeze_still_one_real_job_per_target(
    clean_db: None, engine: object, redis_client: aioredis.Redis
) -> None:
    tenant, targets = await seed(targets=7)
    first = await restock(tenant, T0 + timedelta(days=1))
    second = await restock(tenant, T0 + timedelta(days=1, minutes=5))
    await store_with(engine, redis_client).freeze(first.id, None)
    flushing = FlushingDedup(redis_client)
    store = PiccoloTargetStore(engine, flushing, page_size=3)  # type: ignore[arg-type]
    frozen = await store.freeze(second.id, None)
    assert flushing.claims == 3  # pages of 3, 3 and 1: the flush came between the first and the second
    assert (frozen.created, frozen.suppressed) == (0, 7)  # type: ignore[union-attr]
    await assert_one_pending_and_one_suppressed_per_extra_event(first, [second], targets)
