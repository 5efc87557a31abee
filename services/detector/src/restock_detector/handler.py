"""One Shopify webhook, from raw headers and body to a ``Result``: verify, decode, record, decide.

Order matters: the HMAC is checked before anything else is read (an unsigned request learns nothing),
then the headers, the topic and the payload; every refusal is a 4xx with a reason and writes nothing.
An accepted webhook is processed in one transaction (receipt, snapshot, decision, restock event, outbox
row), and the relay is woken only after that commit.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from restock_common import keys, messages, signatures, telemetry, topology
from restock_common.rules import Rules
from restock_detector import payloads, transitions
from restock_detector.ports import (
    ItemMapping,
    LevelObservation,
    NewRestock,
    OutboxMessage,
    OutboxSignal,
    Receipt,
    Tenant,
    UnitOfWork,
    VariantRef,
    WebhookStore,
)

log = logging.getLogger(__name__)

HMAC_HEADER = "x-shopify-hmac-sha256"
TOPIC_HEADER = "x-shopify-topic"
SHOP_HEADER = "x-shopify-shop-domain"
WEBHOOK_ID_HEADER = "x-shopify-webhook-id"
EVENT_ID_HEADER = "x-shopify-event-id"
TRIGGERED_AT_HEADER = "x-shopify-triggered-at"
REQUIRED_HEADERS = (TOPIC_HEADER, SHOP_HEADER, WEBHOOK_ID_HEADER)
# The widths of the columns these headers are stored in.
HEADER_LIMITS = {TOPIC_HEADER: 64, SHOP_HEADER: 255, WEBHOOK_ID_HEADER: 128, EVENT_ID_HEADER: 128}

PRODUCT_TOPICS = frozenset({payloads.PRODUCTS_CREATE, payloads.PRODUCTS_UPDATE})
TOPICS = PRODUCT_TOPICS | {payloads.INVENTORY_LEVELS_UPDATE}

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class Result:
    """The HTTP answer to a webhook."""

    status_code: int
    body: dict[str, object] = field(default_factory=dict)


def _refuse(status_code: int, detail: str) -> Result:
    return Result(status_code, {"detail": detail})


class WebhookHandler:
    """Handles ``POST /webhooks/shopify`` (see the module's rules)."""

    def __init__(self, secret: str, store: WebhookStore, signal: OutboxSignal, clock: Clock) -> None:
        self.secret = secret
        self.store = store
        self.signal = signal
        self.clock = clock

    async def handle_webhook(self, headers: Mapping[str, str], body: bytes) -> Result:
        """Verify and process one delivery."""
        headers = {name.lower(): value for name, value in headers.items()}
        result = await self._handle(headers, body)
        if result.status_code >= 400:
            log.warning(
                "webhook refused",
                extra={
                    "status_code": result.status_code,
                    "detail": result.body.get("detail"),
                    "webhook_id": headers.get(WEBHOOK_ID_HEADER, "")[:128],
                },
            )
        return result

    async def _handle(self, headers: Mapping[str, str], body: bytes) -> Result:
        if not signatures.verify_shopify_webhook(self.secret, body, headers.get(HMAC_HEADER)):
            return _refuse(401, "invalid HMAC")
        problem = _header_problem(headers)
        if problem:
            return _refuse(400, problem)
        topic = headers[TOPIC_HEADER]
        if topic not in TOPICS:
            return _refuse(400, f"unsupported topic {topic!r}")
        try:
            payload = _decode(topic, body)
        except payloads.PayloadError as error:
            return _refuse(400, error.reason)
        tenant = await self.store.find_tenant(headers[SHOP_HEADER].strip().lower())
        if tenant is None:
            return _refuse(404, f"unknown shop {headers[SHOP_HEADER]!r}")
        receipt = _receipt(headers, tenant)
        if isinstance(payload, payloads.Product):
            return await self._products(receipt, tenant, payload)
        return await self._inventory_level(receipt, tenant, payload)

    async def _products(self, receipt: Receipt, tenant: Tenant, product: payloads.Product) -> Result:
        async with self.store.unit_of_work() as work:
            if not await work.claim_receipt(receipt):
                return Result(200, {"status": "duplicate"})
            await work.save_items(tenant.id, _item_mappings(product))
        return Result(200, {"status": "ok", "variants": len(product.variants)})

    async def _inventory_level(
        self, receipt: Receipt, tenant: Tenant, level: payloads.InventoryLevelUpdate
    ) -> Result:
        if level.available is None:
            return Result(200, {"status": "ignored", "reason": "inventory not tracked"})
        observation = LevelObservation(
            level.inventory_item_id, level.location_id, level.available, level.updated_at
        )
        async with self.store.unit_of_work() as work:
            if not await work.claim_receipt(receipt):
                return Result(200, {"status": "duplicate"})
            status = await self._observe(work, tenant, observation)
        if status == "restock":
            self.signal.notify()
        return Result(200, {"status": status})

    async def _observe(self, work: UnitOfWork, tenant: Tenant, level: LevelObservation) -> str:
        if not await work.save_snapshot(tenant.id, level):
            return "stale"
        variant = await work.variant_of(tenant.id, level.inventory_item_id)
        if variant is None:
            # The Admin API lookup of an unknown item is a later task; the snapshot is kept for it.
            log.warning(
                "inventory item without a known variant",
                extra={"tenant_id": tenant.id, "inventory_item_id": level.inventory_item_id},
            )
            return "unknown_item"
        rules = await work.rules_of(tenant.id)
        memory = await work.lock_variant(tenant.id, variant.variant_id)
        total = await work.variant_total(tenant.id, variant.variant_id, rules.excluded_location_ids)
        now = self.clock()
        decision = transitions.decide(memory.available, total, memory.last_restock_at, now, rules)
        await work.save_variant(tenant.id, variant.variant_id, total, now)
        if isinstance(decision, transitions.NoRestock):
            return decision.reason.value
        await self._record_restock(work, tenant, variant, decision, now, rules)
        return "restock"

    async def _record_restock(
        self,
        work: UnitOfWork,
        tenant: Tenant,
        variant: VariantRef,
        restock: transitions.Restock,
        now: datetime,
        rules: Rules,
    ) -> None:
        traceparent = telemetry.current_traceparent()
        window = keys.restock_window(now, rules.restock_window_seconds)
        event_id = await work.record_restock(
            NewRestock(
                tenant.id, variant.variant_id, variant.product_id, restock.available, window, now, traceparent
            )
        )
        event = messages.RestockDetected(
            restock_event_id=event_id,
            tenant_id=tenant.id,
            shop_domain=tenant.shop_domain,
            variant_id=variant.variant_id,
            product_id=variant.product_id,
            available=restock.available,
            restock_window=window,
            detected_at=now,
        )
        await work.enqueue(
            OutboxMessage(
                tenant.id,
                topology.RESTOCK_DETECTED,
                uuid.uuid4(),
                f"{tenant.id}:{variant.variant_id}",
                messages.encode(event).decode(),
                traceparent,
            )
        )
        log.info(
            "restock detected",
            extra={"tenant_id": tenant.id, "variant_id": variant.variant_id, "restock_event_id": event_id},
        )


def _decode(topic: str, body: bytes) -> payloads.Product | payloads.InventoryLevelUpdate:
    if topic in PRODUCT_TOPICS:
        return payloads.decode(body, payloads.Product)
    return payloads.decode(body, payloads.InventoryLevelUpdate)


def _header_problem(headers: Mapping[str, str]) -> str | None:
    for name in REQUIRED_HEADERS:
        if not headers.get(name):
            return f"missing header {_display(name)}"
    for name, limit in HEADER_LIMITS.items():
        if len(headers.get(name, "")) > limit:
            return f"header {_display(name)} longer than {limit} characters"
    return None


def _display(header: str) -> str:
    """``x-shopify-topic`` -> ``X-Shopify-Topic``, as Shopify spells it."""
    return "-".join(part.capitalize() for part in header.split("-"))


def _receipt(headers: Mapping[str, str], tenant: Tenant) -> Receipt:
    return Receipt(
        webhook_id=headers[WEBHOOK_ID_HEADER],
        shop_domain=tenant.shop_domain,
        topic=headers[TOPIC_HEADER],
        event_id=headers.get(EVENT_ID_HEADER) or None,
        triggered_at=_parse_time(headers.get(TRIGGERED_AT_HEADER)),
    )


def _parse_time(value: str | None) -> datetime | None:
    """Shopify's ``X-Shopify-Triggered-At``; informational, so an unreadable one is dropped, not refused."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else None


def _item_mappings(product: payloads.Product) -> list[ItemMapping]:
    return [
        ItemMapping(
            inventory_item_id=variant.inventory_item_id,
            variant_id=variant.id,
            product_id=variant.product_id or product.id,
            sku=variant.sku,
            title=payloads.variant_title(product.title, variant),
        )
        for variant in product.variants
    ]
