"""The store's payloads and timestamps, and the webhook and proxy signing, with a fixed clock."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from restock_common.signatures import verify_app_proxy, verify_shopify_webhook
from restock_sandbox.shopify.proxy import signed_params
from restock_sandbox.shopify.store import LevelIn, ProductIn, Store, VariantIn
from restock_sandbox.shopify.webhooks import build_webhook


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2025, 6, 1, 12, 0, 0, 250_000, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_level_timestamps_strictly_increase_and_carry_the_shop_offset() -> None:
    clock = Clock()
    store = Store("s.myshopify.com", clock)
    stamps = [
        store.set_level(LevelIn(inventory_item_id=1, location_id=2, available=n))["updated_at"]
        for n in range(3)
    ]
    assert stamps == ["2025-06-01T08:00:00-04:00", "2025-06-01T08:00:01-04:00", "2025-06-01T08:00:02-04:00"]
    clock.now += timedelta(minutes=1)
    assert store.set_level(LevelIn(inventory_item_id=1, location_id=2, available=9))["updated_at"] == (
        "2025-06-01T08:01:00-04:00"
    )
    # Another level has its own sequence.
    other = store.set_level(LevelIn(inventory_item_id=1, location_id=3, available=1))
    assert other["updated_at"] == "2025-06-01T08:01:00-04:00"


def test_variant_quantity_sums_every_location() -> None:
    store = Store("s.myshopify.com", Clock())
    store.set_level(LevelIn(inventory_item_id=7, location_id=1, available=2))
    store.set_level(LevelIn(inventory_item_id=7, location_id=2, available=3))
    payload = store.put_product(
        5, ProductIn(title="Tee", variants=[VariantIn(id=6, title="S", inventory_item_id=7)])
    )
    assert payload["variants"][0]["inventory_quantity"] == 5
    assert payload["admin_graphql_api_id"] == "gid://shopify/Product/5"


def test_webhook_is_signed_over_its_exact_body() -> None:
    webhook = build_webhook("secret", "s.myshopify.com", "products/update", {"id": 1}, Clock()())
    assert json.loads(webhook.body) == {"id": 1}
    assert verify_shopify_webhook("secret", webhook.body, webhook.headers["X-Shopify-Hmac-Sha256"])
    assert not verify_shopify_webhook("secret", webhook.body + b" ", webhook.headers["X-Shopify-Hmac-Sha256"])
    assert webhook.headers["X-Shopify-Triggered-At"] == "2025-06-01T12:00:00.250000Z"


def test_proxy_params_are_signed_and_ignore_a_callers_signature() -> None:
    params = signed_params("secret", "s.myshopify.com", Clock()(), [("signature", "forged"), ("ref", "x")])
    assert [k for k, _ in params].count("signature") == 1
    assert verify_app_proxy("secret", params)
    assert dict(params)["timestamp"] == str(int(Clock()().timestamp()))
