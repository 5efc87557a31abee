"""Decoding Shopify's payloads: real shapes accepted, unknown fields ignored, bad ones named."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from restock_detector.payloads import (
    InventoryLevelUpdate,
    PayloadError,
    Product,
    Variant,
    decode,
    variant_title,
)

LEVEL = {
    "inventory_item_id": 271878346596884015,
    "location_id": 24826418,
    "available": 5,
    "updated_at": "2026-03-01T12:00:00-05:00",
    "admin_graphql_api_id": "gid://shopify/InventoryLevel/24826418?inventory_item_id=271878346596884015",
    "some_future_field": {"nested": True},
}

PRODUCT = {
    "id": 788032119674292922,
    "title": "Example T-Shirt",
    "body_html": "An example T-Shirt",
    "variants": [
        {
            "id": 642667041472713922,
            "product_id": 788032119674292922,
            "title": "Small",
            "sku": "example-shirt-s",
            "inventory_item_id": 1001,
            "inventory_quantity": 75,
            "price": "19.99",
        },
        {"id": 757650484644203962, "title": "Medium", "sku": None, "inventory_item_id": 1002},
    ],
}


def body(value: object) -> bytes:
    return json.dumps(value).encode()


def test_inventory_level_decodes_with_its_offset_and_ignores_unknown_fields() -> None:
    level = decode(body(LEVEL), InventoryLevelUpdate)
    assert level.inventory_item_id == 271878346596884015
    assert level.available == 5
    assert level.updated_at == datetime(2026, 3, 1, 17, 0, tzinfo=UTC)
    assert level.updated_at.utcoffset() == timedelta(hours=-5)
    assert level.updated_at.tzinfo == timezone(timedelta(hours=-5))


@pytest.mark.parametrize("available", [None, -4, 0])
def test_untracked_and_oversold_levels_are_valid(available: int | None) -> None:
    assert decode(body({**LEVEL, "available": available}), InventoryLevelUpdate).available == available


def test_product_decodes_with_its_variants() -> None:
    product = decode(body(PRODUCT), Product)
    assert [variant.inventory_item_id for variant in product.variants] == [1001, 1002]
    assert product.variants[1].product_id is None
    assert product.variants[1].sku is None


@pytest.mark.parametrize(
    ("payload", "kind", "field"),
    [
        (
            {k: v for k, v in LEVEL.items() if k != "inventory_item_id"},
            InventoryLevelUpdate,
            "inventory_item_id",
        ),
        ({k: v for k, v in LEVEL.items() if k != "location_id"}, InventoryLevelUpdate, "location_id"),
        ({k: v for k, v in LEVEL.items() if k != "available"}, InventoryLevelUpdate, "available"),
        ({k: v for k, v in LEVEL.items() if k != "updated_at"}, InventoryLevelUpdate, "updated_at"),
        ({**LEVEL, "inventory_item_id": "abc"}, InventoryLevelUpdate, "inventory_item_id"),
        ({**LEVEL, "available": "5"}, InventoryLevelUpdate, "available"),
        ({**LEVEL, "updated_at": "2026-03-01T12:00:00"}, InventoryLevelUpdate, "updated_at"),  # no offset
        ({**LEVEL, "updated_at": "yesterday"}, InventoryLevelUpdate, "updated_at"),
        ({k: v for k, v in PRODUCT.items() if k != "variants"}, Product, "variants"),
        ({**PRODUCT, "id": None}, Product, "id"),
        ({**PRODUCT, "variants": [{"id": 1, "title": "S"}]}, Product, "inventory_item_id"),
        (
            {**PRODUCT, "variants": [{"id": 1, "title": "S", "inventory_item_id": "x"}]},
            Product,
            "variants[0]",
        ),
    ],
)
def test_a_missing_or_ill_typed_field_is_named(payload: dict[str, object], kind: type, field: str) -> None:
    with pytest.raises(PayloadError) as raised:
        decode(body(payload), kind)
    assert raised.value.reason.startswith("invalid payload")
    assert field in raised.value.reason


@pytest.mark.parametrize("raw", [b"", b"not json", b'{"inventory_item_id": 1', b"\xff\xfe"])
def test_non_json_is_malformed(raw: bytes) -> None:
    with pytest.raises(PayloadError) as raised:
        decode(raw, InventoryLevelUpdate)
    assert raised.value.reason == "malformed JSON"


def test_a_json_value_of_the_wrong_shape_is_invalid_not_malformed() -> None:
    with pytest.raises(PayloadError) as raised:
        decode(b"[1, 2]", InventoryLevelUpdate)
    assert raised.value.reason.startswith("invalid payload")


@pytest.mark.parametrize(
    ("variant", "expected"),
    [("Small", "Example T-Shirt - Small"), ("Default Title", "Example T-Shirt")],
)
def test_variant_title(variant: str, expected: str) -> None:
    assert variant_title("Example T-Shirt", Variant(id=1, title=variant, inventory_item_id=2)) == expected


@pytest.mark.parametrize(
    ("field", "value", "path"),
    [
        ("available", 2**31, "$.available"),
        ("available", -(2**31) - 1, "$.available"),
        ("inventory_item_id", 2**63, "$.inventory_item_id"),
        ("location_id", 0, "$.location_id"),
        ("location_id", -5, "$.location_id"),
    ],
)
def test_a_level_the_columns_cannot_hold_is_refused_with_its_field(field: str, value: int, path: str) -> None:
    with pytest.raises(PayloadError) as error:
        decode(json.dumps({**LEVEL, field: value}).encode(), InventoryLevelUpdate)
    assert path in error.value.reason


def test_the_extremes_the_columns_can_hold_are_accepted() -> None:
    level = decode(
        json.dumps({**LEVEL, "available": -(2**31), "inventory_item_id": 2**63 - 1}).encode(),
        InventoryLevelUpdate,
    )
    assert (level.available, level.inventory_item_id) == (-(2**31), 2**63 - 1)


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda p: {**p, "id": 2**63}, "$.id"),
        (lambda p: {**p, "title": "bad\x00title"}, "$.title"),
        (lambda p: {**p, "variants": [{**p["variants"][0], "sku": "s\x00"}]}, "$.variants[0].sku"),
        (lambda p: {**p, "variants": [{**p["variants"][0], "sku": "s" * 256}]}, "$.variants[0].sku"),
        (lambda p: {**p, "variants": [{**p["variants"][0], "title": "\x00"}]}, "$.variants[0].title"),
        (
            lambda p: {**p, "variants": [{**p["variants"][0], "inventory_item_id": 2**64 - 1}]},
            "$.variants[0].inventory_item_id",
        ),
    ],
)
def test_a_product_the_columns_cannot_hold_is_refused_with_its_field(mutate, path: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PayloadError) as error:
        decode(json.dumps(mutate(PRODUCT)).encode(), Product)
    assert path in error.value.reason
