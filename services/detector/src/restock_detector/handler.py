"""One Shopify webhook, from raw headers and body to a ``Result``: verify, decode, record, decide.

Order matters: the HMAC is checked before anything else is read (an unsigned request learns nothing),
then the headers, the topic and the payload; every refusal is a 4xx with a reason and writes nothing.
An accepted webhook is processed in one transaction (receipt, snapshot, decision, restock event, outbox
row), and the relay is woken only after that commit. A repeat of a webhook id, or of an event id Shopify
resends under a new webhook id, is answered 200 ``duplicate`` and not processed. The shop's lifecycle and
the compliance topics are in ``lifecycle.py``; the compliance topics are answered for an uninstalled
shop too (``shop/redact`` comes 48 h after the uninstall), and with 200 for a shop we do not know.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from restock_common import signatures
from restock_detector import lifecycle, payloads, transitions
from restock_detector.ports import (
    ItemMapping,
    LevelObservation,
    OutboxSignal,
    Receipt,
    Tenant,
    UnitOfWork,
    VariantMemory,
    WebhookStore,
)
from restock_detector.restocks import record_restock

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
LEVEL_TOPICS = frozenset({payloads.INVENTORY_LEVELS_UPDATE})
TOPICS = PRODUCT_TOPICS | LEVEL_TOPICS | lifecycle.PRIVACY_TOPICS | {payloads.APP_UNINSTALLED}

Payload = payloads.Product | payloads.InventoryLevelUpdate | payloads.Shop | payloads.PrivacyRequest

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
        privacy = isinstance(payload, payloads.PrivacyRequest)
        shop = headers[SHOP_HEADER].strip().lower()
        tenant = await self.store.find_tenant(shop, installed_only=not privacy)
        if tenant is None and privacy:
            # Nothing of theirs is held here; a 4xx would only make Shopify retry for two days.
            return Result(200, {"status": "unknown_shop"})
        if tenant is None:
            return _refuse(404, f"unknown shop {headers[SHOP_HEADER]!r}")
        receipt = _receipt(headers, tenant)
        if isinstance(payload, payloads.Product):
            return await self._products(receipt, tenant, payload)
        if isinstance(payload, payloads.InventoryLevelUpdate):
            return await self._inventory_level(receipt, tenant, payload)
        return await self._lifecycle(receipt, tenant, payload)

    async def _lifecycle(
        self, receipt: Receipt, tenant: Tenant, payload: payloads.Shop | payloads.PrivacyRequest
    ) -> Result:
        async with self.store.unit_of_work() as work:
            if not await work.claim_receipt(receipt):
                return Result(200, {"status": "duplicate"})
            if isinstance(payload, payloads.Shop):
                body = await lifecycle.uninstall(work, tenant, self.clock())
            else:
                body = await lifecycle.privacy(work, tenant, receipt.topic, payload, self.clock())
        log.info("shop lifecycle webhook", extra={"tenant_id": tenant.id, "topic": receipt.topic, **body})
        return Result(200, body)

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
        outcome = transitions.observe(_memory(memory), total, now, rules)
        fired = False
        if isinstance(outcome.expired, transitions.Restock) and memory.armed_at is not None:
            at = transitions.due_at(memory.armed_at, rules)
            await record_restock(work, tenant, variant, outcome.expired.available, at, rules)
            fired = True
        decision = outcome.decision
        await work.save_variant(tenant.id, variant.variant_id, total, now, _armed_at(decision, memory, now))
        if isinstance(decision, transitions.Restock):
            await record_restock(work, tenant, variant, decision.available, now, rules)
            fired = True
        return "restock" if fired else _status(decision)


def _memory(memory: VariantMemory) -> transitions.Memory:
    return transitions.Memory(memory.available, memory.last_restock_at, memory.armed_at)


def _armed_at(decision: transitions.Decision, memory: VariantMemory, now: datetime) -> datetime | None:
    """Since when the variant is armed after ``decision`` (None: not armed)."""
    if isinstance(decision, transitions.Arm):
        return now
    if decision == transitions.NoRestock(transitions.Reason.ARMED):
        return memory.armed_at
    return None


def _status(decision: transitions.Decision) -> str:
    if isinstance(decision, transitions.Arm):
        return "armed"
    if isinstance(decision, transitions.Disarm):
        return "disarmed"
    if isinstance(decision, transitions.NoRestock):
        return decision.reason.value
    return "restock"


def _decode(topic: str, body: bytes) -> Payload:
    if topic in PRODUCT_TOPICS:
        return payloads.decode(body, payloads.Product)
    if topic in lifecycle.PRIVACY_TOPICS:
        return payloads.decode(body, payloads.PrivacyRequest)
    if topic == payloads.APP_UNINSTALLED:
        return payloads.decode(body, payloads.Shop)
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
