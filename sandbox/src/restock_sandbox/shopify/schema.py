"""The part of Shopify's Admin API schema the sandbox serves, resolved over the ``Store``. Pure apart from
the store's memory.

Types and fields (names and shapes as in Admin API 2025-01):
  InventoryItem    id legacyResourceId sku tracked variant inventoryLevels(first, after)
  ProductVariant   id legacyResourceId title sku price inventoryQuantity availableForSale createdAt
                   updatedAt product inventoryItem
  Product          id legacyResourceId title handle status vendor totalInventory createdAt updatedAt
                   variants(first, after)
  InventoryLevel   id location quantities(names) updatedAt createdAt item
  Location         id legacyResourceId name isActive
  InventoryQuantity  name quantity
  BulkOperation    id status errorCode type query createdAt completedAt objectCount rootObjectCount
                   fileSize url partialDataUrl
Every type answers ``__typename``. A field outside this list raises ``Unsupported``, which the API turns
into a GraphQL error with code UNSUPPORTED, so a client bug is visible instead of silently null.

Connections page in a stable order (ids ascending) with opaque cursors, base64 of
``{"last_id": n, "last_value": "n"}`` as Shopify's look; ``first`` is required and at most 250.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from restock_sandbox.shopify.graphql import Field, InlineFragment, Selection
from restock_sandbox.shopify.store import Level, Product, Store, VariantIn

MAX_PAGE_SIZE = 250
QUANTITY_NAMES = (
    "available",
    "on_hand",
    "committed",
    "incoming",
    "reserved",
    "damaged",
    "safety_stock",
    "quality_control",
)
GID = re.compile(r"^gid://shopify/(?P<type>[A-Za-z]+)/(?P<id>[0-9]+)(?:\?.*)?$")


class Unsupported(Exception):
    """A field, argument or operation the sandbox does not serve."""


class FieldError(Exception):
    """A bad argument, as Shopify reports it (a GraphQL error with a code)."""

    def __init__(self, message: str, code: str = "BAD_REQUEST") -> None:
        super().__init__(message)
        self.code = code


def gid(kind: str, number: int) -> str:
    """A Shopify global id."""
    return f"gid://shopify/{kind}/{number}"


def parse_gid(value: Any, kind: str | None = None) -> tuple[str, int]:
    """(type, number) of a global id; FieldError when malformed or of another type than ``kind``."""
    match = GID.match(value) if isinstance(value, str) else None
    if match is None or (kind is not None and match["type"] != kind):
        raise FieldError(
            f"Invalid global id '{value}'", "INVALID_GLOBAL_ID" if match is None else "BAD_REQUEST"
        )
    return match["type"], int(match["id"])


def iso_utc(moment: datetime | None) -> str | None:
    """GraphQL DateTime: ISO 8601 in UTC, whole seconds, ``Z``."""
    return None if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def encode_cursor(number: int) -> str:
    """An opaque cursor after the object with id ``number``."""
    raw = json.dumps({"last_id": number, "last_value": str(number)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The id a cursor points after; FieldError when it is not one of ours."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        number = json.loads(base64.urlsafe_b64decode(padded))["last_id"]
    except (ValueError, KeyError, TypeError, binascii.Error) as bad:
        raise FieldError(f"Invalid cursor for current pagination sort: {cursor!r}") from bad
    if not isinstance(number, int):
        raise FieldError(f"Invalid cursor for current pagination sort: {cursor!r}")
    return number


@dataclass(frozen=True)
class Obj:
    """A typed object of the schema over one value of the store."""

    typename: str
    value: Any
    gid: str | None = None


@dataclass(frozen=True)
class Connection:
    """One page of a connection."""

    items: list[tuple[int, Obj]]  # (id for the cursor, node)
    has_next: bool
    has_previous: bool


@dataclass
class Context:
    """One request's execution: the store, the request's base URL, and (bulk mode) the lines written."""

    store: Store
    base_url: str
    bulk_status: Callable[[Any], str]  # a BulkOperation's status, completing it when due
    bulk: bool = False
    lines: list[dict[str, Any]] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)


def page_of(items: Iterable[tuple[int, Obj]], args: Mapping[str, Any], ctx: Context) -> Connection:
    """Page a connection by ``first`` / ``after`` (everything in bulk mode, where pagination is Shopify's)."""
    if ctx.bulk:
        return Connection(sorted(items, key=lambda item: item[0]), False, False)
    unsupported = set(args) - {"first", "after", "names"}
    if unsupported:
        raise Unsupported(f"Arguments {sorted(unsupported)} are not supported by the sandbox")
    first = args.get("first")
    if not isinstance(first, int) or first < 0:
        raise FieldError("You must provide one of first or last", "BAD_REQUEST")
    if first > MAX_PAGE_SIZE:
        raise FieldError(f"The requested page size ({first}) exceeds the maximum of {MAX_PAGE_SIZE}.")
    after = args.get("after")
    start = decode_cursor(after) if isinstance(after, str) else None
    ordered = sorted(items, key=lambda item: item[0])
    keys = [number for number, _ in ordered]
    begin = 0 if start is None else bisect.bisect_right(keys, start)
    return Connection(ordered[begin : begin + first], len(ordered) > begin + first, start is not None)


# -- the store seen as the schema's objects


def variant_obj(product: Product, variant: VariantIn) -> Obj:
    return Obj("ProductVariant", (product, variant), gid("ProductVariant", variant.id))


def product_obj(product: Product) -> Obj:
    return Obj("Product", product, gid("Product", product.id))


def item_obj(store: Store, item_id: int) -> Obj | None:
    found = find_item(store, item_id)
    return None if found is None else Obj("InventoryItem", (item_id, *found), gid("InventoryItem", item_id))


def level_obj(level: Level) -> Obj:
    number = f"{level.location_id}?inventory_item_id={level.inventory_item_id}"
    return Obj("InventoryLevel", level, f"gid://shopify/InventoryLevel/{number}")


def all_variants(store: Store) -> list[tuple[Product, VariantIn]]:
    return list(store.variants().values())


def find_variant(store: Store, variant_id: int) -> tuple[Product, VariantIn] | None:
    return store.variants().get(variant_id)


def find_item(store: Store, item_id: int) -> tuple[Product, VariantIn] | None:
    return store.variant_of_item(item_id)


def levels_of(store: Store, item_id: int) -> list[Level]:
    return list(store.item_levels.get(item_id, {}).values())


def _quantities(level: Level, args: Mapping[str, Any]) -> list[Obj]:
    names = args.get("names")
    if not isinstance(names, list) or not names:
        raise FieldError('quantities requires names, e.g. names: ["available"]')
    unknown = [n for n in names if n not in QUANTITY_NAMES]
    if unknown:
        raise FieldError(f"Invalid quantity names: {unknown}; valid: {list(QUANTITY_NAMES)}")
    amounts = {"available": level.available, "on_hand": level.available}
    return [Obj("InventoryQuantity", (name, amounts.get(name, 0), level.updated_at)) for name in names]


Resolver = Callable[[Any, Mapping[str, Any], Context], Any]


def _legacy(number: int) -> str:
    return str(number)


RESOLVERS: dict[str, dict[str, Resolver]] = {
    "InventoryItem": {
        "id": lambda v, a, c: gid("InventoryItem", v[0]),
        "legacyResourceId": lambda v, a, c: _legacy(v[0]),
        "sku": lambda v, a, c: v[2].sku,
        "tracked": lambda v, a, c: True,
        "variant": lambda v, a, c: variant_obj(v[1], v[2]),
        "inventoryLevels": lambda v, a, c: page_of(
            ((lvl.location_id, level_obj(lvl)) for lvl in levels_of(c.store, v[0])), a, c
        ),
    },
    "ProductVariant": {
        "id": lambda v, a, c: gid("ProductVariant", v[1].id),
        "legacyResourceId": lambda v, a, c: _legacy(v[1].id),
        "title": lambda v, a, c: v[1].title,
        "sku": lambda v, a, c: v[1].sku,
        "price": lambda v, a, c: v[1].price,
        "inventoryQuantity": lambda v, a, c: c.store.quantity(v[1].inventory_item_id),
        "availableForSale": lambda v, a, c: c.store.quantity(v[1].inventory_item_id) > 0,
        "createdAt": lambda v, a, c: iso_utc(v[0].created_at),
        "updatedAt": lambda v, a, c: iso_utc(v[0].updated_at),
        "product": lambda v, a, c: product_obj(v[0]),
        "inventoryItem": lambda v, a, c: item_obj(c.store, v[1].inventory_item_id),
    },
    "Product": {
        "id": lambda v, a, c: gid("Product", v.id),
        "legacyResourceId": lambda v, a, c: _legacy(v.id),
        "title": lambda v, a, c: v.form.title,
        "handle": lambda v, a, c: re.sub(r"[^a-z0-9]+", "-", v.form.title.lower()).strip("-"),
        "status": lambda v, a, c: v.form.status.upper(),
        "vendor": lambda v, a, c: c.store.shop_domain.split(".")[0],
        "totalInventory": lambda v, a, c: sum(c.store.quantity(x.inventory_item_id) for x in v.form.variants),
        "createdAt": lambda v, a, c: iso_utc(v.created_at),
        "updatedAt": lambda v, a, c: iso_utc(v.updated_at),
        "variants": lambda v, a, c: page_of(((x.id, variant_obj(v, x)) for x in v.form.variants), a, c),
    },
    "InventoryLevel": {
        "id": lambda v, a, c: level_obj(v).gid,
        "location": lambda v, a, c: Obj("Location", v.location_id, gid("Location", v.location_id)),
        "quantities": lambda v, a, c: _quantities(v, a),
        "updatedAt": lambda v, a, c: iso_utc(v.updated_at),
        "createdAt": lambda v, a, c: iso_utc(v.updated_at),
        "item": lambda v, a, c: item_obj(c.store, v.inventory_item_id),
    },
    "Location": {
        "id": lambda v, a, c: gid("Location", v),
        "legacyResourceId": lambda v, a, c: _legacy(v),
        "name": lambda v, a, c: f"Location {v}",
        "isActive": lambda v, a, c: True,
    },
    "InventoryQuantity": {
        "name": lambda v, a, c: v[0],
        "quantity": lambda v, a, c: v[1],
        "updatedAt": lambda v, a, c: iso_utc(v[2]),
    },
}


def project(obj: Obj, selections: Iterable[Selection], ctx: Context) -> dict[str, Any]:
    """The object's fields as the selection asks for them."""
    out: dict[str, Any] = {}
    for selection in selections:
        if isinstance(selection, InlineFragment):
            if selection.type_condition in (None, obj.typename, "Node"):
                out.update(project(obj, selection.selections, ctx))
            continue
        if selection.name == "__typename":
            out[selection.key] = obj.typename
            continue
        resolver = RESOLVERS.get(obj.typename, {}).get(selection.name)
        if resolver is None:
            raise Unsupported(
                f"Field '{selection.name}' on type '{obj.typename}' is not supported by the sandbox"
            )
        value = render(resolver(obj.value, selection.args, ctx), selection, ctx)
        if not (ctx.bulk and isinstance(value, _Omitted)):
            out[selection.key] = value
    return out


class _Omitted:
    """A connection written to its own bulk lines rather than inline."""


def render(value: Any, selection: Field, ctx: Context) -> Any:
    """A resolved value in the shape the selection asks for."""
    if value is None:
        return None
    if isinstance(value, Obj):
        if not selection.selections:
            raise FieldError(
                f"Field '{selection.name}' of type '{value.typename}' must have a selection of subfields"
            )
        return project(value, selection.selections, ctx)
    if isinstance(value, Connection):
        return bulk_children(value, selection, ctx) if ctx.bulk else render_connection(value, selection, ctx)
    if isinstance(value, list):
        return [render(item, selection, ctx) for item in value]
    if selection.selections:
        raise FieldError(f"Selections can't be made on scalars (field '{selection.name}')")
    return value


def render_connection(page: Connection, selection: Field, ctx: Context) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for child in selection.selections:
        if not isinstance(child, Field):
            raise Unsupported("Fragments on connections are not supported by the sandbox")
        if child.name == "edges":
            out[child.key] = [_edge(number, node, child, ctx) for number, node in page.items]
        elif child.name == "nodes":
            out[child.key] = [project(node, child.selections, ctx) for _, node in page.items]
        elif child.name == "pageInfo":
            out[child.key] = _page_info(page, child)
        elif child.name == "__typename":
            out[child.key] = "Connection"
        else:
            raise Unsupported(f"Field '{child.name}' on a connection is not supported by the sandbox")
    return out


def _edge(number: int, node: Obj, edges: Field, ctx: Context) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for child in edges.selections:
        if isinstance(child, Field) and child.name == "cursor":
            out[child.key] = encode_cursor(number)
        elif isinstance(child, Field) and child.name == "node":
            out[child.key] = project(node, child.selections, ctx)
        else:
            raise Unsupported("Only cursor and node are supported on edges by the sandbox")
    return out


def _page_info(page: Connection, selection: Field) -> dict[str, Any]:
    values = {
        "hasNextPage": page.has_next,
        "hasPreviousPage": page.has_previous,
        "startCursor": encode_cursor(page.items[0][0]) if page.items else None,
        "endCursor": encode_cursor(page.items[-1][0]) if page.items else None,
    }
    out: dict[str, Any] = {}
    for child in selection.selections:
        if not isinstance(child, Field) or child.name not in values:
            raise Unsupported("pageInfo supports hasNextPage, hasPreviousPage, startCursor, endCursor")
        out[child.key] = values[child.name]
    return out


def node_selection(connection: Field) -> tuple[Selection, ...]:
    """The selection made on each node of a connection (``edges { node }`` or ``nodes``)."""
    for child in connection.selections:
        if isinstance(child, Field) and child.name == "nodes":
            return child.selections
        if isinstance(child, Field) and child.name == "edges":
            for grandchild in child.selections:
                if isinstance(grandchild, Field) and grandchild.name == "node":
                    return grandchild.selections
    raise Unsupported("A bulk query's connection must select edges { node { ... } } or nodes { ... }")


def bulk_lines(obj: Obj, selections: tuple[Selection, ...], ctx: Context) -> None:
    """Shopify's bulk format: the object on its own line, then each nested connection's nodes on theirs,
    with ``__parentId`` naming the object of the line they hang from."""
    line_index = len(ctx.lines)
    ctx.lines.append({})
    if ctx.parents:
        parent = ctx.parents[-1]
    ctx.parents.append(obj.gid or "")
    try:
        line = project(obj, selections, ctx)
    finally:
        ctx.parents.pop()
    if ctx.parents:
        line["__parentId"] = parent
    ctx.lines[line_index] = line


def bulk_children(page: Connection, selection: Field, ctx: Context) -> _Omitted:
    selections = node_selection(selection)
    for _, node in page.items:
        bulk_lines(node, selections, ctx)
    return _Omitted()
