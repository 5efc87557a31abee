"""Webhooks exactly as Shopify sends them: built (pure), then delivered and logged.

A ``Webhook`` is a value: topic, JSON body, headers with the HMAC of that body. Delivery is one step
apart from building so that failure injection (drop, duplicate, delay, reorder) can be added in
``WebhookDeliverer.deliver`` alone, working on the same values: a duplicate resends the same webhook
(same ``X-Shopify-Webhook-Id``, as Shopify's retries do), a reorder holds one back.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec

from restock_common.signatures import shopify_webhook_hmac

logger = logging.getLogger(__name__)

API_VERSION = "2025-01"
TIMEOUT_SECONDS = 5.0  # Shopify gives a receiver 5 s before counting the delivery as failed


@dataclass(frozen=True)
class Webhook:
    """One webhook, ready to send."""

    topic: str
    webhook_id: str
    event_id: str
    body: bytes
    headers: dict[str, str]


def build_webhook(
    secret: str, shop_domain: str, topic: str, payload: dict[str, Any], now: datetime
) -> Webhook:
    """A signed webhook about ``payload`` (fresh webhook and event ids)."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    webhook_id, event_id = str(uuid.uuid4()), str(uuid.uuid4())
    headers = {
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Shop-Domain": shop_domain,
        "X-Shopify-Webhook-Id": webhook_id,
        "X-Shopify-Event-Id": event_id,
        "X-Shopify-Triggered-At": now.astimezone(UTC)
        .isoformat(timespec="microseconds")
        .replace("+00:00", "Z"),
        "X-Shopify-API-Version": API_VERSION,
        "X-Shopify-Hmac-Sha256": shopify_webhook_hmac(secret, body),
    }
    return Webhook(topic, webhook_id, event_id, body, headers)


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    """One delivery attempt and what the receiver answered."""

    webhook_id: str
    event_id: str
    topic: str
    url: str
    delivered: bool
    status: int | None
    body: Any
    error: str | None
    sent_at: datetime


def _response_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


class WebhookDeliverer:
    """Posts webhooks to the app's endpoint and keeps a log of every attempt."""

    def __init__(self, url: str, http: httpx.AsyncClient, clock: Callable[[], datetime]) -> None:
        self.url = url
        self.http = http
        self.clock = clock
        self.log: list[Delivery] = []

    async def deliver(self, webhook: Webhook) -> Delivery:
        """Send the webhook once (fault injection will decide here how often, when and in which order)."""
        return await self._attempt(webhook)

    async def _attempt(self, webhook: Webhook) -> Delivery:
        sent_at = self.clock()
        try:
            response = await self.http.post(
                self.url, content=webhook.body, headers=webhook.headers, timeout=TIMEOUT_SECONDS
            )
            status, body, error = response.status_code, _response_body(response), None
        except httpx.HTTPError as failure:
            status, body, error = None, None, f"{type(failure).__name__}: {failure}"
        delivery = Delivery(
            webhook_id=webhook.webhook_id,
            event_id=webhook.event_id,
            topic=webhook.topic,
            url=self.url,
            delivered=status is not None and 200 <= status < 300,
            status=status,
            body=body,
            error=error,
            sent_at=sent_at,
        )
        self.log.append(delivery)
        logger.info(
            "webhook delivered" if delivery.delivered else "webhook not delivered",
            extra={
                "topic": webhook.topic,
                "webhook_id": webhook.webhook_id,
                "status": status,
                "error": error,
            },
        )
        return delivery
