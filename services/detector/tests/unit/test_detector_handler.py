"""The webhook handler (and the armed-restock scheduler, which shares its unit of work) with recording
fakes of their ports: no database, no broker, no event loop tricks."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from restock_common import messages, signatures, topology
from restock_common.keys import restock_window
from restock_common.rules import Rules
from restock_detector import throttle
from restock_detector.admin_api import AdminApiError
from restock_detector.admin_graphql import CatalogVariant, ItemOwner, Level
from restock_detector.handler import TenantCache, WebhookHandler
from restock_detector.optimistic import level_total
from restock_detector.ports import (
    ArmedVariant,
    AuditEntry,
    ConfirmationTarget,
    ItemMapping,
    LevelClaim,
    LevelObservation,
    LevelRead,
    LevelWrite,
    LevelWritten,
    LockedVariant,
    NewRestock,
    OutboxMessage,
    Receipt,
    RestockMessage,
    ShopAccess,
    Tenant,
    VariantMemory,
    VariantRef,
    WriteOutcome,
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
    outbox: list[OutboxMessage] = field(default_factory=list)  # every message but stock.changed
    changes: list[OutboxMessage] = field(default_factory=list)  # stock.changed
    # Variants whose wave line is idle (nobody waiting): the store enqueues no stock.changed for them.
    idle_lines: set[int] = field(default_factory=set)
    subscriptions: dict[int, str] = field(default_factory=dict)  # id -> contact_hash
    redacted: dict[int, datetime] = field(default_factory=dict)
    audit: list[AuditEntry] = field(default_factory=list)
    uninstalled_at: datetime | None = None
    deleted: bool = False
    # The state rows' versions: bumped by every update of a variant's row, as the database's trigger does.
    versions: dict[int, int] = field(default_factory=dict)

    def touch(self, variant_id: int) -> None:
        self.versions[variant_id] = self.versions.get(variant_id, 0) + 1


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

    async def lock_variant(self, tenant_id: int, variant_id: int) -> VariantMemory:
        self.store.calls.append("lock_variant")
        self.data.touch(variant_id)
        return self.data.variants.setdefault(variant_id, VariantMemory(0, None))

    async def claim_level(self, receipt: Receipt, tenant_id: int, inventory_item_id: int) -> LevelClaim:
        if self.data.uninstalled_at is not None or self.data.deleted or SHOP in self.store.uninstalled:
            return LevelClaim(installed=False, claimed=False)
        if not await self.claim_receipt(receipt):
            return LevelClaim(installed=True, claimed=False)
        self.store.calls.append("lock_item_variant")
        item = self.data.items.get(inventory_item_id)
        if item is None:
            return LevelClaim(installed=True, claimed=True)
        memory = self.data.variants.setdefault(item.variant_id, VariantMemory(0, None))
        self.data.touch(item.variant_id)
        locked = LockedVariant(VariantRef(item.variant_id, item.product_id), memory, self.store.rules)
        return LevelClaim(installed=True, claimed=True, locked=locked)

    async def save_level(
        self, tenant_id: int, variant_id: int, level: LevelObservation, excluded_location_ids: Sequence[int]
    ) -> int | None:
        self.store.calls.append("save_level")
        if not await self.save_snapshot(tenant_id, level):
            return None
        return await self.variant_total(tenant_id, variant_id, excluded_location_ids)

    async def variant_total(
        self, tenant_id: int, variant_id: int, excluded_location_ids: Sequence[int]
    ) -> int:
        self.store.calls.append("variant_total")
        return sum(
            level.available
            for (item, location), level in self.data.snapshots.items()
            if item in self.data.items
            and self.data.items[item].variant_id == variant_id
            and location not in excluded_location_ids
        )

    async def save_variant(
        self,
        tenant_id: int,
        variant_id: int,
        available: int,
        now: datetime,
        armed_at: datetime | None,
        change: OutboxMessage | None = None,
    ) -> bool:
        self.store.calls.append("save_variant")
        enqueued = change is not None and variant_id not in self.data.idle_lines
        if enqueued:
            assert change is not None
            self.data.changes.append(change)
        self.data.variants[variant_id] = VariantMemory(
            available, self.data.variants[variant_id].last_restock_at, armed_at
        )
        self.data.touch(variant_id)
        return enqueued

    async def record_restock(self, restock: NewRestock, message: RestockMessage) -> int:
        self.store.calls.append("record_restock")
        if self.store.fail_on_outbox:
            raise ConnectionError("database went away")
        self.data.restocks.append(restock)
        memory = self.data.variants[restock.variant_id]
        self.data.variants[restock.variant_id] = VariantMemory(memory.available, restock.detected_at, None)
        self.data.touch(restock.variant_id)
        event_id = len(self.data.restocks)
        self.data.outbox.append(message.row(restock.tenant_id, event_id))
        return event_id

    async def enqueue(self, message: OutboxMessage) -> None:
        self.store.calls.append("enqueue")
        if self.store.fail_on_outbox:
            raise ConnectionError("database went away")
        if message.routing_key == topology.STOCK_CHANGED:
            self.data.changes.append(message)
        else:
            self.data.outbox.append(message)

    async def mark_uninstalled(self, tenant_id: int, now: datetime) -> None:
        self.store.calls.append("mark_uninstalled")
        self.data.uninstalled_at = now
        for variant, memory in self.data.variants.items():
            self.data.variants[variant] = VariantMemory(memory.available, memory.last_restock_at, None)
            self.data.touch(variant)

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

    async def due_confirmations(self, now: datetime, limit: int) -> list[ConfirmationTarget]:
        if not self.store.rules.confirm_with_admin_api:
            return []
        return [
            ConfirmationTarget(ShopAccess(TENANT.id, SHOP, "unit-token"), variant)
            for variant, memory in self.store.data.variants.items()
            if memory.armed_at is not None and due_at(memory.armed_at, self.store.rules) <= now
        ][:limit]


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
        self.fail_on_outbox = False
        self.level_writes: list[LevelWrite] = []
        # Runs after a two-trip read, before its write: a concurrent writer's turn.
        self.between_read_and_write: Callable[[], Awaitable[None]] | None = None

    async def shop_access(self, tenant_id: int) -> ShopAccess | None:
        self.calls.append("shop_access")
        return ShopAccess(TENANT.id, TENANT.shop_domain, "unit-token")

    async def find_tenant(self, shop_domain: str, *, installed_only: bool = True) -> Tenant | None:
        self.calls.append("find_tenant")
        if installed_only and shop_domain in self.uninstalled:
            return None
        return self.tenants.get(shop_domain)

    @asynccontextmanager
    async def level_session(self) -> AsyncIterator[FakeStore]:
        yield self

    async def read_level(self, receipt: Receipt, tenant_id: int, level: LevelObservation) -> LevelRead:
        self.calls.append("read_level")
        data = self.data
        installed = (
            data.uninstalled_at is None
            and not data.deleted
            and SHOP not in self.uninstalled
            and tenant_id in {tenant.id for tenant in self.tenants.values()}
        )
        seen = receipt.webhook_id in data.receipts
        item = data.items.get(level.inventory_item_id)
        if not installed or seen or item is None:
            return LevelRead(installed, seen)
        variant = VariantRef(item.variant_id, item.product_id)
        memory = data.variants.get(item.variant_id, VariantMemory(0, None))
        here = (level.inventory_item_id, level.location_id)
        stored = data.snapshots.get(here)
        others = tuple(
            (location, snapshot.available)
            for (item_id, location), snapshot in data.snapshots.items()
            if (item_id, location) != here
            and item_id in data.items
            and data.items[item_id].variant_id == item.variant_id
        )
        version = data.versions.get(item.variant_id, 0) if item.variant_id in data.variants else None
        stored_at = stored.updated_at if stored else None
        line_open = item.variant_id not in data.idle_lines
        read = LevelRead(True, False, variant, memory, version, self.rules, stored_at, others, line_open)
        if self.between_read_and_write is not None:
            await self.between_read_and_write()
        return read

    async def write_level(self, write: LevelWrite) -> LevelWritten:
        self.calls.append("write_level")
        self.level_writes.append(write)
        variant_id = write.variant.variant_id
        if write.version is None:  # create the row, unless it exists by now
            moved = variant_id in self.data.variants
        else:
            moved = variant_id not in self.data.variants or self.data.versions[variant_id] != write.version
        if moved:
            return LevelWritten(WriteOutcome.CONFLICT)
        if write.receipt.webhook_id in self.data.receipts:
            return LevelWritten(WriteOutcome.DUPLICATE)
        if self.fail_on_outbox and (write.restock or write.change):
            raise ConnectionError("database went away")
        data = copy.deepcopy(self.data)  # all or nothing, as the one statement
        data.receipts[write.receipt.webhook_id] = write.receipt
        here = (write.level.inventory_item_id, write.level.location_id)
        if here not in data.snapshots or data.snapshots[here].updated_at <= write.level.updated_at:
            data.snapshots[here] = write.level
        data.variants[variant_id] = write.state
        data.touch(variant_id)
        enqueued = write.change is not None and variant_id not in data.idle_lines
        if enqueued:
            assert write.change is not None
            data.changes.append(write.change)
        event_id = None
        if write.restock is not None:
            restock, message = write.restock
            data.restocks.append(restock)
            event_id = len(data.restocks)
            data.outbox.append(message.row(restock.tenant_id, event_id))
        self.data = data
        return LevelWritten(WriteOutcome.WRITTEN, enqueued or event_id is not None, event_id)

    async def claim_receipt(self, receipt: Receipt) -> bool:
        self.calls.append("claim_receipt")
        if receipt.webhook_id in self.data.receipts:
            return False
        self.data.receipts[receipt.webhook_id] = receipt
        return True

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


@pytest.mark.parametrize("line_open", [True, False])
async def test_in_stock_changes_and_flaps_inside_the_cooldown_do_nothing(
    handler: WebhookHandler, store: FakeStore, signal: RecordingSignal, line_open: bool
) -> None:
    await known_variant(handler)
    if not line_open:
        store.data.idle_lines.add(VARIANT)
    statuses = []
    for step, available in enumerate([5, 7, 0, 3]):
        result = await send(
            handler, level(available, at=NOW + timedelta(seconds=step)), "inventory_levels/update"
        )
        statuses.append(result.body["status"])
    assert statuses == ["restock", "was_available", "was_available", "cooldown"]
    assert len(store.data.restocks) == len(store.data.outbox) == 1
    assert store.data.variants[VARIANT].available == 3  # the total is remembered either way
    if not line_open:
        # Nobody waits in the variant's wave line: its moves enqueue nothing and wake the relay for the
        # restock alone (ADR 26). The two-trip path does not even make the message, but for the variant's
        # first level (no row yet, so no version a freeze could move): the store's check of the line drops it.
        assert (store.data.changes, signal.notified_after_commit) == ([], [True])
        assert [write.change is None for write in store.level_writes] == [False, True, True, True]
        return
    # While the line is open, every move of the total is a stock.changed for the wave planner.
    changes = [messages.decode(m.payload.encode(), messages.StockChanged) for m in store.data.changes]
    assert [(c.previous, c.available, c.source) for c in changes] == [
        (0, 5, "webhook"),
        (5, 7, "webhook"),
        (7, 0, "webhook"),
        (0, 3, "webhook"),
    ]
    assert {m.ordering_key for m in store.data.changes} == {f"{TENANT.id}:{VARIANT}"}
    assert signal.notified_after_commit == [True] * 4


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


async def test_a_known_item_takes_two_trips_and_an_unknown_one_the_locking_path(
    handler: WebhookHandler, store: FakeStore
) -> None:
    unknown = await send(handler, level(2, item=999), "inventory_levels/update")
    assert unknown.body == {"status": "unknown_item"}
    assert store.calls[-4:] == ["read_level", "claim_receipt", "lock_item_variant", "save_snapshot"]
    await known_variant(handler)
    store.calls.clear()
    assert (await send(handler, level(0), "inventory_levels/update")).body == {"status": "still_out"}
    assert store.calls == ["read_level", "write_level"]  # the variant's first level creates its row
    assert [write.version for write in store.level_writes] == [None]
    assert store.data.variants[VARIANT] == VariantMemory(0, None)
    store.calls.clear()
    later = level(3, at=NOW + timedelta(seconds=1))
    assert (await send(handler, later, "inventory_levels/update")).body == {"status": "restock"}
    assert store.calls == ["read_level", "write_level"]
    assert store.level_writes[-1].version == 1


async def test_a_first_level_whose_variant_row_appears_meanwhile_is_judged_under_its_lock(
    handler: WebhookHandler, store: FakeStore
) -> None:
    """The read found no state row; another location's level created it before this write: the write
    creates nothing, and the locking path judges this level on the total that includes the other."""
    await known_variant(handler)
    other = level(4, location=LOCATION + 1)

    async def concurrent_webhook() -> None:
        store.between_read_and_write = None
        assert (await send(handler, other, "inventory_levels/update")).body == {"status": "restock"}

    store.between_read_and_write = concurrent_webhook
    result = await send(handler, level(1, at=NOW + timedelta(seconds=1)), "inventory_levels/update")
    assert result.body == {"status": "was_available"}
    assert [(write.version, write.level.available) for write in store.level_writes] == [(None, 4), (None, 1)]
    assert "lock_item_variant" in store.calls
    assert store.data.variants[VARIANT].available == 5
    assert [restock.available for restock in store.data.restocks] == [4]


async def test_a_variant_that_moves_between_read_and_write_is_judged_again_under_its_lock(
    handler: WebhookHandler, store: FakeStore
) -> None:
    """Another location's level lands between this webhook's read and its write: the write is refused
    (the version moved), and the locking path judges the level on the total that includes it."""
    await known_variant(handler)
    await send(handler, level(0), "inventory_levels/update")
    other = level(2, location=LOCATION + 1, at=NOW + timedelta(seconds=1))

    async def concurrent_webhook() -> None:
        store.between_read_and_write = None
        assert (await send(handler, other, "inventory_levels/update")).body == {"status": "restock"}

    store.between_read_and_write = concurrent_webhook
    store.calls.clear()
    result = await send(handler, level(3, at=NOW + timedelta(seconds=2)), "inventory_levels/update")
    assert result.body == {"status": "was_available"}  # judged after the other: 2 -> 5, not 0 -> 3
    # Both read version 1; the other's write moved it, so this one's was refused and redone with the lock.
    writes = [(write.version, write.level.available) for write in store.level_writes]
    assert writes == [(None, 0), (1, 2), (1, 3)]
    assert store.calls[-7:] == [
        "write_level",
        "claim_receipt",
        "lock_item_variant",
        "save_level",
        "save_snapshot",
        "variant_total",
        "save_variant",
    ]
    assert store.data.variants[VARIANT].available == 5
    assert [restock.available for restock in store.data.restocks] == [2]
    assert len(store.data.receipts) == 4  # product, zero, other, this


async def test_a_stale_level_of_a_known_variant_only_claims_its_receipt(
    handler: WebhookHandler, store: FakeStore
) -> None:
    await known_variant(handler)
    await send(handler, level(0), "inventory_levels/update")
    store.calls.clear()
    headers, body = signed(level(5, at=NOW - timedelta(seconds=1)), "inventory_levels/update")
    assert (await handler.handle_webhook(headers, body)).body == {"status": "stale"}
    assert store.calls == ["read_level", "claim_receipt"]
    assert (await handler.handle_webhook(headers, body)).body == {"status": "duplicate"}
    assert not store.data.restocks


async def test_a_write_that_finds_the_webhook_claimed_meanwhile_answers_duplicate(
    handler: WebhookHandler, store: FakeStore
) -> None:
    await known_variant(handler)
    await send(handler, level(0), "inventory_levels/update")
    headers, body = signed(level(4, at=NOW + timedelta(seconds=1)), "inventory_levels/update")

    async def same_delivery_again() -> None:  # Shopify's retry, handled by another replica meanwhile
        webhook_id = headers["X-Shopify-Webhook-Id"]
        store.data.receipts[webhook_id] = Receipt(webhook_id, SHOP, "inventory_levels/update")

    store.between_read_and_write = same_delivery_again
    assert (await handler.handle_webhook(headers, body)).body == {"status": "duplicate"}
    assert not store.data.restocks
    assert store.data.variants[VARIANT].available == 0


LEVEL_TOTALS = [
    # (stored level's time, other levels, excluded, this level, total)
    (None, (), (), 3, 3),
    (NOW, (), (), 3, 3),  # the same time replaces the stored level
    (NOW + timedelta(seconds=1), (), (), 3, None),  # stale
    (None, ((LOCATION + 1, 2), (LOCATION + 2, -1)), (), 3, 4),  # oversold locations count (Shopify's sum)
    (None, ((LOCATION + 1, 2), (9, 50)), (9,), 3, 5),
    (None, ((LOCATION + 1, 2),), (LOCATION,), 3, 2),  # this level's location is excluded
]


@pytest.mark.parametrize(("stored_at", "others", "excluded", "available", "total"), LEVEL_TOTALS)
def test_level_total(
    stored_at: datetime | None,
    others: tuple[tuple[int, int], ...],
    excluded: tuple[int, ...],
    available: int,
    total: int | None,
) -> None:
    variant, memory = VariantRef(VARIANT, PRODUCT), VariantMemory(0, None)
    read = LevelRead(True, False, variant, memory, 1, Rules(), stored_at, others)
    assert level_total(read, LevelObservation(ITEM, LOCATION, available, NOW), excluded) == total


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
    assert store.calls == ["read_level"]  # the tenant from the handler's cache, checked by the read
    assert len(store.data.restocks) == 1


async def test_an_observation_that_moves_nothing_keeps_the_variants_time_and_enqueues_nothing(
    handler: WebhookHandler, store: FakeStore, signal: RecordingSignal
) -> None:
    await known_variant(handler)
    for step in range(3):  # still out: the first creates the row, then two that move nothing
        result = await send(handler, level(0, at=NOW + timedelta(seconds=step)), "inventory_levels/update")
        assert result.body == {"status": "still_out"}
    assert [(write.updated_at, write.change) for write in store.level_writes] == [(None, None)] * 3
    assert store.data.snapshots[(ITEM, LOCATION)].updated_at == NOW + timedelta(seconds=2)  # kept
    store.level_writes.clear()
    await send(handler, level(4, at=NOW + timedelta(seconds=3)), "inventory_levels/update")
    [move] = store.level_writes
    assert move.updated_at == NOW  # a move is saved (the handler's clock)
    assert move.change is not None
    assert move.restock is not None
    assert store.data.variants[VARIANT].available == 4
    assert signal.notified_after_commit == [True]


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
    store.fail_on_outbox = True
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
    ("unknown topic", 400, "unsupported topic 'orders/cancelled'"),
    ("not json", 400, "malformed JSON"),
    ("missing field", 400, "invalid payload: Object missing required field `location_id`"),
    ("unknown shop", 404, "unknown shop 'other.myshopify.com'"),
]


def spoiled(how: str) -> tuple[dict[str, str], bytes]:
    topic = "orders/cancelled" if how == "unknown topic" else "inventory_levels/update"
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
    assert signal.notified_after_commit == [True, True]  # the 0 -> 5 stock change, then the restock


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


# --- orders/create ---------------------------------------------------------------------------------------


def order(**overrides: object) -> dict:
    payload = {
        "id": 820982911946154508,
        "admin_graphql_api_id": "gid://shopify/Order/820982911946154508",
        "email": " Shopper@Example.COM ",
        "phone": "+15551234567",
        "currency": "EUR",
        "created_at": "2026-03-01T07:00:00-05:00",
        "total_price": "41.98",
        "line_items": [
            {"id": 1, "variant_id": VARIANT, "product_id": PRODUCT, "quantity": 2, "price": "19.99"},
            {
                "id": 2,
                "variant_id": None,
                "product_id": None,
                "quantity": 1,
                "price": "2.00",
            },  # a custom item
        ],
        "customer": {"id": 5, "email": "shopper@example.com", "phone": None},
    }
    return payload | overrides


async def test_an_order_becomes_order_created_with_contact_hashes_only(
    handler: WebhookHandler, store: FakeStore, signal: RecordingSignal
) -> None:
    result = await send(handler, order(), "orders/create")
    assert (result.status_code, result.body) == (200, {"status": "ok", "lines": 1})
    [message] = store.data.outbox
    assert (message.routing_key, message.ordering_key) == (
        topology.ORDER_CREATED,
        f"7:order:{820982911946154508}",
    )
    created = messages.decode(message.payload.encode(), messages.OrderCreated)
    assert (created.tenant_id, created.shop_domain, created.order_id, created.currency) == (
        7,
        SHOP,
        820982911946154508,
        "EUR",
    )
    assert created.lines == [messages.OrderLine(variant_id=VARIANT, quantity=2, price_cents=1999)]
    assert created.contact_hashes == sorted(
        {signatures.contact_hash("shopper@example.com"), signatures.contact_hash("+15551234567")}
    )
    assert created.ordered_at == datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert "xample" not in message.payload
    assert "5551234567" not in message.payload
    assert signal.notified_after_commit == [True]
    again = await send(handler, order(), "orders/create", webhook_id="webhook-order-repeat")
    assert again.body == {"status": "ok", "lines": 1}
    repeat = await send(handler, order(), "orders/create", webhook_id="webhook-order-repeat")
    assert repeat.body == {"status": "duplicate"}


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"line_items": [{"variant_id": 1, "quantity": 1, "price": "free"}]}, "invalid price"),
        ({"line_items": [{"variant_id": 1, "quantity": 1, "price": "-1.00"}]}, "invalid price"),
        ({"created_at": None}, "created_at"),
        ({"id": "x"}, "$.id"),
    ],
)
async def test_a_bad_order_is_refused_and_writes_nothing(
    handler: WebhookHandler, store: FakeStore, overrides: dict[str, object], reason: str
) -> None:
    result = await send(handler, order(**overrides), "orders/create")
    assert result.status_code == 400
    assert reason in str(result.body["detail"])
    assert store.data.outbox == []
    assert store.data.receipts == {}


def test_order_contacts_without_any_contact_hash_nothing() -> None:
    from restock_detector.handler import _order_contacts
    from restock_detector.payloads import Order, decode

    bare = decode(json.dumps(order(email=None, phone="  ", customer=None)).encode(), Order)
    assert _order_contacts(bare) == []


# --- an unknown inventory item, looked up through the Admin API -------------------------------------


class FakeAdmin:
    """The Admin API port: answers the item lookup and the confirmation read from what the test sets."""

    def __init__(
        self,
        owner: ItemOwner | None = None,
        levels: list[int] | None = None,
        fail: Exception | None = None,
    ) -> None:
        self.owner, self.levels, self.fail = owner, levels, fail
        self.asked: list[str] = []

    async def item_owner(self, shop: ShopAccess, inventory_item_id: int) -> ItemOwner | None:
        self.asked.append(f"item:{inventory_item_id}")
        if self.fail is not None:
            raise self.fail
        return self.owner

    async def variant_levels(self, shop: ShopAccess, variant_id: int) -> CatalogVariant | None:
        self.asked.append(f"variant:{variant_id}")
        if self.fail is not None:
            raise self.fail
        if self.levels is None:
            return None
        at = NOW + timedelta(seconds=30)
        return CatalogVariant(
            variant_id,
            PRODUCT,
            ITEM,
            tuple(Level(ITEM, LOCATION + n, quantity, at) for n, quantity in enumerate(self.levels)),
        )


async def test_an_unknown_item_is_looked_up_mapped_and_judged(
    store: FakeStore, signal: RecordingSignal
) -> None:
    admin = FakeAdmin(owner=ItemOwner(VARIANT, PRODUCT))
    handler = WebhookHandler(SECRET, store, signal, lambda: NOW, admin)
    result = await send(handler, level(5), "inventory_levels/update")
    assert result.body == {"status": "restock"}
    assert admin.asked == [f"item:{ITEM}"]
    assert store.data.items[ITEM] == ItemMapping(ITEM, VARIANT, PRODUCT, None, None)
    [restock] = store.data.restocks
    assert (restock.variant_id, restock.available) == (VARIANT, 5)
    # The first transaction (receipt and snapshot) committed before the lookup; the second judged it.
    assert store.calls.index("shop_access") > store.calls.index("claim_receipt")
    assert signal.notified_after_commit == [True]


@pytest.mark.parametrize(
    "admin",
    [
        FakeAdmin(fail=AdminApiError(throttle.Failure.UNAVAILABLE, "HTTP 503")),
        FakeAdmin(fail=TimeoutError()),
        FakeAdmin(owner=None),  # Shopify knows no such item
        None,  # no Admin API configured
    ],
)
async def test_a_failed_lookup_keeps_the_observation_for_the_next_sync(
    store: FakeStore, signal: RecordingSignal, admin: FakeAdmin | None
) -> None:
    handler = WebhookHandler(SECRET, store, signal, lambda: NOW, admin)
    result = await send(handler, level(5), "inventory_levels/update")
    assert (result.status_code, result.body) == (200, {"status": "unknown_item"})
    assert store.data.snapshots[(ITEM, LOCATION)].available == 5  # kept
    assert store.data.items == {}
    assert store.data.restocks == []
    assert len(store.data.receipts) == 1  # answered: Shopify must not resend it for two days


# --- the confirmation read ---------------------------------------------------------------------------


CONFIRMING = Rules(debounce_seconds=0, confirm_with_admin_api=True)


async def confirmed_run(admin: FakeAdmin) -> tuple[FakeStore, RecordingSignal]:
    store = FakeStore(CONFIRMING)
    signal = RecordingSignal(store)
    handler = WebhookHandler(SECRET, store, signal, lambda: NOW, admin)
    await known_variant(handler)
    assert await level_at(handler, 5, NOW) == "armed"  # no debounce, but the read comes first
    assert store.data.restocks == []
    scheduler = ArmedRestockScheduler(
        FakeArmedStore(store), signal, lambda: NOW + timedelta(seconds=1), admin=admin
    )
    assert await scheduler.tick() == 1
    return store, signal


async def test_a_confirmed_restock_fires_with_shopifys_number() -> None:
    store, _ = await confirmed_run(FakeAdmin(levels=[3, 1]))
    [restock] = store.data.restocks
    assert (restock.available, restock.detected_at) == (4, NOW)
    assert store.data.variants[VARIANT].armed_at is None


async def test_a_phantom_restock_is_vetoed_recorded_and_corrected() -> None:
    store, _ = await confirmed_run(FakeAdmin(levels=[0]))
    assert store.data.restocks == []
    assert store.data.outbox == []
    [entry] = store.data.audit
    assert (entry.action, entry.target_type, entry.target_ids) == (
        "restock.not_confirmed",
        "variant",
        [VARIANT],
    )
    assert (entry.detail["detector_total"], entry.detail["admin_api_total"]) == (5, 0)
    # Shopify's newer level replaced ours: the variant is remembered at 0 and disarmed.
    snapshot = store.data.snapshots[(ITEM, LOCATION)]
    assert (snapshot.available, snapshot.source) == (0, "confirmation")
    assert store.data.variants[VARIANT] == VariantMemory(0, None, None)


async def test_an_unreachable_admin_api_keeps_the_restock_armed() -> None:
    store, _ = await confirmed_run(FakeAdmin(fail=AdminApiError(throttle.Failure.UNAVAILABLE, "HTTP 502")))
    assert store.data.restocks == []
    assert store.data.variants[VARIANT].armed_at == NOW  # asked again at the next tick


# --- the tenant cache of the level hot path ------------------------------------------------------------


async def test_levels_use_the_cached_tenant_but_never_for_an_uninstalled_shop(
    handler: WebhookHandler, store: FakeStore
) -> None:
    await known_variant(handler)
    assert (await send(handler, level(0), "inventory_levels/update")).body == {"status": "still_out"}
    store.calls.clear()
    second = await send(handler, level(0, at=NOW + timedelta(seconds=1)), "inventory_levels/update")
    assert second.body == {"status": "still_out"}
    assert "find_tenant" not in store.calls
    uninstalled = await send(handler, {"id": 1}, "app/uninstalled")
    assert uninstalled.body == {"status": "uninstalled"}
    store.uninstalled.add(SHOP)
    store.calls.clear()
    refused = await send(handler, level(5, at=NOW + timedelta(seconds=2)), "inventory_levels/update")
    assert (refused.status_code, refused.body) == (404, {"detail": f"unknown shop {SHOP!r}"})
    assert store.calls == ["find_tenant"]  # the cached tenant was not trusted: looked up, gone
    assert store.data.restocks == []
    assert len(store.data.receipts) == 4  # product, two levels, the uninstall: not the refused level


async def test_a_reinstalled_shop_is_looked_up_again(handler: WebhookHandler, store: FakeStore) -> None:
    await known_variant(handler)
    await send(handler, level(0), "inventory_levels/update")
    stale = Tenant(99, SHOP)
    handler.tenants.put(SHOP, stale, NOW)  # what the cache held from before a shop/redact and reinstall
    result = await send(handler, level(4, at=NOW + timedelta(seconds=1)), "inventory_levels/update")
    assert result.body == {"status": "restock"}
    assert handler.tenants.get(SHOP, NOW) == TENANT


def test_the_tenant_cache_expires_and_is_bounded() -> None:
    cache = TenantCache()
    cache.put(SHOP, TENANT, NOW)
    assert cache.get(SHOP, NOW + TenantCache.TTL) == TENANT
    assert cache.get(SHOP, NOW + TenantCache.TTL + timedelta(seconds=1)) is None
    for n in range(TenantCache.SIZE):
        cache.put(f"shop-{n}.myshopify.com", Tenant(n, "x"), NOW)
    assert cache.get(SHOP, NOW) is None  # full: started over
    assert len(cache._tenants) == 1
