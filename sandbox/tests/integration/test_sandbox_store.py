"""The sandbox Shopify store over the wire: signed webhooks to a receiver, and App Proxy forwarding."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import AsyncIterator
from datetime import datetime

import httpx
import pytest

from restock_common.signatures import verify_app_proxy, verify_shopify_webhook

pytestmark = pytest.mark.integration

PRODUCT = {
    "title": "Demo Hoodie",
    "variants": [
        {"id": 2001, "title": "M", "sku": "HOODIE-M", "inventory_item_id": 3001},
        {"id": 2002, "title": "L", "inventory_item_id": 3002, "price": "49.00"},
    ],
}
WEBHOOK_HEADERS = (
    "content-type",
    "x-shopify-topic",
    "x-shopify-shop-domain",
    "x-shopify-webhook-id",
    "x-shopify-event-id",
    "x-shopify-triggered-at",
    "x-shopify-api-version",
    "x-shopify-hmac-sha256",
)


@pytest.fixture
async def http(sandbox) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sandbox.url, timeout=10) as client:
        yield client


async def test_product_and_inventory_changes_deliver_signed_webhooks(
    sandbox, receiver, http: httpx.AsyncClient
) -> None:
    secret, shop = (
        sandbox.settings.shopify_api_secret.get_secret_value(),
        sandbox.settings.sandbox_shop_domain,
    )
    put = await http.put("/store/products/1001", json=PRODUCT)
    assert put.status_code == 200, put.text
    assert put.json()["delivered"] is True
    assert (put.json()["status"], put.json()["body"]) == (200, {"ok": True})
    level = await http.post(
        "/store/inventory_levels/set", json={"inventory_item_id": 3001, "location_id": 4001, "available": 5}
    )
    assert level.status_code == 200
    assert level.json()["delivered"] is True

    assert [r.path for r in receiver.requests] == ["/webhooks/shopify", "/webhooks/shopify"]
    for request in receiver.requests:
        assert request.method == "POST"
        assert all(name in request.headers for name in WEBHOOK_HEADERS), request.headers
        assert verify_shopify_webhook(secret, request.body, request.headers["x-shopify-hmac-sha256"])
        assert not verify_shopify_webhook(
            "another-secret", request.body, request.headers["x-shopify-hmac-sha256"]
        )
        assert request.headers["x-shopify-shop-domain"] == shop
        assert request.headers["x-shopify-api-version"] == "2025-01"
        assert request.headers["content-type"] == "application/json"
    product_hook, level_hook = receiver.requests
    assert product_hook.headers["x-shopify-topic"] == "products/create"  # a new product
    assert level_hook.headers["x-shopify-topic"] == "inventory_levels/update"
    assert product_hook.headers["x-shopify-webhook-id"] != level_hook.headers["x-shopify-webhook-id"]

    product = json.loads(product_hook.body)
    assert (product["id"], product["title"], product["handle"], product["status"]) == (
        1001,
        "Demo Hoodie",
        "demo-hoodie",
        "active",
    )
    assert [(v["id"], v["product_id"], v["sku"], v["inventory_item_id"]) for v in product["variants"]] == [
        (2001, 1001, "HOODIE-M", 3001),
        (2002, 1001, None, 3002),
    ]
    inventory = json.loads(level_hook.body)
    assert (inventory["inventory_item_id"], inventory["location_id"], inventory["available"]) == (
        3001,
        4001,
        5,
    )
    assert inventory["admin_graphql_api_id"] == "gid://shopify/InventoryLevel/4001?inventory_item_id=3001"
    assert datetime.fromisoformat(inventory["updated_at"]).utcoffset() is not None

    products = (await http.get("/store/products")).json()
    assert [v["inventory_quantity"] for v in products[0]["variants"]] == [5, 0]
    log = (await http.get("/store/webhooks")).json()
    assert [(d["topic"], d["status"], d["delivered"]) for d in log] == [
        ("products/create", 200, True),
        ("inventory_levels/update", 200, True),
    ]
    assert log[0]["webhook_id"] == product_hook.headers["x-shopify-webhook-id"]
    await http.put("/store/products/1001", json=PRODUCT)
    assert receiver.requests[-1].headers["x-shopify-topic"] == "products/update"  # it exists now


async def test_level_updated_at_strictly_increases_even_within_a_second(
    sandbox, receiver, http: httpx.AsyncClient
) -> None:
    for available in (0, 3, 0, 7):
        body = {"inventory_item_id": 3001, "location_id": 4001, "available": available}
        await http.post("/store/inventory_levels/set", json=body)
    stamps = [datetime.fromisoformat(json.loads(r.body)["updated_at"]) for r in receiver.requests]
    assert len(stamps) == 4
    assert all(earlier < later for earlier, later in itertools.pairwise(stamps))


async def test_the_receivers_refusal_is_reported(sandbox, receiver, http: httpx.AsyncClient) -> None:
    receiver.answers["/webhooks/shopify"] = (401, {"detail": "invalid hmac"})
    response = await http.post(
        "/store/inventory_levels/set", json={"inventory_item_id": 1, "location_id": 2, "available": 1}
    )
    assert response.status_code == 200
    outcome = response.json()
    assert (outcome["delivered"], outcome["status"], outcome["body"]) == (
        False,
        401,
        {"detail": "invalid hmac"},
    )
    assert outcome["inventory_level"]["available"] == 1


async def test_bad_store_input_is_400(sandbox, receiver, http: httpx.AsyncClient) -> None:
    assert (await http.put("/store/products/1", json={"title": "No variants"})).status_code == 400
    assert (await http.post("/store/inventory_levels/set", json={"available": 1})).status_code == 400
    assert receiver.requests == []


async def test_app_proxy_forwards_with_a_signature_the_app_accepts(
    sandbox, receiver, http: httpx.AsyncClient
) -> None:
    secret, shop = (
        sandbox.settings.shopify_api_secret.get_secret_value(),
        sandbox.settings.sandbox_shop_domain,
    )
    receiver.answers["/proxy/subscriptions"] = (201, {"id": 1, "state": "confirmed"})
    signup = {"variant_id": 2001, "email": "ada@example.com"}
    response = await http.post("/store/apps/proxy/subscriptions", params={"ref": "widget"}, json=signup)
    assert (response.status_code, response.json()) == (201, {"id": 1, "state": "confirmed"})

    (forwarded,) = receiver.requests
    assert (forwarded.method, forwarded.path) == ("POST", "/proxy/subscriptions")
    assert json.loads(forwarded.body) == signup
    assert verify_app_proxy(secret, forwarded.query)
    assert not verify_app_proxy("another-secret", forwarded.query)
    params = dict(forwarded.query)
    assert (params["shop"], params["logged_in_customer_id"], params["path_prefix"], params["ref"]) == (
        shop,
        "",
        "/apps/restock",
        "widget",
    )
    assert abs(int(params["timestamp"]) - time.time()) < 30
    assert forwarded.headers["x-forwarded-for"] == "127.0.0.1"


async def test_app_proxy_passes_the_apps_refusal_through(sandbox, receiver, http: httpx.AsyncClient) -> None:
    receiver.answers["/proxy/subscriptions"] = (400, {"detail": "invalid email"})
    response = await http.post("/store/apps/proxy/subscriptions", json={"variant_id": 1, "email": "nope"})
    assert (response.status_code, response.json()) == (400, {"detail": "invalid email"})


async def test_an_order_delivers_a_signed_orders_create_webhook_in_shopifys_shape(
    sandbox, receiver, http: httpx.AsyncClient
) -> None:
    await http.put("/store/products/1001", json=PRODUCT)
    receiver.requests.clear()
    order = {
        "line_items": [
            {"variant_id": 2001, "quantity": 2, "price": "39.50"},
            {"variant_id": 2002, "price": 49},
        ],
        "email": "ada@example.com",
        "phone": "+14155550123",
        "currency": "EUR",
    }

    first = await http.post("/store/orders", json=order)
    second = await http.post(
        "/store/orders", json={"line_items": [{"variant_id": 2002}], "email": "ADA@example.com"}
    )

    assert first.status_code == 200
    assert first.json()["delivered"] is True
    (request, _) = receiver.requests
    assert request.headers["x-shopify-topic"] == "orders/create"
    secret = sandbox.settings.shopify_api_secret.get_secret_value()
    assert verify_shopify_webhook(secret, request.body, request.headers["x-shopify-hmac-sha256"])
    payload = json.loads(request.body)
    assert payload == first.json()["order"]
    assert payload["admin_graphql_api_id"] == f"gid://shopify/Order/{payload['id']}"
    assert (payload["email"], payload["phone"], payload["currency"], payload["total_price"]) == (
        "ada@example.com", "+14155550123", "EUR", "128.00"
    )  # fmt: skip
    assert [
        (li["variant_id"], li["product_id"], li["quantity"], li["price"]) for li in payload["line_items"]
    ] == [
        (2001, 1001, 2, "39.50"),
        (2002, 1001, 1, "49.00"),
    ]
    assert all(isinstance(li["id"], int) for li in payload["line_items"])
    assert payload["customer"]["email"] == "ada@example.com"
    later = second.json()["order"]
    assert later["id"] > payload["id"]
    assert later["customer"]["id"] == payload["customer"]["id"]  # the same shopper, whatever the case
    assert [o["id"] for o in (await http.get("/store/orders")).json()] == [payload["id"], later["id"]]


async def test_an_order_for_an_unknown_variant_is_refused_and_sends_nothing(
    receiver, http: httpx.AsyncClient
) -> None:
    await http.put("/store/products/1001", json=PRODUCT)
    receiver.requests.clear()
    response = await http.post("/store/orders", json={"line_items": [{"variant_id": 999}]})
    assert response.status_code == 400
    assert "999" in response.json()["detail"]
    bad_price = await http.post("/store/orders", json={"line_items": [{"variant_id": 2001, "price": "abc"}]})
    assert bad_price.status_code == 400
    assert "price" in bad_price.json()["detail"]
    assert receiver.requests == []
    assert (await http.get("/store/orders")).json() == []
