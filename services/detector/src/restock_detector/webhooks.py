"""``POST /webhooks/shopify``: the one route Shopify calls. Thin: the work is in ``handler.py``.

Each request runs in a SERVER span (Litestar's OpenTelemetry plugin needs
``opentelemetry-instrumentation-asgi``, which is not installed), so the traceparent the handler stores on
the restock event and the outbox row is this webhook's trace.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from litestar import Controller, Request, post
from litestar.di import NamedDependency
from litestar.response import Response
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind

from restock_detector.handler import WebhookHandler

ROUTE = "/webhooks/shopify"
MAX_BODY_BYTES = 1024 * 1024  # Shopify's payloads are a few KiB; anything near this is not Shopify

tracer = trace.get_tracer("restock.detector")


class ShopifyWebhookController(Controller):
    """Receives every Shopify topic; the ``X-Shopify-Topic`` header picks the handling."""

    path = ROUTE

    @post(request_max_body_size=MAX_BODY_BYTES)
    async def receive(
        self, request: Request[Any, Any, Any], webhook_handler: NamedDependency[WebhookHandler]
    ) -> Response[dict[str, object]]:
        with _server_span(request) as span:
            body = await request.body()
            result = await webhook_handler.handle_webhook(dict(request.headers), body)
            span.set_attribute("http.response.status_code", result.status_code)
        return Response(result.body, status_code=result.status_code)


@contextmanager
def _server_span(request: Request[Any, Any, Any]) -> Iterator[Span]:
    """A SERVER span continuing the caller's trace context, if it sent one."""
    with tracer.start_as_current_span(
        f"POST {ROUTE}",
        context=propagate.extract(dict(request.headers)),
        kind=SpanKind.SERVER,
        attributes={
            "http.request.method": "POST",
            "http.route": ROUTE,
            "shopify.topic": request.headers.get("x-shopify-topic", ""),
            "shopify.shop_domain": request.headers.get("x-shopify-shop-domain", ""),
        },
    ) as span:
        yield span
