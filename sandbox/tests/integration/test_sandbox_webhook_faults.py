"""The store's webhook fault table over the wire: each mode as the receiving app sees it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from restock_sandbox.app import create_app, http_port

pytestmark = pytest.mark.integration

LEVELS = "inventory_levels/update"


@pytest.fixture
async def http(sandbox) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sandbox.url, timeout=10) as client:
        yield client


async def set_level(http: httpx.AsyncClient, available: int, item: int = 3001) -> dict[str, Any]:
    body = {"inventory_item_id": item, "location_id": 4001, "available": available}
    response = await http.post("/store/inventory_levels/set", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def add_fault(http: httpx.AsyncClient, **rule: Any) -> None:
    response = await http.post("/store/webhook-faults", json=rule)
    assert response.status_code == 201, response.text


def availabilities(receiver) -> list[int]:
    return [json.loads(r.body)["available"] for r in receiver.requests]


async def until_received(receiver, count: int, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while len(receiver.requests) < count:
        assert time.monotonic() < deadline, f"only {len(receiver.requests)} of {count} webhooks arrived"
        await asyncio.sleep(0.01)


async def test_a_dropped_webhook_is_never_sent_and_logged_as_dropped(
    sandbox, receiver, http: httpx.AsyncClient
) -> None:
    await add_fault(http, topic=LEVELS, mode="drop")

    dropped = await set_level(http, 1)
    assert (dropped["delivered"], dropped["dropped"], dropped["fault"]) == (False, True, "drop")
    assert receiver.requests == []
    await set_level(http, 2)

    assert availabilities(receiver) == [2]
    log = (await http.get("/store/webhooks")).json()
    assert [(d["dropped"], d["fault"], d["status"], d["delivered"]) for d in log] == [
        (True, "drop", None, False),
        (False, None, 200, True),
    ]
    assert log[0]["webhook_id"] == dropped["webhook_id"]
    assert (await http.get("/store/webhook-faults")).json() == []


async def test_a_duplicate_is_the_same_webhook_sent_twice(sandbox, receiver, http: httpx.AsyncClient) -> None:
    await add_fault(http, topic="*", mode="duplicate")

    outcome = await set_level(http, 5)

    first, second = receiver.requests
    assert first.body == second.body
    for header in ("x-shopify-webhook-id", "x-shopify-event-id", "x-shopify-hmac-sha256"):
        assert first.headers[header] == second.headers[header]
    assert first.headers["x-shopify-webhook-id"] == outcome["webhook_id"]
    log = (await http.get("/store/webhooks")).json()
    assert [(d["fault"], d["delivered"]) for d in log] == [("duplicate", True), ("duplicate", True)]
    await set_level(http, 6)  # the rule was used up
    assert len(receiver.requests) == 3


async def test_a_delayed_webhook_is_answered_as_held_and_arrives_after_its_delay(
    sandbox, receiver, http: httpx.AsyncClient
) -> None:
    await add_fault(http, topic=LEVELS, mode="delay", delay_ms=400)

    started = time.monotonic()
    outcome = await set_level(http, 7)
    assert (outcome["delivered"], outcome["held"], outcome["fault"]) == (False, True, "delay")
    assert outcome["inventory_level"]["available"] == 7
    assert receiver.requests == []

    await until_received(receiver, 1)
    assert receiver.requests[0].at - started >= 0.4
    assert availabilities(receiver) == [7]
    log = (await http.get("/store/webhooks")).json()
    assert [(d["fault"], d["delivered"], d["held"]) for d in log] == [("delay", True, False)]


async def test_a_reordered_webhook_arrives_after_the_next_one_of_its_topic(
    sandbox, receiver, http: httpx.AsyncClient
) -> None:
    await add_fault(http, topic=LEVELS, mode="reorder")

    held = await set_level(http, 1)
    assert (held["delivered"], held["held"], held["fault"]) == (False, True, "reorder")
    product = {"title": "Tee", "variants": [{"id": 1, "title": "S", "inventory_item_id": 3001}]}
    await http.put("/store/products/1", json=product)  # another topic does not release it
    assert [r.headers["x-shopify-topic"] for r in receiver.requests] == ["products/create"]

    await set_level(http, 2)

    levels = [r for r in receiver.requests if r.headers["x-shopify-topic"] == LEVELS]
    assert [json.loads(r.body)["available"] for r in levels] == [2, 1]
    assert levels[1].headers["x-shopify-webhook-id"] == held["webhook_id"]
    stamps = [json.loads(r.body)["updated_at"] for r in levels]
    assert stamps[0] > stamps[1]  # the newer state really arrives first


async def test_flush_sends_every_held_webhook_oldest_first(
    sandbox, receiver, http: httpx.AsyncClient
) -> None:
    await add_fault(http, topic=LEVELS, mode="delay", delay_ms=600_000)
    await add_fault(http, topic=LEVELS, mode="reorder")
    await set_level(http, 1)
    await set_level(http, 2)
    assert receiver.requests == []

    flushed = await http.post("/store/webhook-faults/flush")

    assert flushed.status_code == 200
    assert [(d["fault"], d["delivered"]) for d in flushed.json()] == [("delay", True), ("reorder", True)]
    assert availabilities(receiver) == [1, 2]
    assert (await http.post("/store/webhook-faults/flush")).json() == []


async def test_held_webhooks_are_sent_at_shutdown(sandbox_settings, serve, receiver) -> None:
    async with (
        serve(create_app(sandbox_settings), http_port(sandbox_settings)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as http,
    ):
        await add_fault(http, topic=LEVELS, mode="delay", delay_ms=600_000)
        await set_level(http, 9)
        assert receiver.requests == []
    assert availabilities(receiver) == [9]


async def test_a_rule_without_times_holds_until_cleared(sandbox, receiver, http: httpx.AsyncClient) -> None:
    await add_fault(http, topic="*", mode="drop", times=None)
    for available in (1, 2, 3):
        assert (await set_level(http, available))["dropped"] is True
    assert [r["mode"] for r in (await http.get("/store/webhook-faults")).json()] == ["drop"]

    assert (await http.delete("/store/webhook-faults")).status_code == 204
    await set_level(http, 4)
    assert availabilities(receiver) == [4]


@pytest.mark.parametrize(
    "rule",
    [
        {"topic": LEVELS, "mode": "explode"},
        {"topic": "", "mode": "drop"},
        {"topic": LEVELS, "mode": "drop", "times": 0},
        {"topic": LEVELS, "mode": "delay", "delay_ms": 0},
        {"mode": "drop"},
    ],
)
async def test_invalid_rules_are_400(sandbox, http: httpx.AsyncClient, rule: dict) -> None:
    response = await http.post("/store/webhook-faults", json=rule)
    assert response.status_code == 400
    assert "detail" in response.json()
    assert (await http.get("/store/webhook-faults")).json() == []
