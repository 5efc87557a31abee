"""``ports.ConsentLedger`` on PostgreSQL: the one place where a subscription's consent state changes after
its signup. Each change is the consent table's (``restock_admin.consent``) and writes its evidence row in
the same transaction; the targeted rows are locked first, so two clicks of one link cannot both act."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime
from typing import Any

from restock_admin.consent import Change, Event, Refused, step
from restock_admin.ports import (
    AlreadyUsed,
    Applied,
    ContactAtShop,
    ContactOnChannel,
    Evidence,
    RetentionDue,
    Subscriptions,
    Target,
)
from restock_common.db.engine import transaction
from restock_common.db.tables import Subscription

_SELECT = "SELECT id, tenant, state FROM subscriptions WHERE {where} ORDER BY id FOR UPDATE"
_SELECT_DUE = (
    "SELECT id, tenant, state FROM subscriptions WHERE {where} ORDER BY id LIMIT {} FOR UPDATE SKIP LOCKED"
)
_DUE = (
    "tenant = {} AND redacted_at IS NULL AND ((state = 'pending' AND subscribed_at < {})"
    " OR unsubscribed_at < {} OR fulfilled_at < {} OR last_notified_at < {})"
)

# In SET, ``state`` is the row's state before this statement.
_UPDATE = """
UPDATE subscriptions SET state = {},
  confirmed_at = CASE WHEN {} = 'confirmed' AND state <> 'confirmed' THEN {}::timestamptz
                      ELSE confirmed_at END,
  unsubscribed_at = CASE WHEN {} <> 'unsubscribed' THEN NULL
                         WHEN state = 'unsubscribed' THEN unsubscribed_at ELSE {}::timestamptz END
WHERE id = ANY({}::bigint[])
"""

_REDACT = "UPDATE subscriptions SET email = NULL, phone = NULL, redacted_at = {} WHERE id = ANY({}::bigint[])"

# Each row names the consent wording the subscription was given (its signup's version) as evidence.
_EVENTS = """
INSERT INTO consent_events (tenant, subscription, kind, source, consent_text_version, ip_hash, detail,
  occurred_at)
SELECT s.tenant, s.id, {}, {}, s.consent_text_version, {}, {}::jsonb, {}
FROM subscriptions s WHERE s.id = ANY({}::bigint[])
"""

_CONSUME = """
INSERT INTO consumed_tokens (token_id, purpose, subscription_id, used_at) VALUES ({}, {}, {}, {})
ON CONFLICT (token_id) DO NOTHING RETURNING id
"""

# A confirmation or a resume messages the contact again: never for a row whose contact data was erased.
_NEEDS_CONTACT = frozenset({Event.CONFIRM, Event.RESUME})


class _Refusal(Exception):
    """Rolls the transaction of a refused single-use link back."""

    def __init__(self, applied: list[Applied]) -> None:
        self.applied = applied


def _select(target: Target, event: Event) -> tuple[str, list[Any]]:
    if isinstance(target, RetentionDue):
        ended = target.ended_before
        args = [target.tenant_id, target.unconfirmed_before, ended, ended, ended, target.limit]
        return _SELECT_DUE.replace("{where}", _DUE), args
    if isinstance(target, Subscriptions):
        clause, args = "id = ANY({}::bigint[])", [list(target.ids)]
    elif isinstance(target, ContactAtShop):
        clause, args = "tenant = {} AND contact_hash = {}", [target.tenant_id, target.contact_hash]
    elif isinstance(target, ContactOnChannel):
        clause, args = "contact_hash = {} AND channel = {}", [target.contact_hash, target.channel]
    if event in _NEEDS_CONTACT:
        clause += " AND redacted_at IS NULL"
    return _SELECT.replace("{where}", clause), args


class PiccoloConsentLedger:
    """See the module's rules."""

    async def apply(
        self, target: Target, events: Event | tuple[Event, ...], evidence: Evidence, now: datetime
    ) -> list[Applied]:
        sequence = (events,) if isinstance(events, Event) else events
        async with transaction(Subscription._meta.db):
            applied = await self._apply(target, sequence[0], evidence, now)
            ids = tuple(each.subscription_id for each in applied)
            for event in sequence[1:]:  # the same rows, already locked by this transaction
                applied += await self._apply(Subscriptions(ids), event, evidence, now) if ids else []
            return applied

    async def apply_once(
        self,
        token_id: str,
        purpose: str,
        subscription_id: int,
        event: Event,
        evidence: Evidence,
        now: datetime,
    ) -> list[Applied] | AlreadyUsed:
        try:
            async with transaction(Subscription._meta.db):
                if not await Subscription.raw(_CONSUME, token_id, purpose, subscription_id, now):
                    return AlreadyUsed()
                applied = await self._apply(Subscriptions((subscription_id,)), event, evidence, now)
                if any(isinstance(each.outcome, Refused) for each in applied):
                    raise _Refusal(applied)
                return applied
        except _Refusal as refusal:
            return refusal.applied

    async def _apply(self, target: Target, event: Event, evidence: Evidence, now: datetime) -> list[Applied]:
        query, args = _select(target, event)
        rows = await Subscription.raw(query, *args)
        applied = [Applied(row["id"], row["tenant"], row["state"], step(row["state"], event)) for row in rows]
        groups: dict[Change, list[Applied]] = defaultdict(list)
        for each in applied:
            if isinstance(each.outcome, Change):
                groups[each.outcome].append(each)
        for change, members in groups.items():
            await self._write(change, members, evidence, now)
        return applied

    @staticmethod
    async def _write(change: Change, members: list[Applied], evidence: Evidence, now: datetime) -> None:
        ids = [each.subscription_id for each in members]
        state = change.state.value
        if change.kind == "redacted":
            await Subscription.raw(_REDACT, now, ids)
        else:
            await Subscription.raw(_UPDATE, state, state, now, state, now, ids)
        await Subscription.raw(
            _EVENTS,
            change.kind,
            evidence.source,
            evidence.ip_hash,
            json.dumps({**evidence.detail, "state": state}),
            now,
            ids,
        )
