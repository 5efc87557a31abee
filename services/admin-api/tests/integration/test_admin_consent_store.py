"""The signup store and the consent ledger against this run's PostgreSQL, called directly (same loop as
the session's pool): concurrency, erased rows, single-use links."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from restock_admin.consent import Change, Event, Unchanged
from restock_admin.ledger import PiccoloConsentLedger
from restock_admin.ports import AlreadyUsed, Evidence, Subscriptions
from restock_admin.storefront.ports import PendingElsewhere, Subscribed
from restock_admin.storefront.repository import PiccoloSubscriptionStore
from restock_admin.storefront.signup import Signup
from restock_common.db.tables import Subscription, Tenant
from restock_common.signatures import contact_hash

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)


async def shop() -> int:
    rows = await Tenant.insert(Tenant(shop_domain="store-shop.myshopify.com")).returning(Tenant.id)
    return int(rows[0]["id"])


def signup(tenant_id: int, variant_id: int, event: Event = Event.SIGNUP_TO_CONFIRM) -> Signup:
    return Signup(
        tenant_id=tenant_id,
        variant_id=variant_id,
        product_id=None,
        channel="email",
        email="ada@example.com",
        phone=None,
        contact_hash=contact_hash("ada@example.com"),
        locale="en",
        quantity=1,
        consent_text_version="v1",
        ip_hash=None,
        event=event,
        subscribed_at=NOW,
    )


async def test_concurrent_signups_of_one_contact_leave_one_pending(engine: object, clean_db: None) -> None:
    tenant_id = await shop()
    store = PiccoloSubscriptionStore()
    results = await asyncio.gather(*(store.subscribe(signup(tenant_id, variant)) for variant in range(1, 9)))
    assert sum(isinstance(result, Subscribed) for result in results) == 1
    assert sum(isinstance(result, PendingElsewhere) for result in results) == 7
    assert len(await Subscription.select(Subscription.id)) == 1
    assert len(await Subscription.raw("SELECT id FROM outbox")) == 1


async def test_concurrent_identical_signups_make_one_row(engine: object, clean_db: None) -> None:
    tenant_id = await shop()
    store = PiccoloSubscriptionStore()
    results = await asyncio.gather(*(store.subscribe(signup(tenant_id, 7, Event.SIGNUP)) for _ in range(8)))
    assert [isinstance(r, Subscribed) and r.created for r in results].count(True) == 1
    assert len({r.subscription.id for r in results if isinstance(r, Subscribed)}) == 1
    assert len(await Subscription.raw("SELECT id FROM consent_events")) == 1


@pytest.mark.parametrize("erased_state", ["unsubscribed", "confirmed"])
async def test_an_erased_contact_signing_up_again_takes_its_row_back(
    engine: object, clean_db: None, erased_state: str
) -> None:
    tenant_id = await shop()
    store = PiccoloSubscriptionStore()
    first = await store.subscribe(signup(tenant_id, 7, Event.SIGNUP))
    assert isinstance(first, Subscribed)
    # Erased (retention, or customers/redact which keeps the state): the contact hash stays in the key.
    await Subscription.raw(
        "UPDATE subscriptions SET state = {}, email = NULL, redacted_at = now() WHERE id = {}",
        erased_state,
        first.subscription.id,
    )
    again = await store.subscribe(signup(tenant_id, 7, Event.SIGNUP))
    assert isinstance(again, Subscribed)
    assert (again.subscription.id, again.subscription.state, again.created) == (
        first.subscription.id,
        "confirmed",
        False,
    )
    row = (
        await Subscription.raw(
            "SELECT email, redacted_at FROM subscriptions WHERE id = {}", first.subscription.id
        )
    )[0]
    assert (row["email"], row["redacted_at"]) == ("ada@example.com", None)
    kinds = await Subscription.raw(
        "SELECT kind FROM consent_events WHERE subscription = {} ORDER BY id", first.subscription.id
    )
    assert [k["kind"] for k in kinds] == ["subscribed", "resubscribed"]


async def test_a_link_clicked_twice_at_once_acts_once(engine: object, clean_db: None) -> None:
    tenant_id = await shop()
    first = await PiccoloSubscriptionStore().subscribe(signup(tenant_id, 7))
    assert isinstance(first, Subscribed)
    ledger = PiccoloConsentLedger()
    results = await asyncio.gather(
        *(
            ledger.apply_once(
                "token-digest", "confirm", first.subscription.id, Event.CONFIRM, Evidence("email-link"), NOW
            )
            for _ in range(5)
        )
    )
    changed = [r for r in results if isinstance(r, list) and isinstance(r[0].outcome, Change)]
    assert len(changed) == 1
    assert sum(isinstance(r, AlreadyUsed) for r in results) == 4
    kinds = await Subscription.raw("SELECT kind FROM consent_events ORDER BY id")
    assert [k["kind"] for k in kinds] == ["subscribed", "confirmed"]


async def test_concurrent_unsubscribes_write_one_evidence_row(engine: object, clean_db: None) -> None:
    tenant_id = await shop()
    first = await PiccoloSubscriptionStore().subscribe(signup(tenant_id, 7, Event.SIGNUP))
    assert isinstance(first, Subscribed)
    ledger = PiccoloConsentLedger()
    target = Subscriptions((first.subscription.id,))
    results = await asyncio.gather(
        *(ledger.apply(target, Event.UNSUBSCRIBE, Evidence("list-unsubscribe"), NOW) for _ in range(5))
    )
    outcomes = [r[0].outcome for r in results]
    assert outcomes.count(Unchanged()) == 4
    kinds = await Subscription.raw("SELECT kind FROM consent_events ORDER BY id")
    assert [k["kind"] for k in kinds] == ["subscribed", "unsubscribed"]
