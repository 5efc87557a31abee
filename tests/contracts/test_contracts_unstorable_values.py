"""Bad input a signed peer can send that the columns cannot hold (an int4 level beyond 2^31, a bigint id
beyond 2^63, a NUL in text): each is refused with a 4xx and a reason, never a database error and a 500.
These were 500s once, found by the fuzzers of ``test_contracts_http``; and a 5xx, should one happen, leaves
an ERROR line (``restock_common.service.log_server_error``)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import httpx
import pytest

from restock_common.signatures import shopify_webhook_hmac, twilio_signature
from restock_sandbox.shopify.proxy import signed_params
from restock_sandbox.stack import Stack

pytestmark = pytest.mark.e2e

FUZZ_SHOP = "contracts-fuzz.myshopify.com"
WEBHOOK_SHOP = "contracts-webhooks.myshopify.com"
NOW = datetime.now(UTC).isoformat()


def _level(**fields: object) -> dict[str, object]:
    return {"inventory_item_id": 1, "location_id": 1, "available": 1, "updated_at": NOW, **fields}


def _product(product_id: int = 1, **variant: object) -> dict[str, object]:
    return {
        "id": product_id,
        "title": "T",
        "variants": [{"id": 1, "title": "M", "inventory_item_id": 1, **variant}],
    }


# (topic, payload): ``available`` is int4; ids are bigint; text cannot hold NUL.
WEBHOOK_CASES = [
    ("inventory_levels/update", _level(available=2**31)),
    ("inventory_levels/update", _level(available=-(2**31) - 1)),
    ("inventory_levels/update", _level(inventory_item_id=2**63)),
    ("inventory_levels/update", _level(location_id=2**63)),
    ("products/update", _product(product_id=2**63)),
    ("products/update", _product(id=2**63)),
    ("products/update", _product(inventory_item_id=2**63)),
    ("products/update", {**_product(), "title": "Hoodie\x00"}),
    ("products/update", _product(sku="SKU\x00")),
]


def _webhook(stack: Stack, secret: str, topic: str, payload: dict[str, object]) -> httpx.Response:
    body = json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Shop-Domain": WEBHOOK_SHOP,
        "X-Shopify-Webhook-Id": str(uuid.uuid4()),
        "X-Shopify-Event-Id": str(uuid.uuid4()),
        "X-Shopify-Triggered-At": NOW,
        "X-Shopify-Hmac-Sha256": shopify_webhook_hmac(secret, body),
    }
    return httpx.post(
        f"http://127.0.0.1:{stack.ports.detector}/webhooks/shopify", content=body, headers=headers
    )


@pytest.mark.parametrize(("topic", "payload"), WEBHOOK_CASES)
def test_signed_webhook_with_unstorable_values_is_a_4xx(
    stack: Stack, contracts_env: dict[str, str], topic: str, payload: dict[str, object]
) -> None:
    response = _webhook(stack, contracts_env["RESTOCK_SHOPIFY_API_SECRET"], topic, payload)
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    assert response.json().get("detail"), response.text


def test_signed_signup_with_nul_in_consent_text_version_is_a_400(
    stack: Stack, contracts_env: dict[str, str]
) -> None:
    params = signed_params(contracts_env["RESTOCK_SHOPIFY_API_SECRET"], FUZZ_SHOP, datetime.now(UTC))
    form = {"variant_id": 1, "email": "nul@example.com", "consent_text_version": "v\x00"}
    response = httpx.post(
        f"http://127.0.0.1:{stack.ports.admin}/proxy/subscriptions", params=params, json=form
    )
    assert response.status_code == 400, (response.status_code, response.text)


def test_signed_twilio_status_with_nul_in_message_sid_is_a_4xx(
    stack: Stack, contracts_env: dict[str, str]
) -> None:
    url = f"http://127.0.0.1:{stack.ports.admin}/twilio/status"
    form = {"MessageSid": "SM\x00", "MessageStatus": "delivered"}
    signature = twilio_signature(contracts_env["RESTOCK_TWILIO_AUTH_TOKEN"], url, form)
    response = httpx.post(url, data=form, headers={"X-Twilio-Signature": signature})
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
