"""The GraphQL Admin API of the sandbox shop: authentication, cost-based throttling, the root fields the
detector uses, bulk operations, and failure injection. State in memory; both clocks passed in.

One request, in order (what Shopify does, as far as a client can see):
1. ``X-Shopify-Access-Token`` must be the shop's token, else HTTP 401.
2. An injected 429 answers HTTP 429 with ``Retry-After: 1`` (the REST-style limit a proxy or Shopify's edge
   may still answer), and uses up one of its count.
3. The body must carry ``query`` (a string) and optional ``variables`` (an object), else HTTP 400.
4. The document is parsed; a syntax error is a GraphQL error (HTTP 200), nothing charged.
5. ``requestedQueryCost`` (``restock_sandbox.shopify.cost``) above the single-query limit (1000) is
   MAX_COST_EXCEEDED; else the shop's bucket must hold it, or the answer is THROTTLED (nothing taken).
6. The root fields run; what was not used is given back to the bucket (actual <= requested).
Every GraphQL answer carries ``extensions.cost`` with the bucket's ``throttleStatus``.

Root fields: ``inventoryItem(id:)``, ``productVariant(id:)``, ``productVariants(first:, after:)``,
``product(id:)``, ``node(id:)`` (any of those types or a BulkOperation), ``currentBulkOperation``; mutation
``bulkOperationRunQuery(query:)``. Anything else is an UNSUPPORTED GraphQL error.

Bulk operations: one running operation per shop (a second gets a userError). It is CREATED when the
mutation answers, RUNNING until ``bulk_seconds`` have passed, then COMPLETED; the JSONL is written from the
store as it is at completion and served at ``<base>/bulk/<n>.jsonl``.
"""

from __future__ import annotations

import hmac
import json
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from restock_sandbox.shopify.cost import ThrottleBucket, actual_cost, requested_cost
from restock_sandbox.shopify.graphql import Field, GraphQLError, Operation, parse
from restock_sandbox.shopify.schema import (
    RESOLVERS,
    Context,
    FieldError,
    Obj,
    Unsupported,
    all_variants,
    bulk_lines,
    find_variant,
    gid,
    iso_utc,
    item_obj,
    node_selection,
    page_of,
    parse_gid,
    product_obj,
    project,
    render_connection,
    variant_obj,
)
from restock_sandbox.shopify.store import Store

MAX_QUERY_COST = 1000
THROTTLE_DOCS = "https://shopify.dev/api/usage/rate-limits"
TOO_MANY = "Exceeded 2 calls per second for api client. Reduce request rates to resume uninterrupted service."
INVALID_TOKEN = "[API] Invalid API key or access token (unrecognized login or wrong password)"  # noqa: S105 - an error message, not a secret
BULK_ROOTS = ("productVariants",)


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: status, JSON body, headers."""

    status: int
    body: Any
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass
class BulkOperation:
    """One bulk query and, once it completed, its lines."""

    number: int
    query: str
    root: Field
    created_at: datetime
    started: float
    lines: list[dict[str, Any]] | None = None
    completed_at: datetime | None = None

    @property
    def gid(self) -> str:
        return gid("BulkOperation", self.number)


def _error(message: str, code: str, **extra: Any) -> dict[str, Any]:
    return {"message": message, "extensions": {"code": code, **extra}}


class AdminApi:
    """The shop's GraphQL Admin API (see the module's rules)."""

    def __init__(
        self,
        store: Store,
        access_token: str,
        clock: Callable[[], datetime],
        monotonic: Callable[[], float],
    ) -> None:
        self.store = store
        self.access_token = access_token
        self.clock = clock
        self.monotonic = monotonic
        self.bucket = ThrottleBucket()
        self.max_query_cost = MAX_QUERY_COST
        self.bulk_seconds = 0.5
        self.bulk_operations: list[BulkOperation] = []
        self.answer_429 = 0  # the next this many requests get HTTP 429
        self.stats: Counter[str] = Counter()

    # -- the request
    def handle(self, token: str | None, body: Any, base_url: str) -> Answer:
        """Answer one ``POST /admin/api/<version>/graphql.json``."""
        self.stats["requests"] += 1
        if not hmac.compare_digest((token or "").encode(), self.access_token.encode()):
            self.stats["http_401"] += 1
            return Answer(401, {"errors": INVALID_TOKEN})
        if self.answer_429 > 0:
            self.answer_429 -= 1
            self.stats["http_429"] += 1
            return Answer(429, {"errors": TOO_MANY}, {"Retry-After": "1"})
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            return Answer(400, {"errors": {"query": "Required parameter missing or invalid"}})
        variables = body.get("variables") or {}
        if not isinstance(variables, dict):
            return Answer(400, {"errors": {"variables": "must be an object"}})
        try:
            operation = parse(body["query"], variables, body.get("operationName"))
        except GraphQLError as bad:
            self.stats["errors"] += 1
            return Answer(200, {"errors": [_error(str(bad), "PARSE_ERROR")]})
        return Answer(200, self._run(operation, base_url))

    def _run(self, operation: Operation, base_url: str) -> dict[str, Any]:
        now = self.monotonic()
        requested = requested_cost(operation)
        if requested > self.max_query_cost:
            self.stats["max_cost_exceeded"] += 1
            message = (
                f"Query cost is {requested}, which exceeds the single query max cost limit "
                f"({self.max_query_cost}). See {THROTTLE_DOCS} for how the cost is calculated; "
                "to query larger amounts of data, use bulk operations."
            )
            return self._with_cost(
                {
                    "errors": [
                        _error(message, "MAX_COST_EXCEEDED", cost=requested, maxCost=self.max_query_cost)
                    ]
                },
                requested,
                None,
                now,
            )
        if not self.bucket.take(requested, now):
            self.stats["throttled"] += 1
            errors = [_error("Throttled", "THROTTLED", documentation=THROTTLE_DOCS)]
            return self._with_cost({"errors": errors}, requested, None, now)
        try:
            data = self._execute(operation, base_url)
        except (Unsupported, FieldError) as bad:
            self.bucket.give_back(requested, now)
            code = "UNSUPPORTED" if isinstance(bad, Unsupported) else bad.code
            self.stats["errors"] += 1
            return self._with_cost({"errors": [_error(str(bad), code)]}, requested, 0, now)
        actual = min(requested, actual_cost(operation, data))
        self.bucket.give_back(requested - actual, now)
        self.stats["served"] += 1
        return self._with_cost({"data": data}, requested, actual, now)

    def _with_cost(
        self, body: dict[str, Any], requested: int, actual: int | None, now: float
    ) -> dict[str, Any]:
        cost = {
            "requestedQueryCost": requested,
            "actualQueryCost": actual,
            "throttleStatus": self.bucket.status(now),
        }
        return {**body, "extensions": {"cost": cost}}

    def _execute(self, operation: Operation, base_url: str) -> dict[str, Any]:
        ctx = Context(self.store, base_url, self.status_of)
        data: dict[str, Any] = {}
        roots = self._mutations() if operation.kind == "mutation" else self._queries()
        for selection in operation.selections:
            if not isinstance(selection, Field):
                raise Unsupported("Fragments at the root are not supported by the sandbox")
            if selection.name == "__typename":
                data[selection.key] = "Mutation" if operation.kind == "mutation" else "QueryRoot"
                continue
            root = roots.get(selection.name)
            if root is None:
                raise Unsupported(f"The sandbox does not serve {operation.kind} field '{selection.name}'")
            self.stats[f"field:{selection.name}"] += 1
            data[selection.key] = root(selection, ctx)
        return data

    # -- root fields
    def _queries(self) -> dict[str, Callable[[Field, Context], Any]]:
        return {
            "inventoryItem": self._inventory_item,
            "productVariant": self._product_variant,
            "productVariants": self._product_variants,
            "product": self._product,
            "node": self._node,
            "currentBulkOperation": self._current_bulk,
        }

    def _mutations(self) -> dict[str, Callable[[Field, Context], Any]]:
        return {"bulkOperationRunQuery": self._run_bulk}

    @staticmethod
    def _rendered(obj: Obj | None, selection: Field, ctx: Context) -> dict[str, Any] | None:
        return None if obj is None else project(obj, selection.selections, ctx)

    def _lookup(self, kind: str, number: int) -> Obj | None:
        if kind == "InventoryItem":
            return item_obj(self.store, number)
        if kind == "ProductVariant":
            found = find_variant(self.store, number)
            return None if found is None else variant_obj(*found)
        if kind == "Product":
            product = self.store.products.get(number)
            return None if product is None else product_obj(product)
        if kind == "BulkOperation":
            return self._bulk_by_number(number)
        return None

    def _by_id(self, kind: str, selection: Field, ctx: Context) -> dict[str, Any] | None:
        _, number = parse_gid(selection.args.get("id"), kind)
        return self._rendered(self._lookup(kind, number), selection, ctx)

    def _inventory_item(self, selection: Field, ctx: Context) -> Any:
        return self._by_id("InventoryItem", selection, ctx)

    def _product_variant(self, selection: Field, ctx: Context) -> Any:
        return self._by_id("ProductVariant", selection, ctx)

    def _product(self, selection: Field, ctx: Context) -> Any:
        return self._by_id("Product", selection, ctx)

    def _node(self, selection: Field, ctx: Context) -> Any:
        kind, number = parse_gid(selection.args.get("id"))
        return self._rendered(self._lookup(kind, number), selection, ctx)

    def _product_variants(self, selection: Field, ctx: Context) -> Any:
        items = ((v.id, variant_obj(p, v)) for p, v in all_variants(self.store))
        return render_connection(page_of(items, selection.args, ctx), selection, ctx)

    # -- bulk operations
    def _bulk_by_number(self, number: int) -> Obj | None:
        found = next((op for op in self.bulk_operations if op.number == number), None)
        return None if found is None else Obj("BulkOperation", (found, None), found.gid)

    def _current_bulk(self, selection: Field, ctx: Context) -> Any:
        current = self.bulk_operations[-1] if self.bulk_operations else None
        return self._rendered(
            None if current is None else self._bulk_by_number(current.number), selection, ctx
        )

    def status_of(self, operation: BulkOperation) -> str:
        """CREATED / RUNNING / COMPLETED, completing it (writing its lines) when its time has come."""
        if operation.lines is not None:
            return "COMPLETED"
        if self.monotonic() - operation.started >= self.bulk_seconds:
            operation.lines = self._bulk_output(operation.root)
            operation.completed_at = self.clock()
            return "COMPLETED"
        return "RUNNING"

    def _bulk_output(self, root: Field) -> list[dict[str, Any]]:
        ctx = Context(self.store, "", self.status_of, bulk=True)
        selections = node_selection(root)
        for _, variant in sorted((v.id, variant_obj(p, v)) for p, v in all_variants(self.store)):
            bulk_lines(variant, selections, ctx)
        return ctx.lines

    def _run_bulk(self, selection: Field, ctx: Context) -> dict[str, Any]:
        query = selection.args.get("query")
        running = next((op for op in self.bulk_operations if self.status_of(op) != "COMPLETED"), None)
        operation: BulkOperation | None = None
        errors: list[dict[str, Any]] = []
        if running is not None:
            message = f"A bulk query operation for this app and shop is already in progress: {running.gid}."
            errors.append({"field": None, "message": message, "code": "OPERATION_IN_PROGRESS"})
        else:
            root, problem = _bulk_root(query)
            if root is None:
                errors.append({"field": ["query"], "message": problem, "code": "INVALID"})
            else:
                operation = BulkOperation(
                    len(self.bulk_operations) + 1, str(query), root, self.clock(), self.monotonic()
                )
                self.bulk_operations.append(operation)
        values = {"bulkOperation": operation, "userErrors": errors}
        out: dict[str, Any] = {}
        for child in selection.selections:
            if not isinstance(child, Field) or child.name not in values:
                raise Unsupported("bulkOperationRunQuery's payload has bulkOperation and userErrors")
            if child.name == "bulkOperation":
                out[child.key] = (
                    None if operation is None else self._bulk_fields(operation, child, ctx, "CREATED")
                )
            else:
                out[child.key] = [
                    {f.key: e.get(f.name) for f in child.selections if isinstance(f, Field)} for e in errors
                ]
        return out

    def _bulk_fields(
        self, operation: BulkOperation, selection: Field, ctx: Context, status: str
    ) -> dict[str, Any]:
        return project(Obj("BulkOperation", (operation, status), operation.gid), selection.selections, ctx)

    def bulk_file(self, number: int) -> bytes | None:
        """The JSONL of a completed operation, or None."""
        found = next((op for op in self.bulk_operations if op.number == number), None)
        if found is None or self.status_of(found) != "COMPLETED" or found.lines is None:
            return None
        return "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in found.lines).encode()


def _lines_if_complete(value: tuple[BulkOperation, str | None], ctx: Context) -> list[dict[str, Any]] | None:
    operation, shown_status = value
    if shown_status is not None or ctx.bulk_status(operation) != "COMPLETED":
        return None
    return operation.lines


def _file_size(value: tuple[BulkOperation, str | None], ctx: Context) -> str | None:
    lines = _lines_if_complete(value, ctx)
    return (
        None
        if lines is None
        else str(sum(len(json.dumps(line, separators=(",", ":"))) + 1 for line in lines))
    )


def _url(value: tuple[BulkOperation, str | None], ctx: Context) -> str | None:
    lines = _lines_if_complete(value, ctx)
    return None if lines is None else f"{ctx.base_url}/bulk/{value[0].number}.jsonl"


# value: (operation, the status to show instead of the current one: the mutation's CREATED)
RESOLVERS["BulkOperation"] = {
    "id": lambda v, a, c: v[0].gid,
    "status": lambda v, a, c: v[1] or c.bulk_status(v[0]),
    "errorCode": lambda v, a, c: None,
    "type": lambda v, a, c: "QUERY",
    "query": lambda v, a, c: v[0].query,
    "createdAt": lambda v, a, c: iso_utc(v[0].created_at),
    "completedAt": lambda v, a, c: iso_utc(
        v[0].completed_at if _lines_if_complete(v, c) is not None else None
    ),
    "objectCount": lambda v, a, c: str(len(_lines_if_complete(v, c) or [])),
    "rootObjectCount": lambda v, a, c: str(
        sum(1 for x in _lines_if_complete(v, c) or [] if "__parentId" not in x)
    ),
    "fileSize": lambda v, a, c: _file_size(v, c),
    "url": lambda v, a, c: _url(v, c),
    "partialDataUrl": lambda v, a, c: None,
}


def _bulk_root(query: Any) -> tuple[Field | None, str]:
    """The one connection a bulk query reads, or why the query is refused."""
    if not isinstance(query, str):
        return None, "query must be a string"
    try:
        operation = parse(query)
    except GraphQLError as bad:
        return None, f"Invalid bulk query: {bad}"
    roots = [s for s in operation.selections if isinstance(s, Field)]
    if operation.kind != "query" or len(roots) != 1 or roots[0].name not in BULK_ROOTS:
        return None, f"The sandbox's bulk queries read one of {list(BULK_ROOTS)}"
    try:
        node_selection(roots[0])
    except Unsupported as bad:
        return None, str(bad)
    return roots[0], ""
