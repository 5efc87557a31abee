"""The store's state and the payloads Shopify would send about it. Pure apart from memory: clock passed in.

Rules:
- Payloads have Shopify's REST webhook shape (API 2025-01), timestamps in the shop's local offset
  (``2025-06-01T08:00:00-04:00``), whole seconds, like Shopify's.
- Each product and each inventory level has an ``updated_at`` that strictly increases with every change,
  even two changes in one second (the later one is pushed a second on), because receivers use it to
  ignore stale and reordered webhooks.
- A variant's ``inventory_quantity`` is the sum of its item's levels over every location.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
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

    def _after(self, previous: datetime | None) -> datetime:
        now = self.clock().replace(microsecond=0)
        return now if previous is None or now > previous else previous + ONE_SECOND

    def put_product(self, product_id: int, form: ProductIn) -> dict[str, Any]:
        """Create or replace a product; its ``products/update`` payload."""
        existing = self.products.get(product_id)
        updated_at = self._after(existing.updated_at if existing else None)
        created_at = existing.created_at if existing else updated_at
        self.products[product_id] = Product(product_id, form, created_at, updated_at)
        return self.product_payload(self.products[product_id])

    def set_level(self, form: LevelIn) -> dict[str, Any]:
        """Set one level; its ``inventory_levels/update`` payload."""
        key = (form.inventory_item_id, form.location_id)
        existing = self.levels.get(key)
        level = Level(*key, form.available, self._after(existing.updated_at if existing else None))
        self.levels[key] = level
        return level_payload(level)

    def quantity(self, inventory_item_id: int) -> int:
        """An item's stock over every location."""
        return sum(lvl.available for (item, _), lvl in self.levels.items() if item == inventory_item_id)

    def product_payload(self, product: Product) -> dict[str, Any]:
        """A product in Shopify's ``products/update`` shape."""
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
