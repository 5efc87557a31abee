"""The signup service with recording fakes: the order of its checks, what it asks of its ports, and what
it refuses before writing anything."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from restock_admin.consent import Event
from restock_admin.storefront.limits import Limit
from restock_admin.storefront.ports import PendingElsewhere, ShopContext, StoredSubscription, Subscribed
from restock_admin.storefront.schemas import SubscribeRequest
from restock_admin.storefront.services import (
    PendingConfirmation,
    RateLimited,
    SignupLimits,
    SignupService,
    UnknownShop,
    UnknownVariant,
    ViewService,
)
from restock_admin.storefront.signup import ConsentMissing, Signup, SignupRejected

NOW = datetime(2025, 6, 1, 12, 0, 30, tzinfo=UTC)
SHOP = "demo.myshopify.com"


class FakeShops:
    def __init__(self, variant_known: bool | None = True, double_opt_in: str = "off") -> None:
        self.variant_known = variant_known
        self.double_opt_in = double_opt_in

    async def signup_context(self, shop_domain: str, variant_id: int) -> ShopContext | None:
        if shop_domain != SHOP:
            return None
        return ShopContext(3, self.double_opt_in, self.variant_known)


class FakeSubscriptions:
    """Keeps one subscription per (tenant, variant, channel, contact_hash), like the Unique constraint."""

    def __init__(self, pending_elsewhere: bool = False) -> None:
        self.rows: dict[tuple[int, int, str, str], StoredSubscription] = {}
        self.calls: list[Signup] = []
        self.pending_elsewhere = pending_elsewhere

    async def subscribe(self, signup: Signup) -> Subscribed | PendingElsewhere:
        self.calls.append(signup)
        if self.pending_elsewhere:
            return PendingElsewhere()
        key = (signup.tenant_id, signup.variant_id, signup.channel, signup.contact_hash)
        if key in self.rows:
            return Subscribed(self.rows[key], created=False)
        state = "pending" if signup.event is Event.SIGNUP_TO_CONFIRM else "confirmed"
        stored = StoredSubscription(len(self.rows) + 1, signup.variant_id, signup.channel, state, NOW)
        self.rows[key] = stored
        return Subscribed(stored, created=True, confirmation_requested=state == "pending")


class FakeCounter:
    """Counts hits per key; ``None`` when told Redis is down."""

    def __init__(self, available: bool = True) -> None:
        self.hits: dict[str, int] = {}
        self.available = available

    async def hit(self, key: str, ttl_seconds: int) -> int | None:
        if not self.available:
            return None
        self.hits[key] = self.hits.get(key, 0) + 1
        return self.hits[key]


LIMITS = SignupLimits(per_ip=Limit("ip", 3, 60), per_contact=Limit("contact", 2, 3600))


def build(
    shops: FakeShops | None = None, store: FakeSubscriptions | None = None, counter: FakeCounter | None = None
) -> tuple[SignupService, FakeSubscriptions, FakeCounter]:
    store = store or FakeSubscriptions()
    counter = counter or FakeCounter()
    return SignupService(shops or FakeShops(), store, counter, LIMITS, "secret", lambda: NOW), store, counter


async def test_signup_is_stored_for_the_shops_tenant() -> None:
    service, store, _ = build()
    result = await service.subscribe(SHOP, SubscribeRequest(variant_id=9, email="a@b.co"), "1.2.3.4")
    assert result.created
    assert [(s.tenant_id, s.variant_id, s.email, s.subscribed_at, s.event) for s in store.calls] == [
        (3, 9, "a@b.co", NOW, Event.SIGNUP)
    ]


async def test_double_opt_in_rule_reaches_the_store() -> None:
    service, store, _ = build(FakeShops(double_opt_in="email"))
    result = await service.subscribe(SHOP, SubscribeRequest(variant_id=9, email="a@b.co"), None)
    assert (result.subscription.state, result.confirmation_requested) == ("pending", True)
    assert store.calls[0].event is Event.SIGNUP_TO_CONFIRM


async def test_repeat_signup_returns_the_same_subscription() -> None:
    service, _, _ = build()
    first = await service.subscribe(SHOP, SubscribeRequest(variant_id=9, email="a@b.co"), None)
    again = await service.subscribe(SHOP, SubscribeRequest(variant_id=9, email="A@B.CO"), None)
    assert (first.created, again.created) == (True, False)
    assert again.subscription == first.subscription


@pytest.mark.parametrize(
    ("shops", "store", "form", "error"),
    [
        (FakeShops(), None, SubscribeRequest(variant_id=9, email="nope"), SignupRejected),
        (
            FakeShops(),
            None,
            SubscribeRequest(variant_id=9, channel="sms", phone="+14155552671"),
            ConsentMissing,
        ),
        (
            FakeShops(variant_known=False),
            None,
            SubscribeRequest(variant_id=9, email="a@b.co"),
            UnknownVariant,
        ),
    ],
)
async def test_refused_signups_write_nothing(
    shops: FakeShops, store: FakeSubscriptions | None, form: SubscribeRequest, error: type[Exception]
) -> None:
    service, store, _ = build(shops, store)
    with pytest.raises(error):
        await service.subscribe(SHOP, form, None)
    assert store.calls == []


async def test_unknown_shop_writes_nothing() -> None:
    service, store, _ = build()
    with pytest.raises(UnknownShop):
        await service.subscribe("other.myshopify.com", SubscribeRequest(variant_id=9, email="a@b.co"), None)
    assert store.calls == []


async def test_a_shop_without_a_synced_catalogue_takes_the_signup() -> None:
    service, _, _ = build(FakeShops(variant_known=None))
    assert (await service.subscribe(SHOP, SubscribeRequest(variant_id=9, email="a@b.co"), None)).created


async def test_another_pending_confirmation_is_a_conflict() -> None:
    service, _, _ = build(FakeShops(double_opt_in="email"), FakeSubscriptions(pending_elsewhere=True))
    with pytest.raises(PendingConfirmation):
        await service.subscribe(SHOP, SubscribeRequest(variant_id=9, email="a@b.co"), None)


async def test_per_ip_limit_refuses_with_the_seconds_left_in_the_window() -> None:
    service, store, _ = build()
    for n in range(3):
        await service.subscribe(SHOP, SubscribeRequest(variant_id=9, email=f"a{n}@b.co"), "1.2.3.4")
    with pytest.raises(RateLimited) as refused:
        await service.subscribe(SHOP, SubscribeRequest(variant_id=9, email="z@b.co"), "1.2.3.4")
    assert (refused.value.limit, refused.value.retry_after) == ("ip", 30)  # NOW is 30 s into its minute
    assert len(store.calls) == 3
    assert (await service.subscribe(SHOP, SubscribeRequest(variant_id=9, email="z@b.co"), "1.2.3.5")).created


async def test_per_contact_limit_holds_across_ips() -> None:
    service, store, _ = build()
    for n in range(2):
        await service.subscribe(SHOP, SubscribeRequest(variant_id=n + 1, email="a@b.co"), f"1.2.3.{n}")
    with pytest.raises(RateLimited) as refused:
        await service.subscribe(SHOP, SubscribeRequest(variant_id=5, email="A@b.co"), "1.2.3.9")
    assert refused.value.limit == "contact"
    assert len(store.calls) == 2


async def test_counter_down_lets_signups_through() -> None:
    service, store, _ = build(counter=FakeCounter(available=False))
    for n in range(10):
        await service.subscribe(SHOP, SubscribeRequest(variant_id=9, email=f"a{n}@b.co"), "1.2.3.4")
    assert len(store.calls) == 10


class FakeViews:
    def __init__(self) -> None:
        self.views: list[tuple[str, int, str]] = []

    async def count_view(self, shop_domain: str, variant_id: int, day: str) -> bool:
        self.views.append((shop_domain, variant_id, day))
        return shop_domain == SHOP


async def test_views_count_per_utc_day() -> None:
    views = FakeViews()
    late_evening_in_new_york = datetime.fromisoformat("2025-06-01T23:30:00-04:00")
    await ViewService(views, lambda: late_evening_in_new_york).count(SHOP, 9)
    assert views.views == [(SHOP, 9, "2025-06-02")]
    with pytest.raises(UnknownShop):
        await ViewService(views, lambda: NOW).count("other.myshopify.com", 9)
