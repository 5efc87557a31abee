"""The pure rate-limit arithmetic: which limits apply, and reservations in all of their calendars at once
(clock injected)."""

from __future__ import annotations

import heapq
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from restock_sender.limiter import (
    KEY_PREFIX,
    Denied,
    Granted,
    Limit,
    LimitConfig,
    Releases,
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
    assert all(limit.key.startswith("restock:slots:{rl}:") for limit in shop)


NOW = 1_000_000


@pytest.mark.parametrize(
    ("calendars", "max_wait", "verdict", "after"),
    [
        # Idle limits: granted now, the instant written in both calendars.
        ({}, 0, Granted(0), {GLOBAL.key: (NOW,), DOMAIN.key: (NOW,)}),
        # A domain send reserved 15 ms ahead: the next one fits an interval after it, 35 ms from now.
        (
            {DOMAIN.key: (NOW + 15_000,)},
            50_000,
            Granted(35_000),
            {GLOBAL.key: (NOW + 35_000,), DOMAIN.key: (NOW + 15_000, NOW + 35_000)},
        ),
        # The same without room to wait: denied by the domain, nothing taken from the global limit.
        (
            {DOMAIN.key: (NOW + 15_000,)},
            10_000,
            Denied(35_000, "domain"),
            {DOMAIN.key: (NOW + 15_000,), GLOBAL.key: ()},
        ),
        # The time before a reservation ahead stays free: a send 40 ms ahead on both limits leaves the
        # global limit's next 35 ms to another send (one pointer per limit, GCRA, would answer 45 ms).
        (
            {GLOBAL.key: (NOW + 40_000,), DOMAIN.key: (NOW + 40_000,)},
            0,
            Granted(0),
            {GLOBAL.key: (NOW, NOW + 40_000), DOMAIN.key: (NOW, NOW + 40_000)},
        ),
        # ...but not closer than an interval to it: 37 ms ahead leaves the 20 ms domain no room before it.
        (
            {DOMAIN.key: (NOW + 17_000,)},
            50_000,
            Granted(37_000),
            {GLOBAL.key: (NOW + 37_000,), DOMAIN.key: (NOW + 17_000, NOW + 37_000)},
        ),
        # Clashes on either limit move the instant on until it clears both: global 0-10 ms, domain 12 ms,
        # then the global limit's 35 ms.
        (
            {GLOBAL.key: (NOW, NOW + 5_000, NOW + 10_000, NOW + 35_000), DOMAIN.key: (NOW + 12_000,)},
            100_000,
            Granted(40_000),
            {
                GLOBAL.key: (NOW, NOW + 5_000, NOW + 10_000, NOW + 35_000, NOW + 40_000),
                DOMAIN.key: (NOW + 12_000, NOW + 40_000),
            },
        ),
        # The binding limit is the one whose reservation ends last; denied, nothing taken.
        (
            {GLOBAL.key: (NOW + 3_000,), DOMAIN.key: (NOW + 15_000,)},
            0,
            Denied(35_000, "domain"),
            {GLOBAL.key: (NOW + 3_000,), DOMAIN.key: (NOW + 15_000,)},
        ),
        # Instants an interval or more in the past no longer matter (an idle limit banks no burst), and
        # are pruned; one 4 ms old still holds the global limit for 1 ms.
        (
            {GLOBAL.key: (10, NOW - 4_000), DOMAIN.key: (20, NOW - 20_000)},
            10_000,
            Granted(1_000),
            {GLOBAL.key: (NOW - 4_000, NOW + 1_000), DOMAIN.key: (NOW + 1_000,)},
        ),
    ],
)
def test_the_earliest_instant_an_interval_from_every_reservation_of_every_limit(
    calendars: dict[str, tuple[int, ...]], max_wait: int, verdict: object, after: dict[str, tuple[int, ...]]
) -> None:
    assert acquire(calendars, [GLOBAL, DOMAIN], NOW, max_wait) == (verdict, after)


def test_no_limits_is_granted_at_once() -> None:
    assert acquire({}, [], 5, 0) == (Granted(0), {})


def _send_times(arrivals: list[int], limits: list[Limit], max_wait: int) -> list[int]:
    """Replay arrivals (us) through acquire; the instants granted sends happen."""
    calendars: dict[str, Sequence[int]] = {}
    sends = []
    for now in sorted(arrivals):
        verdict, calendars = acquire(calendars, limits, now, max_wait)
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


def test_a_saturated_domain_leaves_the_shared_limit_to_other_domains() -> None:
    """ADR 25: a domain's line reserves each send 25 ms ahead (its head wakes half a reservation early);
    mail to other domains, 100/s on the shared 200/s limit, fits in the time before those reservations."""
    events: list[tuple[int, str]] = [(0, "domain")] + [(i * 10_000, "other") for i in range(500)]
    heapq.heapify(events)
    calendars: dict[str, Sequence[int]] = {}
    domain_sends, other_sends, other_waits = [], [], []
    while events:
        now, kind = heapq.heappop(events)
        if kind == "domain":
            verdict, calendars = acquire(calendars, [GLOBAL, DOMAIN], now, 50_000)
            if isinstance(verdict, Granted):
                domain_sends.append(now + verdict.wait_us)
                if now < 5_000_000:
                    heapq.heappush(events, (now + verdict.wait_us + DOMAIN.interval_us - 25_000, "domain"))
            else:
                heapq.heappush(events, (now + verdict.wait_us - 25_000, "domain"))
        else:
            verdict, calendars = acquire(calendars, [GLOBAL], now, 50_000)
            assert isinstance(verdict, Granted)
            other_sends.append(now + verdict.wait_us)
            other_waits.append(verdict.wait_us)
    # Other domains wait at most for the reservation they clash with (GCRA: up to the 25 ms lead each).
    assert max(other_waits) <= 2 * GLOBAL.interval_us
    # The domain is filled, and neither limit exceeds its rate in any second.
    assert len(domain_sends) >= 0.95 * 50 * 5
    assert _max_in_any_second(sorted(domain_sends)) <= 50
    assert _max_in_any_second(sorted(domain_sends + other_sends)) <= 200


# --- headroom and the release guard (ADR 23) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "headroom", "interval_us", "cap", "span"),
    [
        (50.0, 0.0, 20_000, 50, 1.0),
        (50.0, 0.03, 20_619, 50, 1.03),  # spaced for 48.5/s: 50 sends span 1.03 s
        (100.0, 0.03, 10_310, 100, 1.03),
        (200.0, 0.03, 5_155, 200, 1.03),
        (2.5, 0.03, 412_372, 2, 1.03),  # a one-second window holds whole messages: at most 2
        (0.5, 0.03, 2_061_856, 1, 2.06),  # below one per second: one per 1/r seconds
    ],
)
def test_headroom_spaces_the_limit_below_its_rate_and_sets_the_release_guard(
    rate: float, headroom: float, interval_us: int, cap: int, span: float
) -> None:
    limit = Limit("domain", "k", rate, headroom)
    assert limit.interval_us == interval_us
    assert limit.release_cap == cap
    assert limit.release_span == pytest.approx(span)


def test_every_limit_of_a_send_carries_the_configured_headroom() -> None:
    config = LimitConfig({"email": 200.0, "sms": None}, {"example.com": 50.0}, 5.0, 100.0, "+1500", 0.03)
    email = limits_for("email", config, tenant_id=7, shop_per_second=10.0, recipient_domain="example.com")
    sms = limits_for("sms", config, tenant_id=7, shop_per_second=None, recipient_domain=None)
    assert [limit.headroom for limit in [*email, *sms]] == [0.03] * 4


THREE = Limit("domain", "three", 3.0, 0.0)  # at most 3 calls in any 1.0 s
WIDE = Limit("global", "wide", 100.0, 0.0)


@pytest.mark.parametrize(
    ("calls", "limits", "now", "wait"),
    [
        ([], [THREE], 0.0, 0.0),
        ([0.0, 0.1], [THREE], 0.2, 0.0),  # under the count
        ([0.0, 0.1, 0.2], [THREE], 0.3, 0.7),  # a 4th within the second waits for the 1st to leave it
        ([0.0, 0.1, 0.2], [THREE], 0.95, 0.05),
        ([0.0, 0.1, 0.2], [THREE], 1.0, 0.0),  # a call exactly one second later is in the next window
        ([0.0, 0.0, 0.0], [THREE], 0.0, 1.0),  # a bunch of late sends fills the count at once
        ([0.0, 0.1, 0.2], [WIDE], 0.3, 0.0),  # counted per limit key
        ([0.0, 0.1, 0.2], [WIDE, THREE], 0.3, 0.7),  # every limit of the send is guarded
    ],
)
def test_the_release_guard_counts_the_calls_actually_made(
    calls: list[float], limits: list[Limit], now: float, wait: float
) -> None:
    releases = Releases()
    for at in calls:
        assert releases.take([THREE], at)
    assert releases.wait(limits, now) == pytest.approx(wait)
    assert releases.take(limits, now) is (wait == 0.0)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=3_000_000), min_size=1, max_size=300),
    st.sampled_from([1.0, 3.0, 50.0, 100.0]),
    st.sampled_from([0.0, 0.03]),
)
def test_calls_the_guard_lets_through_never_exceed_the_limit_in_any_widened_second(
    attempts_us: list[int], rate: float, headroom: float
) -> None:
    limit, releases, made, clock = Limit("domain", "k", rate, headroom), Releases(), [], 0.0
    for at_us in sorted(attempts_us):
        clock = max(clock, at_us / 1_000_000)  # calls queue behind a refused one, in time order
        while not releases.take([limit], clock):
            clock += releases.wait([limit], clock)
        made.append(clock)
    for start, first in enumerate(made):
        within = [at for at in made[start:] if at - first < limit.release_span - 1e-9]
        assert len(within) <= limit.release_cap
