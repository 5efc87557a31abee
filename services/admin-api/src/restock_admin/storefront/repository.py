"""The storefront's ports on PostgreSQL (Piccolo)."""

from __future__ import annotations

import uuid
from typing import Any

from restock_admin.consent import Change, Event, State, Step, step
from restock_admin.storefront.ports import PendingElsewhere, ShopContext, StoredSubscription, Subscribed
from restock_admin.storefront.signup import Signup
from restock_common import messages, topology
from restock_common.db.engine import transaction
from restock_common.db.tables import Subscription
from restock_common.rules import decode_rules

_SHOP_CONTEXT = """
SELECT t.id, r.body AS rules,
  CASE WHEN EXISTS (SELECT 1 FROM inventory_items i WHERE i.tenant = t.id AND i.variant_id = {}) THEN true
       WHEN EXISTS (SELECT 1 FROM inventory_items i WHERE i.tenant = t.id) THEN false END AS variant_known
FROM tenants t LEFT JOIN rules r ON r.tenant = t.id
WHERE t.shop_domain = {} AND t.uninstalled_at IS NULL
"""

# Every signup of one contact at one shop runs alone: the "one unconfirmed subscription in flight" check
# and the write after it must not interleave with a concurrent signup of the same contact.
_LOCK_CONTACT = "SELECT pg_advisory_xact_lock(hashtextextended({}, {}))"

# Erased rows are read too: the Unique key still holds them (their contact hash stays), so a returning
# contact takes their row back instead of colliding with it.
_CONTACT_ROWS = """
SELECT id, variant_id, channel, state, subscribed_at, redacted_at IS NOT NULL AS redacted FROM subscriptions
WHERE tenant = {} AND contact_hash = {} AND channel = {}
ORDER BY id FOR UPDATE
"""

# The row and its evidence in one statement (one round trip): ``{evidence}`` is ``_WITH_EVIDENCE``.
_INSERT = """
WITH written AS (
INSERT INTO subscriptions (tenant, variant_id, product_id, channel, email, phone, contact_hash, locale,
  quantity, state, source, consent_text_version, ip_hash, subscribed_at, confirmed_at, notified_count)
VALUES ({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, 'storefront', {}, {}, {},
  CASE WHEN {} = 'confirmed' THEN {}::timestamptz END, 0)
RETURNING id, tenant, variant_id, channel, state, locale, subscribed_at
){evidence}"""

# A returning contact: the row takes the new consent (and its contact data back, if it was redacted), and
# goes to the back of the FIFO line, like a new signup.
_RESUBSCRIBE = """
WITH written AS (
UPDATE subscriptions SET state = {}, email = {}, phone = {}, locale = {}, quantity = {},
  source = 'storefront', consent_text_version = {}, ip_hash = {}, subscribed_at = {},
  confirmed_at = CASE WHEN {} = 'confirmed' THEN {}::timestamptz END, unsubscribed_at = NULL,
  redacted_at = NULL
WHERE id = {}
RETURNING id, tenant, variant_id, channel, state, locale, subscribed_at
){evidence}"""

_WITH_EVIDENCE = """, evidence AS (
INSERT INTO consent_events (tenant, subscription, kind, source, consent_text_version, ip_hash, detail,
  occurred_at)
SELECT tenant, id, {}, 'storefront', {}, {}, jsonb_build_object('state', state, 'locale', locale, 'channel',
  channel), {} FROM written
)
SELECT id, variant_id, channel, state, subscribed_at FROM written
"""

_OUTBOX = """
INSERT INTO outbox (tenant, routing_key, message_id, ordering_key, payload, created_at, publish_attempts)
VALUES ({}, {}, {}::uuid, NULL, {}, {}, 0)
"""


def _stored(row: dict[str, Any]) -> StoredSubscription:
    return StoredSubscription(
        id=row["id"],
        variant_id=row["variant_id"],
        channel=row["channel"],
        state=row["state"],
        subscribed_at=row["subscribed_at"],
    )


def _current_state(existing: dict[str, Any] | None) -> str:
    """The state a signup starts from. An erased row cannot be reached any more, whatever its state says
    (``customers/redact`` keeps the state): for a new signup it is as good as unsubscribed."""
    if existing is None:
        return State.NEW
    return State.UNSUBSCRIBED if existing["redacted"] else str(existing["state"])


class PiccoloShopDirectory:
    """Shops from ``tenants``, their ``rules`` and their synced ``inventory_items``."""

    async def signup_context(self, shop_domain: str, variant_id: int) -> ShopContext | None:
        rows = await Subscription.raw(_SHOP_CONTEXT, variant_id, shop_domain)
        if not rows:
            return None
        row = rows[0]
        rules = decode_rules(row["rules"])
        return ShopContext(int(row["id"]), rules.double_opt_in, row["variant_known"])


class PiccoloSubscriptionStore:
    """Subscriptions, consent events and confirmation requests, written together."""

    async def subscribe(self, signup: Signup) -> Subscribed | PendingElsewhere:
        async with transaction(Subscription._meta.db):
            await Subscription.raw(_LOCK_CONTACT, signup.contact_hash, signup.tenant_id)
            rows = await Subscription.raw(
                _CONTACT_ROWS, signup.tenant_id, signup.contact_hash, signup.channel
            )
            existing = next((row for row in rows if row["variant_id"] == signup.variant_id), None)
            others = {row["state"] for row in rows if row is not existing and not row["redacted"]}
            event = signup.event
            if event is Event.SIGNUP_TO_CONFIRM and State.CONFIRMED in others:
                event = Event.SIGNUP  # this contact already proved it at this shop, on this channel
            outcome = step(_current_state(existing), event)
            if isinstance(outcome, Change) and outcome.state is State.PENDING and State.PENDING in others:
                return PendingElsewhere()
            stored, created = await self._write(signup, existing, outcome)
            requested = stored.state == State.PENDING
            if requested:
                await self._request_confirmation(signup, stored.id)
            return Subscribed(stored, created=created, confirmation_requested=requested)

    async def _write(
        self, signup: Signup, existing: dict[str, Any] | None, outcome: Step
    ) -> tuple[StoredSubscription, bool]:
        if not isinstance(outcome, Change):  # a repeat of a live subscription: nothing changes
            assert existing is not None
            return _stored(existing), False
        evidence = (outcome.kind, signup.consent_text_version, signup.ip_hash, signup.subscribed_at)
        if existing is None:
            rows = await Subscription.raw(
                _INSERT.replace("{evidence}", _WITH_EVIDENCE),
                signup.tenant_id,
                signup.variant_id,
                signup.product_id,
                signup.channel,
                signup.email,
                signup.phone,
                signup.contact_hash,
                signup.locale,
                signup.quantity,
                outcome.state.value,
                signup.consent_text_version,
                signup.ip_hash,
                signup.subscribed_at,
                outcome.state.value,
                signup.subscribed_at,
                *evidence,
            )
        else:
            rows = await Subscription.raw(
                _RESUBSCRIBE.replace("{evidence}", _WITH_EVIDENCE),
                outcome.state.value,
                signup.email,
                signup.phone,
                signup.locale,
                signup.quantity,
                signup.consent_text_version,
                signup.ip_hash,
                signup.subscribed_at,
                outcome.state.value,
                signup.subscribed_at,
                existing["id"],
                *evidence,
            )
        stored = _stored(rows[0])
        return stored, existing is None

    @staticmethod
    async def _request_confirmation(signup: Signup, subscription_id: int) -> None:
        """The ``ConfirmationRequested`` for the sender, as an outbox row committed with the signup: the
        detector's relay publishes every outbox row (with confirms), so a lost publish cannot leave a
        pending subscription without its confirmation (ADR 17)."""
        channel: messages.Channel = "sms" if signup.channel == "sms" else "email"
        message = messages.ConfirmationRequested(
            tenant_id=signup.tenant_id,
            subscription_id=subscription_id,
            channel=channel,
            requested_at=signup.subscribed_at,
        )
        await Subscription.raw(
            _OUTBOX,
            signup.tenant_id,
            topology.confirm_routing_key(channel),
            str(uuid.uuid4()),
            messages.encode(message).decode(),
            signup.subscribed_at,
        )
