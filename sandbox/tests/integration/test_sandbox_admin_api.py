"""The sandbox's GraphQL Admin API over HTTP: the detector's operations with Shopify's shapes, cursor
pagination, the cost-based throttle, injected 429s, bulk operations and their JSONL."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.integration

TOKEN = "demo-token"
PRODUCT = {
    "title": "Demo Hoodie",
    "variants": [
        {"id": 2001, "title": "M", "sku": "HOODIE-M", "inventory_item_id": 3001},
        {"id": 2002, "title": "L", "inventory_item_id": 3002},
        {"id": 2003, "title": "XL", "inventory_item_id": 3003},
    ],
}
ITEM_QUERY = "query($id: ID!) { inventoryItem(id: $id) { id variant { id product { id } } } }"
CONFIRM_QUERY = """query Confirm($id: ID!) {
  productVariant(id: $id) { id inventoryQuantity inventoryItem { id inventoryLevels(first: 50) { edges {
    node { location { id } quantities(names: ["available"]) { name quantity } updatedAt } } } } }
}"""
SYNC_QUERY = """query Sync($first: Int!, $after: String) {
  productVariants(first: $first, after: $after) { pageInfo { hasNextPage endCursor } edges { cursor node {
    id product { id } inventoryItem { id inventoryLevels(first: 20) { edges { node { location { id }
    quantities(names: ["available"]) { name quantity } updatedAt } } } } } } }
}"""
BULK_QUERY = """{ productVariants { edges { node { id product { id } inventoryItem { id inventoryLevels {
  edges { node { location { id } quantities(names: ["available"]) { name quantity } updatedAt } } }
} } } } }"""
RUN_BULK = """mutation Run($query: String!) {
  bulkOperationRunQuery(query: $query) { bulkOperation { id status } userErrors { field message } }
}"""
CURRENT_BULK = "{ currentBulkOperation { id status errorCode objectCount rootObjectCount url } }"


@pytest.fixture
async def http(sandbox) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sandbox.url, timeout=10) as client:
        assert (await client.put("/store/products/1001", json=PRODUCT)).status_code == 200
        for item, location, available in [(3001, 4001, 0), (3001, 4002, 2), (3002, 4001, 5)]:
            level = {"inventory_item_id": item, "location_id": location, "available": available}
            assert (await client.post("/store/inventory_levels/set", json=level)).status_code == 200
        yield client


async def graphql(
    http: httpx.AsyncClient, query: str, variables: dict[str, Any] | None = None, token: str | None = TOKEN
) -> httpx.Response:
    headers = {"X-Shopify-Access-Token": token} if token else {}
    return await http.post(
        "/admin/api/2025-01/graphql.json",
        json={"query": query, "variables": variables or {}},
        headers=headers,
    )


async def data_of(http: httpx.AsyncClient, query: str, variables: dict[str, Any] | None = None) -> Any:
    response = await graphql(http, query, variables)
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body
    return body["data"]


async def test_inventory_item_resolves_to_its_variant_and_product(http: httpx.AsyncClient) -> None:
    data = await data_of(http, ITEM_QUERY, {"id": "gid://shopify/InventoryItem/3001"})
    assert data == {
        "inventoryItem": {
            "id": "gid://shopify/InventoryItem/3001",
            "variant": {
                "id": "gid://shopify/ProductVariant/2001",
                "product": {"id": "gid://shopify/Product/1001"},
            },
        }
    }
    assert await data_of(http, ITEM_QUERY, {"id": "gid://shopify/InventoryItem/9999"}) == {
        "inventoryItem": None
    }


async def test_confirmation_read_has_levels_per_location(http: httpx.AsyncClient) -> None:
    data = await data_of(http, CONFIRM_QUERY, {"id": "gid://shopify/ProductVariant/2001"})
    variant = data["productVariant"]
    assert (variant["id"], variant["inventoryQuantity"]) == ("gid://shopify/ProductVariant/2001", 2)
    assert variant["inventoryItem"]["id"] == "gid://shopify/InventoryItem/3001"
    nodes = [edge["node"] for edge in variant["inventoryItem"]["inventoryLevels"]["edges"]]
    assert [(n["location"]["id"], n["quantities"]) for n in nodes] == [
        ("gid://shopify/Location/4001", [{"name": "available", "quantity": 0}]),
        ("gid://shopify/Location/4002", [{"name": "available", "quantity": 2}]),
    ]
    for node in nodes:
        assert time.strptime(node["updatedAt"], "%Y-%m-%dT%H:%M:%SZ")


async def test_product_variants_page_with_opaque_cursors_in_a_stable_order(http: httpx.AsyncClient) -> None:
    seen, after, pages = [], None, 0
    while True:
        page = (await data_of(http, SYNC_QUERY, {"first": 2, "after": after}))["productVariants"]
        pages += 1
        seen += [edge["node"]["id"] for edge in page["edges"]]
        assert page["pageInfo"]["endCursor"] == page["edges"][-1]["cursor"]
        assert "2001" not in page["pageInfo"]["endCursor"]  # opaque
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert pages == 2
    assert seen == [f"gid://shopify/ProductVariant/{n}" for n in (2001, 2002, 2003)]
    no_levels = (await data_of(http, SYNC_QUERY, {"first": 3}))["productVariants"]["edges"][2]["node"]
    assert no_levels["inventoryItem"]["inventoryLevels"]["edges"] == []


async def test_every_answer_carries_the_cost_and_actual_is_what_was_returned(http: httpx.AsyncClient) -> None:
    body = (await graphql(http, SYNC_QUERY, {"first": 2})).json()
    cost = body["extensions"]["cost"]
    # 2 + first * (variant 1 + product 1 + inventoryItem (1 + levels (2 + 20 * (level 1 + location 1
    # + quantities 1))))
    assert cost["requestedQueryCost"] == 2 + 2 * (1 + 1 + 1 + 2 + 20 * 3)
    # Returned: variants 2001 (two levels) and 2002 (one level).
    assert cost["actualQueryCost"] == 2 + (3 + 2 + 2 * 3) + (3 + 2 + 1 * 3)
    status = cost["throttleStatus"]
    assert (status["maximumAvailable"], status["restoreRate"]) == (2000.0, 100.0)
    assert status["currentlyAvailable"] <= 2000 - cost["actualQueryCost"] + 100


async def test_page_size_above_250_and_bad_cursor_are_errors(http: httpx.AsyncClient) -> None:
    too_big = (await graphql(http, "{ productVariants(first: 251) { edges { node { id } } } }")).json()
    assert "250" in too_big["errors"][0]["message"]
    assert "data" not in too_big
    bad = (await graphql(http, SYNC_QUERY, {"first": 1, "after": "not-a-cursor"})).json()
    assert "cursor" in bad["errors"][0]["message"]


async def test_missing_or_wrong_token_is_401(http: httpx.AsyncClient) -> None:
    for token in (None, "wrong"):
        response = await graphql(http, ITEM_QUERY, {"id": "gid://shopify/InventoryItem/3001"}, token=token)
        assert response.status_code == 401
        assert response.json() == {
            "errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"
        }


@pytest.mark.parametrize(
    "query",
    [
        "{ shop { name } }",
        '{ inventoryItem(id: "gid://shopify/InventoryItem/3001") { id harmonizedSystemCode } }',
        "mutation { inventorySetQuantities(input: {}) { userErrors { message } } }",
    ],
)
async def test_anything_else_is_an_unsupported_graphql_error(http: httpx.AsyncClient, query: str) -> None:
    response = await graphql(http, query)
    assert response.status_code == 200
    (error,) = response.json()["errors"]
    assert error["extensions"]["code"] == "UNSUPPORTED"
    assert error["message"]


async def test_bad_documents_and_bodies(http: httpx.AsyncClient) -> None:
    syntax = (await graphql(http, "{ inventoryItem(id: ")).json()
    assert syntax["errors"][0]["extensions"]["code"] == "PARSE_ERROR"
    missing = (await graphql(http, ITEM_QUERY, {})).json()
    assert "$id" in missing["errors"][0]["message"]
    no_query = await http.post(
        "/admin/api/2025-01/graphql.json", json={"variables": {}}, headers={"X-Shopify-Access-Token": TOKEN}
    )
    assert no_query.status_code == 400


async def test_an_empty_bucket_answers_throttled_and_takes_nothing(http: httpx.AsyncClient) -> None:
    config = await http.post("/store/graphql/config", json={"maximum_available": 10, "restore_rate": 0.001})
    assert config.json()["throttle_status"]["currentlyAvailable"] == 10
    costs = []
    for _ in range(3):  # 3 points each: 1 + variant 1 + product 1
        costs.append((await graphql(http, ITEM_QUERY, {"id": "gid://shopify/InventoryItem/3001"})).json())
    assert [c["extensions"]["cost"]["actualQueryCost"] for c in costs] == [3, 3, 3]

    throttled = await graphql(http, ITEM_QUERY, {"id": "gid://shopify/InventoryItem/3001"})

    assert throttled.status_code == 200
    body = throttled.json()
    assert body["errors"] == [
        {
            "message": "Throttled",
            "extensions": {"code": "THROTTLED", "documentation": "https://shopify.dev/api/usage/rate-limits"},
        }
    ]
    assert "data" not in body
    cost = body["extensions"]["cost"]
    assert (cost["requestedQueryCost"], cost["actualQueryCost"]) == (3, None)
    assert cost["throttleStatus"] == {"maximumAvailable": 10.0, "currentlyAvailable": 1, "restoreRate": 0.001}
    stats = (await http.get("/store/graphql/stats")).json()
    assert stats["counts"]["throttled"] == 1


async def test_the_bucket_refills_at_the_restore_rate(http: httpx.AsyncClient) -> None:
    await http.post("/store/graphql/config", json={"maximum_available": 4, "restore_rate": 20})
    assert "data" in (await graphql(http, ITEM_QUERY, {"id": "gid://shopify/InventoryItem/3001"})).json()
    # 1 point left plus what flowed back meanwhile; 3 points come back within 0.15 s at 20/s.
    deadline = time.monotonic() + 10
    while "errors" in (
        body := (await graphql(http, ITEM_QUERY, {"id": "gid://shopify/InventoryItem/3001"})).json()
    ):
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.05)


async def test_a_query_above_the_single_query_limit_is_max_cost_exceeded(http: httpx.AsyncClient) -> None:
    body = (await graphql(http, SYNC_QUERY, {"first": 250})).json()
    assert body["errors"][0]["extensions"]["code"] == "MAX_COST_EXCEEDED"
    assert body["extensions"]["cost"]["actualQueryCost"] is None


async def test_injected_429s_answer_retry_after_then_recover(http: httpx.AsyncClient) -> None:
    await http.delete("/store/graphql/stats")
    await http.post("/store/graphql/faults", json={"http_429": 2})
    answers = [await graphql(http, ITEM_QUERY, {"id": "gid://shopify/InventoryItem/3001"}) for _ in range(3)]
    assert [a.status_code for a in answers] == [429, 429, 200]
    assert answers[0].headers["retry-after"] == "1"
    stats = (await http.get("/store/graphql/stats")).json()
    assert (stats["counts"]["requests"], stats["counts"]["http_429"], stats["counts"]["served"]) == (3, 2, 1)
    assert stats["counts"]["field:inventoryItem"] == 1


async def test_bulk_operation_runs_completes_and_serves_shopify_jsonl(http: httpx.AsyncClient) -> None:
    await http.post("/store/graphql/config", json={"bulk_seconds": 0.3})
    started = (await data_of(http, RUN_BULK, {"query": BULK_QUERY}))["bulkOperationRunQuery"]
    operation = started["bulkOperation"]
    assert (operation["status"], started["userErrors"]) == ("CREATED", [])
    assert operation["id"] == "gid://shopify/BulkOperation/1"

    second = (await data_of(http, RUN_BULK, {"query": BULK_QUERY}))["bulkOperationRunQuery"]
    assert second["bulkOperation"] is None
    assert "already in progress" in second["userErrors"][0]["message"]

    deadline = time.monotonic() + 10
    while (current := (await data_of(http, CURRENT_BULK))["currentBulkOperation"])["status"] != "COMPLETED":
        assert current["status"] == "RUNNING"
        assert current["url"] is None
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert current["errorCode"] is None
    assert (current["objectCount"], current["rootObjectCount"]) == ("6", "3")  # 3 variants, 3 levels

    response = await http.get(current["url"].removeprefix(str(http.base_url).rstrip("/")))
    assert response.status_code == 200
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert lines[0] == {
        "id": "gid://shopify/ProductVariant/2001",
        "product": {"id": "gid://shopify/Product/1001"},
        "inventoryItem": {"id": "gid://shopify/InventoryItem/3001"},
    }
    children = [line for line in lines if "__parentId" in line]
    assert [(c["__parentId"], c["location"]["id"], c["quantities"][0]["quantity"]) for c in children] == [
        ("gid://shopify/ProductVariant/2001", "gid://shopify/Location/4001", 0),
        ("gid://shopify/ProductVariant/2001", "gid://shopify/Location/4002", 2),
        ("gid://shopify/ProductVariant/2002", "gid://shopify/Location/4001", 5),
    ]
    # Children follow their parent line.
    assert [line.get("id", "level") for line in lines] == [
        "gid://shopify/ProductVariant/2001", "level", "level",
        "gid://shopify/ProductVariant/2002", "level",
        "gid://shopify/ProductVariant/2003",
    ]  # fmt: skip
    node = await data_of(
        http, 'query { node(id: "gid://shopify/BulkOperation/1") { ... on BulkOperation { id status } } }'
    )
    assert node == {"node": {"id": "gid://shopify/BulkOperation/1", "status": "COMPLETED"}}
    again = (await data_of(http, RUN_BULK, {"query": BULK_QUERY}))["bulkOperationRunQuery"]
    assert again["bulkOperation"]["id"] == "gid://shopify/BulkOperation/2"


async def test_a_bulk_query_of_something_else_is_a_user_error(http: httpx.AsyncClient) -> None:
    result = await data_of(http, RUN_BULK, {"query": "{ orders { edges { node { id } } } }"})
    errors = result["bulkOperationRunQuery"]["userErrors"]
    assert errors[0]["field"] == ["query"]
    assert result["bulkOperationRunQuery"]["bulkOperation"] is None
    assert (await http.get("/bulk/1.jsonl")).status_code == 404


async def test_a_bare_graphql_document_is_accepted_too(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/admin/api/unstable/graphql.json",
        content='{ inventoryItem(id: "gid://shopify/InventoryItem/3002") { variant { id } } }',
        headers={"X-Shopify-Access-Token": TOKEN, "Content-Type": "application/graphql"},
    )
    assert response.json()["data"] == {
        "inventoryItem": {"variant": {"id": "gid://shopify/ProductVariant/2002"}}
    }
