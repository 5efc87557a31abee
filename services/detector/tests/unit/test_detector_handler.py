"""The webhook handler (and the armed-restock scheduler, which shares its unit of work) with recording
fakes of their ports: no database, no broker, no event loop tricks."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from restock_common import messages, signatures, topology
from restock_common.keys import restock_window
from restock_common.rules import Rules
from restock_detector.handler import WebhookHandler
from restock_detector.ports import (
    ArmedVariant,
    AuditEntry,
    ItemMapping,
    LevelObservation,
    NewRestock,
    OutboxMessage,
    Receipt,
    Tenant,
    VariantMemory,
    VariantRef,
)
from restock_detector.scheduler import ArmedRestockScheduler
from restock_detector.transitions import due_at

SECRET = "unit-secret"
SHOP = "unit-shop.myshopify.com"
TENANT = Tenant(7, SHOP)
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ITEM, VARIANT, PRODUCT, LOCATION = 3001, 2001, 1001, 4001


@dataclass
class Data:
    """What the fake database holds."""

    receipts: dict[str, Receipt] = field(default_factory=dict)
    items: dict[int, ItemMapping] = field(default_factory=dict)
    snapshots: dict[tuple[int, int], LevelObservation] = field(default_factory=dict)
    variants: dict[int, VariantMemory] = field(default_factory=dict)
    restocks: list[NewRestock] = field(default_factory=list)
    outbox: list[OutboxMessage] = field(default_factory=list)
    subscriptions: dict[int, str] = field(default_factory=dict)  # id -> contact_hash
    redacted: dict[int, datetime] = field(default_factory=dict)
    audit: list[AuditEntry] = field(default_factory=list)
    uninstalled_at: datetime | None = None
    deleted: bool = False


class FakeUnitOfWork:
    """Records every call and works on a copy of the data, kept only when the block exits cleanly."""

    def __init__(self, store: FakeStore) -> None:
        self.store = store
        self.data = copy.deepcopy(store.data)

    async def claim_receipt(self, receipt: Receipt) -> bool:
        self.store.calls.append("claim_receipt")
        if receipt.webhook_id in self.data.receipts:
            return False
        self.data.receipts[receipt.webhook_id] = receipt
        return True

    async def rules_of(self, tenant_id: int) -> Rules:
        self.store.calls.append("rules_of")
        return self.store.rules

    async def save_items(self, tenant_id: int, items: Sequence[ItemMapping]) -> None:
        self.store.calls.append("save_items")
        self.data.items.update({item.inventory_item_id: item for item in items})

    async def save_snapshot(self, tenant_id: int, level: LevelObservation) -> bool:
        self.store.calls.append("save_snapshot")
        key = (level.inventory_item_id, level.location_id)
        stored = self.data.snapshots.get(key)
        if stored is not None and stored.updated_at > level.updated_at:
            return False
        self.data.snapshots[key] = level
        return True

    async def variant_of(self, tenant_id: int, inventory_item_id: int) -> VariantRef | None:
        self.store.calls.append("variant_of")
        item = self.data.items.get(inventory_item_id)
        return VariantRef(item.variant_id, item.product_id) if item else None

    async def lock_variant(self, tenant_id: int, variant_id: int) -> VariantMemory:
        self.store.calls.append("lock_variant")
        return self.data.variants.setdefault(variant_id, VariantMemory(0, None))

    async def variant_total(
        self, tenant_id: int, variant_id: int, excluded_location_ids: Sequence[int]
    ) -> int:
        self.store.calls.append("variant_total")
        self.store.excluded_seen = list(excluded_location_ids)
        return sum(
            level.available
            for (item, location), level in self.data.snapshots.items()
            if item in self.data.items
            and self.data.items[item].variant_id == variant_id
            and location not in excluded_location_ids
        )

    async def save_variant(
        self, tenant_id: int, variant_id: int, available: int, now: datetime, armed_at: datetime | None
    ) -> None:
        self.store.calls.append("save_variant")
        self.data.variants[variant_id] = VariantMemory(
            available, self.data.variants[variant_id].last_restock_at, armed_at
        )

    async def record_restock(self, restock: NewRestock) -> int:
        self.store.calls.append("record_restock")
        self.data.restocks.append(restock)
        memory = self.data.variants[restock.variant_id]
        self.data.variants[restock.variant_id] = VariantMemory(memory.available, restock.detected_at, None)
        return len(self.data.restocks)

    async def enqueue(self, message: OutboxMessage) -> None:
        self.store.calls.append("enqueue")
        if self.store.fail_on_enqueue:
            raise ConnectionError("database went away")
        self.data.outbox.append(message)

    async def mark_uninstalled(self, tenant_id: int, now: datetime) -> None:
        self.store.calls.append("mark_uninstalled")
        self.data.uninstalled_at = now
        for variant, memory in self.data.variants.items():
            self.data.variants[variant] = VariantMemory(memory.available, memory.last_restock_at, None)

    async def redact_contacts(
        self, tenant_id: int, contact_hashes: Sequence[str], now: datetime
    ) -> list[int]:
        self.store.calls.append("redact_contacts")
        ids = await self.subscriptions_of(tenant_id, contact_hashes)
        self.data.redacted.update(dict.fromkeys(ids, now))
        return ids

    async def subscriptions_of(self, tenant_id: int, contact_hashes: Sequence[str]) -> list[int]:
        return sorted(id_ for id_, hash_ in self.data.subscriptions.items() if hash_ in contact_hashes)

    async def delete_tenant(self, tenant_id: int) -> None:
        self.store.calls.append("delete_tenant")
        self.data.deleted = True

    async def audit(self, entry: AuditEntry) -> None:
        self.store.calls.append("audit")
        self.data.audit.append(entry)


@dataclass
class FakeArmedBatch:
    variants: list[ArmedVariant]
    work: FakeUnitOfWork


class FakeArmedStore:
    """``ArmedStore`` over the same fake data: the armed variants due under the store's rules."""

    def __init__(self, store: FakeStore) -> None:
        self.store = store

    @asynccontextmanager
    async def claim_due(self, now: datetime, limit: int) -> AsyncIterator[FakeArmedBatch]:
        async with self.store.unit_of_work() as work:
            due = [
                ArmedVariant(TENANT, VariantRef(variant, PRODUCT), memory.armed_at, memory.last_restock_at)
                for variant, memory in work.data.variants.items()
                if memory.armed_at is not None and due_at(memory.armed_at, self.store.rules) <= now
            ]
            yield FakeArmedBatch(due[:limit], work)


class FakeStore:
    """``WebhookStore`` in memory; ``in_transaction`` lets the signal check it is called after commit."""

    def __init__(self, rules: Rules | None = None) -> None:
        self.tenants = {SHOP: TENANT}
        self.uninstalled: set[str] = set()
        # No debounce unless a test asks for one: most tests are about what fires, not when.
        self.rules = rules or Rules(debounce_seconds=0)
        self.data = Data()
        self.calls: list[str] = []
        self.in_transaction = False
        self.fail_on_enqueue = False
        self.excluded_seen: list[int] | None = None

    async def find_tenant(self, shop_domain: str, *, installed_only: bool = True) -> Tenant | None:
        self.calls.append("find_tenant")
        if installed_only and shop_domain in self.uninstalled:
            return None
        return self.tenants.get(shop_domain)

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[FakeUnitOfWork]:
        work = FakeUnitOfWork(self)
        self.in_transaction = True
        try:
            yield work
        finally:
            self.in_transaction = False
        self.data = work.data  # commit


class RecordingSignal:
    def __init__(self, store: FakeStore) -> None:
        self.store = store
        self.notified_after_commit: list[bool] = []

    def notify(self) -> None:
        self.notified_after_commit.append(not self.store.in_transaction)


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def signal(store: FakeStore) -> RecordingSignal:
    return RecordingSignal(store)


@pytest.fixture
def handler(store: FakeStore, signal: RecordingSignal) -> WebhookHandler:
    return WebhookHandler(SECRET, store, signal, lambda: NOW)


_counter = iter(range(1, 1_000_000))


def signed(
    payload: object, topic: str, *, shop: str = SHOP, webhook_id: str | None = None, secret: str = SECRET
) -> tuple[dict[str, str], bytes]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {
        "X-Shopify-Topic": topic,
        "X-Shopify-Shop-Domain": shop,
        "X-Shopify-Webhook-Id": webhook_id or f"webhook-{next(_counter)}",
        "X-Shopify-Hmac-Sha256": signatures.shopify_webhook_hmac(secret, body),
        "X-Shopify-Triggered-At": "2026-03-01T11:59:59.123Z",
    }
    return headers, body


def level(available: int | None, *, item: int = ITEM, location: int = LOCATION, at: datetime = NOW) -> dict:
    return {
        "inventory_item_id": item,
        "location_id": location,
        "available": available,
        "updated_at": at.isoformat(),
    }


def product(*variants: tuple[int, str, int]) -> dict:
    return {
        "id": PRODUCT,
        "title": "Hoodie",
        "variants": [
            {"id": variant, "title": title, "sku": f"SKU-{variant}", "inventory_item_id": item}
            for variant, title, item in variants
        ],
    }


async def send(handler: WebhookHandler, payload: object, topic: str, **kwargs: object):  # type: ignore[no-untyped-def]
    headers, body = signed(payload, topic, **kwargs)  # type: ignore[arg-type]
    return await handler.handle_webhook(headers, body)


async def known_variant(handler: WebhookHandler) -> None:
    result = await send(handler, product((VARIANT, "M", ITEM)), "products/update")
    assert result.status_code == 200


async def test_products_map_items_to_variants_with_display_titles(
    handler: WebhookHandler, store: FakeStore
) -> None:
    result = await send(
        handler, product((VARIANT, "M", ITEM), (2002, "Default Title", 3002)), "products/create"
    )
    assert (result.status_code, result.body) == (200, {"status": "ok", "variants": 2})
    assert store.data.items == {
        ITEM: ItemMapping(ITEM, VARIANT, PRODUCT, f"SKU-{VARIANT}", "Hoodie - M"),
        3002: ItemMapping(3002, 2002, PRODUCT, "SKU-2002", "Hoodie"),
    }
    receipt = next(iter(store.data.receipts.values()))
    assert receipt.topic == "products/create"
    assert receipt.triggered_at == datetime(2026, 3, 1, 11, 59, 59, 123000, tzinfo=UTC)


async def test_zero_to_five_is_one_restock_with_its_outbox_message_then_a_wakeup(
    handler: WebhookHandler, store: FakeStore, signal: RecordingSignal
) -> None:
    await known_variant(handler)
    assert (await send(handler, level(0), "inventory_levels/update")).body == {"status": "still_out"}
    result = await send(handler, level(5, at=NOW + timedelta(seconds=1)), "inventory_levels/update")

    assert (result.status_code, result.body) == (200, {"status": "restock"})
    [restock] = store.data.restocks
    assert (restock.tenant_id, restock.variant_id, restock.product_id, restock.available) == (
        7,
        VARIANT,
        PRODUCT,
        5,
    )
    assert restock.restock_window == restock_window(NOW)
    assert restock.detected_at == NOW
    [message] = store.data.outbox
    assert message.routing_key == topology.RESTOCK_DETECTED
    assert message.ordering_key == f"7:{VARIANT}"
    event = messages.decode(message.payload.encode(), messages.RestockDetected)
    assert event == messages.RestockDetected(
        restock_event_id=1,
        tenant_id=7,
        shop_domain=SHOP,
        variant_id=VARIANT,
        product_id=PRODUCT,
        available=5,
        restock_window=restock_window(NOW),
        detected_at=NOW,
    )
    assert store.data.variants[VARIANT] == VariantMemory(5, NOW)
    assert signal.notified_after_commit == [True]


async def test_in_stock_changes_and_flaps_inside_the_cooldown_do_nothing(
    handler: WebhookHandler, store: FakeStore, signal: RecordingSignal
) -> None:
    await known_variant(handler)
    statuses = []
    for step, available in enumerate([5, 7, 0, 3]):
        result = await send(
            handler, level(available, at=NOW + timedelta(seconds=step)), "inventory_levels/update"
        )
        statuses.append(result.body["status"])
    assert statuses == ["restock", "was_available", "was_available", "cooldown"]
    assert len(store.data.restocks) == len(store.data.outbox) == 1
    assert signal.notified_after_commit == [True]


async def test_the_total_sums_locations_but_not_excluded_ones(
    store: FakeStore, signal: RecordingSignal
) -> None:
    store.rules = Rules(excluded_location_ids=[9], debounce_seconds=0)
    handler = WebhookHandler(SECRET, store, signal, lambda: NOW)
    await known_variant(handler)
    await send(
        handler, level(50, location=9), "inventory_levels/update"
    )  # a warehouse shoppers can't buy from
    assert not store.data.restocks
    await send(handler, level(2, location=LOCATION), "inventory_levels/update")
    assert [restock.available for restock in store.data.restocks] == [2]
    assert store.excluded_seen == [9]


async def test_a_duplicate_webhook_is_answered_and_not_processed(
    handler: WebhookHandler, store: FakeStore
) -> None:
    await known_variant(handler)
    headers, body = signed(level(5), "inventory_levels/update", webhook_id="same-id")
    first = await handler.handle_webhook(headers, body)
    store.calls.clear()
    second = await handler.handle_webhook(headers, body)
    assert first.body == {"status": "restock"}
    assert (second.status_code, second.body) == (200, {"status": "duplicate"})
    assert store.calls == ["find_tenant", "claim_receipt"]
    assert len(store.data.restocks) == 1


async def test_a_stale_observation_is_ignored(handler: WebhookHandler, store: FakeStore) -> None:
    await known_variant(handler)
    await send(handler, level(0, at=NOW), "inventory_levels/update")
    store.calls.clear()
    result = await send(handler, level(5, at=NOW - timedelta(minutes=1)), "inventory_levels/update")
    assert result.body == {"status": "stale"}
    assert "lock_variant" not in store.calls
    assert store.data.snapshots[(ITEM, LOCATION)].available == 0
    assert not store.data.restocks


async def test_an_unknown_item_keeps_its_snapshot_and_decides_nothing(
    handler: WebhookHandler, store: FakeStore
) -> None:
    result = await send(handler, level(5, item=999), "inventory_levels/update")
    assert (result.status_code, result.body) == (200, {"status": "unknown_item"})
    assert store.data.snapshots[(999, LOCATION)].available == 5
    assert "lock_variant" not in store.calls
    assert not store.data.restocks


async def test_an_untracked_level_is_ignored_without_writing(
    handler: WebhookHandler, store: FakeStore
) -> None:
    result = await send(handler, level(None), "inventory_levels/update")
    assert (result.status_code, result.body["status"]) == (200, "ignored")
    assert store.calls == ["find_tenant"]


async def test_a_failure_inside_the_transaction_keeps_nothing_and_wakes_nobody(
    handler: WebhookHandler, store: FakeStore, signal: RecordingSignal
) -> None:
    await known_variant(handler)
    store.fail_on_enqueue = True
    with pytest.raises(ConnectionError):
        await send(handler, level(5), "inventory_levels/update")
    assert not store.data.restocks
    assert (ITEM, LOCATION) not in store.data.snapshots
    assert len(store.data.receipts) == 1  # only the product's: the failed delivery can be retried
    assert signal.notified_after_commit == []


BAD_REQUESTS = [
    # (how to spoil the request, status, detail)
    ("wrong secret", 401, "invalid HMAC"),
    ("no hmac", 401, "invalid HMAC"),
    ("truncated body", 401, "invalid HMAC"),
    ("no topic", 400, "missing header X-Shopify-Topic"),
    ("no shop", 400, "missing header X-Shopify-Shop-Domain"),
    ("no webhook id", 400, "missing header X-Shopify-Webhook-Id"),
    ("long webhook id", 400, "header X-Shopify-Webhook-Id longer than 128 characters"),
    ("unknown topic", 400, "unsupported topic 'orders/create'"),
    ("not json", 400, "malformed JSON"),
    ("missing field", 400, "invalid payload: Object missing required field `location_id`"),
    ("unknown shop", 404, "unknown shop 'other.myshopify.com'"),
]


def spoiled(how: str) -> tuple[dict[str, str], bytes]:
    topic = "orders/create" if how == "unknown topic" else "inventory_levels/update"
    payload: object = level(5)
    if how == "not json":
        payload = b"<html>not json</html>"
    if how == "missing field":
        payload = {k: v for k, v in level(5).items() if k != "location_id"}
    shop = "other.myshopify.com" if how == "unknown shop" else SHOP
    headers, body = signed(
        payload, topic, shop=shop, secret="not-the-secret" if how == "wrong secret" else SECRET
    )
    drop = {
        "no hmac": "X-Shopify-Hmac-Sha256",
        "no topic": "X-Shopify-Topic",
        "no shop": "X-Shopify-Shop-Domain",
        "no webhook id": "X-Shopify-Webhook-Id",
    }
    if how in drop:
        del headers[drop[how]]
    if how == "long webhook id":
        headers["X-Shopify-Webhook-Id"] = "x" * 129
    if how == "truncated body":
        body = body[:-5]
    return headers, body


@pytest.mark.parametrize(("how", "status", "detail"), BAD_REQUESTS)
async def test_bad_requests_are_refused_with_a_reason_and_write_nothing(
    handler: WebhookHandler, store: FakeStore, how: str, status: int, detail: str
) -> None:
    headers, body = spoiled(how)
    result = await handler.handle_webhook(headers, body)
    assert (result.status_code, result.body) == (status, {"detail": detail})
    assert store.calls == (["find_tenant"] if status == 404 else [])
    assert store.data == Data()


async def test_header_names_are_case_insensitive(handler: WebhookHandler, store: FakeStore) -> None:
    headers, body = signed(product((VARIANT, "M", ITEM)), "products/update")
    result = await handler.handle_webhook({name.lower(): value for name, value in headers.items()}, body)
    assert result.status_code == 200
    assert ITEM in store.data.items


# Debounce (the handler's side: arming, disarming, settling an ended debounce itself)

DEBOUNCED = Rules(debounce_seconds=300)


class MovingClock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


async def level_at(handler: WebhookHandler, available: int, when: datetime) -> str:
    result = await send(handler, level(available, at=when), "inventory_levels/update")
    assert result.status_code == 200
    return str(result.body["status"])


async def test_with_a_debounce_a_rise_arms_and_a_drop_disarms_without_any_restock() -> None:
    store = FakeStore(DEBOUNCED)
    handler = WebhookHandler(SECRET, store, RecordingSignal(store), lambda: NOW)
    await known_variant(handler)
    assert await level_at(handler, 5, NOW) == "armed"
    assert store.data.variants[VARIANT] == VariantMemory(5, None, NOW)
    assert await level_at(handler, 3, NOW + timedelta(seconds=1)) == "armed"
    assert store.data.variants[VARIANT] == VariantMemory(3, None, NOW)  # armed since the rise
    assert await level_at(handler, 0, NOW + timedelta(seconds=2)) == "disarmed"
    assert store.data.variants[VARIANT] == VariantMemory(0, None, None)
    assert (store.data.restocks, store.data.outbox) == ([], [])


async def test_a_webhook_after_the_debounce_ended_fires_the_restock_at_its_end_first() -> None:
    store, clock = FakeStore(DEBOUNCED), MovingClock()
    signal = RecordingSignal(store)
    handler = WebhookHandler(SECRET, store, signal, clock)
    await known_variant(handler)
    assert await level_at(handler, 5, NOW) == "armed"
    clock.now = NOW + timedelta(seconds=301)  # the scheduler has not got there yet
    assert await level_at(handler, 0, NOW + timedelta(seconds=1)) == "restock"
    [restock] = store.data.restocks
    assert (restock.available, restock.detected_at) == (5, NOW + timedelta(seconds=300))
    assert len(store.data.outbox) == 1
    assert store.data.variants[VARIANT] == VariantMemory(0, NOW + timedelta(seconds=300), None)
    assert signal.notified_after_commit == [True]


# The armed-restock scheduler


async def armed_variant(store: FakeStore, available: int) -> None:
    handler = WebhookHandler(SECRET, store, RecordingSignal(store), lambda: NOW)
    await known_variant(handler)
    assert await level_at(handler, 5, NOW) == "armed"
    if available != 5:
        # the snapshot changed without a decision (e.g. an excluded location became counted)
        store.data.snapshots[(ITEM, LOCATION)] = LevelObservation(ITEM, LOCATION, available, NOW)


async def test_the_scheduler_leaves_a_variant_armed_until_its_debounce_ends() -> None:
    store = FakeStore(DEBOUNCED)
    await armed_variant(store, 5)
    signal = RecordingSignal(store)
    scheduler = ArmedRestockScheduler(FakeArmedStore(store), signal, lambda: NOW + timedelta(seconds=299))
    assert await scheduler.tick() == 0
    assert store.data.variants[VARIANT].armed_at == NOW
    assert (store.data.restocks, signal.notified_after_commit) == ([], [])


async def test_the_scheduler_fires_a_held_restock_once_and_wakes_the_relay_after_commit() -> None:
    store = FakeStore(DEBOUNCED)
    await armed_variant(store, 5)
    signal = RecordingSignal(store)
    later = NOW + timedelta(seconds=330)
    scheduler = ArmedRestockScheduler(FakeArmedStore(store), signal, lambda: later)
    assert await scheduler.tick() == 1
    [restock] = store.data.restocks
    assert (restock.available, restock.detected_at) == (5, NOW + timedelta(seconds=300))
    [message] = store.data.outbox
    event = messages.decode(message.payload.encode(), messages.RestockDetected)
    assert (event.restock_event_id, event.detected_at) == (1, NOW + timedelta(seconds=300))
    assert store.data.variants[VARIANT] == VariantMemory(5, NOW + timedelta(seconds=300), None)
    assert signal.notified_after_commit == [True]
    assert await scheduler.tick() == 0  # disarmed: never again
    assert len(store.data.restocks) == 1


async def test_the_scheduler_disarms_a_variant_that_is_out_of_stock_again() -> None:
    store = FakeStore(DEBOUNCED)
    await armed_variant(store, 0)
    signal = RecordingSignal(store)
    scheduler = ArmedRestockScheduler(FakeArmedStore(store), signal, lambda: NOW + timedelta(seconds=300))
    assert await scheduler.tick() == 1
    assert store.data.variants[VARIANT] == VariantMemory(0, None, None)
    assert (store.data.restocks, signal.notified_after_commit) == ([], [])


async def test_the_scheduler_stops_gracefully() -> None:
    store = FakeStore(DEBOUNCED)
    scheduler = ArmedRestockScheduler(FakeArmedStore(store), RecordingSignal(store), lambda: NOW, 3600)
    scheduler.start()
    await asyncio.wait_for(scheduler.stop(), 5)  # does not wait out its hour-long tick


# Shop lifecycle and compliance topics

EMAIL, PHONE = "Shopper@Example.com", "+16135550123"
CUSTOMER = {"id": 191167, "email": EMAIL, "phone": PHONE}


def privacy(**extra: object) -> dict[str, object]:
    return {"shop_id": 548380009, "shop_domain": SHOP, **extra}


async def test_app_uninstalled_marks_the_shop_disarms_and_audits(
    handler: WebhookHandler, store: FakeStore
) -> None:
    store.data.variants[VARIANT] = VariantMemory(5, None, NOW)
    result = await send(handler, {"id": 548380009, "email": "owner@example.com"}, "app/uninstalled")
    assert (result.status_code, result.body) == (200, {"status": "uninstalled"})
    assert store.data.uninstalled_at == NOW
    assert store.data.variants[VARIANT].armed_at is None
    [entry] = store.data.audit
    assert (entry.tenant_id, entry.action, entry.target_type) == (TENANT.id, "app.uninstalled", "shop")
    assert "owner@example.com" not in repr(entry)


async def test_customers_redact_matches_by_contact_hash_and_audits_ids_only(
    handler: WebhookHandler, store: FakeStore
) -> None:
    store.data.subscriptions = {
        1: signatures.contact_hash(EMAIL),
        2: signatures.contact_hash(PHONE),
        3: signatures.contact_hash("other@example.com"),
    }
    result = await send(handler, privacy(customer=CUSTOMER, orders_to_redact=[11, 12]), "customers/redact")
    assert (result.status_code, result.body) == (200, {"status": "redacted", "subscriptions": 2})
    assert store.data.redacted == {1: NOW, 2: NOW}
    [entry] = store.data.audit
    assert (entry.action, entry.target_type, entry.target_ids) == (
        "privacy.customers/redact",
        "customer",
        [191167],
    )
    assert entry.detail == {
        "shop_id": 548380009,
        "customer_id": 191167,
        "orders_to_redact": [11, 12],
        "subscription_ids": [1, 2],
    }


async def test_customers_data_request_redacts_nothing(handler: WebhookHandler, store: FakeStore) -> None:
    store.data.subscriptions = {4: signatures.contact_hash(EMAIL)}
    payload = privacy(customer=CUSTOMER, orders_requested=[7], data_request={"id": 9999})
    result = await send(handler, payload, "customers/data_request")
    assert (result.status_code, result.body) == (200, {"status": "recorded", "subscriptions": 1})
    assert store.data.redacted == {}
    assert store.data.audit[0].detail["data_request_id"] == 9999


async def test_shop_redact_of_an_uninstalled_shop_deletes_it(
    handler: WebhookHandler, store: FakeStore
) -> None:
    store.uninstalled.add(SHOP)
    result = await send(handler, privacy(), "shop/redact")
    assert (result.status_code, result.body) == (200, {"status": "deleted"})
    assert store.data.deleted
    [entry] = store.data.audit
    assert (entry.tenant_id, entry.action, entry.target_ids) == (None, "privacy.shop/redact", [548380009])


async def test_lifecycle_topics_of_an_uninstalled_or_unknown_shop(
    handler: WebhookHandler, store: FakeStore
) -> None:
    store.uninstalled.add(SHOP)
    assert (await send(handler, {"id": 1}, "app/uninstalled")).status_code == 404
    unknown = await send(handler, privacy(), "shop/redact", shop="other.myshopify.com")
    assert (unknown.status_code, unknown.body) == (200, {"status": "unknown_shop"})
    assert store.data == Data()


async def test_a_compliance_payload_without_its_shop_id_is_refused(
    handler: WebhookHandler, store: FakeStore
) -> None:
    result = await send(handler, {"shop_domain": SHOP}, "customers/redact")
    assert (result.status_code, result.body) == (
        400,
        {"detail": "invalid payload: Object missing required field `shop_id`"},
    )
    assert store.data == Data()
