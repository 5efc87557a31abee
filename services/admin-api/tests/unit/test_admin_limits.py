"""Fixed-window arithmetic of the signup limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from restock_admin.storefront.limits import Limit, retry_after, window

LIMIT = Limit("ip", 3, 600)
T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)  # a multiple of 600 s since the epoch


@pytest.mark.parametrize(
    ("offset", "seconds_left", "same_window"),
    [(0, 600, True), (1, 599, True), (599.5, 1, True), (600, 600, False)],
)
def test_windows_are_aligned_on_the_epoch(offset: float, seconds_left: int, same_window: bool) -> None:
    current = window(LIMIT, "h", T0 + timedelta(seconds=offset))
    assert current.seconds_left == seconds_left
    assert (current.key == window(LIMIT, "h", T0).key) is same_window


@pytest.mark.parametrize(("hits", "expected"), [(1, None), (3, None), (4, 600), (1000, 600)])
def test_retry_after_past_the_limit(hits: int, expected: int | None) -> None:
    assert retry_after(LIMIT, hits, window(LIMIT, "h", T0)) == expected


def test_keys_name_the_limit_and_subject_but_no_contact() -> None:
    key = window(LIMIT, "abc123", T0).key
    assert key.startswith("signup-limit:ip:abc123:")


@given(st.floats(min_value=0, max_value=4e9, allow_nan=False), st.integers(min_value=1, max_value=86_400))
def test_retry_after_is_within_the_window(epoch: float, window_seconds: int) -> None:
    limit = Limit("x", 1, window_seconds)
    current = window(limit, "s", datetime.fromtimestamp(epoch, UTC))
    assert 1 <= current.seconds_left <= window_seconds
