"""The GraphQL Admin API client: parsing of Shopify's answers (``admin_graphql``), and the adapter
(``admin_api``) against a scripted Shopify behind ``httpx.MockTransport`` (real HTTP objects, no network):
throttling from ``throttleStatus``, retries of THROTTLED / 429 / 5xx, bad tokens not retried."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec
import pytest

from restock_detector import admin_graphql as gql
from restock_detector import throttle
from restock_detector.admin_api import AdminApiError, ShopifyAdminApi, api_base_url
from restock_detector.ports import ShopAccess

SHOP = ShopAccess(7, "unit-shop.myshopify.com", "shpat_unit")
AT = "2026-03-01T12:00:00Z"


def cost(requested: float = 10.0, available: float = 1990.0, maximum: float = 2000.0) -> dict[str, Any]:
    return {
        "cost": {
            "requestedQueryCost": requested,
            "actualQueryCost": requested,
            "throttleStatus": {
                "maximumAvailable": maximum,
                "currentlyAvailable": available,
                "restoreRate": 100.0,
            },
        }
    }


def level(location: int, available: int | None, updated_at: str = AT) -> dict[str, Any]:
    quantities = [] if available is None else [{"name": "available", "quantity": available}]
    return {
        "node": {
            "location": {"id": f"gid://shopify/Location/{location}"},
            "quantities": quantities,
            "updatedAt": updated_at,
        }
    }


def variant_node(variant: int, item: int, *levels: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"gid://shopify/ProductVariant/{variant}",
        "product": {"id": "gid://shopify/Product/1"},
        "inventoryItem": {
            "id": f"gid://shopify/InventoryItem/{item}",
            "inventoryLevels": {"edges": list(levels)},
        },
    }


def raw(data: object) -> msgspec.Raw:
    return msgspec.Raw(json.dumps(data).encode())


@pytest.mark.parametrize(
    "query",
    [
        gql.INVENTORY_ITEM_QUERY,
        gql.VARIANT_LEVELS_QUERY,
        gql.VARIANTS_PAGE_QUERY,
        gql.BULK_VARIANTS_QUERY,
        gql.BULK_RUN_MUTATION,
        gql.BULK_STATUS_QUERY,
    ],
)
def test_every_operation_is_balanced(query: str) -> None:
    depth = 0
    for char in query:
        depth += {"{": 1, "}": -1}.get(char, 0)
        assert depth >= 0
    assert depth == 0


# --- parsing ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("global_id", "number"),
    [
        ("gid://shopify/InventoryItem/123", 123),
        ("gid://shopify/InventoryLevel/9?inventory_item_id=4", 9),
        ("gid://shopify/Location/0", 0),
    ],
)
def test_global_ids_give_their_number(global_id: str, number: int) -> None:
    assert gql.gid_number(global_id) == number


@pytest.mark.parametrize("bad", ["123", "gid://shopify/Variant/abc", "gid://other/X/1", ""])
def test_what_is_not_a_global_id_is_a_response_error(bad: str) -> None:
    with pytest.raises(gql.ResponseError):
        gql.gid_number(bad)


def test_an_items_variant_is_read() -> None:
    data = {
        "inventoryItem": {
            "id": "gid://shopify/InventoryItem/3001",
            "variant": {
                "id": "gid://shopify/ProductVariant/2001",
                "product": {"id": "gid://shopify/Product/1001"},
            },
        }
    }
    assert gql.parse_item_owner(raw(data)) == gql.ItemOwner(2001, 1001)
    assert gql.parse_item_owner(raw({"inventoryItem": None})) is None


def test_a_variants_levels_keep_only_available_quantities() -> None:
    node = variant_node(2001, 3001, level(4001, 3), level(4002, None), level(4003, -2))
    node["inventoryQuantity"] = 1
    parsed = gql.parse_variant_levels(raw({"productVariant": node}))
    at = datetime(2026, 3, 1, 12, tzinfo=UTC)
    assert parsed == gql.CatalogVariant(
        2001, 1, 3001, (gql.Level(3001, 4001, 3, at), gql.Level(3001, 4003, -2, at))
    )
    assert gql.parse_variant_levels(raw({"productVariant": None})) is None


def test_a_page_of_variants_and_its_cursor() -> None:
    data = {
        "productVariants": {
            "pageInfo": {"hasNextPage": True, "endCursor": "eyJsYXN0X2lkIjoyfQ=="},
            "edges": [
                {"cursor": "a", "node": variant_node(1, 11, level(5, 0))},
                {"cursor": "b", "node": variant_node(2, 12)},
            ],
        }
    }
    page = gql.parse_variants_page(raw(data))
    assert [(v.variant_id, v.inventory_item_id, len(v.levels)) for v in page.variants] == [
        (1, 11, 1),
        (2, 12, 0),
    ]
    assert (page.has_next_page, page.end_cursor) == (True, "eyJsYXN0X2lkIjoyfQ==")


@pytest.mark.parametrize(
    "data",
    [
        {"productVariants": {"edges": []}},  # no pageInfo
        {"productVariants": {"pageInfo": {"hasNextPage": False}, "edges": [{"node": {"id": 5}}]}},
        None,
    ],
)
def test_an_answer_of_the_wrong_shape_is_a_response_error(data: object) -> None:
    with pytest.raises(gql.ResponseError):
        gql.parse_variants_page(None if data is None else raw(data))


def test_envelopes_give_error_codes_and_cost() -> None:
    throttled = {
        "errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED", "documentation": "x"}}],
        "extensions": cost(requested=500.0, available=20.0),
    }
    answer = gql.decode_envelope(json.dumps(throttled).encode())
    assert answer.error_codes == ("THROTTLED",)
    assert answer.cost is not None
    assert answer.cost.throttle_status is not None
    assert answer.cost.throttle_status.currently_available == 20.0
    invalid_token = gql.decode_envelope(b'{"errors": "[API] Invalid API key or access token"}')
    assert (invalid_token.error_codes, invalid_token.error_messages) == (
        (),
        ("[API] Invalid API key or access token",),
    )


def test_bulk_results_are_read_line_by_line_with_children_after_their_parents() -> None:
    lines = [
        {
            "id": "gid://shopify/ProductVariant/1",
            "product": {"id": "gid://shopify/Product/9"},
            "inventoryItem": {"id": "gid://shopify/InventoryItem/11"},
        },
        {
            "id": "gid://shopify/ProductVariant/2",
            "product": {"id": "gid://shopify/Product/9"},
            "inventoryItem": {"id": "gid://shopify/InventoryItem/12"},
        },
        # A child is after its parent, not necessarily right after it.
        {
            "location": {"id": "gid://shopify/Location/5"},
            "quantities": [{"name": "available", "quantity": 4}],
            "updatedAt": AT,
            "__parentId": "gid://shopify/ProductVariant/1",
        },
        {
            "location": {"id": "gid://shopify/Location/6"},
            "quantities": [{"name": "available", "quantity": 1}],
            "updatedAt": AT,
            "__parentId": "gid://shopify/InventoryItem/11",
        },
        {
            "location": {"id": "gid://shopify/Location/5"},
            "quantities": [],
            "updatedAt": AT,
            "__parentId": "gid://shopify/ProductVariant/2",
        },
    ]
    catalog = gql.BulkCatalog.empty()
    for line in lines:
        catalog.add_line(json.dumps(line).encode())
    catalog.add_line(b"")
    variants = catalog.catalog()
    assert [(v.variant_id, v.product_id, v.inventory_item_id) for v in variants] == [(1, 9, 11), (2, 9, 12)]
    assert [(lvl.location_id, lvl.available) for lvl in variants[0].levels] == [(5, 4), (6, 1)]
    assert variants[1].levels == ()


def test_a_bulk_child_before_its_parent_is_a_response_error() -> None:
    orphan = {
        "location": {"id": "gid://shopify/Location/5"},
        "quantities": [{"name": "available", "quantity": 1}],
        "updatedAt": AT,
        "__parentId": "gid://shopify/ProductVariant/77",
    }
    with pytest.raises(gql.ResponseError):
        gql.BulkCatalog.empty().add_line(json.dumps(orphan).encode())


def test_a_refused_bulk_operation_names_shopifys_reasons() -> None:
    data = {
        "bulkOperationRunQuery": {
            "bulkOperation": None,
            "userErrors": [
                {
                    "field": ["query"],
                    "message": "A bulk query operation for this app and shop is already in progress",
                }
            ],
        }
    }
    with pytest.raises(gql.ResponseError, match="already in progress"):
        gql.parse_bulk_run(raw(data))
    started = {
        "bulkOperationRunQuery": {
            "bulkOperation": {"id": "gid://shopify/BulkOperation/1", "status": "CREATED"},
            "userErrors": [],
        }
    }
    assert gql.parse_bulk_run(raw(started)).finished is False


@pytest.mark.parametrize(
    ("template", "url"),
    [
        ("https://{shop}", "https://unit-shop.myshopify.com"),
        ("http://127.0.0.1:8025", "http://127.0.0.1:8025"),
        ("http://127.0.0.1:8025/", "http://127.0.0.1:8025"),
    ],
)
def test_the_base_url_names_the_shop_in_production_only(template: str, url: str) -> None:
    assert api_base_url(template, SHOP.shop_domain) == url


# --- the adapter against a scripted Shopify ---------------------------------------------------------


class ScriptedShopify:
    """Answers each request with the next scripted response, and records what it was sent."""

    def __init__(self, *answers: httpx.Response | Callable[[httpx.Request], httpx.Response]) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        return answer(request) if callable(answer) else answer


class Sleeps:
    """The adapter's sleep and clock: records waits and moves the clock by them."""

    def __init__(self) -> None:
        self.now = 100.0
        self.waits: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.waits.append(round(seconds, 3))
        self.now += seconds

    def clock(self) -> float:
        return self.now


def client(shopify: ScriptedShopify, sleeps: Sleeps) -> ShopifyAdminApi:
    http = httpx.AsyncClient(transport=httpx.MockTransport(shopify))
    return ShopifyAdminApi("https://{shop}", http, clock=sleeps.clock, sleep=sleeps.sleep, jitter=lambda: 0.0)


def ok(data: object, **cost_kwargs: float) -> httpx.Response:
    return httpx.Response(200, json={"data": data, "extensions": cost(**cost_kwargs)})


ITEM_DATA = {
    "inventoryItem": {
        "id": "gid://shopify/InventoryItem/3",
        "variant": {"id": "gid://shopify/ProductVariant/2"},
    }
}


async def test_a_query_is_posted_with_the_token_header_and_variables() -> None:
    shopify, sleeps = ScriptedShopify(ok(ITEM_DATA)), Sleeps()
    assert await client(shopify, sleeps).item_owner(SHOP, 3) == gql.ItemOwner(2, None)
    [request] = shopify.requests
    assert str(request.url) == "https://unit-shop.myshopify.com/admin/api/2025-01/graphql.json"
    assert request.headers["X-Shopify-Access-Token"] == "shpat_unit"
    body = json.loads(request.content)
    assert body == {"query": gql.INVENTORY_ITEM_QUERY, "variables": {"id": "gid://shopify/InventoryItem/3"}}
    assert sleeps.waits == []


async def test_the_next_query_waits_for_the_bucket_to_refill() -> None:
    shopify, sleeps = ScriptedShopify(ok(ITEM_DATA, requested=3.0, available=0.0), ok(ITEM_DATA)), Sleeps()
    api = client(shopify, sleeps)
    await api.item_owner(SHOP, 3)
    await api.item_owner(SHOP, 3)
    assert sleeps.waits == [0.03]  # 3 points at 100/s


async def test_throttled_then_served() -> None:
    throttled = httpx.Response(
        200,
        json={
            "errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}],
            "extensions": cost(requested=250.0, available=50.0),
        },
    )
    shopify, sleeps = ScriptedShopify(throttled, ok(ITEM_DATA)), Sleeps()
    assert await client(shopify, sleeps).item_owner(SHOP, 3) == gql.ItemOwner(2, None)
    assert len(shopify.requests) == 2
    # The backoff is the restore arithmetic (200 points at 100/s); the pre-send wait then finds it full.
    assert sleeps.waits[0] == 2.0


async def test_429_honours_retry_after_and_5xx_backs_off() -> None:
    shopify = ScriptedShopify(
        httpx.Response(429, headers={"Retry-After": "1.5"}, text="Exceeded 2 calls per second"),
        httpx.Response(503, text="unavailable"),
        ok(ITEM_DATA),
    )
    sleeps = Sleeps()
    assert await client(shopify, sleeps).item_owner(SHOP, 3) == gql.ItemOwner(2, None)
    assert sleeps.waits == [1.5, 1.0]  # Retry-After, then the second attempt's exponential backoff


async def test_timeouts_are_retried_then_given_up() -> None:
    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    shopify, sleeps = ScriptedShopify(*[timeout] * throttle.MAX_ATTEMPTS), Sleeps()
    with pytest.raises(AdminApiError) as raised:
        await client(shopify, sleeps).item_owner(SHOP, 3)
    assert raised.value.failure is throttle.Failure.UNAVAILABLE
    assert len(shopify.requests) == throttle.MAX_ATTEMPTS
    assert sleeps.waits == [0.5, 1.0, 2.0, 4.0]


async def test_a_bad_token_is_not_retried_and_not_in_the_error() -> None:
    shopify = ScriptedShopify(
        httpx.Response(401, json={"errors": "[API] Invalid API key or access token (unrecognized login)"})
    )
    with pytest.raises(AdminApiError) as raised:
        await client(shopify, Sleeps()).item_owner(SHOP, 3)
    assert raised.value.failure is throttle.Failure.UNAUTHORIZED
    assert len(shopify.requests) == 1
    assert SHOP.access_token not in str(raised.value)
    assert SHOP.access_token not in repr(SHOP)


async def test_a_graphql_error_without_data_is_rejected_at_once() -> None:
    error = httpx.Response(
        200, json={"errors": [{"message": "Field 'x' doesn't exist", "extensions": {"code": "UNSUPPORTED"}}]}
    )
    shopify = ScriptedShopify(error)
    with pytest.raises(AdminApiError) as raised:
        await client(shopify, Sleeps()).item_owner(SHOP, 3)
    assert raised.value.failure is throttle.Failure.REJECTED
    assert "doesn't exist" in raised.value.detail


async def test_page_size_follows_the_cost_the_last_page_reported() -> None:
    page = {"productVariants": {"pageInfo": {"hasNextPage": False, "endCursor": None}, "edges": []}}
    shopify, sleeps = ScriptedShopify(ok(page, requested=100.0, available=1900.0)), Sleeps()
    api = client(shopify, sleeps)
    assert api.page_size(SHOP) == 10  # no status yet: the default guess
    await api.variants_page(SHOP, 10, None)
    assert api.cost_per_variant(SHOP.shop_domain) == 10.0
    assert api.page_size(SHOP) == 100  # half of 2000 points at 10 a variant
    assert json.loads(shopify.requests[0].content)["variables"] == {"first": 10, "after": None}


async def test_bulk_lines_are_streamed_without_the_token() -> None:
    body = b'{"id":"gid://shopify/ProductVariant/1"}\n{"id":"gid://shopify/ProductVariant/2"}\n'
    shopify = ScriptedShopify(httpx.Response(200, content=body))
    lines = [
        line async for line in client(shopify, Sleeps()).bulk_lines("https://storage.example/bulk.jsonl")
    ]
    assert lines == [b'{"id":"gid://shopify/ProductVariant/1"}', b'{"id":"gid://shopify/ProductVariant/2"}']
    assert "X-Shopify-Access-Token" not in shopify.requests[0].headers
