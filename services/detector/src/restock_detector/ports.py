"""The detector's ports: what the handler and the relay need from the outside world, as Protocols.

The real adapters are in ``store.py`` (PostgreSQL, asyncpg), ``admin_api.py`` (Shopify's GraphQL Admin
API, httpx) and ``restock_common.broker``; the unit tests' recording fakes are in ``tests/unit``. Plain
frozen dataclasses carry the data across.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from restock_common import topology
from restock_common.rules import DEFAULT_RULES, Rules
from restock_detector.admin_graphql import BulkStatus, CatalogVariant, ItemOwner, VariantPage


@dataclass(frozen=True)
class Tenant:
    """An installed shop."""

    id: int
    shop_domain: str


@dataclass(frozen=True)
class Receipt:
    """One Shopify delivery, identified by ``X-Shopify-Webhook-Id``."""

    webhook_id: str
    shop_domain: str
    topic: str
    event_id: str | None = None
    triggered_at: datetime | None = None


@dataclass(frozen=True)
class ShopAccess:
    """What the Admin API needs to act for a shop. The token is a secret: kept out of ``repr`` and logs."""

    tenant_id: int
    shop_domain: str
    access_token: str = field(repr=False)

    @property
    def tenant(self) -> Tenant:
        return Tenant(self.tenant_id, self.shop_domain)


@dataclass(frozen=True)
class ItemMapping:
    """Inventory item -> variant, from a product payload (with its sku and title) or from the Admin API
    (without: None keeps what a product payload stored)."""

    inventory_item_id: int
    variant_id: int
    product_id: int | None
    sku: str | None
    title: str | None


@dataclass(frozen=True)
class LevelObservation:
    """One item's level at one location, as of Shopify's ``updated_at``."""

    inventory_item_id: int
    location_id: int
    available: int
    updated_at: datetime
    source: str = "webhook"  # webhook | sync | confirmation: where the detector learnt it


@dataclass(frozen=True)
class VariantRef:
    """The variant an inventory item belongs to."""

    variant_id: int
    product_id: int | None


@dataclass(frozen=True)
class VariantMemory:
    """What the detector remembers of a variant (its locked ``variant_states`` row)."""

    available: int
    last_restock_at: datetime | None
    armed_at: datetime | None = None


@dataclass(frozen=True)
class LockedVariant:
    """An inventory item's variant, its state row locked, with the shop's rules (read in the same trip)."""

    variant: VariantRef
    memory: VariantMemory
    rules: Rules


@dataclass(frozen=True)
class LevelClaim:
    """The first trip of a level webhook on the locking path: is the shop still installed, was the delivery
    new, and the item's variant (locked) if the item is known."""

    installed: bool
    claimed: bool
    locked: LockedVariant | None = None


@dataclass(frozen=True)
class LevelRead:
    """The first trip of a level webhook in two trips (ADR 27, ``LevelSession``), one statement without a
    lock: is the shop installed, was the delivery seen, and, for a known item, its variant's state with the
    row's version, the shop's rules, this location's stored snapshot time and the variant's other levels."""

    installed: bool
    seen: bool
    variant: VariantRef | None = None  # None: an item no product payload or lookup has mapped
    # The variant's state row (a variant seen for the first time: total 0, never restocked, not armed).
    memory: VariantMemory | None = None
    version: int | None = None  # None: no state row yet (the write creates it)
    rules: Rules = DEFAULT_RULES
    stored_at: datetime | None = None  # Shopify's updated_at of the stored level of this item here
    other_levels: tuple[tuple[int, int], ...] = ()  # (location_id, available) of the variant's other levels
    line_open: bool = True  # the variant's wave line has targets waiting (ADR 26): stock.changed is wanted


@dataclass(frozen=True)
class LevelWrite:
    """The second trip: everything one level webhook writes, applied only if the variant's row is still at
    ``version`` (``LevelSession.write_level``)."""

    receipt: Receipt
    tenant_id: int
    variant: VariantRef
    version: int | None  # None: create the row, unless one exists by then
    level: LevelObservation
    state: VariantMemory  # the variant's row after the observation
    updated_at: datetime | None  # the observation's time if the total or the debounce moved, else None
    change: OutboxMessage | None  # stock.changed, enqueued only while the variant's wave line is open
    restock: tuple[NewRestock, RestockMessage] | None


class WriteOutcome(enum.Enum):
    """What became of a two-trip write."""

    WRITTEN = "written"
    CONFLICT = "conflict"  # the variant's row moved (or was created) since the read: nothing written
    DUPLICATE = "duplicate"  # a concurrent delivery of the same webhook claimed it: nothing written


@dataclass(frozen=True)
class LevelWritten:
    """A two-trip write's outcome, and what the handler does after it."""

    outcome: WriteOutcome
    enqueued: bool = False  # an outbox row was added (wake the relay)
    restock_event_id: int | None = None


@dataclass(frozen=True)
class ArmedVariant:
    """A variant whose debounce has ended, locked for the scheduler to settle."""

    tenant: Tenant
    variant: VariantRef
    armed_at: datetime
    last_restock_at: datetime | None
    available: int | None = None  # the total remembered when it was last decided


@dataclass(frozen=True)
class ConfirmationTarget:
    """An armed variant, due now, of a shop that wants the Admin API to confirm its restocks."""

    shop: ShopAccess
    variant_id: int


@dataclass(frozen=True)
class SyncState:
    """A shop's reconciliation sync bookkeeping (``tenants.*sync*``) and its interval rule."""

    shop: ShopAccess
    interval_seconds: float
    requested_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class AuditEntry:
    """One ``audit_log`` row: ids only, never an email address or a phone number."""

    tenant_id: int | None
    action: str
    target_type: str
    target_ids: list[int]
    detail: dict[str, object]
    trace_id: str | None


@dataclass(frozen=True)
class NewRestock:
    """A restock to record."""

    tenant_id: int
    variant_id: int
    product_id: int | None
    available: int
    restock_window: int
    detected_at: datetime
    traceparent: str | None
    source: str = "webhook"  # webhook | sync: how the level that caused it arrived


@dataclass(frozen=True)
class OutboxMessage:
    """An event to publish once the transaction that caused it commits."""

    tenant_id: int
    routing_key: str
    message_id: uuid.UUID
    ordering_key: str
    payload: str
    traceparent: str | None


@dataclass(frozen=True)
class RestockMessage:
    """The ``restock.detected`` outbox row of a restock being recorded, written by the statement that inserts
    the restock event: its payload is ``before`` + the new event's id + ``after`` (``restocks.py`` makes the
    two halves from the encoded message, so the bytes are the message's own)."""

    message_id: uuid.UUID
    ordering_key: str
    before: str
    after: str
    traceparent: str | None
    routing_key: str = topology.RESTOCK_DETECTED

    def payload(self, restock_event_id: int) -> str:
        return f"{self.before}{restock_event_id}{self.after}"

    def row(self, tenant_id: int, restock_event_id: int) -> OutboxMessage:
        """The outbox row as written once the event has its id."""
        return OutboxMessage(
            tenant_id,
            self.routing_key,
            self.message_id,
            self.ordering_key,
            self.payload(restock_event_id),
            self.traceparent,
        )


@dataclass(frozen=True)
class OutboxRow:
    """An unpublished outbox row, as the relay sees it."""

    id: int
    message_id: str
    routing_key: str
    payload: bytes
    traceparent: str | None
    ordering_key: str | None = None  # rows of one key reach the broker in id order (e.g. tenant:variant)


class VariantWrites(Protocol):
    """What a decision about one variant writes: its new state, and a restock if one fires. A unit of work
    writes them at once; the two-trip webhook collects them into its one write (``optimistic.py``)."""

    async def save_variant(
        self,
        tenant_id: int,
        variant_id: int,
        available: int,
        now: datetime,
        armed_at: datetime | None,
        change: OutboxMessage | None = None,
    ) -> bool:
        """Remember the variant's new total and whether (since when) it is armed; ``change`` (its
        ``stock.changed`` message) is enqueued with it if the variant's wave line is open (targets
        waiting: the wave planner, its one consumer, re-plans nothing else; ADR 26). Returns whether
        ``change`` was (or, collected for a later write, may be) enqueued."""

    async def record_restock(self, restock: NewRestock, message: RestockMessage) -> int | None:
        """Insert the restock event, start the variant's cooldown, disarm it and enqueue its
        ``restock.detected`` message, in one statement; returns the event id (None: collected, the id comes
        with the later write)."""


class UnitOfWork(VariantWrites, Protocol):
    """The writes of one webhook, all inside one database transaction (committed on a clean exit)."""

    async def claim_receipt(self, receipt: Receipt) -> bool:
        """Record the delivery; False when this webhook id, or this shop's event id (Shopify resends an
        event under a new webhook id), was already processed."""

    async def rules_of(self, tenant_id: int) -> Rules:
        """The shop's rules (the defaults when it has none)."""

    async def save_items(self, tenant_id: int, items: Sequence[ItemMapping]) -> None:
        """Insert or update inventory item -> variant mappings."""

    async def save_snapshot(self, tenant_id: int, level: LevelObservation) -> bool:
        """Insert or update the level of one item at one location; False when it is older than the stored
        one (a stale or reordered webhook) and was ignored."""

    async def lock_variant(self, tenant_id: int, variant_id: int) -> VariantMemory:
        """Create the variant's state row if missing and lock it until the transaction ends, so concurrent
        webhooks for one variant are decided one after the other."""

    async def claim_level(self, receipt: Receipt, tenant_id: int, inventory_item_id: int) -> LevelClaim:
        """The locking path's first trip (a level the two-trip path did not take): check the shop is still
        installed, ``claim_receipt``, then (only if claimed) the item's variant, ``lock_variant`` and
        ``rules_of``."""

    async def seed_unwatched(self, tenant_id: int, totals: Sequence[tuple[int, int]]) -> None:
        """For (variant, total) pairs of variants never seen before that nobody is subscribed to, remember
        the total as the variant's current one: the sync then records them without calling them restocks."""

    async def save_level(
        self, tenant_id: int, variant_id: int, level: LevelObservation, excluded_location_ids: Sequence[int]
    ) -> int | None:
        """``save_snapshot`` of one level of the (locked) variant, then its ``variant_total``; None when
        the level was stale and ignored."""

    async def variant_total(
        self, tenant_id: int, variant_id: int, excluded_location_ids: Sequence[int]
    ) -> int:
        """The sum of the variant's items' levels over the locations not excluded."""

    async def enqueue(self, message: OutboxMessage) -> None:
        """Add an event to the outbox, to be published by the relay after commit."""

    async def mark_uninstalled(self, tenant_id: int, now: datetime) -> None:
        """The shop uninstalled the app: its webhooks are refused from now on, its armed variants disarmed."""

    async def redact_contacts(
        self, tenant_id: int, contact_hashes: Sequence[str], now: datetime
    ) -> list[int]:
        """Erase email and phone of the shop's subscriptions of these contacts; returns their ids."""

    async def subscriptions_of(self, tenant_id: int, contact_hashes: Sequence[str]) -> list[int]:
        """The ids of the shop's subscriptions of these contacts."""

    async def delete_tenant(self, tenant_id: int) -> None:
        """Delete the shop and, by cascade, every row it owns."""

    async def audit(self, entry: AuditEntry) -> None:
        """Append an ``audit_log`` row."""


class WebhookStore(Protocol):
    """Where webhooks are recorded."""

    async def shop_access(self, tenant_id: int) -> ShopAccess | None:
        """The shop's domain and Admin API token (None: unknown or uninstalled)."""

    async def find_tenant(self, shop_domain: str, *, installed_only: bool = True) -> Tenant | None:
        """The installed shop of this domain, or None (unknown or, unless ``installed_only`` is False,
        uninstalled)."""

    def unit_of_work(self) -> AbstractAsyncContextManager[UnitOfWork]:
        """A transaction: committed when the block exits cleanly, rolled back on an exception."""

    def level_session(self) -> AbstractAsyncContextManager[LevelSession]:
        """One connection without a transaction, for the two-trip webhook's read and write."""


class LevelSession(Protocol):
    """The two-trip level webhook's trips (ADR 27), each a statement of its own (no transaction)."""

    async def read_level(self, receipt: Receipt, tenant_id: int, level: LevelObservation) -> LevelRead:
        """``LevelRead``: what the decision needs, read without a lock."""

    async def write_level(self, write: LevelWrite) -> LevelWritten:
        """One statement: the receipt, the level, the variant's state, its ``stock.changed`` and its
        restock, all or nothing, and nothing unless the variant's row is still at the version read."""

    async def claim_receipt(self, receipt: Receipt) -> bool:
        """``UnitOfWork.claim_receipt`` on its own (a stale level writes nothing else)."""


class ArmedBatch(Protocol):
    """Armed variants whose debounce has ended, locked until the batch's transaction ends."""

    variants: Sequence[ArmedVariant]
    work: UnitOfWork


class ArmedStore(Protocol):
    """``variant_states`` from the armed-restock scheduler's side."""

    def claim_due(self, now: datetime, limit: int) -> AbstractAsyncContextManager[ArmedBatch]:
        """In one transaction: lock up to ``limit`` armed variants of installed shops whose debounce has
        ended by ``now``, skipping rows a webhook or another replica holds."""

    async def due_confirmations(self, now: datetime, limit: int) -> list[ConfirmationTarget]:
        """Without locking: armed variants due by ``now`` whose shop's rules ask for a confirmation read."""


class OutboxSignal(Protocol):
    """Tells the relay that an outbox row was committed, so it publishes now instead of at its next poll."""

    def notify(self) -> None:
        """Wake the relay."""


class OutboxBatch(Protocol):
    """Unpublished outbox rows, locked by this relay until the batch's transaction ends."""

    rows: Sequence[OutboxRow]

    async def mark_published(self, row_ids: Sequence[int]) -> None:
        """The broker confirmed these rows."""

    async def note_failure(self, row_id: int) -> None:
        """Publishing this row failed; it stays unpublished (counted in ``publish_attempts``)."""


class OutboxStore(Protocol):
    """The outbox table, from the relay's side."""

    def claim(self, limit: int) -> AbstractAsyncContextManager[OutboxBatch]:
        """Lock up to ``limit`` unpublished rows, oldest first. One batch at a time across every relay: a
        second relay's claim waits until the first batch ended, so no relay can publish a row of some
        ordering key while another still holds an earlier row of that key."""


class Publisher(Protocol):
    """The broker, from the relay's side."""

    async def publish_raw(
        self, body: bytes, routing_key: str, *, message_id: str, traceparent: str | None = None
    ) -> None:
        """Publish exact bytes and return once the broker confirmed them; raise otherwise."""


class AdminApi(Protocol):
    """Shopify's GraphQL Admin API, throttled and retried; failures are raised as
    ``admin_api.AdminApiError`` (its ``failure`` says whether the shop's token is bad)."""

    async def item_owner(self, shop: ShopAccess, inventory_item_id: int) -> ItemOwner | None:
        """(a) The variant of an inventory item (None: Shopify knows no such item)."""

    async def variant_levels(self, shop: ShopAccess, variant_id: int) -> CatalogVariant | None:
        """(b) A variant's item and levels now (None: Shopify knows no such variant)."""

    async def variants_page(self, shop: ShopAccess, first: int, after: str | None) -> VariantPage:
        """(c) One page of the catalogue, after the cursor ``after``."""

    async def start_bulk(self, shop: ShopAccess) -> BulkStatus:
        """(d) Start the catalogue's bulk query."""

    async def bulk_status(self, shop: ShopAccess) -> BulkStatus | None:
        """(d) The shop's current bulk operation."""

    def bulk_lines(self, url: str) -> AsyncIterator[bytes]:
        """(d) The finished bulk operation's JSONL, line by line."""

    def page_size(self, shop: ShopAccess) -> int:
        """How many variants the next sync page should ask for (sized by the shop's throttle)."""


class SyncStore(Protocol):
    """The reconciliation sync's side of the database."""

    async def sync_states(self) -> list[SyncState]:
        """Every installed shop's sync bookkeeping."""

    async def sync_state(self, tenant_id: int) -> SyncState | None:
        """One installed shop's sync bookkeeping, read fresh (None: gone or uninstalled)."""

    async def shop_by_domain(self, shop_domain: str) -> ShopAccess | None:
        """An installed shop, for the ``sync`` command."""

    def exclusive(self, tenant_id: int) -> AbstractAsyncContextManager[bool]:
        """Hold the shop's sync lock for the block (True), or yield False at once when another process
        holds it. Released at the end of the block, or when this process's connection dies."""

    async def mark_started(self, tenant_id: int, now: datetime) -> None:
        """``last_sync_started_at = now``."""

    async def mark_finished(
        self, tenant_id: int, now: datetime, error: str | None, *, rerun: bool = False
    ) -> None:
        """``last_sync_finished_at = now`` and ``last_sync_error`` (None: it went well); ``rerun`` also sets
        ``sync_requested_at = now``, so the shop is synced again at once (by whichever replica)."""

    async def known_items(self, tenant_id: int) -> int:
        """How many inventory items the shop has in ``inventory_items`` (sizes the next sync)."""

    def unit_of_work(self) -> AbstractAsyncContextManager[UnitOfWork]:
        """A transaction, as for a webhook."""
