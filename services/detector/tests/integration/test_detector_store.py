"""The PostgreSQL store under concurrency: webhooks for one variant, processed at the same moment on the real
PostgreSQL, are decided one after the other (the variant row lock), so a restock is detected exactly once."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from restock_common import signatures
from restock_common.db.tables import RestockEvent, Rule, Tenant, VariantState
from restock_common.rules import Rules, encode_rules
from restock_common.settings import Settings
from restock_detector.handler import Result, WebhookHandler
from restock_detector.relay import OutboxWakeup
from restock_detector.store import PostgresWebhookStore

pytestmark = pytest.mark.integration

SHOP = "detector-store.myshopify.com"
VARIANTS = 12


def _headers(secret: str, topic: str, body: bytes, webhook_id: str) -> dict[str, str]:
    return {
        "X-Shopify-Topic": topic,
        "X-Shopify-Shop-Domain": SHOP,
        "X-Shopify-Webhook-Id": webhook_id,
        "X-Shopify-Hmac-Sha256": signatures.shopify_webhook_hmac(secret, body),
    }


async def test_concurrent_webhooks_for_one_variant_restock_it_once(
    settings: Settings, engine: Any, clean_db: None
) -> None:
    tenant = Tenant(shop_domain=SHOP)
    await tenant.save()
    await Rule(tenant=tenant.id, body=encode_rules(Rules(debounce_seconds=0))).save()
    secret = settings.shopify_api_secret.get_secret_value()
    handler = WebhookHandler(
        secret, PostgresWebhookStore(engine.pool), OutboxWakeup(), lambda: datetime.now(UTC)
    )

    async def send(topic: str, payload: object, webhook_id: str) -> Result:
        body = json.dumps(payload).encode()
        return await handler.handle_webhook(_headers(secret, topic, body, webhook_id), body)

    # Each variant has two inventory items (two locations' worth of stock arriving at once).
    product = {
        "id": 1,
        "title": "Tee",
        "variants": [
            {"id": 100 + n, "title": f"V{n}", "inventory_item_id": item}
            for n in range(VARIANTS)
            for item in (1000 + 2 * n, 1001 + 2 * n)
        ],
    }
    assert (await send("products/update", product, "product")).status_code == 200

    at = datetime(2026, 3, 1, tzinfo=UTC)
    for n in range(VARIANTS):  # every variant known and sold out: its state row exists before the race
        zero = {
            "inventory_item_id": 1000 + 2 * n,
            "location_id": 7,
            "available": 0,
            "updated_at": at.isoformat(),
        }
        assert (await send("inventory_levels/update", zero, f"zero-{n}")).body == {"status": "still_out"}
    at += timedelta(minutes=1)
    levels = [
        {
            "inventory_item_id": 1000 + 2 * n + k,
            "location_id": 7,
            "available": 3 + k,
            "updated_at": (at + timedelta(seconds=k)).isoformat(),
        }
        for n in range(VARIANTS)
        for k in (0, 1)
    ]
    results = await asyncio.gather(
        *(send("inventory_levels/update", level, f"level-{i}") for i, level in enumerate(levels))
    )

    assert all(result.status_code == 200 for result in results)
    statuses = sorted(str(result.body["status"]) for result in results)
    assert statuses == ["restock"] * VARIANTS + ["was_available"] * VARIANTS
    restocked = sorted(row["variant_id"] for row in await RestockEvent.select(RestockEvent.variant_id))
    assert restocked == [100 + n for n in range(VARIANTS)]
    assert {row["available"] for row in await VariantState.select(VariantState.available)} == {7}
