"""The signup service with recording fakes: what it asks of its ports, and what it refuses."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from restock_admin.storefront.ports import StoredSubscription, Subscribed
from restock_admin.storefront.schemas import SubscribeRequest
from restock_admin.storefront.services import SignupService, UnknownShop
from restock_admin.storefront.signup import Signup, SignupRejected

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


class FakeTenants:
    def __init__(self, tenants: dict[str, int]) -> None:
        self.tenants = tenants

    async def installed_tenant_id(self, shop_domain: str) -> int | None:
        return self.tenants.get(shop_domain)


class FakeSubscriptions:
    """Keeps one subscription per (tenant, variant, channel, contact_hash), like the Unique constraint."""

    def __init__(self) -> None:
        self.rows: dict[tuple[int, int, str, str], StoredSubscription] = {}
        self.calls: list[Signup] = []

    async def subscribe(self, signup: Signup) -> Subscribed:
        self.calls.append(signup)
        key = (signup.tenant_id, signup.variant_id, signup.channel, signup.contact_hash)
        if key in self.rows:
            return Subscribed(self.rows[key], created=False)
        stored = StoredSubscription(len(self.rows) + 1, signup.variant_id, signup.channel, signup.state, NOW)
        self.rows[key] = stored
        return Subscribed(stored, created=True)


@pytest.fixture
def store() -> FakeSubscriptions:
    return FakeSubscriptions()


@pytest.fixture
def service(store: FakeSubscriptions) -> SignupService:
    return SignupService(FakeTenants({"demo.myshopify.com": 3}), store, "secret", lambda: NOW)


async def test_signup_is_stored_for_the_shops_tenant(
    service: SignupService, store: FakeSubscriptions
) -> None:
    result = await service.subscribe(
        "demo.myshopify.com", SubscribeRequest(variant_id=9, email="a@b.co"), "1.2.3.4"
    )
    assert result.created
    assert [(s.tenant_id, s.variant_id, s.email, s.subscribed_at) for s in store.calls] == [
        (3, 9, "a@b.co", NOW)
    ]


async def test_repeat_signup_returns_the_same_subscription(service: SignupService) -> None:
    form = SubscribeRequest(variant_id=9, email="a@b.co")
    first = await service.subscribe("demo.myshopify.com", form, None)
    again = await service.subscribe(
        "demo.myshopify.com", SubscribeRequest(variant_id=9, email="A@B.CO"), None
    )
    assert (first.created, again.created) == (True, False)
    assert again.subscription == first.subscription


async def test_unknown_shop_writes_nothing(service: SignupService, store: FakeSubscriptions) -> None:
    with pytest.raises(UnknownShop):
        await service.subscribe("other.myshopify.com", SubscribeRequest(variant_id=9, email="a@b.co"), None)
    assert store.calls == []


async def test_rejected_signup_writes_nothing(service: SignupService, store: FakeSubscriptions) -> None:
    with pytest.raises(SignupRejected):
        await service.subscribe("demo.myshopify.com", SubscribeRequest(variant_id=9, email="nope"), None)
    assert store.calls == []
