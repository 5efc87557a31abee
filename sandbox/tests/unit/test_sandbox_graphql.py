"""The GraphQL document reader, the cost rules, the leaky bucket (clock injected) and cursors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from restock_sandbox.shopify.cost import ThrottleBucket, actual_cost, requested_cost
from restock_sandbox.shopify.graphql import Field, GraphQLError, InlineFragment, parse
from restock_sandbox.shopify.schema import FieldError, decode_cursor, encode_cursor, parse_gid


def test_variables_defaults_aliases_and_literals_are_read() -> None:
    operation = parse(
        """
        # a comment, commas, a block string and an enum
        query Q($first: Int = 5, $after: String, $names: [String!]!) {
          v: productVariants(first: $first, after: $after, sortKey: ID, opts: {a: [1, 2.5, true, null]}) {
            edges { node { quantities(names: $names) { name } note(text: \"\"\"
                hello
                  world\"\"\") } }
          }
        }
        """,
        {"names": ["available"]},
    )
    (root,) = operation.selections
    assert isinstance(root, Field)
    assert (operation.kind, operation.name, root.key, root.name) == ("query", "Q", "v", "productVariants")
    assert root.args == {"first": 5, "after": None, "sortKey": "ID", "opts": {"a": [1, 2.5, True, None]}}
    node = root.selections[0].selections[0]  # type: ignore[union-attr]
    quantities, note = node.selections  # type: ignore[union-attr]
    assert quantities.args == {"names": ["available"]}
    assert note.args == {"text": "hello\n  world"}


def test_operation_name_picks_one_of_several_and_fragments_expand() -> None:
    source = """
    query A { a: node(id: "x") { ...F } }
    mutation B {
      bulkOperationRunQuery(query: "{ productVariants { edges { node { id } } } }") { userErrors { message } }
    }
    fragment F on Node { id ... on BulkOperation { status } }
    """
    a = parse(source, operation_name="A")
    (node,) = a.selections
    assert isinstance(node, Field)
    (spread,) = node.selections
    assert isinstance(spread, InlineFragment)
    assert [type(s).__name__ for s in spread.selections] == ["Field", "InlineFragment"]
    assert parse(source, operation_name="B").kind == "mutation"


@pytest.mark.parametrize(
    ("source", "variables", "operation_name", "fragment"),
    [
        ("{ a(", {}, None, "Parse error"),
        ("query($id: ID!) { a(id: $id) { b } }", {}, None, "$id"),
        ("{ a(id: $undeclared) { b } }", {}, None, "not declared"),
        ("query A { a } query B { b }", {}, None, "operation name is required"),
        ("query A { a }", {}, "C", "No operation named"),
        ("{ ...Missing }", {}, None, "not defined"),
        ("{ a } }", {}, None, "Parse error"),
        ("{ a ~ }", {}, None, "unexpected character"),
        ("", {}, None, "No operations"),
    ],
)
def test_bad_documents_raise_a_readable_error(source, variables, operation_name, fragment) -> None:
    with pytest.raises(GraphQLError) as raised:
        parse(source, variables, operation_name)
    assert fragment in str(raised.value)


SYNC = """query($first: Int!) {
  productVariants(first: $first) { pageInfo { hasNextPage } edges { cursor node {
  id product { id } inventoryItem { id inventoryLevels(first: 20) { edges { node { location { id }
  quantities(names: ["available"]) { name quantity } updatedAt } } } } } } } }"""


@pytest.mark.parametrize(
    ("source", "variables", "cost"),
    [
        ("{ inventoryItem(id: 1) { id } }", {}, 1),
        ("{ inventoryItem(id: 1) { id variant { id product { id } } } }", {}, 3),
        ("{ productVariants(first: 10) { edges { node { id } } } }", {}, 2 + 10 * 1),
        ("{ productVariants(first: 10) { nodes { id product { id } } } }", {}, 2 + 10 * 2),
        (SYNC, {"first": 1}, 2 + 1 * (3 + 2 + 20 * 3)),
        (SYNC, {"first": 15}, 2 + 15 * 65),
        ("{ a: inventoryItem(id: 1) { id } b: inventoryItem(id: 2) { id } }", {}, 2),
        (
            "{ node(id: 1) { ... on BulkOperation { id } "
            "... on Product { variants(first: 3) { nodes { id } } } } }",
            {},
            1 + 5,
        ),
        (
            'mutation { bulkOperationRunQuery(query: "x") { bulkOperation { id } userErrors { message } } }',
            {},
            10,
        ),
    ],
)
def test_requested_cost_follows_shopifys_rules(source, variables, cost) -> None:
    assert requested_cost(parse(source, variables)) == cost


def test_actual_cost_counts_what_was_returned() -> None:
    operation = parse(SYNC, {"first": 5})
    level = {"location": {"id": "l"}, "quantities": [{"name": "available", "quantity": 1}], "updatedAt": "t"}
    data = {
        "productVariants": {
            "pageInfo": {"hasNextPage": False},
            "edges": [
                {"cursor": "c", "node": {"id": "v", "product": {"id": "p"}, "inventoryItem": {
                    "id": "i", "inventoryLevels": {"edges": [{"node": level}, {"node": level}]}}}},
            ],
        }
    }  # fmt: skip
    assert actual_cost(operation, data) == 2 + (1 + 1 + 1 + 2 + 2 * 3)
    assert actual_cost(operation, {"productVariants": {"edges": []}}) == 2
    assert actual_cost(parse("{ inventoryItem(id: 1) { id variant { id } } }"), {"inventoryItem": None}) == 1


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_admits_takes_refunds_and_refills_at_its_rate() -> None:
    clock, bucket = Clock(), ThrottleBucket(maximum=100, restore_rate=10, available=100)
    assert bucket.take(60, clock())
    assert not bucket.take(41, clock())  # refused: takes nothing
    assert bucket.status(clock())["currentlyAvailable"] == 40
    bucket.give_back(20, clock())
    assert bucket.status(clock())["currentlyAvailable"] == 60
    clock.now += 2.5
    assert bucket.status(clock())["currentlyAvailable"] == 85
    clock.now += 60
    assert bucket.status(clock()) == {
        "maximumAvailable": 100.0,
        "currentlyAvailable": 100,
        "restoreRate": 10.0,
    }
    bucket.resize(50, 5, clock())
    assert bucket.status(clock())["currentlyAvailable"] == 50


@given(st.lists(st.tuples(st.floats(0, 5), st.integers(0, 300)), max_size=40))
def test_bucket_never_overflows_nor_goes_negative(steps: list[tuple[float, int]]) -> None:
    clock, bucket = Clock(), ThrottleBucket(maximum=200, restore_rate=50, available=200)
    for elapsed, cost in steps:
        clock.now += elapsed
        before = bucket.refill(clock())
        admitted = bucket.take(cost, clock())
        assert admitted == (before >= cost)
        assert 0 <= bucket.available <= 200


@given(st.integers(min_value=0, max_value=2**62))
def test_cursors_round_trip_and_are_opaque(number: int) -> None:
    cursor = encode_cursor(number)
    assert decode_cursor(cursor) == number
    assert cursor != str(number)


@pytest.mark.parametrize("cursor", ["", "!!", "eyJmb28iOjF9", "bnVsbA"])
def test_foreign_cursors_are_field_errors(cursor: str) -> None:
    with pytest.raises(FieldError):
        decode_cursor(cursor)


def test_global_ids() -> None:
    assert parse_gid("gid://shopify/InventoryItem/3001", "InventoryItem") == ("InventoryItem", 3001)
    assert parse_gid("gid://shopify/InventoryLevel/4001?inventory_item_id=3001") == ("InventoryLevel", 4001)
    for bad in ("3001", "gid://shopify/ProductVariant/1", None):
        with pytest.raises(FieldError):
            parse_gid(bad, "InventoryItem")
