"""The reconciliation sync: per shop, read the whole catalogue's inventory from the GraphQL Admin API and
feed it through ``observation.observe_variant``, the function webhooks use, so a restock whose webhook was
lost is caught by the next sync under exactly the same stale, transition and outbox rules.

A background loop of the detector process (like the armed-restock scheduler), every ``tick_seconds``:
list the installed shops' sync bookkeeping, ask ``sync_plan`` which are due and in what order, and sync
them one after the other. One shop's sync:

1. Take the shop's session-level advisory lock on a connection of its own (``SyncStore.exclusive``). It
   spans every page's transaction, and PostgreSQL drops it if this process dies; a replica that does not
   get it skips the shop. Re-read the bookkeeping under the lock: another replica may just have synced.
2. ``last_sync_started_at = now``; then pages (query (c), ``first`` sized by the shop's throttle status)
   or, for a catalogue of ``bulk_threshold`` items or more, one bulk operation whose JSONL is streamed.
3. Each page (or bulk chunk) is one transaction: the item -> variant mappings, then each variant's levels
   as one observation (a transfer between locations is one unchanged total). The relay is woken after
   commit when anything was enqueued. A variant never seen before is a restock when it has stock (someone
   may have subscribed while it was sold out) *unless nobody is subscribed to it*: then its total is only
   recorded (``seed_unwatched``), or a shop's first sync would announce every variant in stock, to nobody.
4. ``last_sync_finished_at = now`` and ``last_sync_error`` (None when it went well). A refused token (401,
   403) stops the shop's sync until its next schedule; other failures likewise after the client's bounded
   retries. A sync cut short by shutdown marks the shop requested, so the next replica up runs it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from restock_common.rules import Rules
from restock_detector import sync_plan, throttle
from restock_detector.admin_api import AdminApiError
from restock_detector.admin_graphql import BulkCatalog, BulkStatus, CatalogVariant, ResponseError
from restock_detector.handler import Clock
from restock_detector.observation import observe_variant
from restock_detector.ports import (
    AdminApi,
    ItemMapping,
    LevelObservation,
    OutboxSignal,
    ShopAccess,
    SyncStore,
    VariantRef,
)

log = logging.getLogger(__name__)

TICK_SECONDS = 2.0
BULK_CHUNK = 250  # variants per transaction when applying a bulk result
BULK_POLL_SECONDS = (1.0, 10.0)  # first and longest wait between bulk status polls
BULK_DEADLINE_SECONDS = 3_600.0
STOP_GRACE_SECONDS = 5.0


class SyncInterrupted(Exception):
    """The process is shutting down: stop between pages."""


@dataclass(frozen=True)
class SyncReport:
    """How one shop's sync went."""

    outcome: str  # synced | failed | interrupted | skipped_locked | skipped_not_due
    variants: int = 0
    restocks: int = 0
    error: str | None = None


@dataclass
class Progress:
    """What a sync has done so far (kept when it fails half way)."""

    variants: int = 0
    restocks: int = 0

    def report(self, outcome: str, error: str | None = None) -> SyncReport:
        return SyncReport(outcome, self.variants, self.restocks, error)


class ReconciliationSync:
    """The sync loop (see the module's rules): started in the app's lifespan, stopped at its shutdown."""

    def __init__(
        self,
        store: SyncStore,
        admin: AdminApi,
        signal: OutboxSignal,
        clock: Clock,
        *,
        bulk_threshold: int,
        tick_seconds: float = TICK_SECONDS,
    ) -> None:
        self.store = store
        self.admin = admin
        self.signal = signal
        self.clock = clock
        self.bulk_threshold = bulk_threshold
        self.tick_seconds = tick_seconds
        self._stopped = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="reconciliation-sync")

    async def stop(self) -> None:
        """Stop at the next page boundary; a call still retrying an unreachable Admin API after
        ``STOP_GRACE_SECONDS`` is cancelled (its page's transaction rolls back, the lock goes with it)."""
        self._stopped.set()
        if self._task is None:
            return
        done, _ = await asyncio.wait({self._task}, timeout=STOP_GRACE_SECONDS)
        if not done:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def run(self) -> None:
        while not self._stopped.is_set():
            try:
                await self.tick()
            except Exception:
                log.exception("reconciliation sync loop failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), self.tick_seconds)

    async def tick(self) -> list[SyncReport]:
        """Sync every shop due now, one after the other."""
        states = await self.store.sync_states()
        reports = []
        for state, _ in sync_plan.due_shops(states, self.clock()):
            if self._stopped.is_set():
                break
            reports.append(await self.sync_shop(state.shop))
        return reports

    async def sync_shop(self, shop: ShopAccess, *, force: bool = False) -> SyncReport:
        """Sync one shop if it is due (``force``: whether or not) and no other process is syncing it."""
        async with self.store.exclusive(shop.tenant_id) as locked:
            if not locked:
                log.info("shop sync skipped: another process holds it", extra={"tenant_id": shop.tenant_id})
                return SyncReport("skipped_locked")
            fresh = await self.store.sync_state(shop.tenant_id)
            if fresh is None or (not force and sync_plan.due(fresh, self.clock()) is None):
                return SyncReport("skipped_not_due")
            await self.store.mark_started(shop.tenant_id, self.clock())
            report = await self._sync(fresh.shop)
            await self.store.mark_finished(
                shop.tenant_id, self.clock(), report.error, rerun=report.outcome == "interrupted"
            )
        log.info(
            "shop sync finished",
            extra={
                "tenant_id": shop.tenant_id,
                "outcome": report.outcome,
                "variants": report.variants,
                "restocks": report.restocks,
                "error": report.error,
            },
        )
        return report

    async def _sync(self, shop: ShopAccess) -> SyncReport:
        known = await self.store.known_items(shop.tenant_id)
        progress = Progress()
        try:
            if sync_plan.strategy(known, self.bulk_threshold) is sync_plan.Strategy.BULK:
                await self._bulk(shop, progress)
            else:
                await self._pages(shop, progress)
        except SyncInterrupted:
            return progress.report("interrupted", "interrupted by shutdown")
        except AdminApiError as error:
            if error.failure is throttle.Failure.UNAUTHORIZED:
                log.error(
                    "shop's access token refused; its sync waits for the next schedule",
                    extra={"tenant_id": shop.tenant_id},
                )
            return progress.report("failed", f"admin api {error}"[:500])
        except ResponseError as error:
            return progress.report("failed", f"unexpected answer: {error.reason}"[:500])
        except Exception as error:  # a database error, say: recorded on the shop, the loop goes on
            log.exception("shop sync failed", extra={"tenant_id": shop.tenant_id})
            return progress.report("failed", f"internal error: {type(error).__name__}")
        return progress.report("synced")

    async def _pages(self, shop: ShopAccess, progress: Progress) -> None:
        after: str | None = None
        while True:
            self._check_stopped()
            page = await self.admin.variants_page(shop, self.admin.page_size(shop), after)
            await self._apply(shop, page.variants, progress)
            if not page.has_next_page or page.end_cursor is None:
                return
            after = page.end_cursor

    async def _bulk(self, shop: ShopAccess, progress: Progress) -> None:
        status = await self._finished_bulk(shop, await self.admin.start_bulk(shop))
        if status.status != "COMPLETED":
            raise ResponseError(f"bulk operation {status.status} ({status.error_code or 'no error code'})")
        if status.url is None:  # Shopify gives no file for an empty result
            return
        catalog = BulkCatalog.empty()
        async for line in self.admin.bulk_lines(status.url):
            catalog.add_line(line)
        variants = catalog.catalog()
        for start in range(0, len(variants), BULK_CHUNK):
            self._check_stopped()
            await self._apply(shop, variants[start : start + BULK_CHUNK], progress)

    async def _finished_bulk(self, shop: ShopAccess, started: BulkStatus) -> BulkStatus:
        wait, longest = BULK_POLL_SECONDS
        deadline = asyncio.get_running_loop().time() + BULK_DEADLINE_SECONDS
        status: BulkStatus | None = started
        while status is None or not status.finished or status.id != started.id:
            self._check_stopped()
            if asyncio.get_running_loop().time() > deadline:
                raise ResponseError("bulk operation still running after the deadline")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), wait)
            wait = min(wait * 2, longest)
            status = await self.admin.bulk_status(shop)
        return status

    async def _apply(self, shop: ShopAccess, variants: Sequence[CatalogVariant], progress: Progress) -> None:
        """One transaction: the page's mappings, the baseline of variants nobody waits for, then each
        variant's levels as one observation."""
        tenant, now = shop.tenant, self.clock()
        enqueued = False
        async with self.store.unit_of_work() as work:
            await work.save_items(tenant.id, [_mapping(variant) for variant in variants])
            rules = await work.rules_of(tenant.id)
            await work.seed_unwatched(
                tenant.id, [(v.variant_id, _total(v, rules)) for v in variants if v.levels]
            )
            for variant in variants:
                if not variant.levels:  # untracked inventory: nothing to judge
                    continue
                observed = await observe_variant(
                    work, tenant, VariantRef(variant.variant_id, variant.product_id), _levels(variant), now
                )
                enqueued |= observed.enqueued
                progress.restocks += observed.status == "restock"
        progress.variants += len(variants)
        if enqueued:
            self.signal.notify()

    def _check_stopped(self) -> None:
        if self._stopped.is_set():
            raise SyncInterrupted


def _mapping(variant: CatalogVariant) -> ItemMapping:
    return ItemMapping(variant.inventory_item_id, variant.variant_id, variant.product_id, None, None)


def _total(variant: CatalogVariant, rules: Rules) -> int:
    excluded = set(rules.excluded_location_ids)
    return sum(level.available for level in variant.levels if level.location_id not in excluded)


def _levels(variant: CatalogVariant) -> list[LevelObservation]:
    return [
        LevelObservation(
            level.inventory_item_id, level.location_id, level.available, level.updated_at, "sync"
        )
        for level in variant.levels
    ]
