"""One observation of a variant's levels, inside the caller's transaction: the one function through which
webhooks, the reconciliation sync and the Admin API lookups all feed stock, so the stale, transition and
outbox rules are the same whichever way a level arrived.

Lock order: the variant's state row first, then its snapshots. Everyone writing snapshots of a known
variant (webhooks, sync pages, the scheduler's confirmation) takes them in this order, so two of them can
never wait on each other in a cycle. All the levels of one sync observation are saved before the total is
judged: a stock transfer (one location down, another up) is one unchanged total, never a drop and a restock.

What is written: the snapshots (older than the stored ones are ignored), the variant's new total and armed
state, a ``stock.changed`` message when the total moved and the variant's wave line is open (ADR 26), and
a restock (event and ``restock.detected``) when the rules say so. The caller wakes the relay after commit
when ``Observed.enqueued``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from restock_common import messages, telemetry, topology
from restock_common.rules import Rules
from restock_detector import transitions
from restock_detector.ports import (
    LevelObservation,
    LockedVariant,
    OutboxMessage,
    Tenant,
    UnitOfWork,
    VariantMemory,
    VariantRef,
    VariantWrites,
)
from restock_detector.restocks import record_restock


@dataclass(frozen=True)
class Observed:
    """What an observation came to: the status a webhook answers with, and whether anything was enqueued."""

    status: str
    enqueued: bool = False


async def observe_variant(
    work: UnitOfWork,
    tenant: Tenant,
    variant: VariantRef,
    levels: Sequence[LevelObservation],
    now: datetime,
    locked: LockedVariant | None = None,
) -> Observed:
    """Record ``levels`` (all of one variant) and decide on the variant's new total. ``locked``: the caller
    already locked the variant (``UnitOfWork.lock_item_variant``)."""
    if locked is None:
        locked = LockedVariant(
            variant, await work.lock_variant(tenant.id, variant.variant_id), await work.rules_of(tenant.id)
        )
    memory, rules = locked.memory, locked.rules
    total = await _save_levels(work, tenant, variant, levels, rules)
    if total is None:
        return Observed("stale")
    return await judge(work, tenant, variant, memory, total, now, rules, levels[0].source)


async def judge(
    work: VariantWrites,
    tenant: Tenant,
    variant: VariantRef,
    memory: VariantMemory,
    total: int,
    now: datetime,
    rules: Rules,
    source: str,
    *,
    announce: bool = True,
) -> Observed:
    """Decide on the variant's new ``total`` (its levels saved) and write the decision through ``work``:
    the one decision of every observation, whether its writes go out at once (a unit of work) or are
    collected into the two-trip webhook's single write (``optimistic.py``). ``announce=False``: nobody
    waits in the variant's wave line, so no ``stock.changed`` is made (the store would drop it anyway)."""
    outcome = transitions.observe(_memory(memory), total, now, rules)
    fired = False
    if isinstance(outcome.expired, transitions.Restock) and memory.armed_at is not None:
        at = transitions.due_at(memory.armed_at, rules)
        await record_restock(work, tenant, variant, outcome.expired.available, at, rules, source)
        fired = True
    decision = outcome.decision
    moved = total != memory.available
    change = None
    if announce:
        change = stock_changed(tenant, variant.variant_id, memory.available, total, now, source)
    armed_at = _armed_at(decision, memory, now)
    enqueued = False
    # An observation that moved neither the total nor the debounce leaves the variant's row as it is: a
    # round trip saved on a hot path where most webhooks of an unchanged total (a level re-sent, a
    # variant still out) would only rewrite it.
    if moved or armed_at != memory.armed_at:
        enqueued = await work.save_variant(tenant.id, variant.variant_id, total, now, armed_at, change)
    if isinstance(decision, transitions.Restock):
        await record_restock(work, tenant, variant, decision.available, now, rules, source)
        fired = True
    return Observed("restock" if fired else _status(decision), fired or enqueued)


async def _save_levels(
    work: UnitOfWork, tenant: Tenant, variant: VariantRef, levels: Sequence[LevelObservation], rules: Rules
) -> int | None:
    """Save the levels; the variant's new total, or None when every one of them was stale."""
    excluded = rules.excluded_location_ids
    if len(levels) == 1:  # a webhook: one round trip
        return await work.save_level(tenant.id, variant.variant_id, levels[0], excluded)
    saved = [await work.save_snapshot(tenant.id, level) for level in levels]
    if not any(saved):
        return None
    return await work.variant_total(tenant.id, variant.variant_id, excluded)


def stock_changed(
    tenant: Tenant, variant_id: int, previous: int, total: int, now: datetime, source: str
) -> OutboxMessage | None:
    """The ``stock.changed`` message of a variant's new total (None: it did not move)."""
    if total == previous:
        return None
    change = messages.StockChanged(
        tenant_id=tenant.id,
        shop_domain=tenant.shop_domain,
        variant_id=variant_id,
        available=total,
        previous=previous,
        observed_at=now,
        source=source,
    )
    return OutboxMessage(
        tenant.id,
        topology.STOCK_CHANGED,
        uuid.uuid4(),
        f"{tenant.id}:{variant_id}",
        messages.encode(change).decode(),
        telemetry.current_traceparent(),
    )


def _memory(memory: VariantMemory) -> transitions.Memory:
    return transitions.Memory(memory.available, memory.last_restock_at, memory.armed_at)


def _armed_at(decision: transitions.Decision, memory: VariantMemory, now: datetime) -> datetime | None:
    """Since when the variant is armed after ``decision`` (None: not armed)."""
    if isinstance(decision, transitions.Arm):
        return now
    if decision == transitions.NoRestock(transitions.Reason.ARMED):
        return memory.armed_at
    return None


def _status(decision: transitions.Decision) -> str:
    if isinstance(decision, transitions.Arm):
        return "armed"
    if isinstance(decision, transitions.Disarm):
        return "disarmed"
    if isinstance(decision, transitions.NoRestock):
        return decision.reason.value
    return "restock"
