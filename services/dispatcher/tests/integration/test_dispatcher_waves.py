"""Inventory-aware waves, fulfilment, template pinning and the dry run, against the real PostgreSQL, Redis
and RabbitMQ (the dispatcher's handlers and consumers in-process, the clock of the wave store injected)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
import redis.asyncio as aioredis

from restock_common import keys, topology
from restock_common.broker import Broker, Outcome
from restock_common.db.tables import (
    NotificationJob,
    RestockEvent,
    Rule,
    Subscription,
    Template,
    Tenant,
    WavePlan,
)
from restock_common.faults import FaultPoints
from restock_common.messages import JobBatch, OrderCreated, OrderLine, RestockDetected, StockChanged
from restock_common.rules import Rules, encode_rules
from restock_common.settings import Settings
from restock_common.signatures import contact_hash
from restock_dispatcher.dedup import redis_key
from restock_dispatcher.dry_run import DryRunner
from restock_dispatcher.fast_dedup import RedisFastDedup
from restock_dispatcher.freeze import PiccoloTargetStore
from restock_dispatcher.handler import RestockHandler, VariantPublisher
from restock_dispatcher.inventory import OrderCreatedHandler, StockChangedHandler, consume_inventory
from restock_dispatcher.publisher import BrokerBatchPublisher
from restock_dispatcher.wave_store import PiccoloWaveStore
from restock_dispatcher.wave_timer import WaveTimer

pytestmark = pytest.mark.integration

# Inside one 24 h window (2026-03-02 UTC), so the events and the injected clock agree on the window.
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
VARIANT = 6161
WAVES = Rules(waves_enabled=True, shoppers_per_unit=3, wave_interval_seconds=1800)

Drain = Callable[[], Awaitable[list[JobBatch]]]


class Clock:
    """The wave store's clock, moved by the test."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def shop(rules: Rules | None = WAVES, domain: str = "waves-shop.myshopify.com") -> Tenant:
    tenant = Tenant(shop_domain=domain)
    await tenant.save()
    if rules is not None:
        await Rule(tenant=tenant.id, body=encode_rules(rules)).save()
    return tenant


async def subscribe(tenant: Tenant, n: int, *, at: datetime, **extra: object) -> int:
    email = f"shopper{n}@example.com"
    values: dict[str, object] = {
        "tenant": tenant.id,
        "variant_id": VARIANT,
        "channel": "email",
        "email": email,
        "contact_hash": contact_hash(email),
        "state": "confirmed",
        "subscribed_at": at,
        **extra,
    }
    row = Subscription(**values)
    await row.save()
    return row.id


async def line_of(tenant: Tenant, count: int) -> list[int]:
    """``count`` confirmed subscriptions, FIFO by subscription time (inserted in reverse)."""
    ids = {
        n: await subscribe(tenant, n, at=T0 - timedelta(days=1, minutes=count - n))
        for n in reversed(range(count))
    }
    return [ids[n] for n in range(count)]


async def restock(tenant: Tenant, available: int, at: datetime) -> RestockDetected:
    event = RestockEvent(
        tenant=tenant.id,
        variant_id=VARIANT,
        available=available,
        restock_window=keys.restock_window(at),
        source="webhook",
        detected_at=at,
    )
    await event.save()
    return RestockDetected(
        restock_event_id=event.id,
        tenant_id=tenant.id,
        shop_domain=tenant.shop_domain,
        variant_id=VARIANT,
        available=available,
        restock_window=event.restock_window,
        detected_at=at,
    )


def stock(tenant: Tenant, available: int) -> StockChanged:
    return StockChanged(
        tenant_id=tenant.id,
        shop_domain=tenant.shop_domain,
        variant_id=VARIANT,
        available=available,
        previous=available + 1,
        observed_at=T0,
        source="webhook",
    )


async def jobs(event_id: int | None = None) -> list[dict[str, object]]:
    query = NotificationJob.select().order_by(NotificationJob.priority_at, NotificationJob.id)
    if event_id is not None:
        query = query.where(NotificationJob.restock_event == event_id)
    return await query


async def plan_row(tenant: Tenant) -> dict[str, object]:
    [row] = await WavePlan.select().where((WavePlan.tenant == tenant.id) & (WavePlan.variant_id == VARIANT))
    return row


class Dispatcher:
    """The dispatcher's parts as app.py wires them, with the wave store's clock injected."""

    def __init__(
        self, engine: object, broker: Broker, clock: Clock, redis_client: aioredis.Redis | None = None
    ) -> None:
        self.waves = PiccoloWaveStore(engine, clock=clock)  # type: ignore[arg-type]
        fast = RedisFastDedup(redis_client) if redis_client is not None else None
        self.store = PiccoloTargetStore(engine, fast, page_size=7, wave_store=self.waves)  # type: ignore[arg-type]
        publisher = BrokerBatchPublisher(broker)
        self.restock = RestockHandler(self.store, publisher, FaultPoints(None), batch_size=100)
        self.variant_publisher = VariantPublisher(self.store, publisher, batch_size=100)
        self.stock = StockChangedHandler(self.waves, self.variant_publisher)
        self.orders = OrderCreatedHandler(self.store)
        self.timer = WaveTimer(self.waves, self.variant_publisher, FaultPoints(None), tick_seconds=60)


def published(batches: list[JobBatch]) -> list[int]:
    return [job_id for batch in batches for job_id in batch.job_ids]


async def test_waves_release_by_stock_hold_on_sell_out_and_serve_the_line_first_on_the_next_restock(
    clean_db: None, engine: object, broker: Broker, redis_client: aioredis.Redis, email_queue: Drain
) -> None:
    tenant = await shop()
    line = await line_of(tenant, 40)
    clock = Clock(T0)
    dispatcher = Dispatcher(engine, broker, clock, redis_client)

    # Restock of 5 units, 3 shoppers per unit: wave 1 is the first 15 in line, published at once.
    first = await restock(tenant, 5, T0)
    assert await dispatcher.restock(first) is Outcome.ACK
    rows = await jobs(first.restock_event_id)
    assert [row["subscription"] for row in rows] == line
    assert [(row["state"], row["wave"], row["decision"]) for row in rows[:15]] == [
        ("pending", 1, "wave:1")
    ] * 15
    assert [(row["state"], row["wave"], row["decision"]) for row in rows[15:]] == [
        ("waiting", None, "held:quota")
    ] * 25
    wave_1 = [row["id"] for row in rows[:15]]
    assert published(await email_queue()) == wave_1
    plan = await plan_row(tenant)
    assert (plan["wave"], plan["status"], plan["available"]) == (1, "active", 5)
    assert plan["next_wave_at"] == T0 + timedelta(minutes=30)

    # Sold out: nobody more, even once the interval has passed; the line is held with its reason.
    assert await dispatcher.stock(stock(tenant, 0)) is Outcome.ACK
    clock.now = T0 + timedelta(minutes=45)
    assert await dispatcher.timer.tick() == 0
    assert await email_queue() == []
    rows = await jobs(first.restock_event_id)
    assert {(row["state"], row["decision"]) for row in rows[15:]} == {("waiting", "held:sold-out")}
    assert (await plan_row(tenant))["status"] == "sold-out"

    # The wave-1 shoppers got their alert (the sender's bookkeeping), and a newcomer joins the line.
    await NotificationJob.update({NotificationJob.state: "sent"}).where(NotificationJob.id.is_in(wave_1))
    await Subscription.update({Subscription.notified_count: 1}).where(Subscription.id.is_in(line[:15]))
    newcomer = await subscribe(tenant, 99, at=T0 + timedelta(minutes=40))

    # The next restock (same window, 2 units): the waiting ones first, in their order; nobody twice.
    second = await restock(tenant, 2, T0 + timedelta(minutes=50))
    clock.now = T0 + timedelta(minutes=50)
    assert await dispatcher.restock(second) is Outcome.ACK
    wave_2 = [row["id"] for row in (await jobs(first.restock_event_id))[15:21]]
    assert published(await email_queue()) == wave_2
    second_rows = await jobs(second.restock_event_id)
    assert [row["subscription"] for row in second_rows] == [*line, newcomer]
    assert {row["state"] for row in second_rows[:40]} == {"duplicate-suppressed"}  # keys of this window held
    assert (second_rows[40]["state"], second_rows[40]["decision"]) == ("waiting", "held:quota")
    everyone = await jobs()
    pending_or_sent = [row["subscription"] for row in everyone if row["state"] in ("pending", "sent")]
    assert pending_or_sent == line[:21]

    # Stock left, interval passed: the timer releases wave 3 with the last availability told (2 units).
    clock.now = T0 + timedelta(minutes=81)
    assert await dispatcher.timer.tick() == 6
    wave_3 = [row["id"] for row in (await jobs(first.restock_event_id))[21:27]]
    assert published(await email_queue()) == wave_3
    assert (await plan_row(tenant))["wave"] == 3


async def detector_total(db: asyncpg.Connection, tenant: Tenant, available: int) -> None:
    """The detector's row of the variant (``variant_states``), as the detector writes it."""
    await db.execute(
        "INSERT INTO variant_states (tenant, variant_id, available, updated_at) VALUES ($1, $2, $3, now())"
        " ON CONFLICT (tenant, variant_id) DO UPDATE SET available = EXCLUDED.available",
        tenant.id,
        VARIANT,
        available,
    )


@pytest.mark.parametrize(
    ("now_available", "released", "status"), [(1, 3, "active"), (0, 0, "sold-out"), (9, 10, "idle")]
)
async def test_the_first_wave_is_planned_with_the_detectors_total_at_freeze_time_not_the_events(
    clean_db: None,
    engine: object,
    broker: Broker,
    db: asyncpg.Connection,
    email_queue: Drain,
    now_available: int,
    released: int,
    status: str,
) -> None:
    """The restock said 5 units; by the freeze, stock moved. No stock.changed told the dispatcher (none is
    enqueued before the line is open, ADR 26), so the freeze reads the detector's total itself."""
    tenant = await shop()
    line = await line_of(tenant, 10)
    await detector_total(db, tenant, now_available)
    dispatcher = Dispatcher(engine, broker, Clock(T0))
    event = await restock(tenant, 5, T0)
    assert await dispatcher.restock(event) is Outcome.ACK
    rows = await jobs(event.restock_event_id)
    assert [row["subscription"] for row in rows if row["state"] == "pending"] == line[:released]
    assert published(await email_queue()) == [row["id"] for row in rows[:released]]
    plan = await plan_row(tenant)
    assert (plan["status"], plan["available"]) == (status, now_available)


async def test_a_freeze_waits_for_the_detectors_open_change_and_plans_with_its_total(
    clean_db: None, engine: object, broker: Broker, db: asyncpg.Connection, email_queue: Drain
) -> None:
    """The detector is mid-observation (its row of the variant locked, the new total not committed) when the
    freeze plans: the freeze waits for it and plans with the committed total, so a change made while no
    line was open is never lost between the detector's check and the line's opening."""
    tenant = await shop()
    line = await line_of(tenant, 10)
    await detector_total(db, tenant, 5)
    dispatcher = Dispatcher(engine, broker, Clock(T0))
    event = await restock(tenant, 5, T0)
    transaction = db.transaction()
    await transaction.start()
    await db.execute(
        "UPDATE variant_states SET available = 1 WHERE tenant = $1 AND variant_id = $2", tenant.id, VARIANT
    )
    freeze = asyncio.create_task(dispatcher.restock(event))
    try:
        await asyncio.sleep(0.5)
        assert not freeze.done()  # waiting on the detector's row
    finally:
        await transaction.commit()
    assert await freeze is Outcome.ACK
    rows = await jobs(event.restock_event_id)
    assert [row["subscription"] for row in rows if row["state"] == "pending"] == line[:3]  # 1 unit x 3
    assert len(published(await email_queue())) == 3
    assert (await plan_row(tenant))["available"] == 1


async def test_a_freeze_moves_the_variants_version(
    clean_db: None, engine: object, broker: Broker, db: asyncpg.Connection, email_queue: Drain
) -> None:
    """The detector's two-trip write checked for an open line in a snapshot taken before it wrote: a freeze
    that opened the line in between must move the version of the variant's row, so that write is refused
    and redone under the row's lock (ADR 27)."""
    tenant = await shop()
    await line_of(tenant, 2)
    await detector_total(db, tenant, 5)
    query = "SELECT version FROM variant_states WHERE tenant = $1 AND variant_id = $2"
    before = await db.fetchval(query, tenant.id, VARIANT)
    assert await Dispatcher(engine, broker, Clock(T0)).restock(await restock(tenant, 5, T0)) is Outcome.ACK
    assert await db.fetchval(query, tenant.id, VARIANT) == before + 1
    assert (await plan_row(tenant))["available"] == 5


async def test_a_restock_in_a_new_window_supersedes_the_old_line_and_keeps_fifo(
    clean_db: None, engine: object, broker: Broker, email_queue: Drain
) -> None:
    tenant = await shop()
    line = await line_of(tenant, 12)
    clock = Clock(T0)
    dispatcher = Dispatcher(engine, broker, clock)
    first = await restock(tenant, 1, T0)
    await dispatcher.restock(first)
    await dispatcher.stock(stock(tenant, 0))
    await email_queue()
    # Wave 1 (3 shoppers) was sent; the buyer of the only unit ordered it.
    old = await jobs(first.restock_event_id)
    await NotificationJob.update({NotificationJob.state: "sent"}).where(
        NotificationJob.id.is_in([row["id"] for row in old[:3]])
    )
    await Subscription.update({Subscription.notified_count: 1}).where(Subscription.id.is_in(line[:3]))
    await Subscription.update({Subscription.notified_count: 2}).where(Subscription.id == line[1])

    next_day = T0 + timedelta(days=1)
    clock.now = next_day
    second = await restock(tenant, 2, next_day)
    await dispatcher.restock(second)

    # The old window's waiting rows are superseded: one live row per target, in the new window.
    old = await jobs(first.restock_event_id)
    assert {(row["state"], row["decision"]) for row in old[3:]} == {
        ("duplicate-suppressed", f"superseded:{second.restock_event_id}")
    }
    new = await jobs(second.restock_event_id)
    # line[1] was notified twice (max_notifications 2): fulfilled by the freeze, no row.
    expected = [line[0], *line[2:]]
    assert [row["subscription"] for row in new] == expected
    [fulfilled] = await Subscription.select(Subscription.fulfilled_at).where(Subscription.id == line[1])
    assert fulfilled["fulfilled_at"] is not None
    # Wave 1 of the new window: the shoppers of the sold-out wave first, then the old line, FIFO.
    assert [row["subscription"] for row in new if row["state"] == "pending"] == expected[:6]
    assert published(await email_queue()) == [row["id"] for row in new[:6]]
    assert {row["wave"] for row in new[:6]} == {1}


async def test_stock_changes_and_orders_through_the_inventory_queue(
    clean_db: None, engine: object, broker: Broker, settings: Settings, email_queue: Drain
) -> None:
    tenant = await shop()
    line = await line_of(tenant, 10)
    clock = Clock(T0)
    dispatcher = Dispatcher(engine, broker, clock)
    event = await restock(tenant, 1, T0)
    await dispatcher.restock(event)
    assert len(published(await email_queue())) == 3
    consumer = await consume_inventory(
        broker, settings.delivery_limit, 1, dispatcher.stock, dispatcher.orders
    )
    try:
        # Shopper 5 (waiting) buys elsewhere in the shop: their subscription ends, their job leaves the line.
        order = OrderCreated(
            tenant_id=tenant.id,
            shop_domain=tenant.shop_domain,
            order_id=777,
            lines=[OrderLine(variant_id=VARIANT), OrderLine(variant_id=1)],
            contact_hashes=[contact_hash("shopper5@example.com")],
            ordered_at=T0,
        )
        for _ in range(2):  # redelivered: nothing changes the second time
            await broker.publish(order, topology.ORDER_CREATED)
        await broker.publish_raw(b"{not json", topology.STOCK_CHANGED)  # poison: the consumer goes on
        clock.now = T0 + timedelta(minutes=31)
        await broker.publish(stock(tenant, 2), topology.STOCK_CHANGED)  # a return: 2 units, wave 2 is due

        async def wave_2_out() -> bool:
            return len(published(await email_queue())) == 6

        await wait_for(wave_2_out)
    finally:
        await consumer.stop()
    rows = {row["subscription"]: row for row in await jobs(event.restock_event_id)}
    assert (rows[line[5]]["state"], rows[line[5]]["decision"]) == ("skipped-opted-out", "fulfilled")
    wave_2 = [s for s in line if rows[s]["wave"] == 2]
    assert wave_2 == [line[3], line[4], line[6], line[7], line[8], line[9]]  # the buyer skipped, FIFO kept
    [bought] = await Subscription.select().where(Subscription.id == line[5])
    assert bought["fulfilled_at"] is not None
    assert (await plan_row(tenant))["status"] == "idle"  # nobody left waiting


async def test_an_order_fulfils_once_and_the_next_freeze_leaves_the_buyer_out(
    clean_db: None, engine: object, broker: Broker
) -> None:
    tenant = await shop(rules=None)
    line = await line_of(tenant, 3)
    store = PiccoloTargetStore(engine)  # type: ignore[arg-type]
    hashes = [contact_hash("shopper1@example.com"), contact_hash("+15550001111")]
    first = await store.fulfil(tenant.id, [VARIANT], hashes)
    again = await store.fulfil(tenant.id, [VARIANT], hashes)
    assert (first.subscriptions, again.subscriptions) == (1, 0)
    other_shop = await store.fulfil(tenant.id + 1, [VARIANT], hashes)
    assert other_shop.subscriptions == 0
    event = await restock(tenant, 3, T0)
    await store.freeze(event.restock_event_id, None)
    rows = await jobs(event.restock_event_id)
    assert [row["subscription"] for row in rows] == [line[0], line[2]]
    assert {(row["state"], row["wave"], row["decision"]) for row in rows} == {
        ("pending", None, None)
    }  # waves off


async def test_freeze_pins_the_latest_template_version_per_channel_and_locale(
    clean_db: None, engine: object
) -> None:
    tenant = await shop(rules=None)
    other = await shop(rules=None, domain="no-templates.myshopify.com")

    async def template(name: str, channel: str, locale: str, version: int, owner: Tenant = tenant) -> int:
        row = Template(
            tenant=owner.id, name=name, channel=channel, locale=locale, version=version, body_text="x"
        )
        await row.save()
        return row.id

    en_v1 = await template("restock-alert", "email", "en", 1)
    en_v2 = await template("restock-alert", "email", "en", 2)
    fr_v1 = await template("restock-alert", "email", "fr", 1)
    sms_v3 = await template("restock-alert", "sms", "en", 3)
    await template("welcome", "email", "de", 9)
    await template("restock-alert", "email", "de", 5, owner=other)
    assert en_v1
    english = await subscribe(tenant, 1, at=T0 - timedelta(hours=4))
    french = await subscribe(tenant, 2, at=T0 - timedelta(hours=3), locale="fr")
    german = await subscribe(tenant, 3, at=T0 - timedelta(hours=2), locale="de")
    sms = await subscribe(tenant, 4, at=T0 - timedelta(hours=1), channel="sms", phone="+15550004444")
    builtin = await subscribe(other, 5, at=T0 - timedelta(hours=1))
    store = PiccoloTargetStore(engine)  # type: ignore[arg-type]
    for owner in (tenant, other):
        await store.freeze((await restock(owner, 3, T0)).restock_event_id, None)
    pinned = {row["subscription"]: (row["template"], row["template_version"]) for row in await jobs()}
    assert pinned == {
        english: (en_v2, 2),
        french: (fr_v1, 1),
        german: (en_v2, 2),  # no German version: English
        sms: (sms_v3, 3),
        builtin: (None, None),  # the shop has no restock-alert of its own: the sender's built-in
    }


async def counts() -> dict[str, int]:
    [row] = await NotificationJob.raw(
        "SELECT (SELECT count(*) FROM notification_jobs) AS jobs,"
        " (SELECT count(*) FROM subscriptions) AS subs,"
        " (SELECT count(*) FROM wave_plans) AS plans, (SELECT count(*) FROM restock_events) AS events,"
        " (SELECT max(updated_at) FROM notification_jobs) AS touched"
    )
    return row


async def test_dry_run_labels_waves_and_suppressions_and_writes_nothing(
    clean_db: None, engine: object, broker: Broker, redis_client: aioredis.Redis, email_queue: Drain
) -> None:
    tenant = await shop()
    line = await line_of(tenant, 12)
    clock = Clock(T0)
    dispatcher = Dispatcher(engine, broker, clock, redis_client)
    event = await restock(tenant, 1, T0)
    await dispatcher.restock(event)  # wave 1: line[0:3] pending; line[3:] waiting in this window
    await dispatcher.stock(stock(tenant, 0))
    await subscribe(tenant, 50, at=T0, state="pending")
    await subscribe(tenant, 51, at=T0, state="unsubscribed", unsubscribed_at=T0)
    await subscribe(tenant, 52, at=T0, fulfilled_at=T0)
    await subscribe(tenant, 53, at=T0, notified_count=2)
    newcomer = await subscribe(tenant, 54, at=T0 + timedelta(minutes=1))
    await redis_client.set(redis_key(keys.notification_key(VARIANT, newcomer, event.restock_window)), "999")
    before = await counts()
    redis_before = sorted(await redis_client.keys("*"))

    clock.now = T0 + timedelta(minutes=10)
    result = await DryRunner(engine, redis_client, page_size=5, clock=clock).run(tenant.id, VARIANT, 2)  # type: ignore[arg-type]

    assert result is not None
    assert await counts() == before
    assert sorted(await redis_client.keys("*")) == redis_before
    assert result.suppressed == {
        "already-notified-in-window": 3,
        "unconfirmed": 1,
        "unsubscribed": 1,
        "fulfilled": 1,
        "notified-max-times": 1,
    }
    # The previous wave is 10 minutes old: wave 2 at its interval (6 shoppers), then wave 3.
    assert result.first_wave == "waiting-for-interval"
    assert result.by_wave == {2: 6, 3: 4}
    by_id = {target.subscription_id: target for target in result.targets}
    assert [by_id[s].wave for s in line[3:]] == [2] * 6 + [3] * 3
    assert by_id[line[3]].at == T0 + timedelta(minutes=30)
    assert by_id[line[9]].at == T0 + timedelta(minutes=60)
    assert (by_id[newcomer].wave, by_id[newcomer].redis_key_held) == (3, True)
    assert by_id[line[0]].reason == "already-notified-in-window"
    assert by_id[line[0]].redis_key_held
    assert not result.truncated

    sold_out = await DryRunner(engine, None, clock=clock).run(tenant.id, VARIANT, 0, limit=2)  # type: ignore[arg-type]
    assert sold_out is not None
    assert (sold_out.notify, sold_out.held, sold_out.truncated) == (0, 10, True)
    assert len(sold_out.targets) == 2
    assert await DryRunner(engine, None).run(tenant.id + 100, VARIANT, 1) is None  # type: ignore[arg-type]


async def test_many_batches_of_one_page_reach_the_queue_in_fifo_order(
    clean_db: None, engine: object, broker: Broker, email_queue: Drain
) -> None:
    tenant = await shop(rules=None)
    line = await line_of(tenant, 45)
    store = PiccoloTargetStore(engine)  # type: ignore[arg-type]
    handler = RestockHandler(store, BrokerBatchPublisher(broker), FaultPoints(None), batch_size=2)
    await handler(await restock(tenant, 1, T0))  # 23 batches, confirmed together
    batches = await email_queue()
    rows = await jobs()
    assert [row["subscription"] for row in rows] == line
    assert [batch.job_ids for batch in batches] == [
        [row["id"] for row in rows[start : start + 2]] for start in range(0, 45, 2)
    ]


async def test_two_replicas_ticking_at_once_release_a_due_wave_once(
    clean_db: None, engine: object, broker: Broker, email_queue: Drain
) -> None:
    tenant = await shop()
    line = await line_of(tenant, 30)
    clock = Clock(T0)
    first, second = Dispatcher(engine, broker, clock), Dispatcher(engine, broker, clock)
    await first.restock(await restock(tenant, 2, T0))  # wave 1: 6 of 30
    await email_queue()
    clock.now = T0 + timedelta(minutes=31)
    released = await asyncio.gather(first.timer.tick(), second.timer.tick())
    assert sorted(released) == [0, 6]
    rows = await jobs()
    assert [row["wave"] for row in rows] == [1] * 6 + [2] * 6 + [None] * 18
    assert [row["subscription"] for row in rows if row["wave"] == 2] == line[6:12]
    assert sorted(published(await email_queue())) == sorted(row["id"] for row in rows[6:12])


async def test_a_shop_that_turns_waves_off_releases_its_line_with_the_next_restock(
    clean_db: None, engine: object, broker: Broker, email_queue: Drain
) -> None:
    tenant = await shop()
    line = await line_of(tenant, 8)
    dispatcher = Dispatcher(engine, broker, Clock(T0))
    await dispatcher.restock(await restock(tenant, 1, T0))  # wave 1: 3; 5 wait
    await email_queue()
    await Rule.update({Rule.body: encode_rules(Rules())}).where(Rule.tenant == tenant.id)
    newcomer = await subscribe(tenant, 50, at=T0 + timedelta(minutes=1))
    second = await restock(tenant, 1, T0 + timedelta(minutes=5))
    await dispatcher.restock(second)
    rows = await jobs()
    released = [row for row in rows if row["decision"] == "released:waves-off"]
    assert [row["subscription"] for row in released] == line[3:]
    assert {row["state"] for row in released} == {"pending"}
    new_job = [row for row in rows if row["subscription"] == newcomer]
    assert [(row["state"], row["decision"]) for row in new_job] == [("pending", None)]
    assert sorted(published(await email_queue())) == sorted(
        [row["id"] for row in released] + [new_job[0]["id"]]
    )
