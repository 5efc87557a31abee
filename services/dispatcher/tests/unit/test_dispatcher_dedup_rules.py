"""The Redis fast-path rules: who holds a key, and how long a claim lives."""

from __future__ import annotations

import pytest

from restock_dispatcher import dedup


@pytest.mark.parametrize(
    ("previous", "expected"),
    [
        ([None, None, None], []),  # every key claimed now: no suspect
        ([b"7", b"7", b"7"], []),  # claimed by an earlier delivery of this very event: still ours
        (["7", None, "7"], []),  # str values (decode_responses) read the same
        ([b"3", None, b"7"], [11]),  # another event claimed the first key
        ([b"3", b"4", b"5"], [11, 12, 13]),
        ([None, "70", b"17"], [12, 13]),  # an id that merely contains ours is someone else
    ],
)
def test_suspects_are_the_keys_another_event_claimed(
    previous: list[bytes | str | None], expected: list[int]
) -> None:
    assert dedup.suspects([11, 12, 13], previous, restock_event_id=7) == expected


def test_suspects_needs_one_previous_value_per_subscription() -> None:
    with pytest.raises(ValueError):
        dedup.suspects([1, 2], [None], restock_event_id=7)


@pytest.mark.parametrize(("window", "ttl"), [(86_400, 86_400), (3_600, 3_600), (0, 1)])
def test_a_claim_lives_one_window(window: int, ttl: int) -> None:
    assert dedup.claim_ttl_seconds(window) == ttl


def test_redis_key_is_namespaced_by_the_notification_key() -> None:
    assert dedup.redis_key("42:7:20000") == "restock:freeze:42:7:20000"
