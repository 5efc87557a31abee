"""The demo store of ``make run``: one product, one sold-out variant, one subscriber; and the restock.

``python -m restock_sandbox.demo restock`` (``make demo-restock``) sets the demo variant's stock to 5
through the sandbox store, which sends Shopify's signed webhook to the detector, and waits for the alert
in the sandbox inbox, printing the webhook-to-inbox time.
"""

from __future__ import annotations

import argparse
import sys
import time

import httpx

from restock_sandbox.stack import Ports

PRODUCT_ID = 1001
VARIANT_ID = 2001
INVENTORY_ITEM_ID = 3001
LOCATION_ID = 4001
SUBSCRIBER = "shopper@example.com"


def _base(ports: Ports) -> str:
    return f"http://127.0.0.1:{ports.sandbox}"


def _check(response: httpx.Response, what: str) -> dict[str, object]:
    if response.status_code >= 400:
        raise RuntimeError(f"{what}: HTTP {response.status_code} {response.text}")
    body: dict[str, object] = response.json()
    return body


def set_level(client: httpx.Client, ports: Ports, available: int) -> dict[str, object]:
    """Set the demo variant's level; the sandbox delivers ``inventory_levels/update``."""
    body = {"inventory_item_id": INVENTORY_ITEM_ID, "location_id": LOCATION_ID, "available": available}
    return _check(client.post(f"{_base(ports)}/store/inventory_levels/set", json=body), "set level")


def seed(ports: Ports, subscriber: str = SUBSCRIBER) -> None:
    """The demo product (sold out) and one confirmed subscriber, through the real webhook and proxy paths."""
    with httpx.Client(timeout=10.0) as client:
        product = {
            "title": "Demo Hoodie",
            "variants": [
                {"id": VARIANT_ID, "title": "M", "sku": "HOODIE-M", "inventory_item_id": INVENTORY_ITEM_ID}
            ],
        }
        _check(client.put(f"{_base(ports)}/store/products/{PRODUCT_ID}", json=product), "create product")
        set_level(client, ports, 0)
        signup = {"variant_id": VARIANT_ID, "email": subscriber}
        _check(client.post(f"{_base(ports)}/store/apps/proxy/subscriptions", json=signup), "subscribe")


def inbox(client: httpx.Client, ports: Ports, to: str | None = None) -> list[dict[str, object]]:
    """Messages the sandbox SMTP server received (optionally only those to ``to``)."""
    params = {"to": to} if to else None
    messages: list[dict[str, object]] = client.get(f"{_base(ports)}/inbox", params=params).json()
    return messages


def restock(ports: Ports, available: int = 5, timeout: float = 30.0) -> float | None:
    """Restock the demo variant; seconds from the webhook to the alert in the inbox, or None if none came."""
    with httpx.Client(timeout=10.0) as client:
        before = len(inbox(client, ports, SUBSCRIBER))
        set_level(client, ports, 0)
        started = time.monotonic()
        set_level(client, ports, available)
        deadline = started + timeout
        while time.monotonic() < deadline:
            if len(inbox(client, ports, SUBSCRIBER)) > before:
                return time.monotonic() - started
            time.sleep(0.02)
    return None


def banner(ports: Ports, token: str, dropped: dict[str, str] | None = None) -> str:
    """Where to look, printed by ``make run`` once everything is ready."""
    missing = "".join(f"  NOT RUNNING: {problem}\n" for problem in (dropped or {}).values())
    return (
        missing
        + f"""
Restock is running.
  admin-api       http://127.0.0.1:{ports.admin}   (/healthz, /readyz, storefront /proxy/subscriptions)
  detector        http://127.0.0.1:{ports.detector}   (POST /webhooks/shopify)
  dispatcher      http://127.0.0.1:{ports.dispatcher}/readyz
  sender (email)  http://127.0.0.1:{ports.sender_email}/readyz
  sender (sms)    http://127.0.0.1:{ports.sender_sms}/readyz
  sandbox inbox   http://127.0.0.1:{ports.sandbox}/inbox   (SMTP on :{ports.smtp})
  sandbox store   http://127.0.0.1:{ports.sandbox}/store/products   (orders: POST /store/orders)
  sandbox Admin   http://127.0.0.1:{ports.sandbox}/admin/api/2025-01/graphql.json
                  (header X-Shopify-Access-Token: {token})
  sandbox Twilio  http://127.0.0.1:{ports.sandbox}/twilio/messages   (API base .../twilio)
Demo: product {PRODUCT_ID}, variant {VARIANT_ID} is sold out and {SUBSCRIBER} is subscribed.
Restock it in another terminal:  make demo-restock
Ctrl-C stops everything.
"""
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m restock_sandbox.demo")
    parser.add_argument("command", choices=["seed", "restock"])
    parser.add_argument("--available", type=int, default=5)
    args = parser.parse_args()
    ports = Ports()
    if args.command == "seed":
        seed(ports)
        print("seeded the demo store")
        return
    elapsed = restock(ports, args.available)
    if elapsed is None:
        print(
            "no alert arrived in 30 s. Within the cooldown (24 h by default) a variant's second restock is "
            "not notified again, by design: restart `make run` for a fresh demo.",
            file=sys.stderr,
        )
        sys.exit(1)
    print(f"alert for variant {VARIANT_ID} reached the inbox {elapsed * 1000:.0f} ms after the webhook")
    print(f"see it: curl -s http://127.0.0.1:{ports.sandbox}/inbox")


if __name__ == "__main__":
    main()
