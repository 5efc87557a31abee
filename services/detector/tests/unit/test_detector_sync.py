"""The reconciliation sync: the pure planner as tables, and the orchestration (``sync.py``) with recording
fakes of its ports: pages sized by the throttle, bulk for large catalogues, one observation per variant,
the lock, the bookkeeping, and failures recorded instead of raised."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from restock_common import messages, topology
from restock_common.rules import Rules
from restock_detector import admin_graphql as gql
from restock_detector import sync_plan, throttle
from restock_detector.admin_api import AdminApiError
from restock_detector.ports import (
    ItemMapping,
    LevelObservation,
    LockedVariant,
    NewRestock,
    OutboxMessage,
    RestockMessage,
    ShopAccess,
    SyncState,
    VariantMemory,
)
from restock_detector.sync import ReconciliationSync

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SHOP = ShopAccess(7, "sync-shop.myshopify.com", "shpat_sync")
AT = datetime(2026, 3, 1, 11, 0, tzinfo=UTC)


def state(
    started: datetime | None = None,
    requested: datetime | None = None,
    interval: float = 900,
    shop: ShopAccess = SHOP,
) -> SyncState:
    return SyncState(shop, interval, requested, started, None)


# --- the planner ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sync", "expected"),
    [
        (state(), sync_plan.Due.NEVER_SYNCED),
        (state(started=NOW - timedelta(seconds=899)), None),
        (state(started=NOW - timedelta(seconds=900)), sync_plan.Due.SCHEDULED),
        (state(started=NOW - timedelta(seconds=60), interval=30), sync_plan.Due.SCHEDULED),
        (
            state(started=NOW - timedelta(seconds=5), requested=NOW - timedelta(seconds=1)),
            sync_plan.Due.REQUESTED,
        ),
        # a request made before the last start was served by it
        (state(started=NOW - timedelta(seconds=5), requested=NOW - timedelta(seconds=6)), None),
        (state(started=NOW - timedelta(seconds=5), interval=-1), sync_plan.Due.SCHEDULED),
    ],
)
def test_when_a_shop_is_due(sync: SyncState, expected: sync_plan.Due | None) -> None:
    assert sync_plan.due(sync, NOW) is expected


def test_due_shops_go_requested_and_new_first_then_the_longest_overdue() -> None:
    shops = {n: ShopAccess(n, f"s{n}.myshopify.com", "t") for n in range(1, 6)}
    states = [
        state(started=NOW - timedelta(seconds=1000), shop=shops[1]),  # overdue by 100 s
        state(started=NOW - timedelta(seconds=5000), shop=shops[2]),  # overdue by 4100 s
        state(shop=shops[3]),  # never synced
        state(started=NOW - timedelta(seconds=10), shop=shops[4]),  # not due
        state(started=NOW - timedelta(seconds=10), requested=NOW - timedelta(seconds=2), shop=shops[5]),
    ]
    order = [(s.shop.tenant_id, reason) for s, reason in sync_plan.due_shops(states, NOW)]
    assert order == [
        (3, sync_plan.Due.NEVER_SYNCED),
        (5, sync_plan.Due.REQUESTED),
        (2, sync_plan.Due.SCHEDULED),
        (1, sync_plan.Due.SCHEDULED),
    ]


@pytest.mark.parametrize(
    ("known", "threshold", "expected"),
    [
        (0, 10_000, sync_plan.Strategy.PAGES),
        (9_999, 10_000, sync_plan.Strategy.PAGES),
        (10_000, 10_000, sync_plan.Strategy.BULK),
        (3, 1, sync_plan.Strategy.BULK),
    ],
)
def test_large_catalogues_are_read_in_bulk(known: int, threshold: int, expected: sync_plan.Strategy) -> None:
    assert sync_plan.strategy(known, threshold) is expected


# --- the orchestration with fakes -------------------------------------------------------------------


@dataclass
class Db:
    items: dict[int, ItemMapping] = field(default_factory=dict)
    snapshots: dict[tuple[int, int], LevelObservation] = field(default_factory=dict)
    variants: dict[int, VariantMemory] = field(default_factory=dict)
    restocks: list[NewRestock] = field(default_factory=list)
    outbox: list[OutboxMessage] = field(default_factory=list)
    started: list[datetime] = field(default_factory=list)
    finished: list[tuple[str | None, bool]] = field(default_factory=list)
    transactions: int = 0
    watched: set[int] = field(default_factory=set)  # variants with a live subscription


class FakeWork:
    """A unit of work straight on ``Db`` (the sync tests do not need rollback)."""

    def __init__(self, db: Db, rules: Rules) -> None:
        self.db, self.rules = db, rules

    async def save_items(self, tenant_id: int, items: Sequence[ItemMapping]) -> None:
        self.db.items.update({item.inventory_item_id: item for item in items})

    async def seed_unwatched(self, tenant_id: int, totals: Sequence[tuple[int, int]]) -> None:
        for variant, total in totals:
            if variant not in self.db.watched and variant not in self.db.variants:
                self.db.variants[variant] = VariantMemory(total, None)

    async def lock_variant(self, tenant_id: int, variant_id: int) -> VariantMemory:
        return self.db.variants.setdefault(variant_id, VariantMemory(0, None))

    async def rules_of(self, tenant_id: int) -> Rules:
        return self.rules

    async def save_snapshot(self, tenant_id: int, level: LevelObservation) -> bool:
        stored = self.db.snapshots.get((level.inventory_item_id, level.location_id))
        if stored is not None and stored.updated_at > level.updated_at:
            return False
        self.db.snapshots[(level.inventory_item_id, level.location_id)] = level
        return True

    async def variant_total(self, tenant_id: int, variant_id: int, excluded: Sequence[int]) -> int:
        return sum(
            lvl.available
            for (item, location), lvl in self.db.snapshots.items()
            if self.db.items[item].variant_id == variant_id and location not in excluded
        )

    async def claim_level(
        self, receipt: object, tenant_id: int, item: int
    ) -> tuple[bool, LockedVariant | None]:
        raise AssertionError("the sync has no receipts")

    async def save_level(
        self, tenant_id: int, variant_id: int, level: LevelObservation, excluded: Sequence[int]
    ) -> int | None:
        if not await self.save_snapshot(tenant_id, level):
            return None
        return await self.variant_total(tenant_id, variant_id, excluded)

    async def save_variant(
        self,
        tenant_id: int,
        variant_id: int,
        available: int,
        now: datetime,
        armed_at: datetime | None,
        change: OutboxMessage | None = None,
    ) -> bool:
        """Every variant's wave line is open here (the store's filter has its integration test)."""
        last = self.db.variants[variant_id].last_restock_at
        self.db.variants[variant_id] = VariantMemory(available, last, armed_at)
        if change is not None:
            self.db.outbox.append(change)
        return change is not None

    async def record_restock(self, restock: NewRestock, message: RestockMessage) -> int:
        self.db.restocks.append(restock)
        memory = self.db.variants[restock.variant_id]
        self.db.variants[restock.variant_id] = VariantMemory(memory.available, restock.detected_at, None)
        event_id = len(self.db.restocks)
        self.db.outbox.append(message.row(restock.tenant_id, event_id))
        return event_id

    async def enqueue(self, message: OutboxMessage) -> None:
        self.db.outbox.append(message)


class FakeSyncStore:
    def __init__(self, db: Db, states: list[SyncState], rules: Rules, known_items: int = 0) -> None:
        self.db, self.states, self.rules, self.known = db, states, rules, known_items
        self.locked: set[int] = set()

    async def sync_states(self) -> list[SyncState]:
        return self.states

    async def sync_state(self, tenant_id: int) -> SyncState | None:
        return next((s for s in self.states if s.shop.tenant_id == tenant_id), None)

    async def shop_by_domain(self, shop_domain: str) -> ShopAccess | None:
        return next((s.shop for s in self.states if s.shop.shop_domain == shop_domain), None)

    @asynccontextmanager
    async def exclusive(self, tenant_id: int) -> AsyncIterator[bool]:
        if tenant_id in self.locked:
            yield False
            return
        self.locked.add(tenant_id)
        try:
            yield True
        finally:
            self.locked.discard(tenant_id)

    async def mark_started(self, tenant_id: int, now: datetime) -> None:
        self.db.started.append(now)

    async def mark_finished(
        self, tenant_id: int, now: datetime, error: str | None, *, rerun: bool = False
    ) -> None:
        self.db.finished.append((error, rerun))

    async def known_items(self, tenant_id: int) -> int:
        return self.known

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[FakeWork]:
        self.db.transactions += 1
        yield FakeWork(self.db, self.rules)


def catalog_variant(variant: int, *levels: tuple[int, int]) -> gql.CatalogVariant:
    item = variant + 1000
    return gql.CatalogVariant(variant, 1, item, tuple(gql.Level(item, loc, qty, AT) for loc, qty in levels))


class FakeAdmin:
    """Pages of the catalogue, or a bulk file; records the ``first`` of each page request."""

    def __init__(
        self, variants: list[gql.CatalogVariant], page: int = 2, fail: AdminApiError | None = None
    ) -> None:
        self.variants, self.page, self.fail = variants, page, fail
        self.firsts: list[int] = []
        self.bulk_polls = 0

    def page_size(self, shop: ShopAccess) -> int:
        return self.page

    async def variants_page(self, shop: ShopAccess, first: int, after: str | None) -> gql.VariantPage:
        if self.fail is not None:
            raise self.fail
        self.firsts.append(first)
        start = int(after or 0)
        end = start + first
        return gql.VariantPage(tuple(self.variants[start:end]), end < len(self.variants), str(end))

    async def start_bulk(self, shop: ShopAccess) -> gql.BulkStatus:
        return gql.BulkStatus("gid://shopify/BulkOperation/1", "CREATED", None, None)

    async def bulk_status(self, shop: ShopAccess) -> gql.BulkStatus | None:
        self.bulk_polls += 1
        return gql.BulkStatus(
            "gid://shopify/BulkOperation/1", "COMPLETED", None, "https://storage/bulk.jsonl"
        )

    async def bulk_lines(self, url: str) -> AsyncIterator[bytes]:
        for variant in self.variants:
            yield (
                f'{{"id":"gid://shopify/ProductVariant/{variant.variant_id}","product":{{"id":"gid://shopify/Product/1"}},'
                f'"inventoryItem":{{"id":"gid://shopify/InventoryItem/{variant.inventory_item_id}"}}}}'
            ).encode()
            for level in variant.levels:
                yield (
                    f'{{"location":{{"id":"gid://shopify/Location/{level.location_id}"}},'
                    f'"quantities":[{{"name":"available","quantity":{level.available}}}],'
                    f'"updatedAt":"2026-03-01T11:00:00Z","__parentId":"gid://shopify/ProductVariant/{variant.variant_id}"}}'
                ).encode()

    async def item_owner(self, shop: ShopAccess, inventory_item_id: int) -> gql.ItemOwner | None:
        raise AssertionError("not used by the sync")

    async def variant_levels(self, shop: ShopAccess, variant_id: int) -> gql.CatalogVariant | None:
        raise AssertionError("not used by the sync")


class Signal:
    def __init__(self) -> None:
        self.count = 0

    def notify(self) -> None:
        self.count += 1


def make(
    admin: FakeAdmin,
    *,
    known_items: int = 0,
    rules: Rules | None = None,
    states: list[SyncState] | None = None,
) -> tuple[ReconciliationSync, FakeSyncStore, Signal]:
    db = Db()
    store = FakeSyncStore(
        db, states if states is not None else [state()], rules or Rules(debounce_seconds=0), known_items
    )
    signal = Signal()
    return ReconciliationSync(store, admin, signal, lambda: NOW, bulk_threshold=100), store, signal  # type: ignore[arg-type]


def restocked(store: FakeSyncStore) -> list[tuple[int, int, str]]:
    return [(r.variant_id, r.available, r.source) for r in store.db.restocks]


async def test_a_sync_pages_through_the_catalogue_and_restocks_what_came_back() -> None:
    variants = [
        catalog_variant(1, (5, 3)),
        catalog_variant(2, (5, 0)),
        catalog_variant(3, (5, 2), (6, 1)),
        catalog_variant(4),
    ]
    sync, store, signal = make(FakeAdmin(variants, page=2))
    store.db.watched = {1, 2, 3, 4}  # shoppers wait for every one of them
    [report] = await sync.tick()
    assert (report.outcome, report.variants, report.restocks, report.error) == ("synced", 4, 2, None)
    assert restocked(store) == [(1, 3, "sync"), (3, 3, "sync")]
    assert store.db.transactions == 2  # one per page
    assert sorted(store.db.items) == [1001, 1002, 1003, 1004]  # every mapping, even of untracked items
    assert store.db.started == [NOW]
    assert store.db.finished == [(None, False)]
    assert signal.count == 2
    changes = [
        messages.decode(m.payload.encode(), messages.StockChanged)
        for m in store.db.outbox
        if m.routing_key == topology.STOCK_CHANGED
    ]
    assert [(c.variant_id, c.previous, c.available, c.source) for c in changes] == [
        (1, 0, 3, "sync"),
        (3, 0, 3, "sync"),
    ]


async def test_variants_nobody_waits_for_are_recorded_not_announced() -> None:
    variants = [catalog_variant(1, (5, 3)), catalog_variant(2, (5, 4)), catalog_variant(3, (5, 2))]
    sync, store, _ = make(FakeAdmin(variants, page=3))
    store.db.watched = {1}  # someone subscribed to 1 while it was sold out
    store.db.variants[3] = VariantMemory(0, None)  # 3 was seen sold out before: its return is a restock
    [report] = await sync.tick()
    assert restocked(store) == [(1, 3, "sync"), (3, 2, "sync")]
    assert store.db.variants[2] == VariantMemory(4, None)  # recorded at 4, nothing announced
    changed = {
        messages.decode(m.payload.encode(), messages.StockChanged).variant_id
        for m in store.db.outbox
        if m.routing_key == topology.STOCK_CHANGED
    }
    assert changed == {1, 3}
    assert report.restocks == 2


async def test_a_transfer_between_locations_is_one_unchanged_total() -> None:
    sync, store, _ = make(FakeAdmin([catalog_variant(1, (5, 0), (6, 4))]))
    store.db.items[1001] = ItemMapping(1001, 1, 1, None, None)
    store.db.snapshots[(1001, 5)] = LevelObservation(1001, 5, 4, AT - timedelta(hours=1))
    store.db.snapshots[(1001, 6)] = LevelObservation(1001, 6, 0, AT - timedelta(hours=1))
    store.db.variants[1] = VariantMemory(4, None)
    await sync.tick()
    assert store.db.restocks == []
    assert store.db.outbox == []
    assert store.db.variants[1].available == 4


async def test_stale_levels_from_the_sync_are_ignored() -> None:
    sync, store, _ = make(FakeAdmin([catalog_variant(1, (5, 9))]))
    store.db.items[1001] = ItemMapping(1001, 1, 1, None, None)
    store.db.snapshots[(1001, 5)] = LevelObservation(1001, 5, 0, AT + timedelta(minutes=1))  # a newer webhook
    await sync.tick()
    assert store.db.restocks == []
    assert store.db.snapshots[(1001, 5)].available == 0


async def test_a_large_catalogue_is_read_in_bulk() -> None:
    variants = [catalog_variant(n, (5, n % 2)) for n in range(1, 8)]
    admin = FakeAdmin(variants)
    sync, store, _ = make(admin, known_items=100)
    store.db.watched = {v.variant_id for v in variants}
    [report] = await sync.tick()
    assert (report.outcome, report.variants, report.restocks) == ("synced", 7, 4)
    assert admin.firsts == []
    assert admin.bulk_polls >= 1


async def test_a_shop_another_process_syncs_is_skipped() -> None:
    sync, store, _ = make(FakeAdmin([catalog_variant(1, (5, 3))]))
    store.locked.add(SHOP.tenant_id)
    [report] = await sync.tick()
    assert report.outcome == "skipped_locked"
    assert store.db.started == []
    assert store.db.restocks == []


async def test_a_shop_just_synced_by_another_replica_is_not_synced_again() -> None:
    sync, store, _ = make(FakeAdmin([catalog_variant(1, (5, 3))]))
    stale_view = state()
    store.states = [state(started=NOW - timedelta(seconds=1))]  # what the lock holder finds
    assert (await sync.sync_shop(stale_view.shop)).outcome == "skipped_not_due"
    assert (await sync.sync_shop(stale_view.shop, force=True)).outcome == "synced"


@pytest.mark.parametrize(
    ("failure", "logged"),
    [(throttle.Failure.UNAUTHORIZED, "unauthorized"), (throttle.Failure.UNAVAILABLE, "unavailable")],
)
async def test_a_failing_shop_records_its_error_and_waits_for_its_schedule(
    failure: throttle.Failure, logged: str
) -> None:
    sync, store, _ = make(FakeAdmin([], fail=AdminApiError(failure, "HTTP 401")))
    [report] = await sync.tick()
    assert report.outcome == "failed"
    [(error, rerun)] = store.db.finished
    assert error is not None
    assert logged in error
    assert not rerun
    assert SHOP.access_token not in error


async def test_an_internal_error_is_recorded_on_the_shop_and_the_loop_goes_on() -> None:
    sync, store, _ = make(FakeAdmin([catalog_variant(1, (5, 3))]))

    @asynccontextmanager
    async def broken() -> AsyncIterator[FakeWork]:
        raise ConnectionResetError("database went away")
        yield  # pragma: no cover

    store.unit_of_work = broken  # type: ignore[method-assign]
    [report] = await sync.tick()
    assert (report.outcome, report.error) == ("failed", "internal error: ConnectionResetError")
    assert store.db.finished == [("internal error: ConnectionResetError", False)]


async def test_a_shutdown_between_pages_marks_the_shop_for_a_rerun() -> None:
    variants = [catalog_variant(n, (5, 1)) for n in range(1, 5)]

    class StopsAfterOnePage(FakeAdmin):
        async def variants_page(self, shop: ShopAccess, first: int, after: str | None) -> gql.VariantPage:
            page = await super().variants_page(shop, first, after)
            sync._stopped.set()  # the lifespan's stop() arrives while the first page is applied
            return page

    admin = StopsAfterOnePage(variants, page=2)
    sync, store, _ = make(admin)
    report = await sync.sync_shop(SHOP)
    assert (report.outcome, report.variants) == ("interrupted", 2)
    assert store.db.finished == [("interrupted by shutdown", True)]


async def test_stop_ends_the_loop() -> None:
    sync, _, _ = make(FakeAdmin([]), states=[])
    sync.tick_seconds = 60
    sync.start()
    await asyncio.sleep(0)
    await asyncio.wait_for(sync.stop(), 5)


moments = st.none() | st.integers(-10_000, 10_000).map(lambda s: NOW + timedelta(seconds=s))


@given(started=moments, requested=moments, interval=st.integers(0, 5_000), ahead=st.integers(0, 20_000))
def test_a_shop_is_due_exactly_by_the_rules(
    started: datetime | None, requested: datetime | None, interval: int, ahead: int
) -> None:
    now = NOW + timedelta(seconds=ahead)
    reason = sync_plan.due(state(started=started, requested=requested, interval=interval), now)
    never = started is None
    asked = started is not None and requested is not None and requested > started
    scheduled = started is not None and now - started >= timedelta(seconds=interval)
    assert (reason is not None) == (never or asked or scheduled)
    if never:
        assert reason is sync_plan.Due.NEVER_SYNCED
    elif asked:
        assert reason is sync_plan.Due.REQUESTED
