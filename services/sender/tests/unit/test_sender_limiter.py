"""The pure rate-limit arithmetic: which limits apply, and GCRA over all of them at once (clock injected)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from restock_sender.limiter import (
    KEY_PREFIX,
    Denied,
    Granted,
    Limit,
    LimitConfig,
    acquire,
    domain_limit,
    limits_for,
)

CONFIG = LimitConfig(
    global_per_second={"email": 200.0, "sms": None},
    domain_limits={"example.com": 50.0, "yahoo.com": None},
    domain_default_per_second=None,
    sender_mps=1.0,
    sender_number="+15005550006",
)
GLOBAL = Limit("global", f"{KEY_PREFIX}email:global", 200.0)  # T = 5 000 us
DOMAIN = Limit("domain", f"{KEY_PREFIX}email:domain:example.com", 50.0)  # T = 20 000 us


@pytest.mark.parametrize(
    ("channel", "shop_rate", "domain", "expected"),
    [
        ("email", None, "example.com", [("global", 200.0), ("domain", 50.0)]),
        ("email", 10.0, "Example.COM", [("global", 200.0), ("shop", 10.0), ("domain", 50.0)]),
        ("email", None, "gmail.com", [("global", 200.0), ("domain", 20.0)]),  # a default
        ("email", None, "yahoo.com", [("global", 200.0)]),  # a default removed by a setting
        ("email", None, "small-shop.test", [("global", 200.0)]),  # no default-per-domain set
        ("email", None, None, [("global", 200.0)]),
        ("sms", None, None, [("sender", 1.0)]),  # no SMS global limit; the sender number's MPS
        ("sms", 5.0, "ignored.com", [("shop", 5.0), ("sender", 1.0)]),
    ],
)
def test_limits_that_apply(
    channel: str, shop_rate: float | None, domain: str | None, expected: list[tuple[str, float]]
) -> None:
    limits = limits_for(channel, CONFIG, tenant_id=7, shop_per_second=shop_rate, recipient_domain=domain)
    assert [(limit.name, limit.per_second) for limit in limits] == expected


def test_aliases_share_their_providers_key_and_every_key_shares_one_cluster_slot() -> None:
    gmail = domain_limit("gmail.com", CONFIG)
    googlemail = domain_limit("googlemail.com", CONFIG)
    assert gmail is not None
    assert googlemail is not None
    assert gmail.key == googlemail.key
    shop = limits_for("email", CONFIG, tenant_id=7, shop_per_second=3.0, recipient_domain="gmail.com")
    assert all(limit.key.startswith("restock:limit:{rl}:") for limit in shop)


@pytest.mark.parametrize(
    ("tats", "now", "max_wait", "verdict", "after"),
    [
        # Idle limits: granted now; each TAT moves one interval past now.
        ({}, 1_000_000, 0, Granted(0), {GLOBAL.key: 1_005_000, DOMAIN.key: 1_020_000}),
        # The domain's TAT is 15 ms ahead: granted with a 15 ms reservation; both TATs move past it.
        (
            {DOMAIN.key: 1_015_000},
            1_000_000,
            50_000,
            Granted(15_000),
            {GLOBAL.key: 1_020_000, DOMAIN.key: 1_035_000},
        ),
        # The same without room to wait: denied by the domain, nothing taken from the global limit.
        ({DOMAIN.key: 1_015_000}, 1_000_000, 10_000, Denied(15_000, "domain"), {DOMAIN.key: 1_015_000}),
        # The binding limit is the one furthest ahead.
        (
            {GLOBAL.key: 1_030_000, DOMAIN.key: 1_015_000},
            1_000_000,
            0,
            Denied(30_000, "global"),
            {GLOBAL.key: 1_030_000, DOMAIN.key: 1_015_000},
        ),
        # A TAT in the past is "now" (an idle limit banks no burst).
        (
            {GLOBAL.key: 10, DOMAIN.key: 20},
            1_000_000,
            0,
            Granted(0),
            {GLOBAL.key: 1_005_000, DOMAIN.key: 1_020_000},
        ),
    ],
)
def test_gcra_over_every_limit_at_once(
    tats: dict[str, int], now: int, max_wait: int, verdict: object, after: dict[str, int]
) -> None:
    assert acquire(tats, [GLOBAL, DOMAIN], now, max_wait) == (verdict, after)


def test_no_limits_is_granted_at_once() -> None:
    assert acquire({}, [], 5, 0) == (Granted(0), {})


def _send_times(arrivals: list[int], limits: list[Limit], max_wait: int) -> list[int]:
    """Replay arrivals (us) through acquire; the instants granted sends happen."""
    tats: dict[str, int] = {}
    sends = []
    for now in sorted(arrivals):
        verdict, tats = acquire(tats, limits, now, max_wait)
        if isinstance(verdict, Granted):
            sends.append(now + verdict.wait_us)
    return sorted(sends)


def _max_in_any_second(times: list[int]) -> int:
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= 1_000_000:
            start += 1
        best = max(best, end - start + 1)
    return best


@settings(max_examples=200, deadline=None)
@given(
    arrivals=st.lists(st.integers(min_value=0, max_value=5_000_000), min_size=1, max_size=600),
    rate=st.sampled_from([1.0, 3.0, 50.0, 100.0, 200.0]),
    max_wait=st.integers(min_value=0, max_value=2_000_000),
)
def test_no_one_second_window_exceeds_the_limit(arrivals: list[int], rate: float, max_wait: int) -> None:
    limit = Limit("global", "k", rate)
    assert _max_in_any_second(_send_times(arrivals, [limit], max_wait)) <= rate


@pytest.mark.parametrize("rate", [3.0, 50.0, 200.0])
def test_a_saturated_limit_is_filled(rate: float) -> None:
    # Demand of 4x the limit over 5 s, arriving evenly, with the default 2 s reservation horizon.
    arrivals = [int(i * 1_000_000 / (4 * rate)) for i in range(int(20 * rate))]
    sends = _send_times(arrivals, [Limit("global", "k", rate)], 2_000_000)
    full_seconds = [sum(1 for t in sends if s * 1_000_000 <= t < (s + 1) * 1_000_000) for s in range(5)]
    assert all(count >= 0.95 * rate for count in full_seconds)
