"""One Shopify webhook, from raw headers and body to a ``Result``: verify, decode, record, decide.

Order matters: the HMAC is checked before anything else is read (an unsigned request learns nothing),
then the headers, the topic and the payload; every refusal is a 4xx with a reason and writes nothing.
An accepted webhook's writes (receipt, snapshot, decision, restock event, outbox row) commit together,
and the relay is woken only after that commit. A repeat of a webhook id, or of an event id Shopify
resends under a new webhook id, is answered 200 ``duplicate`` and not processed. The shop's lifecycle and
the compliance topics are in ``lifecycle.py``; the compliance topics are answered for an uninstalled
shop too (``shop/redact`` comes 48 h after the uninstall), and with 200 for a shop we do not know.

A level of a known item is read, judged and written in two round trips without a transaction
(``optimistic.py``, ADR 27); a level of an unknown item, and one whose variant moved between the two trips,
takes the locking path: one transaction that locks the variant's row. Levels are judged by
``observation``'s functions, the same the sync uses. A level of an item no product payload named is kept
as a snapshot, and after that commit the Admin API is asked whose item it is (no transaction held open over
HTTP); if it answers, the mapping is stored and the level judged in a second transaction, else the next
reconciliation sync maps the item and judges the kept snapshot (ADR 0012).
``orders/create`` becomes an ``order.created`` message with the buyer's contact hashes, never contacts.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from restock_common import messages, signatures, telemetry, topology
from restock_detector import lifecycle, payloads
from restock_detector.admin_api import AdminApiError
from restock_detector.admin_graphql import ItemOwner, ResponseError
from restock_detector.observation import Observed, observe_variant
from restock_detector.optimistic import observe_level
from restock_detector.ports import (
    AdminApi,
    ItemMapping,
    LevelObservation,
    LockedVariant,
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
LEVEL_TOPICS = frozenset({payloads.INVENTORY_LEVELS_UPDATE})
TOPICS = (
    PRODUCT_TOPICS
    | LEVEL_TOPICS
    | lifecycle.PRIVACY_TOPICS
    | {payloads.APP_UNINSTALLED, payloads.ORDERS_CREATE}
)
UNKNOWN_ITEM = "unknown_item"
# Shopify gives up on a webhook after 5 s: the item lookup must leave time to answer.
LOOKUP_TIMEOUT_SECONDS = 3.0

Payload = (
    payloads.Product
    | payloads.InventoryLevelUpdate
    | payloads.Shop
    | payloads.PrivacyRequest
    | payloads.Order
)

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class Result:
    """The HTTP answer to a webhook."""

    status_code: int
    body: dict[str, object] = field(default_factory=dict)


def _refuse(status_code: int, detail: str) -> Result:
    return Result(status_code, {"detail": detail})


class TenantCache:
    """Shop domain -> tenant, for ``TTL``, bounded: the level hot path saves a round trip per webhook with
    it, and the level's first statement confirms the shop is still installed (``_level_webhook``)."""

    TTL = timedelta(seconds=60)
    SIZE = 10_000

    def __init__(self) -> None:
        self._tenants: dict[str, tuple[Tenant, datetime]] = {}

    def get(self, shop: str, now: datetime) -> Tenant | None:
        found = self._tenants.get(shop)
        if found is None or now - found[1] > self.TTL:
            return None
        return found[0]

    def put(self, shop: str, tenant: Tenant, now: datetime) -> None:
        if shop not in self._tenants and len(self._tenants) >= self.SIZE:
            self._tenants.clear()  # rare (10,000 shops on one replica): start over rather than track age
        self._tenants[shop] = (tenant, now)

    def forget(self, shop: str) -> None:
        self._tenants.pop(shop, None)


class WebhookHandler:
    """Handles ``POST /webhooks/shopify`` (see the module's rules)."""

    def __init__(
        self,
        secret: str,
        store: WebhookStore,
        signal: OutboxSignal,
        clock: Clock,
        admin: AdminApi | None = None,
    ) -> None:
        self.secret = secret
        self.store = store
        self.signal = signal
        self.clock = clock
        self.admin = admin
        self.tenants = TenantCache()

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
        if isinstance(payload, payloads.InventoryLevelUpdate):
            return await self._level_webhook(headers, shop, payload)
        tenant = await self.store.find_tenant(shop, installed_only=not privacy)
        if tenant is None and privacy:
            # Nothing of theirs is held here; a 4xx would only make Shopify retry for two days.
            return Result(200, {"status": "unknown_shop"})
        if tenant is None:
            return _refuse(404, f"unknown shop {headers[SHOP_HEADER]!r}")
        receipt = _receipt(headers, tenant)
        if isinstance(payload, payloads.Product):
            return await self._products(receipt, tenant, payload)
        if isinstance(payload, payloads.Order):
            return await self._order(receipt, tenant, payload)
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
        self.tenants.forget(tenant.shop_domain)  # uninstalled or redacted: no level may take the cache's word
        log.info("shop lifecycle webhook", extra={"tenant_id": tenant.id, "topic": receipt.topic, **body})
        return Result(200, body)

    async def _products(self, receipt: Receipt, tenant: Tenant, product: payloads.Product) -> Result:
        async with self.store.unit_of_work() as work:
            if not await work.claim_receipt(receipt):
                return Result(200, {"status": "duplicate"})
            await work.save_items(tenant.id, _item_mappings(product))
        return Result(200, {"status": "ok", "variants": len(product.variants)})

    async def _level_webhook(
        self, headers: Mapping[str, str], shop: str, level: payloads.InventoryLevelUpdate
    ) -> Result:
        """The hot path. The shop's tenant comes from ``TenantCache``, which is never trusted alone: the
        level's first statement (the read, or the locking path's claim) re-checks the installation, and a
        tenant found uninstalled there is looked up afresh (a reinstalled shop) before the webhook is
        refused."""
        cached = self.tenants.get(shop, self.clock())
        if cached is not None:
            result = await self._inventory_level(_receipt(headers, cached), cached, level)
            if result is not None:
                return result
            self.tenants.forget(shop)
        tenant = await self.store.find_tenant(shop)
        result = (
            None if tenant is None else await self._inventory_level(_receipt(headers, tenant), tenant, level)
        )
        if tenant is None or result is None:
            return _refuse(404, f"unknown shop {headers[SHOP_HEADER]!r}")
        self.tenants.put(shop, tenant, self.clock())
        return result

    async def _inventory_level(
        self, receipt: Receipt, tenant: Tenant, level: payloads.InventoryLevelUpdate
    ) -> Result | None:
        """The webhook's answer, or None when the shop turned out not to be installed (nothing written)."""
        if level.available is None:
            return Result(200, {"status": "ignored", "reason": "inventory not tracked"})
        observation = LevelObservation(
            level.inventory_item_id, level.location_id, level.available, level.updated_at
        )
        observed = None
        async with self.store.level_session() as session:
            read = await session.read_level(receipt, tenant.id, observation)
            if not read.installed:
                return None
            if read.seen:
                return Result(200, {"status": "duplicate"})
            if read.memory is not None:  # a known item: two round trips, unless its variant moved meanwhile
                observed = await observe_level(session, tenant, receipt, observation, read, self.clock())
        if observed is None:
            observed = await self._observe_locked(receipt, tenant, observation)
            if observed is None:
                return None
        if observed.enqueued:
            self.signal.notify()
        return Result(200, {"status": observed.status})

    async def _observe_locked(
        self, receipt: Receipt, tenant: Tenant, observation: LevelObservation
    ) -> Observed | None:
        """The locking path: an item no product payload has mapped yet, or a variant that moved between the
        two-trip path's read and write. None when the shop turned out not to be installed."""
        async with self.store.unit_of_work() as work:
            claim = await work.claim_level(receipt, tenant.id, observation.inventory_item_id)
            if not claim.installed:
                return None
            if not claim.claimed:
                return Observed("duplicate")
            observed = await self._observe(work, tenant, observation, claim.locked)
        if observed.status == UNKNOWN_ITEM:
            observed = await self._resolve_item(tenant, observation)
        return observed

    async def _observe(
        self, work: UnitOfWork, tenant: Tenant, level: LevelObservation, locked: LockedVariant | None
    ) -> Observed:
        if locked is not None:
            return await observe_variant(work, tenant, locked.variant, [level], self.clock(), locked)
        # Kept even so: the lookup below, or the next sync, maps the item and judges it.
        return Observed(UNKNOWN_ITEM if await work.save_snapshot(tenant.id, level) else "stale")

    async def _resolve_item(self, tenant: Tenant, level: LevelObservation) -> Observed:
        """An item no product payload named: ask the Admin API whose it is (outside any transaction),
        store the mapping and judge the observation; on failure the snapshot waits for the next sync."""
        owner = await self._look_up(tenant, level.inventory_item_id)
        if owner is None:
            return Observed(UNKNOWN_ITEM)
        variant = VariantRef(owner.variant_id, owner.product_id)
        mapping = ItemMapping(level.inventory_item_id, owner.variant_id, owner.product_id, None, None)
        async with self.store.unit_of_work() as work:
            await work.save_items(tenant.id, [mapping])
            return await observe_variant(work, tenant, variant, [level], self.clock())

    async def _look_up(self, tenant: Tenant, inventory_item_id: int) -> ItemOwner | None:
        context = {"tenant_id": tenant.id, "inventory_item_id": inventory_item_id}
        access = await self.store.shop_access(tenant.id) if self.admin is not None else None
        if self.admin is None or access is None:
            log.warning("inventory item without a known variant; kept for the next sync", extra=context)
            return None
        try:
            async with asyncio.timeout(LOOKUP_TIMEOUT_SECONDS):
                owner = await self.admin.item_owner(access, inventory_item_id)
        except (AdminApiError, ResponseError, TimeoutError) as error:
            failure = error.failure.value if isinstance(error, AdminApiError) else type(error).__name__
            log.warning(
                "inventory item lookup failed; kept for the next sync", extra={**context, "failure": failure}
            )
            return None
        if owner is None:
            log.warning("inventory item unknown to the Admin API", extra=context)
        return owner

    async def _order(self, receipt: Receipt, tenant: Tenant, order: payloads.Order) -> Result:
        try:
            lines = _order_lines(order)
        except payloads.PayloadError as error:
            return _refuse(400, error.reason)
        created = messages.OrderCreated(
            tenant_id=tenant.id,
            shop_domain=tenant.shop_domain,
            order_id=order.id,
            lines=lines,
            contact_hashes=_order_contacts(order),
            currency=(order.currency or "USD")[:3],
            ordered_at=order.created_at,
        )
        async with self.store.unit_of_work() as work:
            if not await work.claim_receipt(receipt):
                return Result(200, {"status": "duplicate"})
            await work.enqueue(
                OutboxMessage(
                    tenant.id,
                    topology.ORDER_CREATED,
                    uuid.uuid4(),
                    f"{tenant.id}:order:{order.id}",
                    messages.encode(created).decode(),
                    telemetry.current_traceparent(),
                )
            )
        self.signal.notify()
        return Result(200, {"status": "ok", "lines": len(lines)})


def _order_lines(order: payloads.Order) -> list[messages.OrderLine]:
    return [
        messages.OrderLine(
            variant_id=line.variant_id, quantity=line.quantity, price_cents=payloads.price_cents(line.price)
        )
        for line in order.line_items
        if line.variant_id is not None
    ]


def _order_contacts(order: payloads.Order) -> list[str]:
    """Hashes of the order's and its customer's email (lowercased) and phone (E.164 as given)."""
    customer = order.customer or payloads.OrderContact()
    emails = [e.strip().lower() for e in (order.email, customer.email) if e and e.strip()]
    phones = [p.strip() for p in (order.phone, customer.phone) if p and p.strip()]
    return sorted({signatures.contact_hash(contact) for contact in emails + phones})


def _decode(topic: str, body: bytes) -> Payload:
    if topic in PRODUCT_TOPICS:
        return payloads.decode(body, payloads.Product)
    if topic in lifecycle.PRIVACY_TOPICS:
        return payloads.decode(body, payloads.PrivacyRequest)
    if topic == payloads.APP_UNINSTALLED:
        return payloads.decode(body, payloads.Shop)
    if topic == payloads.ORDERS_CREATE:
        return payloads.decode(body, payloads.Order)
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
