"""``POST /webhooks/shopify``: the one route Shopify calls. Thin: the work is in ``handler.py``.

Each request runs in the SERVER span of Litestar's OpenTelemetry plugin (``restock_common.telemetry.
http_telemetry_plugins``), which continues Shopify's or the sandbox's ``traceparent``; the route adds the
topic and shop to it. So the traceparent the handler stores on the restock event and the outbox row is this
webhook's trace.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, post
from litestar.di import NamedDependency
from litestar.response import Response
from opentelemetry import trace

from restock_detector.handler import WebhookHandler

ROUTE = "/webhooks/shopify"
MAX_BODY_BYTES = 1024 * 1024  # Shopify's payloads are a few KiB; anything near this is not Shopify


class ShopifyWebhookController(Controller):
    """Receives every Shopify topic; the ``X-Shopify-Topic`` header picks the handling."""

    path = ROUTE

    @post(request_max_body_size=MAX_BODY_BYTES)
    async def receive(
        self, request: Request[Any, Any, Any], webhook_handler: NamedDependency[WebhookHandler]
    ) -> Response[dict[str, object]]:
        span = trace.get_current_span()
        span.set_attribute("shopify.topic", request.headers.get("x-shopify-topic", "")[:64])
        span.set_attribute("shopify.shop_domain", request.headers.get("x-shopify-shop-domain", "")[:255])
        body = await request.body()
        result = await webhook_handler.handle_webhook(dict(request.headers), body)
        return Response(result.body, status_code=result.status_code)
