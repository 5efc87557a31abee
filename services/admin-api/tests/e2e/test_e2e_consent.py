"""End to end, the real processes driven through the sandbox: double opt-in and one-click unsubscribe.

Two shoppers subscribe through the signed App Proxy of a shop with ``double_opt_in: email``; each gets a
confirmation email in the sandbox inbox and follows its link. The variant restocks: both get the alert,
which carries RFC 8058's ``List-Unsubscribe`` headers. One shopper's mail client posts the one-click
unsubscribe exactly as Gmail does (POST, ``List-Unsubscribe=One-Click``, no cookie). The variant restocks
again: the other shopper gets a second alert (so the restock did fire), the unsubscribed one nothing.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from restock_common.db.tables import NotificationJob, Subscription, Tenant
from restock_sandbox.stack import Ports, Stack, register_shop, set_shop_rules

pytestmark = pytest.mark.e2e

SHOP = "consent-e2e.myshopify.com"
PRODUCT_ID, VARIANT_ID, ITEM_ID, LOCATION_ID = 7101, 7201, 7301, 7401
ADA, BOB = "ada@example.com", "bob@example.com"


@pytest.fixture(scope="module")
def stack(test_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    ports = Ports.free()
    # Every test of the run shares one Redis db and signs up from 127.0.0.1: the per-IP signup limit (tested
    # on its own in the admin-api's tests) would refuse this stack's demo signups after earlier tests'.
    env = {**test_env, "RESTOCK_SANDBOX_SHOP_DOMAIN": SHOP, "RESTOCK_SIGNUP_IP_LIMIT": "1000000"}
    register_shop(env, SHOP)
    # Double opt-in for email; restocks allowed back to back, each in its own notification window.
    rules = {"double_opt_in": "email", "cooldown_seconds": 0, "restock_window_seconds": 1}
    asyncio.run(set_shop_rules(env["RESTOCK_DATABASE_URL"], SHOP, updated_by="e2e", **rules))
    log_dir = tmp_path_factory.mktemp("e2e-consent-logs")
    running = Stack(env=env, ports=ports, log_dir=log_dir)
    try:
        running.start()
        running.wait_ready(timeout=90)
        yield running
    except Exception:
        _dump_logs(log_dir)
        raise
    finally:
        codes = running.stop()
        assert all(code == 0 for code in codes.values()), (codes, _dump_logs(log_dir))


def _dump_logs(log_dir: Path) -> str:
    print("\n".join(f"--- {p.name}\n{p.read_text()[-4000:]}" for p in sorted(log_dir.glob("*.log"))))
    return "see logs above"


def _wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Store:
    """The sandbox store and inbox, and the admin-api's public links, over HTTP."""

    def __init__(self, client: httpx.Client, ports: Ports) -> None:
        self.client = client
        self.base = f"http://127.0.0.1:{ports.sandbox}"

    def set_level(self, available: int) -> None:
        body = {"inventory_item_id": ITEM_ID, "location_id": LOCATION_ID, "available": available}
        assert self.client.post(f"{self.base}/store/inventory_levels/set", json=body).status_code < 400

    def seed(self) -> None:
        product = {
            "title": "Consent Tee",
            "variants": [{"id": VARIANT_ID, "title": "S", "sku": "TEE-S", "inventory_item_id": ITEM_ID}],
        }
        assert self.client.put(f"{self.base}/store/products/{PRODUCT_ID}", json=product).status_code < 400
        self.set_level(0)

    def subscribe(self, email: str) -> dict[str, Any]:
        response = self.client.post(
            f"{self.base}/store/apps/proxy/subscriptions", json={"variant_id": VARIANT_ID, "email": email}
        )
        assert response.status_code == 201, response.text
        return response.json()

    def inbox(self, to: str) -> list[dict[str, Any]]:
        return self.client.get(f"{self.base}/inbox", params={"to": to}).json()


def _header(message: dict[str, Any], name: str) -> str | None:
    return next((value for key, value in message["headers"] if key.lower() == name.lower()), None)


def _link(message: dict[str, Any], path: str) -> str:
    body = f"{message.get('text')} {message.get('html')}"
    found = re.search(rf"https?://[^\s\"'<>]+/{path}/[A-Za-z0-9_.\-]+", body)
    assert found, f"no /{path}/ link in {body[:500]}"
    return found.group(0)


def _alerts(store: Store, to: str) -> list[dict[str, Any]]:
    return [m for m in store.inbox(to) if _header(m, "List-Unsubscribe")]


def _journey(ports: Ports) -> dict[str, Any]:
    with httpx.Client(timeout=10.0) as client:
        store = Store(client, ports)
        store.seed()
        subscribed = {email: store.subscribe(email) for email in (ADA, BOB)}
        assert {s["state"] for s in subscribed.values()} == {"pending"}

        for email in (ADA, BOB):
            confirmation = _wait_for(lambda e=email: store.inbox(e), 30, f"{email}'s confirmation email")[0]
            with httpx.Client(timeout=10.0) as browser:  # a fresh browser: no cookie of ours anywhere
                page = browser.get(_link(confirmation, "c"))
            assert page.status_code == 200, page.text
            assert "confirmed" in page.text.lower()

        store.set_level(5)
        first = {e: _wait_for(lambda e=e: _alerts(store, e), 30, f"{e}'s first alert")[0] for e in (ADA, BOB)}
        header = _header(first[ADA], "List-Unsubscribe")
        assert header is not None
        assert _header(first[ADA], "List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"
        unsubscribe_url = header.strip().strip("<>")
        assert "/u/" in unsubscribe_url

        # What a mail client does on "Unsubscribe": POST the header's URL, this body, no cookie, no login.
        with httpx.Client(timeout=10.0) as mail_client:
            one_click = mail_client.post(
                unsubscribe_url,
                content=b"List-Unsubscribe=One-Click",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        assert one_click.status_code == 200, one_click.text

        store.set_level(0)
        # The first restock was detected before its alerts arrived: once the clock's second has moved on,
        # the next restock is in the next 1-second notification window.
        alerted_at = int(time.time())
        _wait_for(lambda: int(time.time()) > alerted_at, 5, "the next notification window")
        store.set_level(5)
        _wait_for(lambda: len(_alerts(store, BOB)) == 2, 30, "bob's second alert")
        return {"subscribed": subscribed, "ada_alerts": len(_alerts(store, ADA)), "ada_all": store.inbox(ADA)}


async def test_confirm_alert_one_click_unsubscribe_then_nothing(stack: Stack, engine: object) -> None:
    seen = await asyncio.to_thread(_journey, stack.ports)
    # Bob's second alert came from the second restock's freeze, which ran after the unsubscribe committed:
    # Ada had nothing frozen in it, and nothing sent.
    assert seen["ada_alerts"] == 1, seen["ada_all"]
    tenant = await Tenant.select(Tenant.id).where(Tenant.shop_domain == SHOP).first()
    assert tenant is not None
    ada = seen["subscribed"][ADA]["id"]
    state = await Subscription.select(Subscription.state).where(Subscription.id == ada).first()
    assert state == {"state": "unsubscribed"}
    jobs = (
        await NotificationJob.select(NotificationJob.state).where(NotificationJob.subscription == ada).run()
    )
    assert [job["state"] for job in jobs] == ["sent"]
    kinds = await Subscription.raw(
        "SELECT kind, source FROM consent_events WHERE subscription = {} ORDER BY id", ada
    )
    assert [(k["kind"], k["source"]) for k in kinds if k["kind"] != "confirmation-sent"] == [
        ("subscribed", "storefront"),
        ("confirmed", "email-link"),
        ("unsubscribed", "list-unsubscribe"),
    ]


def _sms_journey(ports: Ports) -> list[dict[str, Any]]:
    base = f"http://127.0.0.1:{ports.sandbox}"
    with httpx.Client(timeout=10.0) as client:
        form = {
            "variant_id": VARIANT_ID,
            "channel": "sms",
            "phone": "(415) 555-2671",
            "country": "US",
            "consent": True,
        }
        signup = client.post(f"{base}/store/apps/proxy/subscriptions", json=form)
        assert signup.status_code == 201, signup.text
        # The sandbox's Twilio signs each inbound message as Twilio does, with our public URL.
        return [
            client.post(f"{base}/twilio/inbound", json={"from": "+14155552671", "body": body}).json()
            for body in ("Stop", "START")
        ]


async def test_sms_stop_and_start_through_twilio(stack: Stack, engine: object) -> None:
    answers = await asyncio.to_thread(_sms_journey, stack.ports)
    assert [answer["status"] for answer in answers] == [200, 200], answers
    assert all(answer["body"].endswith("<Response/>") for answer in answers)  # Twilio answers these itself
    tenant = await Tenant.select(Tenant.id).where(Tenant.shop_domain == SHOP).first()
    assert tenant is not None
    rows = await Subscription.raw(
        "SELECT s.state, e.kind, e.source FROM subscriptions s JOIN consent_events e ON e.subscription = s.id"
        " WHERE s.tenant = {} AND s.channel = 'sms' ORDER BY e.id",
        tenant["id"],
    )
    assert [(row["kind"], row["source"]) for row in rows] == [
        ("subscribed", "storefront"),
        ("unsubscribed", "sms-keyword"),
        ("resubscribed", "sms-keyword"),
    ]
    assert rows[0]["state"] == "confirmed"
