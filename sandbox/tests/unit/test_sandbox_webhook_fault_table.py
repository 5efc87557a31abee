"""The store's webhook fault table, without a server."""

from __future__ import annotations

import pytest

from restock_sandbox.shopify.faults import WebhookFault, WebhookFaultTable

LEVELS = "inventory_levels/update"


@pytest.mark.parametrize(
    ("pattern", "topic", "matches"),
    [
        (LEVELS, LEVELS, True),
        ("Inventory_Levels/Update", LEVELS, True),
        (LEVELS, "products/update", False),
        ("inventory_levels", LEVELS, False),
        ("*", "products/update", True),
        (" * ", "app/uninstalled", True),
    ],
)
def test_topic_matching(pattern: str, topic: str, matches: bool) -> None:
    assert WebhookFault(pattern, "drop").matches(topic) is matches


def test_rules_are_used_up_in_the_order_added() -> None:
    table = WebhookFaultTable()
    table.add(WebhookFault(LEVELS, "reorder", times=2))
    table.add(WebhookFault("*", "drop", times=1))
    taken = [table.take(LEVELS) for _ in range(4)]
    assert [rule.mode if rule else None for rule in taken] == ["reorder", "reorder", "drop", None]
    assert table.rules == []


def test_a_rule_only_applies_to_its_topic() -> None:
    table = WebhookFaultTable()
    table.add(WebhookFault(LEVELS, "delay", delay_ms=250))
    assert table.take("products/update") is None
    rule = table.take(LEVELS)
    assert rule is not None
    assert (rule.mode, rule.delay_ms) == ("delay", 250)


def test_an_unlimited_rule_stays_until_cleared() -> None:
    table = WebhookFaultTable()
    table.add(WebhookFault("*", "duplicate", times=None))
    assert [table.take(LEVELS).mode for _ in range(5)] == ["duplicate"] * 5  # type: ignore[union-attr]
    table.clear()
    assert table.take(LEVELS) is None
