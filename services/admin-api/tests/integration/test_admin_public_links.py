"""The public links over HTTP against this run's PostgreSQL: double opt-in confirmation (single use,
expiring, unforgeable) and the unsubscribe page and RFC 8058 one-click POST (no cookie, idempotent)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from litestar.testing import AsyncTestClient

from restock_common.links import LinkSigner
from restock_common.settings import Settings

pytestmark = pytest.mark.integration

Signed = Callable[..., str]
SHOP = "signup-shop.myshopify.com"


@pytest.fixture
def signer(settings: Settings) -> LinkSigner:
    return LinkSigner(settings.link_secret.get_secret_value())


async def subscribe(client: AsyncTestClient, signed: Signed, variant_id: int = 7, shop: str = SHOP) -> int:
    response = await client.post(
        signed(shop=shop), json={"variant_id": variant_id, "email": "ada@example.com"}
    )
    assert response.status_code in (200, 201), response.text
    return int(response.json()["id"])


async def test_the_confirmation_link_confirms_once(
    client: AsyncTestClient, signed: Signed, signer: LinkSigner, tables
) -> None:
    await tables.set_rules(double_opt_in="email")
    subscription_id = await subscribe(client, signed)
    assert await tables.state(subscription_id) == "pending"
    token = signer.token("confirm", subscription_id)

    page = await client.get(f"/c/{token}", headers={"X-Forwarded-For": "203.0.113.5"})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "Subscription confirmed" in page.text
    row = (await tables.rows("subscriptions"))[0]
    assert (row["state"], row["confirmed_at"] is not None) == ("confirmed", True)
    events = await tables.rows("consent_events")
    assert [(e["kind"], e["source"]) for e in events] == [
        ("subscribed", "storefront"),
        ("confirmed", "email-link"),
    ]
    assert len(events[1]["ip_hash"] or "") == 64
    assert events[1]["consent_text_version"] == "v1"  # the wording the shopper was shown, on every row
    assert len(await tables.rows("consumed_tokens")) == 1

    reused = await client.get(f"/c/{token}")
    assert reused.status_code == 409
    assert "already used" in reused.text
    assert len(await tables.rows("consent_events")) == 2


@pytest.mark.parametrize("mangle", ["flip", "truncate", "other-purpose", "garbage", "huge"])
async def test_forged_confirmation_links_change_nothing(
    client: AsyncTestClient, signed: Signed, signer: LinkSigner, tables, mangle: str
) -> None:
    await tables.set_rules(double_opt_in="email")
    subscription_id = await subscribe(client, signed)
    token = signer.token("confirm", subscription_id)
    forged = {
        "flip": token[:-2] + ("AA" if not token.endswith("AA") else "BB"),
        "truncate": token[: len(token) // 2],
        "other-purpose": signer.token("unsubscribe", subscription_id),
        "garbage": "not-a-token",
        "huge": "x" * 5000,
    }[mangle]
    page = await client.get(f"/c/{forged}")
    assert page.status_code == 400
    assert "not valid" in page.text
    assert await tables.state(subscription_id) == "pending"
    assert await tables.rows("consumed_tokens") == []
    assert len(await tables.rows("consent_events")) == 1


async def test_an_expired_confirmation_link_changes_nothing(
    client: AsyncTestClient, settings: Settings, signed: Signed, tables
) -> None:
    await tables.set_rules(double_opt_in="email")
    subscription_id = await subscribe(client, signed)
    issued_at = int(time.time()) - settings.confirm_link_max_age_seconds - 60

    class IssuedLongAgo(TimestampSigner):
        def get_timestamp(self) -> int:
            return issued_at

    # Exactly how restock_common.links makes a confirmation token, as it was made 48 h + 1 min ago.
    old = URLSafeTimedSerializer(
        settings.link_secret.get_secret_value(), salt="restock.confirm", signer=IssuedLongAgo
    )
    page = await client.get(f"/c/{old.dumps([subscription_id, 'nonce'])}")
    assert page.status_code == 410
    assert "expired" in page.text
    assert await tables.state(subscription_id) == "pending"
    assert await tables.rows("consumed_tokens") == []


async def test_a_confirmation_link_cannot_revive_a_cancelled_subscription(
    client: AsyncTestClient, signed: Signed, signer: LinkSigner, tables
) -> None:
    await tables.set_rules(double_opt_in="email")
    subscription_id = await subscribe(client, signed)
    assert (
        await client.post(
            f"/u/{signer.token('unsubscribe', subscription_id)}", data={"List-Unsubscribe": "One-Click"}
        )
    ).status_code == 200
    page = await client.get(f"/c/{signer.token('confirm', subscription_id)}")
    assert page.status_code == 409
    assert "cancelled" in page.text
    assert await tables.state(subscription_id) == "unsubscribed"
    assert await tables.rows("consumed_tokens") == []  # refused: the link is not spent either
    assert await tables.kinds(subscription_id) == ["subscribed", "unsubscribed"]


async def test_one_click_unsubscribe_exactly_as_a_mail_client_posts_it(
    client: AsyncTestClient, signed: Signed, signer: LinkSigner, tables
) -> None:
    subscription_id = await subscribe(client, signed)
    other = await subscribe(client, signed, variant_id=8)
    url = f"/u/{signer.token('unsubscribe', subscription_id)}"
    client.cookies.clear()
    # RFC 8058: a POST with exactly this form body, no cookie, no login, no prior GET.
    response = await client.post(
        url,
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text
    assert "set-cookie" not in response.headers
    assert await tables.state(subscription_id) == "unsubscribed"
    assert await tables.state(other) == "confirmed"  # this alert only
    events = await tables.rows("consent_events")
    assert [(e["subscription"], e["kind"], e["source"]) for e in events][-1] == (
        subscription_id,
        "unsubscribed",
        "list-unsubscribe",
    )
    # A mail client may retry: the same answer, no second evidence row.
    again = await client.post(
        url,
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert again.status_code == 200
    assert await tables.kinds(subscription_id) == ["subscribed", "unsubscribed"]


async def test_one_click_as_multipart_form_data_works_too(
    client: AsyncTestClient, signed: Signed, signer: LinkSigner, tables
) -> None:
    subscription_id = await subscribe(client, signed)
    response = await client.post(
        f"/u/{signer.token('unsubscribe', subscription_id)}", files={"List-Unsubscribe": (None, "One-Click")}
    )
    assert response.status_code == 200
    assert await tables.state(subscription_id) == "unsubscribed"


async def test_the_unsubscribe_page_offers_a_choice_and_changes_nothing(
    client: AsyncTestClient, signed: Signed, signer: LinkSigner, tables
) -> None:
    subscription_id = await subscribe(client, signed)
    url = f"/u/{signer.token('unsubscribe', subscription_id)}"
    page = await client.get(url)
    assert page.status_code == 200
    assert page.text.count(f'<form method="post" action="{url}">') == 2
    assert 'name="scope" value="this"' in page.text
    assert 'name="scope" value="shop"' in page.text
    assert await tables.state(subscription_id) == "confirmed"
    assert await tables.kinds(subscription_id) == ["subscribed"]


async def test_every_alert_of_this_shop(
    client: AsyncTestClient, signed: Signed, signer: LinkSigner, tables
) -> None:
    first = await subscribe(client, signed)
    second = await subscribe(client, signed, variant_id=8)
    elsewhere = await subscribe(client, signed, variant_id=8, shop="other-shop.myshopify.com")
    bob = (await client.post(signed(), json={"variant_id": 7, "email": "bob@example.com"})).json()["id"]
    response = await client.post(f"/u/{signer.token('unsubscribe', first)}", data={"scope": "shop"})
    assert response.status_code == 200
    assert "any back-in-stock alert from this shop" in response.text
    assert [await tables.state(i) for i in (first, second, elsewhere, bob)] == [
        "unsubscribed",
        "unsubscribed",
        "confirmed",
        "confirmed",
    ]
    sources = await tables.db.fetch(
        "SELECT DISTINCT source, detail->>'scope' AS scope FROM consent_events WHERE kind = 'unsubscribed'"
    )
    assert [(r["source"], r["scope"]) for r in sources] == [("email-link", "shop")]


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_bad_or_dangling_unsubscribe_links(
    client: AsyncTestClient, signed: Signed, signer: LinkSigner, tables, method: str
) -> None:
    subscription_id = await subscribe(client, signed)
    forged = await client.request(
        method, f"/u/{signer.token('confirm', subscription_id)}", data={"List-Unsubscribe": "One-Click"}
    )
    assert forged.status_code == 400
    dangling = await client.request(
        method, f"/u/{signer.token('unsubscribe', 999_999)}", data={"List-Unsubscribe": "One-Click"}
    )
    assert dangling.status_code == 404
    assert await tables.state(subscription_id) == "confirmed"
    assert await tables.kinds(subscription_id) == ["subscribed"]


async def test_oversized_or_malformed_unsubscribe_posts_change_nothing(
    client: AsyncTestClient, signed: Signed, signer: LinkSigner, tables
) -> None:
    subscription_id = await subscribe(client, signed)
    url = f"/u/{signer.token('unsubscribe', subscription_id)}"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    huge = await client.post(url, content=b"List-Unsubscribe=One-Click&pad=" + b"x" * 20_000, headers=form)
    assert huge.status_code == 413
    broken = await client.post(url, content=b"--nope\r\n", headers={"Content-Type": "multipart/form-data"})
    assert broken.status_code == 400
    assert await tables.kinds(subscription_id) == ["subscribed"]
