"""Shopify's webhook payloads, as typed msgspec Structs, and their decoding.

Only the fields the detector uses are declared; Shopify adds fields over API versions and unknown ones are
ignored. A missing or ill-typed required field is a ``PayloadError`` whose reason names the field (msgspec
reports the JSON path, e.g. ``$.variants[0].inventory_item_id``); the caller answers 400 with it.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Final, TypeVar

import msgspec

AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
# What the columns can hold, checked at decoding so an out-of-range value is a 400 naming the field, never a
# database error: Shopify ids are positive 64-bit (bigint), quantities 32-bit (integer), and PostgreSQL text
# cannot hold a NUL character.
ShopifyId = Annotated[int, msgspec.Meta(gt=0, le=2**63 - 1)]
Quantity = Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1)]
Text = Annotated[str, msgspec.Meta(pattern=r"^[^\x00]*$")]
Sku = Annotated[str, msgspec.Meta(max_length=255, pattern=r"^[^\x00]*$")]

INVENTORY_LEVELS_UPDATE: Final = "inventory_levels/update"
PRODUCTS_CREATE: Final = "products/create"
PRODUCTS_UPDATE: Final = "products/update"
APP_UNINSTALLED: Final = "app/uninstalled"
CUSTOMERS_DATA_REQUEST: Final = "customers/data_request"
CUSTOMERS_REDACT: Final = "customers/redact"
SHOP_REDACT: Final = "shop/redact"
ORDERS_CREATE: Final = "orders/create"

DEFAULT_VARIANT_TITLE: Final = "Default Title"


class InventoryLevelUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """``inventory_levels/update``: one item's level at one location."""

    inventory_item_id: ShopifyId
    location_id: ShopifyId
    # None: the item's inventory is not tracked by Shopify; negative: oversold.
    available: Quantity | None
    updated_at: AwareDatetime
    admin_graphql_api_id: str | None = None


class Variant(msgspec.Struct, frozen=True, kw_only=True):
    """A variant inside a product payload."""

    id: ShopifyId
    title: Text
    inventory_item_id: ShopifyId
    product_id: ShopifyId | None = None
    sku: Sku | None = None
    inventory_quantity: Quantity | None = None


class Product(msgspec.Struct, frozen=True, kw_only=True):
    """``products/create`` and ``products/update``: the product with all its variants."""

    id: ShopifyId
    title: Text
    variants: list[Variant]


class Shop(msgspec.Struct, frozen=True, kw_only=True):
    """``app/uninstalled``: the shop resource; nothing in it is needed (the header names the shop)."""

    id: int | None = None


class Customer(msgspec.Struct, frozen=True, kw_only=True):
    """The customer named by a privacy request. Email and phone are only hashed, never stored or logged."""

    id: int | None = None
    email: str | None = None
    phone: str | None = None


class DataRequest(msgspec.Struct, frozen=True, kw_only=True):
    id: int | None = None


class PrivacyRequest(msgspec.Struct, frozen=True, kw_only=True):
    """``customers/data_request``, ``customers/redact`` and ``shop/redact`` (the mandatory compliance
    webhooks): the shop, and for the customer topics the customer and the orders concerned."""

    shop_id: int
    shop_domain: str
    customer: Customer | None = None
    orders_requested: list[int] = msgspec.field(default_factory=list)
    orders_to_redact: list[int] = msgspec.field(default_factory=list)
    data_request: DataRequest | None = None


class OrderLineItem(msgspec.Struct, frozen=True, kw_only=True):
    """A line of an order; a custom item (no product) has no ``variant_id``."""

    variant_id: ShopifyId | None = None
    quantity: Quantity = 1
    price: str = "0"


class OrderContact(msgspec.Struct, frozen=True, kw_only=True):
    """The order's customer: only hashed, never stored or logged."""

    email: str | None = None
    phone: str | None = None


class Order(msgspec.Struct, frozen=True, kw_only=True):
    """``orders/create``: who bought which variants. Email and phone are only hashed."""

    id: ShopifyId
    created_at: AwareDatetime
    line_items: list[OrderLineItem]
    currency: str | None = None
    email: str | None = None
    phone: str | None = None
    customer: OrderContact | None = None


class PayloadError(ValueError):
    """The body is not JSON, or not the payload its topic promises; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


P = TypeVar("P", InventoryLevelUpdate, Product, Shop, PrivacyRequest, Order)


def decode(body: bytes, kind: type[P]) -> P:
    """Decode a webhook body into its payload type, or raise ``PayloadError``."""
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as error:  # a subclass of DecodeError: must come first
        raise PayloadError(f"invalid payload: {error}") from error
    except msgspec.DecodeError as error:
        raise PayloadError("malformed JSON") from error


def variant_title(product_title: str, variant: Variant) -> str:
    """The display title: "Product - Variant", or the product title alone when it has no options."""
    if variant.title == DEFAULT_VARIANT_TITLE:
        return product_title
    return f"{product_title} - {variant.title}"


def price_cents(price: str) -> int:
    """Shopify's decimal price string (``"19.99"``) in cents, or ``PayloadError``."""
    try:
        amount = Decimal(price.strip())
    except InvalidOperation as error:
        raise PayloadError(f"invalid price {price[:32]!r}") from error
    if not amount.is_finite() or amount < 0:
        raise PayloadError(f"invalid price {price[:32]!r}")
    return int((amount * 100).to_integral_value())
