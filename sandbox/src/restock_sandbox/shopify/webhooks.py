"""Webhooks exactly as Shopify sends them: built (pure), then delivered and logged.

A ``Webhook`` is a value: topic, JSON body, headers with the HMAC of that body. Delivery is one step
apart from building so that failure injection lives in ``WebhookDeliverer.deliver`` alone, working on
the same values (the rules are in ``restock_sandbox.shopify.faults``): a duplicate resends the same
webhook (same ``X-Shopify-Webhook-Id``, as Shopify's retries do), a delay or a reorder holds one back.

Held webhooks are sent by a background task (delay) or right after the next send of their topic
(reorder); ``flush`` sends everything still held at once, oldest first, and waits for sends in flight,
so nothing held is lost when the sandbox stops. The log has one entry per send attempt, plus one per
dropped webhook (``dropped``, never sent); each entry names the fault that shaped it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec

from restock_common.signatures import shopify_webhook_hmac
from restock_sandbox.shopify.faults import Mode, WebhookFaultTable

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
    """One delivery attempt and what the receiver answered; or a webhook dropped or held by a fault."""

    webhook_id: str
    event_id: str
    topic: str
    url: str
    delivered: bool
    status: int | None
    body: Any
    error: str | None
    sent_at: datetime
    fault: Mode | None = None
    dropped: bool = False  # never sent (a ``drop`` fault)
    held: bool = False  # not sent yet (``delay`` / ``reorder``): only the answer to the change says so


@dataclass
class Held:
    """A webhook held back by a fault; ``release`` ends a delay early (flush)."""

    webhook: Webhook
    mode: Mode
    release: asyncio.Event = field(default_factory=asyncio.Event)


def _response_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


class WebhookDeliverer:
    """Posts webhooks to the app's endpoint, applies the fault table, and logs every attempt."""

    def __init__(self, url: str, http: httpx.AsyncClient, clock: Callable[[], datetime]) -> None:
        self.url = url
        self.http = http
        self.clock = clock
        self.faults = WebhookFaultTable()
        self.log: list[Delivery] = []
        self.held: list[Held] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def deliver(self, webhook: Webhook) -> Delivery:
        """Deliver as the fault table says; what happened (for a duplicate, the second answer)."""
        rule = self.faults.take(webhook.topic)
        if rule is None:
            return await self._send(webhook, None)
        if rule.mode == "drop":
            return self._record(self._outcome(webhook, "drop", dropped=True))
        if rule.mode == "duplicate":
            await self._attempt(webhook, "duplicate")
            return await self._send(webhook, "duplicate")
        held = Held(webhook, rule.mode)
        self.held.append(held)
        if rule.mode == "delay":
            self._start(self._send_after(held, rule.delay_ms / 1000))
        logger.info("webhook held", extra={"topic": webhook.topic, "webhook_id": webhook.webhook_id})
        return self._outcome(webhook, rule.mode, held=True)

    async def flush(self) -> list[Delivery]:
        """Send every held webhook now, oldest first, and wait for sends in flight; what they got."""
        log_before = len(self.log)
        while self.held or self._tasks:
            if self.held:
                held = self.held[0]
                held.release.set()  # a delay's task wakes, finds it taken, and ends
                await self._take_and_send(held)
            else:
                await asyncio.gather(*self._tasks)
        return self.log[log_before:]

    def _start(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_after(self, held: Held, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):  # the delay ran out, rather than a flush ending it
            await asyncio.wait_for(held.release.wait(), seconds)
        if held in self.held:
            await self._take_and_send(held)

    async def _take_and_send(self, held: Held) -> None:
        self.held.remove(held)
        await self._send(held.webhook, held.mode)

    async def _send(self, webhook: Webhook, fault: Mode | None) -> Delivery:
        """One attempt; then the webhooks a reorder held for this topic, which it has now overtaken."""
        delivery = await self._attempt(webhook, fault)
        overtaken = [h for h in self.held if h.mode == "reorder" and h.webhook.topic == webhook.topic]
        for held in overtaken:
            if held in self.held:  # a concurrent send may have released it already
                await self._take_and_send(held)
        return delivery

    async def _attempt(self, webhook: Webhook, fault: Mode | None) -> Delivery:
        sent_at = self.clock()
        try:
            response = await self.http.post(
                self.url, content=webhook.body, headers=webhook.headers, timeout=TIMEOUT_SECONDS
            )
            status, body, error = response.status_code, _response_body(response), None
        except httpx.HTTPError as failure:
            status, body, error = None, None, f"{type(failure).__name__}: {failure}"
        return self._record(self._outcome(webhook, fault, status, body, error, sent_at))

    def _outcome(
        self,
        webhook: Webhook,
        fault: Mode | None,
        status: int | None = None,
        body: Any = None,
        error: str | None = None,
        sent_at: datetime | None = None,
        *,
        dropped: bool = False,
        held: bool = False,
    ) -> Delivery:
        return Delivery(
            webhook_id=webhook.webhook_id,
            event_id=webhook.event_id,
            topic=webhook.topic,
            url=self.url,
            delivered=status is not None and 200 <= status < 300,
            status=status,
            body=body,
            error=error,
            sent_at=sent_at or self.clock(),
            fault=fault,
            dropped=dropped,
            held=held,
        )

    def _record(self, delivery: Delivery) -> Delivery:
        self.log.append(delivery)
        message = "webhook dropped" if delivery.dropped else "webhook delivered"
        if not (delivery.delivered or delivery.dropped):
            message = "webhook not delivered"
        logger.info(
            message,
            extra={
                "topic": delivery.topic,
                "webhook_id": delivery.webhook_id,
                "status": delivery.status,
                "error": delivery.error,
                "fault": delivery.fault,
            },
        )
        return delivery
