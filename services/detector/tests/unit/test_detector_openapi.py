"""The detector's OpenAPI schema documents every answer of the Shopify webhook route and what it reads from
the raw request (the signed JSON body and Shopify's headers). The contract tests (tests/contracts) fuzz the
running process against this schema; these catch a dropped ``ResponseSpec`` without starting anything."""

from __future__ import annotations

from typing import Any

import pytest

from restock_common.settings import Settings
from restock_detector.app import create_app
from restock_detector.handler import TOPICS

JSON = "application/json"


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    # Building the app opens nothing (its pool, broker and tasks start in the lifespan, which is not run).
    return create_app(Settings(env="development")).openapi_schema.to_schema()


def answers(schema: dict[str, Any], method: str, path: str) -> dict[str, list[str]]:
    responses = schema["paths"][path][method]["responses"]
    return {status: sorted(response.get("content") or {}) for status, response in responses.items()}


def test_the_webhook_documents_every_answer(schema: dict[str, Any]) -> None:
    assert answers(schema, "post", "/webhooks/shopify") == {
        "200": [JSON],  # taken, duplicate, or a privacy topic of an unknown shop: never 201
        "400": [JSON],
        "401": [JSON],
        "404": [JSON],
        "413": [JSON],
    }


def test_the_webhooks_refusals_say_why(schema: dict[str, Any]) -> None:
    responses = schema["paths"]["/webhooks/shopify"]["post"]["responses"]
    for status in ("400", "401", "404"):
        reference = responses[status]["content"][JSON]["schema"]["$ref"]
        assert schema["components"]["schemas"][reference.rsplit("/", 1)[1]]["required"] == ["detail"]


def test_the_webhook_documents_the_signed_body_and_shopifys_headers(schema: dict[str, Any]) -> None:
    operation = schema["paths"]["/webhooks/shopify"]["post"]
    assert list(operation["requestBody"]["content"]) == [JSON]
    headers = {each["name"]: each for each in operation["parameters"] if each["in"] == "header"}
    required = {name for name, each in headers.items() if each.get("required")}
    assert required == {
        "X-Shopify-Hmac-Sha256",
        "X-Shopify-Topic",
        "X-Shopify-Shop-Domain",
        "X-Shopify-Webhook-Id",
    }
    assert set(headers["X-Shopify-Topic"]["schema"]["enum"]) == TOPICS


def test_the_probes_are_documented(schema: dict[str, Any]) -> None:
    assert answers(schema, "get", "/healthz") == {"200": [JSON]}
    assert answers(schema, "get", "/readyz") == {"200": [JSON], "503": [JSON]}
