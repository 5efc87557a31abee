"""Signatures: Shopify's documented App Proxy vector, webhook HMAC round trips and tampering."""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import parse_qsl

import pytest

from restock_common.signatures import (
    app_proxy_signature,
    contact_hash,
    shopify_webhook_hmac,
    twilio_signature,
    verify_app_proxy,
    verify_shopify_webhook,
    verify_twilio,
)

# The example of shopify.dev "Authenticate app proxies" (shared secret "hush").
SHOPIFY_PROXY_QUERY = (
    "extra=1&extra=2&shop=shop-name.myshopify.com&logged_in_customer_id=1"
    "&path_prefix=%2Fapps%2Fawesome_reviews&timestamp=1317327555"
    "&signature=4c68c8624d737112c91818c11017d24d334b524cb5c2b8ba08daa056f7395ddb"
)


def test_app_proxy_signature_matches_shopify_documented_example() -> None:
    pairs = parse_qsl(SHOPIFY_PROXY_QUERY, keep_blank_values=True)
    assert app_proxy_signature("hush", pairs) == dict(pairs)["signature"]
    assert verify_app_proxy("hush", pairs)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda q: q.replace("shop-name", "other-shop"),
        lambda q: q.replace("extra=2", "extra=3"),
        lambda q: q.replace("timestamp=1317327555", "timestamp=1317327556"),
        lambda q: q.split("&signature=")[0],  # no signature at all
        lambda q: q + "&signature=abc",  # two signatures
        lambda q: q + "&admin=1",  # an added parameter
    ],
)
def test_app_proxy_rejects_any_change(tamper) -> None:
    assert not verify_app_proxy("hush", parse_qsl(tamper(SHOPIFY_PROXY_QUERY), keep_blank_values=True))


def test_app_proxy_rejects_wrong_secret() -> None:
    assert not verify_app_proxy("not-hush", parse_qsl(SHOPIFY_PROXY_QUERY, keep_blank_values=True))


def test_webhook_hmac_is_base64_hmac_sha256_of_raw_body() -> None:
    body = b'{"inventory_item_id":1,"available":5}'
    expected = base64.b64encode(hmac.new(b"secret", body, hashlib.sha256).digest()).decode()
    assert shopify_webhook_hmac("secret", body) == expected
    assert verify_shopify_webhook("secret", body, expected)


@pytest.mark.parametrize("header", [None, "", "bm90LWl0", "garbage with spaces"])
def test_webhook_hmac_rejects_missing_or_wrong_header(header) -> None:
    assert not verify_shopify_webhook("secret", b"{}", header)


def test_webhook_hmac_rejects_truncated_body() -> None:
    body = b'{"inventory_item_id":1,"available":5}'
    assert not verify_shopify_webhook("secret", body[:-3], shopify_webhook_hmac("secret", body))


def test_twilio_signature_round_trip_and_tampering() -> None:
    url = "https://example.com/twilio/inbound"
    params = {"From": "+15005550006", "Body": "STOP", "To": "+15005550001"}
    signature = twilio_signature("token", url, params)
    assert verify_twilio("token", url, params, signature)
    assert not verify_twilio("token", url, {**params, "Body": "START"}, signature)
    assert not verify_twilio("token", url + "?x=1", params, signature)
    assert not verify_twilio("token", url, params, None)


def test_contact_hash_normalises_case_and_space() -> None:
    assert contact_hash(" Ada@Example.com ") == contact_hash("ada@example.com")
    assert contact_hash("ada@example.com") != contact_hash("bob@example.com")
    assert "ada" not in contact_hash("ada@example.com")
