"""The admin-api's OpenAPI schema documents every answer of its routes (status and content type) and what
they read from the raw request. The contract tests (tests/contracts) fuzz the running process against this
schema; these catch a dropped ``ResponseSpec`` or request description without starting anything."""

from __future__ import annotations

from typing import Any

import pytest

from restock_admin.app import create_app
from restock_common.settings import Settings

JSON = "application/json"
HTML = "text/html"
FORM = "application/x-www-form-urlencoded"


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    # Building the app opens nothing (its pool and connections open in the lifespan, which is not run).
    return create_app(Settings(env="development"), run_retention_task=False).openapi_schema.to_schema()


def answers(schema: dict[str, Any], operation: str) -> dict[str, list[str]]:
    """``"POST /path"``'s documented statuses, each with its content types."""
    method, path = operation.split(" ", 1)
    responses = schema["paths"][path][method.lower()]["responses"]
    return {status: sorted(response.get("content") or {}) for status, response in responses.items()}


@pytest.mark.parametrize(
    ("operation", "expected"),
    [
        (
            "POST /proxy/subscriptions",
            {
                "200": [JSON],  # already subscribed
                "201": [JSON],
                "400": [JSON],
                "401": [JSON],
                "404": [JSON],
                "409": [JSON],
                "413": [JSON],
                "422": [JSON],
                "429": [JSON],
            },
        ),
        ("POST /proxy/views", {"204": [], "400": [JSON], "401": [JSON], "404": [JSON], "413": [JSON]}),
        ("GET /c/{token}", {"200": [HTML], "400": [HTML], "404": [HTML], "409": [HTML], "410": [HTML]}),
        ("GET /u/{token}", {"200": [HTML], "400": [HTML], "404": [HTML]}),
        # Litestar's own refusals (the body cap, a malformed multipart form) are JSON even on a page route.
        ("POST /u/{token}", {"200": [HTML], "400": [JSON, HTML], "404": [HTML], "413": [JSON]}),
        ("POST /twilio/inbound", {"200": ["application/xml"], "400": [JSON], "403": [JSON], "413": [JSON]}),
        ("POST /twilio/status", {"200": ["text/plain"], "400": [JSON], "403": [JSON], "413": [JSON]}),
        ("GET /admin/api/jobs", {"200": [JSON], "400": [JSON], "401": [JSON], "403": [JSON]}),
        (
            "POST /admin/api/jobs/replay",
            {"200": [JSON], "400": [JSON], "401": [JSON], "403": [JSON], "413": [JSON]},
        ),
        ("GET /healthz", {"200": [JSON]}),
        ("GET /readyz", {"200": [JSON], "503": [JSON]}),
    ],
)
def test_every_answer_is_documented(
    schema: dict[str, Any], operation: str, expected: dict[str, list[str]]
) -> None:
    assert answers(schema, operation) == expected


@pytest.mark.parametrize(
    ("operation", "status"), [("POST /proxy/subscriptions", "429"), ("POST /u/{token}", "400")]
)
def test_refusals_document_litestars_error_body(schema: dict[str, Any], operation: str, status: str) -> None:
    method, path = operation.split(" ", 1)
    refusal = schema["paths"][path][method.lower()]["responses"][status]
    reference = refusal["content"][JSON]["schema"]["$ref"]
    prefix = "#/components/schemas/"
    assert reference.startswith(prefix)
    body = schema["components"]["schemas"][reference.removeprefix(prefix)]
    assert set(body["required"]) == {"status_code", "detail"}


@pytest.mark.parametrize("path", ["/twilio/inbound", "/twilio/status"])
def test_twilio_webhooks_document_the_signed_form(schema: dict[str, Any], path: str) -> None:
    operation = schema["paths"][path]["post"]
    assert list(operation["requestBody"]["content"]) == [FORM]
    headers = {each["name"]: each for each in operation["parameters"] if each["in"] == "header"}
    assert headers["X-Twilio-Signature"]["required"] is True


def test_one_click_unsubscribe_documents_its_form(schema: dict[str, Any]) -> None:
    form = schema["paths"]["/u/{token}"]["post"]["requestBody"]["content"][FORM]["schema"]
    assert {"List-Unsubscribe", "scope"} <= set(form["properties"])


@pytest.mark.parametrize("path", ["/proxy/subscriptions", "/proxy/views"])
def test_app_proxy_routes_document_the_signed_query(schema: dict[str, Any], path: str) -> None:
    parameters = schema["paths"][path]["post"]["parameters"]
    required = {each["name"] for each in parameters if each["in"] == "query" and each.get("required")}
    assert required == {"shop", "signature", "timestamp"}


@pytest.mark.parametrize("operation", ["GET /admin/api/jobs", "POST /admin/api/jobs/replay"])
def test_admin_routes_document_the_session_token(schema: dict[str, Any], operation: str) -> None:
    method, path = operation.split(" ", 1)
    [requirement] = schema["paths"][path][method.lower()]["security"]
    [name] = requirement
    scheme = schema["components"]["securitySchemes"][name]
    assert (scheme["type"], scheme["scheme"], scheme["bearerFormat"]) == ("http", "bearer", "JWT")
