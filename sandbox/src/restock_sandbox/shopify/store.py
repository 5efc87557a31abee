"""The store's state and the payloads Shopify would send about it. Pure apart from memory: clock passed in.

Rules:
- Payloads have Shopify's REST webhook shape (API 2025-01), timestamps in the shop's local offset
  (``2025-06-01T08:00:00-04:00``), whole seconds, like Shopify's.
- Each product and each inventory level has an ``updated_at`` that strictly increases with every change,
  even two changes in one second (the later one is pushed a second on), because receivers use it to
  ignore stale and reordered webhooks.
- A variant's ``inventory_quantity`` is the sum of its item's levels over every location.
- Orders (``orders/create``) have increasing ids; a line item names a variant of the store (its product is
  looked up); the customer is one per email or phone, with a stable id; prices are decimal strings.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import msgspec

SHOP_TIMEZONE = ZoneInfo("America/New_York")
ONE_SECOND = timedelta(seconds=1)


class VariantIn(msgspec.Struct, frozen=True, kw_only=True):
    """A variant as ``PUT /store/products/{id}`` takes it."""

    id: int
    title: str
    inventory_item_id: int
    sku: str | None = None
    price: str = "0.00"


class ProductIn(msgspec.Struct, frozen=True, kw_only=True):
    """A product as ``PUT /store/products/{id}`` takes it."""

    title: str
    variants: list[VariantIn]
    status: str = "active"


class LevelIn(msgspec.Struct, frozen=True, kw_only=True):
    """``POST /store/inventory_levels/set``, as Shopify's REST endpoint of that name."""

    inventory_item_id: int
    location_id: int
    available: int


class LineItemIn(msgspec.Struct, frozen=True, kw_only=True):
    """One line of ``POST /store/orders``."""

    variant_id: int
    quantity: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 1
    price: str | int | float = "0.00"


class OrderIn(msgspec.Struct, frozen=True, kw_only=True):
    """``POST /store/orders``: what a checkout would create."""

    line_items: Annotated[list[LineItemIn], msgspec.Meta(min_length=1, max_length=250)]
    email: str | None = None
    phone: str | None = None
    currency: Annotated[str, msgspec.Meta(pattern="^[A-Z]{3}$")] = "USD"


FIRST_ORDER_ID = 5_000_000_001
FIRST_LINE_ITEM_ID = 6_000_000_001
FIRST_CUSTOMER_ID = 7_000_000_001


def money(value: str | int | float) -> Decimal:
    """A price as Shopify's two-decimal amount; ValueError when it is not one."""
    try:
        amount = Decimal(str(value))
    except InvalidOperation as bad:
        raise ValueError(f"not a price: {value!r}") from bad
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"not a price: {value!r}")
    return amount.quantize(Decimal("0.01"))


@dataclass
class Product:
    id: int
    form: ProductIn
    created_at: datetime
    updated_at: datetime


@dataclass
class Level:
    inventory_item_id: int
    location_id: int
    available: int
    updated_at: datetime


def shopify_time(moment: datetime) -> str:
    """Shopify's timestamp format: local offset, whole seconds."""
    return moment.astimezone(SHOP_TIMEZONE).isoformat(timespec="seconds")


def handle(title: str) -> str:
    """Shopify's URL handle of a title."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "product"


@dataclass
class Store:
    """One shop's products and inventory levels."""

    shop_domain: str
    clock: Callable[[], datetime]
    products: dict[int, Product] = field(default_factory=dict)
    levels: dict[tuple[int, int], Level] = field(default_factory=dict)
    # Lookups the Admin API makes per request, kept so a 100,000-variant catalogue stays fast: levels by
    # item (kept by set_level) and variants by id / by inventory item (rebuilt after a product changes).
    item_levels: dict[int, dict[int, Level]] = field(default_factory=dict)
    _variant_index: dict[int, tuple[Product, VariantIn]] | None = None
    _item_index: dict[int, tuple[Product, VariantIn]] | None = None
    orders: list[dict[str, Any]] = field(default_factory=list)
    customers: dict[str, int] = field(default_factory=dict)  # email or phone -> customer id
    line_item_count: int = 0

    def _after(self, previous: datetime | None) -> datetime:
        now = self.clock().replace(microsecond=0)
        return now if previous is None or now > previous else previous + ONE_SECOND

    def put_product(self, product_id: int, form: ProductIn) -> dict[str, Any]:
        """Create or replace a product; its ``products/create`` or ``products/update`` payload."""
        existing = self.products.get(product_id)
        updated_at = self._after(existing.updated_at if existing else None)
        created_at = existing.created_at if existing else updated_at
        self.products[product_id] = Product(product_id, form, created_at, updated_at)
        self._variant_index = self._item_index = None
        return self.product_payload(self.products[product_id])

    def set_level(self, form: LevelIn) -> dict[str, Any]:
        """Set one level; its ``inventory_levels/update`` payload."""
        key = (form.inventory_item_id, form.location_id)
        existing = self.levels.get(key)
        level = Level(*key, form.available, self._after(existing.updated_at if existing else None))
        self.levels[key] = level
        self.item_levels.setdefault(form.inventory_item_id, {})[form.location_id] = level
        return level_payload(level)

    def create_order(self, form: OrderIn) -> dict[str, Any]:
        """Record an order; its ``orders/create`` payload. ValueError for an unknown variant or bad price."""
        variants = {v.id: (p, v) for p in self.products.values() for v in p.form.variants}
        lines = []
        for line in form.line_items:
            if line.variant_id not in variants:
                raise ValueError(f"unknown variant {line.variant_id}")
            lines.append((line, *variants[line.variant_id], money(line.price)))
        number = len(self.orders) + 1
        order_id = FIRST_ORDER_ID + number - 1
        stamp = shopify_time(self.clock().replace(microsecond=0))
        total = sum((price * line.quantity for line, _, _, price in lines), Decimal("0.00"))
        payload = {
            "id": order_id,
            "admin_graphql_api_id": f"gid://shopify/Order/{order_id}",
            "name": f"#{1000 + number}",
            "order_number": 1000 + number,
            "number": number,
            "email": form.email,
            "contact_email": form.email,
            "phone": form.phone,
            "currency": form.currency,
            "presentment_currency": form.currency,
            "created_at": stamp,
            "updated_at": stamp,
            "processed_at": stamp,
            "financial_status": "paid",
            "fulfillment_status": None,
            "confirmed": True,
            "test": False,
            "source_name": "web",
            "subtotal_price": f"{total:.2f}",
            "total_line_items_price": f"{total:.2f}",
            "total_tax": "0.00",
            "total_discounts": "0.00",
            "total_price": f"{total:.2f}",
            "line_items": [self._line_item(*entry) for entry in lines],
            "customer": self._customer(form.email, form.phone, stamp),
        }
        self.orders.append(payload)
        return payload

    def _line_item(
        self, line: LineItemIn, product: Product, variant: VariantIn, price: Decimal
    ) -> dict[str, Any]:
        self.line_item_count += 1
        item_id = FIRST_LINE_ITEM_ID + self.line_item_count - 1
        return {
            "id": item_id,
            "admin_graphql_api_id": f"gid://shopify/LineItem/{item_id}",
            "variant_id": variant.id,
            "product_id": product.id,
            "quantity": line.quantity,
            "price": f"{price:.2f}",
            "title": product.form.title,
            "variant_title": variant.title,
            "name": f"{product.form.title} - {variant.title}",
            "sku": variant.sku,
            "fulfillable_quantity": line.quantity,
            "fulfillment_status": None,
            "requires_shipping": True,
            "taxable": True,
            "gift_card": False,
        }

    def _customer(self, email: str | None, phone: str | None, stamp: str) -> dict[str, Any] | None:
        contact = (email or "").strip().lower() or (phone or "").strip()
        if not contact:
            return None
        customer_id = self.customers.setdefault(contact, FIRST_CUSTOMER_ID + len(self.customers))
        return {
            "id": customer_id,
            "admin_graphql_api_id": f"gid://shopify/Customer/{customer_id}",
            "email": email,
            "phone": phone,
            "created_at": stamp,
            "updated_at": stamp,
            "first_name": None,
            "last_name": None,
            "state": "disabled",
            "verified_email": True,
            "currency": None,
        }

    def quantity(self, inventory_item_id: int) -> int:
        """An item's stock over every location."""
        return sum(lvl.available for lvl in self.item_levels.get(inventory_item_id, {}).values())

    def variants(self) -> dict[int, tuple[Product, VariantIn]]:
        """Every variant by id, with its product, in id order."""
        if self._variant_index is None:
            pairs = sorted((v.id, (p, v)) for p in self.products.values() for v in p.form.variants)
            self._variant_index = dict(pairs)
        return self._variant_index

    def variant_of_item(self, inventory_item_id: int) -> tuple[Product, VariantIn] | None:
        """The variant an inventory item belongs to, with its product."""
        if self._item_index is None:
            self._item_index = {v.inventory_item_id: (p, v) for p, v in self.variants().values()}
        return self._item_index.get(inventory_item_id)

    def product_payload(self, product: Product) -> dict[str, Any]:
        """A product in Shopify's ``products/create`` / ``products/update`` shape."""
        stamp = shopify_time(product.updated_at)
        variants = [
            self._variant_payload(product, v, position) for position, v in enumerate(product.form.variants, 1)
        ]
        return {
            "admin_graphql_api_id": f"gid://shopify/Product/{product.id}",
            "body_html": "",
            "created_at": shopify_time(product.created_at),
            "handle": handle(product.form.title),
            "id": product.id,
            "product_type": "",
            "published_at": shopify_time(product.created_at),
            "template_suffix": None,
            "title": product.form.title,
            "updated_at": stamp,
            "vendor": self.shop_domain.split(".")[0],
            "status": product.form.status,
            "published_scope": "web",
            "tags": "",
            "variants": variants,
            "options": [{"name": "Title", "values": [v.title for v in product.form.variants], "position": 1}],
            "images": [],
            "image": None,
            "media": [],
            "variant_gids": [
                {"admin_graphql_api_id": v["admin_graphql_api_id"], "updated_at": stamp} for v in variants
            ],
            "has_variants_that_requires_components": False,
            "category": None,
        }

    def _variant_payload(self, product: Product, variant: VariantIn, position: int) -> dict[str, Any]:
        quantity = self.quantity(variant.inventory_item_id)
        return {
            "admin_graphql_api_id": f"gid://shopify/ProductVariant/{variant.id}",
            "barcode": None,
            "compare_at_price": None,
            "created_at": shopify_time(product.created_at),
            "id": variant.id,
            "inventory_policy": "deny",
            "position": position,
            "price": variant.price,
            "product_id": product.id,
            "sku": variant.sku,
            "taxable": True,
            "title": variant.title,
            "updated_at": shopify_time(product.updated_at),
            "option1": variant.title,
            "option2": None,
            "option3": None,
            "image_id": None,
            "inventory_item_id": variant.inventory_item_id,
            "inventory_quantity": quantity,
            "old_inventory_quantity": quantity,
        }

    def product_list(self) -> list[dict[str, Any]]:
        """Every product, in Shopify's shape."""
        return [self.product_payload(p) for p in self.products.values()]


def level_payload(level: Level) -> dict[str, Any]:
    """An inventory level in Shopify's ``inventory_levels/update`` shape."""
    return {
        "inventory_item_id": level.inventory_item_id,
        "location_id": level.location_id,
        "available": level.available,
        "updated_at": shopify_time(level.updated_at),
        "admin_graphql_api_id": (
            f"gid://shopify/InventoryLevel/{level.location_id}?inventory_item_id={level.inventory_item_id}"
        ),
    }
