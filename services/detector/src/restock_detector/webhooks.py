"""``POST /webhooks/shopify``: the one route Shopify calls. Thin: the work is in ``handler.py``.

Each request runs in the SERVER span of ``restock_common.telemetry.http_telemetry_plugins``, which continues
Shopify's or the sandbox's ``traceparent``; the route adds the topic and shop to it. So the traceparent the
handler stores on the restock event and the outbox row is this webhook's trace.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Controller, Request, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, Operation, Parameter, RequestBody, Schema
from litestar.openapi.spec.enums import OpenAPIFormat, OpenAPIType
from litestar.response import Response
from opentelemetry import trace

from restock_detector.handler import (
    EVENT_ID_HEADER,
    HEADER_LIMITS,
    HMAC_HEADER,
    SHOP_HEADER,
    TOPIC_HEADER,
    TOPICS,
    TRIGGERED_AT_HEADER,
    WEBHOOK_ID_HEADER,
    WebhookHandler,
)

ROUTE = "/webhooks/shopify"
MAX_BODY_BYTES = 1024 * 1024  # Shopify's payloads are a few KiB; anything near this is not Shopify


# ---- The route's OpenAPI schema: the handler reads the raw body and headers itself (the HMAC is checked on
# the raw bytes), so what it reads is documented here rather than through its signature.


class Accepted(msgspec.Struct):
    """A webhook taken (or a repeat of one, ``duplicate``): what was done with it."""

    status: str
    reason: str | None = None
    variants: int | None = None
    lines: int | None = None
    subscriptions: int | None = None


class Refused(msgspec.Struct):
    """A webhook refused by the handler: ``detail`` says why; nothing was written."""

    detail: str


class TooLarge(msgspec.Struct):
    """Litestar's error body for a body over the cap."""

    status_code: int
    detail: str


def _header(name: str, description: str, required: bool = True, **constraints: Any) -> Parameter:
    display = "-".join(part.capitalize() for part in name.split("-"))
    if name in HEADER_LIMITS:
        constraints.setdefault("max_length", HEADER_LIMITS[name])
    schema = Schema(type=OpenAPIType.STRING, **constraints)
    return Parameter(
        name=display, param_in="header", schema=schema, description=description, required=required
    )


SHOPIFY_HEADERS = [
    _header(HMAC_HEADER, "base64 HMAC-SHA256 of the raw body under the app secret"),
    _header(TOPIC_HEADER, "The payload's topic", enum=sorted(TOPICS)),
    _header(SHOP_HEADER, "The shop's myshopify.com domain"),
    _header(WEBHOOK_ID_HEADER, "This delivery's id: a repeat of it is answered duplicate"),
    _header(EVENT_ID_HEADER, "The event's id, the same across Shopify's redeliveries", required=False),
    _header(TRIGGERED_AT_HEADER, "When the event happened", required=False, format=OpenAPIFormat.DATE_TIME),
]
SHOPIFY_PAYLOAD = RequestBody(
    content={"application/json": OpenAPIMediaType(schema=Schema(type=OpenAPIType.OBJECT))},
    description="The topic's payload as Shopify sends it (restock_detector.payloads), signed as raw bytes.",
    required=True,
)


@dataclass
class ShopifyWebhookOperation(Operation):
    def __post_init__(self) -> None:
        self.request_body = SHOPIFY_PAYLOAD
        self.parameters = [*(self.parameters or []), *SHOPIFY_HEADERS]


def _spec(data_container: type[msgspec.Struct], description: str) -> ResponseSpec:
    return ResponseSpec(data_container, description=description, generate_examples=False)


class ShopifyWebhookController(Controller):
    """Receives every Shopify topic; the ``X-Shopify-Topic`` header picks the handling."""

    path = ROUTE

    @post(
        request_max_body_size=MAX_BODY_BYTES,
        status_code=200,  # what the handler's Result answers when it takes a webhook
        operation_class=ShopifyWebhookOperation,
        responses={
            200: _spec(Accepted, "Taken, a repeat (duplicate), or a privacy topic of a shop we do not know."),
            400: _spec(Refused, "A missing or too long header, an unknown topic, or a malformed payload."),
            401: _spec(Refused, "The X-Shopify-Hmac-Sha256 does not match the raw body: nothing was done."),
            404: _spec(Refused, "The shop is not installed."),
            413: _spec(TooLarge, "The body is over 1 MiB: refused, nothing done."),
        },
    )
    async def receive(
        self, request: Request[Any, Any, Any], webhook_handler: NamedDependency[WebhookHandler]
    ) -> Response[dict[str, object]]:
        span = trace.get_current_span()
        span.set_attribute("shopify.topic", request.headers.get("x-shopify-topic", "")[:64])
        span.set_attribute("shopify.shop_domain", request.headers.get("x-shopify-shop-domain", "")[:255])
        body = await request.body()
        result = await webhook_handler.handle_webhook(dict(request.headers), body)
        return Response(result.body, status_code=result.status_code)
