"""The storefront signup over HTTP, against this run's PostgreSQL and Redis: signature, freshness,
validation, consent, catalogue, idempotency, double opt-in and its outbox row, and that a refused request
writes nothing."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from litestar.testing import AsyncTestClient

from restock_admin.storefront.signup import hash_ip
from restock_common import messages
from restock_common.settings import Settings
from restock_common.signatures import contact_hash

pytestmark = pytest.mark.integration

Signed = Callable[..., str]


async def test_signed_signup_creates_a_confirmed_subscription_and_its_consent_event(
    client: AsyncTestClient, settings: Settings, signed: Signed, tables
) -> None:
    response = await client.post(
        signed(),
        json={"variant_id": 4242, "email": "Ada@Example.com", "locale": "fr", "quantity": 2},
        headers={"X-Forwarded-For": "198.51.100.66, 203.0.113.7"},  # the left entry is the client's own
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"id", "variant_id", "channel", "state", "subscribed_at"}
    assert (body["variant_id"], body["channel"], body["state"]) == (4242, "email", "confirmed")

    subscriptions = await tables.rows("subscriptions")
    assert len(subscriptions) == 1
    row = subscriptions[0]
    assert (row["email"], row["phone"], row["contact_hash"]) == (
        "Ada@example.com",
        None,
        contact_hash("ada@example.com"),
    )
    assert (row["state"], row["locale"], row["quantity"], row["source"]) == (
        "confirmed",
        "fr",
        2,
        "storefront",
    )
    assert row["confirmed_at"] == row["subscribed_at"]
    assert row["ip_hash"] == hash_ip("203.0.113.7", settings.shopify_api_secret.get_secret_value())

    events = await tables.rows("consent_events")
    assert [(e["subscription"], e["kind"], e["source"]) for e in events] == [
        (row["id"], "subscribed", "storefront")
    ]
    assert (events[0]["consent_text_version"], events[0]["ip_hash"]) == ("v1", row["ip_hash"])
    assert await tables.rows("outbox") == []  # double opt-in is off by default: nothing to confirm


async def test_sms_signup_with_consent_stores_e164(client: AsyncTestClient, signed: Signed, tables) -> None:
    form = {"variant_id": 7, "channel": "sms", "phone": "(415) 555-2671", "country": "US", "consent": True}
    response = await client.post(signed(), json=form)
    assert response.status_code == 201, response.text
    row = (await tables.rows("subscriptions"))[0]
    assert (row["channel"], row["phone"], row["email"]) == ("sms", "+14155552671", None)
    assert row["contact_hash"] == contact_hash("+14155552671")
    again = await client.post(signed(), json={**form, "phone": "+1 415-555-2671", "country": None})
    assert (again.status_code, again.json()["id"]) == (200, row["id"])


async def test_repeat_signup_answers_200_with_the_same_subscription(
    client: AsyncTestClient, signed: Signed, tables
) -> None:
    first = await client.post(signed(), json={"variant_id": 7, "email": "ada@example.com"})
    again = await client.post(signed(), json={"variant_id": 7, "email": "ADA@example.com"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert await tables.counts() == (1, 1)
    other_variant = await client.post(signed(), json={"variant_id": 8, "email": "ada@example.com"})
    assert other_variant.status_code == 201
    assert await tables.counts() == (2, 2)


@pytest.mark.parametrize(
    ("url_kwargs", "strip_signature", "reason"),
    [
        ({"secret": "not-the-app-secret"}, False, "invalid signature"),
        ({}, True, "invalid signature"),
        ({"age": 6 * 60}, False, "stale signature"),
        ({"age": -5 * 60}, False, "stale signature"),
    ],
)
async def test_unauthentic_or_stale_requests_are_401_and_write_nothing(
    client: AsyncTestClient, signed: Signed, tables, url_kwargs: dict, strip_signature: bool, reason: str
) -> None:
    url = signed(**url_kwargs)
    if strip_signature:
        url = url.rsplit("&signature=", 1)[0]
    for path in ("subscriptions", "views"):
        response = await client.post(
            url.replace("/subscriptions?", f"/{path}?"), json={"variant_id": 7, "email": "ada@example.com"}
        )
        assert response.status_code == 401
        assert response.json()["detail"] == reason
    assert await tables.counts() == (0, 0)
    assert await tables.rows("product_views") == []


async def test_a_tampered_query_is_401(client: AsyncTestClient, signed: Signed, tables) -> None:
    url = signed().replace("shop=signup-shop", "shop=other-shop")
    response = await client.post(url, json={"variant_id": 7, "email": "ada@example.com"})
    assert response.status_code == 401
    assert await tables.counts() == (0, 0)


async def test_unknown_shop_is_404(client: AsyncTestClient, signed: Signed, tables) -> None:
    response = await client.post(
        signed(shop="nobody.myshopify.com"), json={"variant_id": 7, "email": "ada@example.com"}
    )
    assert response.status_code == 404
    assert response.json()["detail"] == "unknown shop"
    assert await tables.counts() == (0, 0)


async def test_uninstalled_shop_is_404(client: AsyncTestClient, signed: Signed, tables) -> None:
    await tables.db.execute(
        "UPDATE tenants SET uninstalled_at = now() WHERE shop_domain = 'signup-shop.myshopify.com'"
    )
    response = await client.post(signed(), json={"variant_id": 7, "email": "ada@example.com"})
    assert response.status_code == 404
    assert await tables.counts() == (0, 0)


@pytest.mark.parametrize(
    ("content", "status", "needle"),
    [
        (json.dumps({"variant_id": 7, "email": "not-an-email"}), 400, "invalid email"),
        (
            json.dumps({"variant_id": 7, "channel": "sms", "phone": "+1 555 0100", "consent": True}),
            400,
            "invalid phone",
        ),
        (
            json.dumps({"variant_id": 7, "channel": "sms", "phone": "4155552671", "consent": True}),
            400,
            "+country code",
        ),
        (json.dumps({"variant_id": 7, "channel": "sms", "consent": True}), 400, "phone is required"),
        (json.dumps({"variant_id": 7, "channel": "sms", "phone": "+14155552671"}), 422, "explicit consent"),
        (
            json.dumps({"variant_id": 7, "channel": "sms", "phone": "+14155552671", "consent": False}),
            422,
            "consent",
        ),
        (
            json.dumps({"variant_id": 7, "email": "ada@example.com", "consent": False}),
            422,
            "consent was refused",
        ),
        (json.dumps({"variant_id": 7, "email": "ada@example.com", "channel": "fax"}), 400, "channel"),
        (json.dumps({"email": "ada@example.com"}), 400, "variant_id"),
        (json.dumps({"variant_id": 0, "email": "ada@example.com"}), 400, "variant_id"),
        (json.dumps({"variant_id": "seven", "email": "ada@example.com"}), 400, "variant_id"),
        (json.dumps({"variant_id": 7, "email": "ada@example.com", "quantity": 0}), 400, "quantity"),
        (json.dumps({"variant_id": 7, "email": "ada@example.com", "country": "USA"}), 400, "country"),
        ("this is not json", 400, ""),
        (json.dumps([1, 2]), 400, ""),
    ],
)
async def test_bad_bodies_are_4xx_with_a_reason_and_write_nothing(
    client: AsyncTestClient, signed: Signed, tables, content: str, status: int, needle: str
) -> None:
    response = await client.post(signed(), content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    assert needle in response.text
    assert "detail" in response.json()
    assert await tables.counts() == (0, 0)


async def test_oversized_body_is_413(client: AsyncTestClient, signed: Signed, tables) -> None:
    body = json.dumps({"variant_id": 7, "email": "ada@example.com", "padding": "x" * 70_000})
    response = await client.post(signed(), content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert await tables.counts() == (0, 0)


async def test_unknown_variant_is_422_once_the_catalogue_is_synced(
    client: AsyncTestClient, signed: Signed, tables
) -> None:
    # No catalogue synced yet: the shop cannot tell, so the signup is taken.
    assert (
        await client.post(signed(), json={"variant_id": 999, "email": "ada@example.com"})
    ).status_code == 201
    await tables.db.execute(
        "INSERT INTO inventory_items (tenant, inventory_item_id, variant_id, updated_at)"
        " SELECT id, 5001, 7, now() FROM tenants WHERE shop_domain = 'signup-shop.myshopify.com'"
    )
    refused = await client.post(signed(), json={"variant_id": 998, "email": "bob@example.com"})
    assert refused.status_code == 422
    assert "unknown variant" in refused.json()["detail"]
    assert (
        await client.post(signed(), json={"variant_id": 7, "email": "bob@example.com"})
    ).status_code == 201
    assert await tables.counts() == (2, 2)


async def test_double_opt_in_starts_pending_with_one_outbox_row_per_request(
    client: AsyncTestClient, signed: Signed, tables
) -> None:
    await tables.set_rules(double_opt_in="email")
    first = await client.post(signed(), json={"variant_id": 7, "email": "ada@example.com"})
    assert (first.status_code, first.json()["state"]) == (201, "pending")
    subscription = (await tables.rows("subscriptions"))[0]
    assert subscription["confirmed_at"] is None
    outbox = await tables.rows("outbox")
    assert [(row["routing_key"], row["published_at"]) for row in outbox] == [("confirm.email", None)]
    message = messages.decode(outbox[0]["payload"].encode(), messages.ConfirmationRequested)
    assert (message.tenant_id, message.subscription_id, message.channel) == (
        subscription["tenant"],
        subscription["id"],
        "email",
    )
    assert "ada@" not in outbox[0]["payload"]  # ids only on the broker
    # Re-submitting the form asks again (the first email may be lost), within the contact's rate limit.
    again = await client.post(signed(), json={"variant_id": 7, "email": "ada@example.com"})
    assert (again.status_code, again.json()["state"]) == (200, "pending")
    assert len(await tables.rows("outbox")) == 2
    assert await tables.counts() == (1, 1)


async def test_sms_double_opt_in_only_under_email_plus_sms(
    client: AsyncTestClient, signed: Signed, tables
) -> None:
    form = {"variant_id": 7, "channel": "sms", "phone": "+14155552671", "consent": True}
    await tables.set_rules(double_opt_in="email")
    assert (await client.post(signed(), json=form)).json()["state"] == "confirmed"
    await tables.set_rules(double_opt_in="email+sms")
    response = await client.post(signed(), json={**form, "phone": "+14155552672"})
    assert response.json()["state"] == "pending"
    assert [row["routing_key"] for row in await tables.rows("outbox")] == ["confirm.sms"]


async def test_one_unconfirmed_subscription_per_contact_and_shop(
    client: AsyncTestClient, signed: Signed, tables
) -> None:
    await tables.set_rules(double_opt_in="email")
    await tables.set_rules(shop="other-shop.myshopify.com", double_opt_in="email")
    assert (
        await client.post(signed(), json={"variant_id": 7, "email": "ada@example.com"})
    ).status_code == 201
    second = await client.post(signed(), json={"variant_id": 8, "email": "ada@example.com"})
    assert second.status_code == 409
    assert "confirm it first" in second.json()["detail"]
    assert await tables.counts() == (1, 1)
    assert len(await tables.rows("outbox")) == 1
    other_shop = await client.post(
        signed(shop="other-shop.myshopify.com"), json={"variant_id": 8, "email": "ada@example.com"}
    )
    assert other_shop.status_code == 201  # the guard is per shop
    # Once confirmed, the contact's next subscriptions at that shop need no new confirmation.
    await tables.db.execute("UPDATE subscriptions SET state = 'confirmed' WHERE variant_id = 7")
    third = await client.post(signed(), json={"variant_id": 9, "email": "ada@example.com"})
    assert (third.status_code, third.json()["state"]) == (201, "confirmed")
    assert len(await tables.rows("outbox")) == 2


async def test_an_unsubscribed_contact_resubscribes_on_the_same_row(
    client: AsyncTestClient, signed: Signed, tables
) -> None:
    first = (await client.post(signed(), json={"variant_id": 7, "email": "ada@example.com"})).json()
    await tables.db.execute(
        "UPDATE subscriptions SET state = 'unsubscribed', unsubscribed_at = now() - interval '1 day',"
        " subscribed_at = now() - interval '2 days' WHERE id = $1",
        first["id"],
    )
    before = await tables.db.fetchval("SELECT subscribed_at FROM subscriptions WHERE id = $1", first["id"])
    again = await client.post(
        signed(), json={"variant_id": 7, "email": "ada@example.com", "consent_text_version": "v2"}
    )
    assert (again.status_code, again.json()["id"], again.json()["state"]) == (200, first["id"], "confirmed")
    row = (await tables.rows("subscriptions"))[0]
    assert row["subscribed_at"] > before  # a returning contact goes to the back of the FIFO line
    assert (row["unsubscribed_at"], row["consent_text_version"]) == (None, "v2")
    assert row["subscribed_at"] > row["subscribed_at"].replace(
        year=2000
    )  # moved to now: the back of the line
    assert await tables.kinds(first["id"]) == ["subscribed", "resubscribed"]


async def test_views_are_counted_per_variant_per_day_without_personal_data(
    client: AsyncTestClient, signed: Signed, tables
) -> None:
    for variant in (7, 7, 7, 8):
        response = await client.post(
            signed("views"), json={"variant_id": variant}, headers={"X-Forwarded-For": "203.0.113.7"}
        )
        assert response.status_code == 204, response.text
    views = await tables.rows("product_views")
    assert sorted((row["variant_id"], row["views"]) for row in views) == [(7, 3), (8, 1)]
    assert set(views[0].keys()) == {"id", "tenant", "variant_id", "day", "views"}
    unknown = await client.post(signed("views", shop="nobody.myshopify.com"), json={"variant_id": 7})
    assert unknown.status_code == 404
    assert (await client.post(signed("views"), json={"variant_id": -1})).status_code == 400


async def test_readiness_checks_postgres_and_redis(client: AsyncTestClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"postgres": "ok", "redis": "ok"}
    assert (await client.get("/healthz")).status_code == 200
