"""When does a shop's reconciliation sync run, and how? Pure: no I/O, the clock is passed in.

Rules
-----
1. An uninstalled shop is never synced (the store lists installed shops only).
2. A shop never synced is due at once (``NEVER_SYNCED``): a fresh install must learn its catalogue.
3. A request (``tenants.sync_requested_at``, set by anyone) newer than the last start is due at once
   (``REQUESTED``); a request made while a sync runs is honoured by the next run, not lost.
4. Otherwise a shop is due ``interval_seconds`` (its rule, default 900) after its last sync *started*
   (``SCHEDULED``), whether that sync finished or failed: a failing shop (a bad token) is retried on its
   schedule, not in a loop.
5. Due shops go longest-waiting first (never-synced and requested ones before scheduled ones), so one
   shop's failures cannot starve the others.
6. A catalogue of ``bulk_threshold`` items or more (as the last sync left ``inventory_items``) is read with
   a bulk operation (one query, a streamed file) instead of cursor pages.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from datetime import datetime, timedelta

from restock_detector.ports import SyncState


class Due(enum.Enum):
    """Why a shop is due for a sync."""

    NEVER_SYNCED = "never_synced"
    REQUESTED = "requested"
    SCHEDULED = "scheduled"


class Strategy(enum.Enum):
    PAGES = "pages"
    BULK = "bulk"


def due(state: SyncState, now: datetime) -> Due | None:
    """Why ``state``'s shop is due at ``now`` (rules 2-4), or None."""
    if state.started_at is None:
        return Due.NEVER_SYNCED
    if state.requested_at is not None and state.requested_at > state.started_at:
        return Due.REQUESTED
    if now - state.started_at >= timedelta(seconds=max(state.interval_seconds, 0)):
        return Due.SCHEDULED
    return None


def due_shops(states: Iterable[SyncState], now: datetime) -> list[tuple[SyncState, Due]]:
    """The due shops, in the order to sync them (rule 5)."""
    found = [(state, reason) for state in states if (reason := due(state, now)) is not None]
    return sorted(found, key=lambda pair: _order_key(pair[0], pair[1]))


def _order_key(state: SyncState, reason: Due) -> tuple[int, float]:
    if reason is Due.SCHEDULED and state.started_at is not None:
        return (1, (state.started_at + timedelta(seconds=state.interval_seconds)).timestamp())
    moment = state.requested_at if reason is Due.REQUESTED else None
    return (0, moment.timestamp() if moment is not None else float("-inf"))


def strategy(known_items: int, bulk_threshold: int) -> Strategy:
    """Pages or bulk (rule 6)."""
    return Strategy.BULK if known_items >= bulk_threshold else Strategy.PAGES
