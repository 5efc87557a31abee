"""The GraphQL Admin API operations the detector sends, and the parsing of their answers. Pure: no I/O.

Exactly four operations (``admin_api.py`` sends them): (a) an inventory item's variant, (b) a variant's
levels (the confirmation read), (c) a page of variants with their levels (the reconciliation sync) and
(d) the same catalogue as a bulk operation whose JSONL result is read line by line. Answers are decoded
with msgspec into the shapes below; Shopify adds fields over versions and unknown ones are ignored. Ids are
global ids (``gid://shopify/InventoryItem/123``); the database keeps the numeric tail.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Final, TypeVar

import msgspec

API_VERSION: Final = "2025-01"

INVENTORY_ITEM_QUERY: Final = (
    "query($id: ID!) { inventoryItem(id: $id) { id variant { id product { id } } } }"
)
_LEVELS = 'edges { node { location { id } quantities(names: ["available"]) { name quantity } updatedAt } }'
VARIANT_LEVELS_QUERY: Final = (
    "query($id: ID!) { productVariant(id: $id) { id inventoryQuantity inventoryItem { id "
    f"inventoryLevels(first: 50) {{ {_LEVELS} }} }} }} }}"
)
VARIANTS_PAGE_QUERY: Final = (
    "query($first: Int!, $after: String) { productVariants(first: $first, after: $after) { "
    "pageInfo { hasNextPage endCursor } edges { cursor node { id product { id } inventoryItem { id "
    f"inventoryLevels(first: 20) {{ {_LEVELS} }} }} }} }} }} }}"
)
# The bulk form of (c): no pagination arguments, Shopify runs it to the end and flattens the connections.
BULK_VARIANTS_QUERY: Final = (
    "{ productVariants { edges { node { id product { id } inventoryItem { id "
    f"inventoryLevels {{ {_LEVELS} }} }} }} }} }} }}"
)
BULK_RUN_MUTATION: Final = (
    "mutation($query: String!) { bulkOperationRunQuery(query: $query) { bulkOperation { id status } "
    "userErrors { field message } } }"
)
BULK_STATUS_QUERY: Final = "{ currentBulkOperation { id status errorCode objectCount url } }"

AVAILABLE = "available"
T = TypeVar("T")
AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]


class ResponseError(ValueError):
    """An answer that is not the shape the operation promises; ``reason`` says where."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def gid(kind: str, number: int) -> str:
    """``gid("ProductVariant", 1)`` -> ``gid://shopify/ProductVariant/1``."""
    return f"gid://shopify/{kind}/{number}"


def gid_number(global_id: str) -> int:
    """The numeric tail of a global id (``gid://shopify/InventoryLevel/1?inventory_item_id=2`` -> 1)."""
    tail = global_id.rsplit("/", 1)[-1].split("?", 1)[0]
    if not global_id.startswith("gid://shopify/") or not tail.isdigit():
        raise ResponseError(f"not a Shopify global id: {global_id[:80]!r}")
    return int(tail)


# --- the wire shapes ---------------------------------------------------------------------------------


class ThrottleStatus(msgspec.Struct, frozen=True, rename="camel"):
    maximum_available: float
    currently_available: float
    restore_rate: float


class Cost(msgspec.Struct, frozen=True, rename="camel"):
    requested_query_cost: float | None = None
    actual_query_cost: float | None = None
    throttle_status: ThrottleStatus | None = None


class Extensions(msgspec.Struct, frozen=True):
    cost: Cost | None = None


class ErrorExtensions(msgspec.Struct, frozen=True):
    code: str | None = None


class GraphQLError(msgspec.Struct, frozen=True):
    message: str = ""
    extensions: ErrorExtensions | None = None


class Envelope(msgspec.Struct, frozen=True):
    """Every answer: ``data`` (decoded per operation), ``errors``, the cost. A 401 carries ``errors`` as
    a plain string."""

    data: msgspec.Raw = msgspec.field(default_factory=lambda: msgspec.Raw(b"null"))
    errors: list[GraphQLError] | str | None = None
    extensions: Extensions | None = None


class Ref(msgspec.Struct, frozen=True):
    id: str


class Quantity(msgspec.Struct, frozen=True):
    name: str
    quantity: int | None = None


class LevelNode(msgspec.Struct, frozen=True, rename="camel"):
    location: Ref
    quantities: list[Quantity]
    updated_at: AwareDatetime


class LevelEdge(msgspec.Struct, frozen=True):
    node: LevelNode


class LevelConnection(msgspec.Struct, frozen=True):
    edges: list[LevelEdge]


class ItemWithLevels(msgspec.Struct, frozen=True, rename="camel"):
    id: str
    inventory_levels: LevelConnection | None = None


class VariantNode(msgspec.Struct, frozen=True, rename="camel"):
    id: str
    product: Ref | None = None
    inventory_item: ItemWithLevels | None = None
    inventory_quantity: int | None = None


class VariantEdge(msgspec.Struct, frozen=True):
    node: VariantNode
    cursor: str | None = None


class PageInfo(msgspec.Struct, frozen=True, rename="camel"):
    has_next_page: bool
    end_cursor: str | None = None


class VariantConnection(msgspec.Struct, frozen=True, rename="camel"):
    page_info: PageInfo
    edges: list[VariantEdge]


class VariantsData(msgspec.Struct, frozen=True, rename="camel"):
    product_variants: VariantConnection


class VariantData(msgspec.Struct, frozen=True, rename="camel"):
    product_variant: VariantNode | None = None


class ItemVariant(msgspec.Struct, frozen=True):
    id: str
    product: Ref | None = None


class ItemNode(msgspec.Struct, frozen=True):
    id: str
    variant: ItemVariant | None = None


class ItemData(msgspec.Struct, frozen=True, rename="camel"):
    inventory_item: ItemNode | None = None


class UserError(msgspec.Struct, frozen=True):
    message: str
    field: list[str] | None = None


class BulkOperation(msgspec.Struct, frozen=True, rename="camel"):
    id: str
    status: str
    error_code: str | None = None
    object_count: str | int | None = None
    url: str | None = None


class BulkRun(msgspec.Struct, frozen=True, rename="camel"):
    bulk_operation: BulkOperation | None = None
    user_errors: list[UserError] = msgspec.field(default_factory=list)


class BulkRunData(msgspec.Struct, frozen=True, rename="camel"):
    bulk_operation_run_query: BulkRun


class BulkStatusData(msgspec.Struct, frozen=True, rename="camel"):
    current_bulk_operation: BulkOperation | None = None


class BulkLine(msgspec.Struct, frozen=True, rename="camel"):
    """One line of the bulk JSONL: a variant (with its item) or, with ``__parentId``, one of its levels."""

    id: str | None = None
    product: Ref | None = None
    inventory_item: ItemWithLevels | None = None
    location: Ref | None = None
    quantities: list[Quantity] | None = None
    updated_at: AwareDatetime | None = None
    parent_id: str | None = msgspec.field(default=None, name="__parentId")


# --- what the detector uses ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Level:
    """One item's ``available`` quantity at one location, as of Shopify's ``updatedAt``."""

    inventory_item_id: int
    location_id: int
    available: int
    updated_at: datetime


@dataclass(frozen=True)
class CatalogVariant:
    """A variant with its inventory item and the item's levels."""

    variant_id: int
    product_id: int | None
    inventory_item_id: int
    levels: tuple[Level, ...]


@dataclass(frozen=True)
class VariantPage:
    variants: tuple[CatalogVariant, ...]
    has_next_page: bool
    end_cursor: str | None


@dataclass(frozen=True)
class ItemOwner:
    """The variant (and product) an inventory item belongs to."""

    variant_id: int
    product_id: int | None


@dataclass(frozen=True)
class BulkStatus:
    id: str
    status: str  # CREATED | RUNNING | COMPLETED | CANCELING | CANCELED | FAILED | EXPIRED
    error_code: str | None
    url: str | None

    @property
    def finished(self) -> bool:
        return self.status not in ("CREATED", "RUNNING", "CANCELING")


@dataclass(frozen=True)
class Answer:
    """A decoded envelope: the raw ``data``, the error codes, and the cost."""

    data: msgspec.Raw | None
    error_codes: tuple[str, ...]
    error_messages: tuple[str, ...]
    cost: Cost | None


def decode_envelope(body: bytes) -> Answer:
    """Decode any answer's envelope (errors and cost; ``data`` left raw for the operation)."""
    envelope = _decode(body, Envelope)
    errors = envelope.errors
    if isinstance(errors, str):
        codes: tuple[str, ...] = ()
        messages: tuple[str, ...] = (errors,)
    else:
        codes = tuple(e.extensions.code for e in errors or () if e.extensions and e.extensions.code)
        messages = tuple(e.message for e in errors or ())
    cost = envelope.extensions.cost if envelope.extensions else None
    data = None if bytes(envelope.data).strip() == b"null" else envelope.data
    return Answer(data, codes, messages, cost)


def _decode(raw: bytes | msgspec.Raw | None, kind: type[T]) -> T:
    if raw is None:
        raise ResponseError(f"no data for {kind.__name__}")
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as error:
        raise ResponseError(f"unexpected {kind.__name__}: {error}") from error
    except msgspec.DecodeError as error:
        raise ResponseError(f"malformed JSON in {kind.__name__}") from error


def _available(quantities: list[Quantity]) -> int | None:
    return next((q.quantity for q in quantities if q.name == AVAILABLE), None)


def _levels(item: ItemWithLevels) -> tuple[Level, ...]:
    item_id = gid_number(item.id)
    edges = item.inventory_levels.edges if item.inventory_levels else []
    levels = []
    for edge in edges:
        available = _available(edge.node.quantities)
        if available is not None:  # an untracked item reports no "available" quantity
            levels.append(Level(item_id, gid_number(edge.node.location.id), available, edge.node.updated_at))
    return tuple(levels)


def _catalog_variant(node: VariantNode) -> CatalogVariant | None:
    if node.inventory_item is None:
        return None
    return CatalogVariant(
        gid_number(node.id),
        gid_number(node.product.id) if node.product else None,
        gid_number(node.inventory_item.id),
        _levels(node.inventory_item),
    )


def parse_item_owner(data: msgspec.Raw | None) -> ItemOwner | None:
    """(a): the item's variant, or None when Shopify knows no such item (or it has no variant)."""
    item = _decode(data, ItemData).inventory_item
    if item is None or item.variant is None:
        return None
    product = item.variant.product
    return ItemOwner(gid_number(item.variant.id), gid_number(product.id) if product else None)


def parse_variant_levels(data: msgspec.Raw | None) -> CatalogVariant | None:
    """(b): the variant's item and levels, or None when Shopify knows no such variant."""
    node = _decode(data, VariantData).product_variant
    return _catalog_variant(node) if node is not None else None


def parse_variants_page(data: msgspec.Raw | None) -> VariantPage:
    """(c): one page of the catalogue."""
    connection = _decode(data, VariantsData).product_variants
    variants = tuple(v for v in (_catalog_variant(e.node) for e in connection.edges) if v is not None)
    return VariantPage(variants, connection.page_info.has_next_page, connection.page_info.end_cursor)


def parse_bulk_run(data: msgspec.Raw | None) -> BulkStatus:
    """(d) started: the operation, or ``ResponseError`` with Shopify's user errors."""
    run = _decode(data, BulkRunData).bulk_operation_run_query
    if run.bulk_operation is None:
        reasons = "; ".join(error.message for error in run.user_errors) or "no bulk operation"
        raise ResponseError(f"bulk operation refused: {reasons}")
    return _bulk_status(run.bulk_operation)


def parse_bulk_status(data: msgspec.Raw | None) -> BulkStatus | None:
    """(d) polled: the shop's current bulk operation, if any."""
    operation = _decode(data, BulkStatusData).current_bulk_operation
    return _bulk_status(operation) if operation is not None else None


def _bulk_status(operation: BulkOperation) -> BulkStatus:
    return BulkStatus(operation.id, operation.status, operation.error_code, operation.url)


@dataclass
class BulkCatalog:
    """Bulk JSONL read line by line into compact tuples: variants by id, their item, and levels by parent.

    Shopify promises a child line comes after its parent's, not right after it, so a variant is complete
    only at the end of the file; what is kept is a few integers per variant and level, never the text."""

    variants: dict[int, tuple[int | None, int]]  # variant -> (product, inventory item)
    items: dict[int, int]  # inventory item -> variant
    levels: dict[int, list[Level]]  # variant -> levels

    @classmethod
    def empty(cls) -> BulkCatalog:
        return cls({}, {}, {})

    def add_line(self, line: bytes) -> None:
        """One JSONL line (blank lines are skipped)."""
        if not line.strip():
            return
        row = _decode(line, BulkLine)
        if row.parent_id is None:
            self._add_variant(row)
        else:
            self._add_level(row, row.parent_id)

    def _add_variant(self, row: BulkLine) -> None:
        if row.id is None or row.inventory_item is None:
            return
        variant, item = gid_number(row.id), gid_number(row.inventory_item.id)
        self.variants[variant] = (gid_number(row.product.id) if row.product else None, item)
        self.items[item] = variant

    def _add_level(self, row: BulkLine, parent_id: str) -> None:
        if row.location is None or row.updated_at is None:
            return
        available = _available(row.quantities or [])
        if available is None:
            return
        # The parent is the variant (the nearest node of a connection) or, in some shapes, its item.
        parent = gid_number(parent_id)
        variant = parent if "/ProductVariant/" in parent_id else self.items.get(parent)
        if variant is None or variant not in self.variants:
            raise ResponseError(f"bulk level before its parent {parent_id[:80]!r}")
        item = self.variants[variant][1]
        level = Level(item, gid_number(row.location.id), available, row.updated_at)
        self.levels.setdefault(variant, []).append(level)

    def catalog(self) -> list[CatalogVariant]:
        """Every variant with its levels, in the order the file named them."""
        return [
            CatalogVariant(variant, product, item, tuple(self.levels.get(variant, ())))
            for variant, (product, item) in self.variants.items()
        ]
