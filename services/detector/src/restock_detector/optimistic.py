"""A level webhook of a known item in two round trips instead of a transaction of four to six (ADR 27).

The locking path (``handler._observe_locked``) opens a transaction, claims the receipt and locks the variant's
row, saves the level and reads the total, writes the decision, then commits: on this machine the
transaction's ``BEGIN``/``COMMIT`` and the extra statements were a third of the detector's CPU per webhook
(ADR 22). Here instead:

1. ``LevelSession.read_level``, one statement without a lock: the variant's state and its row's version,
   the rules, the stored time of this item's level here and the variant's other levels (``LevelRead``).
2. The decision in Python, by the same ``observation.judge`` as every other observation, its writes
   collected by ``CollectedWrites`` instead of written.
3. ``LevelSession.write_level``, one statement: everything or nothing, and nothing unless the variant's row
   is still at the version read (or, at a variant's first observation, still does not exist). The version
   moves with every update of the row (a trigger), and every writer of a known variant's levels updates
   the row first, so an unchanged version means the read is still true. Otherwise the caller redoes the
   observation on the locking path.

A stale level (older than the stored one) writes only its receipt: levels only move forward, so no
concurrent write can make it current again. The module has no I/O of its own: the session (one pooled
connection, no transaction) is passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from restock_detector.observation import Observed, judge
from restock_detector.ports import (
    LevelObservation,
    LevelRead,
    LevelSession,
    LevelWrite,
    NewRestock,
    OutboxMessage,
    Receipt,
    RestockMessage,
    Tenant,
    VariantMemory,
    WriteOutcome,
)
from restock_detector.restocks import log_restock


class CollectedWrites:
    """``VariantWrites`` that applies each write to the variant's row in memory and keeps the messages, for
    one statement to write the result."""

    def __init__(self, memory: VariantMemory) -> None:
        self.state = memory
        self.updated_at: datetime | None = None
        self.change: OutboxMessage | None = None
        self.restock: tuple[NewRestock, RestockMessage] | None = None

    async def save_variant(
        self,
        tenant_id: int,
        variant_id: int,
        available: int,
        now: datetime,
        armed_at: datetime | None,
        change: OutboxMessage | None = None,
    ) -> bool:
        self.state = VariantMemory(available, self.state.last_restock_at, armed_at)
        self.updated_at = now
        self.change = change
        return change is not None  # whether it is enqueued is known after the write (the wave line)

    async def record_restock(self, restock: NewRestock, message: RestockMessage) -> None:
        # One observation fires at most one restock: an ended debounce fires only if the variant is in stock,
        # and a new restock needs it out of stock before (a property test of ``transitions.observe``).
        if self.restock is not None:
            raise RuntimeError("one observation fired two restocks")
        # The cooldown starts and the variant is disarmed, as the unit of work's statement does.
        self.state = VariantMemory(self.state.available, restock.detected_at, None)
        self.restock = (restock, message)


def level_total(read: LevelRead, level: LevelObservation, excluded: Sequence[int]) -> int | None:
    """The variant's total with ``level`` saved, or None when ``level`` is older than the stored one (the
    same rule as the snapshot upsert: an equal time replaces it)."""
    if read.stored_at is not None and read.stored_at > level.updated_at:
        return None
    others = sum(available for location, available in read.other_levels if location not in excluded)
    return others + (0 if level.location_id in excluded else level.available)


async def observe_level(
    session: LevelSession,
    tenant: Tenant,
    receipt: Receipt,
    level: LevelObservation,
    read: LevelRead,
    now: datetime,
) -> Observed | None:
    """Judge and write one level of the known variant ``read`` describes; None when the variant moved since
    the read (nothing written: the caller takes the locking path)."""
    if read.variant is None or read.memory is None:
        raise ValueError("the two-trip path needs a known item")
    total = level_total(read, level, read.rules.excluded_location_ids)
    if total is None:
        return Observed("stale" if await session.claim_receipt(receipt) else "duplicate")
    writes = CollectedWrites(read.memory)
    # A variant without a state row has had no freeze that could move its version: its change is made, and
    # the write's own check of the line decides, as on the locking path.
    announce = read.line_open or read.version is None
    rules, source = read.rules, level.source
    observed = await judge(
        writes, tenant, read.variant, read.memory, total, now, rules, source, announce=announce
    )
    written = await session.write_level(
        LevelWrite(
            receipt=receipt,
            tenant_id=tenant.id,
            variant=read.variant,
            version=read.version,
            level=level,
            state=writes.state,
            updated_at=writes.updated_at,
            change=writes.change,
            restock=writes.restock,
        )
    )
    if written.outcome is WriteOutcome.CONFLICT:
        return None
    if written.outcome is WriteOutcome.DUPLICATE:
        return Observed("duplicate")
    if written.restock_event_id is not None:
        log_restock(tenant.id, read.variant.variant_id, written.restock_event_id)
    return Observed(observed.status, written.enqueued)
