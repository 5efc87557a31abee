"""Shopify's calculated query cost and its leaky bucket, per shop. Pure: the clock is passed in.

Cost of a query (Shopify's rules, as documented in "GraphQL Admin API rate limits"):
- a scalar or enum field costs 0; a field returning an object costs 1 plus its selection's cost;
- a connection (a field taking ``first`` or ``last``) costs 2 plus, for each node it may return, 1 plus
  the node's selection (edges / nodes: the costlier of the two): ``2 + first * (1 + node selection)``;
  ``pageInfo`` and ``cursor`` are free;
- a list of objects that is not a connection (``quantities(names:)``) costs 1 plus one object's selection;
- an inline fragment costs the costliest of the fragments side by side (an interface's "maximum of
  possible selections");
- a mutation field costs 10, its payload included; a query is the sum of its root fields.
``requestedQueryCost`` sizes connections by their ``first``; ``actualQueryCost`` by the nodes returned.

The bucket (Shopify's leaky bucket): it holds up to ``maximum`` points and refills at ``restore_rate``
points per second. A query is admitted only if the bucket holds its requested cost, which it takes; after
the query runs, the difference between requested and actual is given back. A query it cannot admit is
THROTTLED and takes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from restock_sandbox.shopify.graphql import Field, InlineFragment, Operation, Selection

MUTATION_COST = 10
CONNECTION_COST = 2
FREE_FIELDS = frozenset({"pageInfo", "cursor", "__typename", "userErrors"})


def is_connection(field: Field) -> bool:
    """A connection takes ``first`` or ``last`` (every Shopify connection requires one of them)."""
    return "first" in field.args or "last" in field.args


def _node_selections(connection: Field) -> Iterable[tuple[str, Field]]:
    for child in connection.selections:
        if isinstance(child, Field) and child.name == "nodes":
            yield "nodes", child
        elif isinstance(child, Field) and child.name == "edges":
            for grandchild in child.selections:
                if isinstance(grandchild, Field) and grandchild.name == "node":
                    yield "edges", grandchild


def _selection(selections: Iterable[Selection], result: Mapping[str, Any] | None) -> int:
    """A selection set's cost: requested when ``result`` is None, else sized by that result object."""
    plain, fragments = 0, [0]
    for selection in selections:
        if isinstance(selection, InlineFragment):
            fragments.append(_selection(selection.selections, result))
        elif result is None:
            plain += _requested_field(selection)
        else:
            plain += _actual_field(selection, result.get(selection.key))
    return plain + max(fragments)


def _requested_field(field: Field) -> int:
    if not field.selections or field.name in FREE_FIELDS:
        return 0
    if not is_connection(field):
        return 1 + _selection(field.selections, None)
    size = int(field.args.get("first") or field.args.get("last") or 0)
    nodes = [size * (1 + _selection(node.selections, None)) for _, node in _node_selections(field)]
    return CONNECTION_COST + max(nodes, default=0)


def _actual_field(field: Field, result: Any) -> int:
    if not field.selections or field.name in FREE_FIELDS:
        return 0
    if is_connection(field):
        totals = [0]
        for shape, node in _node_selections(field):
            items = (result or {}).get(shape) or []
            nodes = items if shape == "nodes" else [item.get("node") for item in items]
            totals.append(sum(1 + _selection(node.selections, item or {}) for item in nodes))
        return CONNECTION_COST + max(totals)
    if isinstance(result, list):  # a plain list of objects: one object's worth
        return 1 + (_selection(field.selections, result[0]) if result else 0)
    return 1 + (_selection(field.selections, result) if isinstance(result, Mapping) else 0)


def requested_cost(operation: Operation) -> int:
    """``requestedQueryCost``: the most the operation could load."""
    if operation.kind == "mutation":
        return MUTATION_COST * sum(1 for s in operation.selections if isinstance(s, Field))
    return _selection(operation.selections, None)


def actual_cost(operation: Operation, data: Mapping[str, Any] | None) -> int:
    """``actualQueryCost``: the same rules, with connections sized by what ``data`` returned."""
    if operation.kind == "mutation":
        return requested_cost(operation)
    return _selection(operation.selections, data or {})


@dataclass
class ThrottleBucket:
    """One shop's leaky bucket; ``now`` is monotonic seconds, passed in by the caller."""

    maximum: float = 2000.0
    restore_rate: float = 100.0
    available: float = 2000.0
    updated: float | None = None

    def refill(self, now: float) -> float:
        """Points available at ``now``."""
        if self.updated is not None:
            self.available = min(self.maximum, self.available + (now - self.updated) * self.restore_rate)
        self.updated = now
        return self.available

    def take(self, cost: int, now: float) -> bool:
        """Admit a query of ``cost`` (taking it) or refuse it (taking nothing)."""
        if self.refill(now) < cost:
            return False
        self.available -= cost
        return True

    def give_back(self, points: int, now: float) -> None:
        """Refund what an admitted query did not use."""
        self.refill(now)
        self.available = min(self.maximum, self.available + points)

    def resize(self, maximum: float, restore_rate: float, now: float) -> None:
        """New limits (a plan change); the bucket starts full."""
        self.maximum, self.restore_rate, self.available, self.updated = maximum, restore_rate, maximum, now

    def status(self, now: float) -> dict[str, float | int]:
        """``throttleStatus`` as Shopify reports it."""
        return {
            "maximumAvailable": float(self.maximum),
            "currentlyAvailable": int(self.refill(now)),
            "restoreRate": float(self.restore_rate),
        }
