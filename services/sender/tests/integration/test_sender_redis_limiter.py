"""The Lua limiter against the real Redis: every limit taken at once or none, and no one-second window
above the limit when several clients (replicas) share it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis.asyncio as aioredis

from restock_sender.adapters.redis_limiter import RedisRateLimiter
from restock_sender.limiter import KEY_PREFIX, Denied, Granted, Limit

pytestmark = pytest.mark.integration

GLOBAL = Limit("global", f"{KEY_PREFIX}email:global", 200.0)
DOMAIN = Limit("domain", f"{KEY_PREFIX}email:domain:example.com", 50.0)


async def calendar(redis: aioredis.Redis, limit: Limit) -> list[int]:
    return [int(score) for _, score in await redis.zrange(limit.key, 0, -1, withscores=True)]


async def test_granted_takes_every_limit_and_denied_takes_nothing(redis_client: aioredis.Redis) -> None:
    limiter = RedisRateLimiter(redis_client)
    first = await limiter.acquire([GLOBAL, DOMAIN], 0)
    assert first == Granted(0)
    assert isinstance(first, Granted)
    # One instant, written in both calendars.
    assert await calendar(redis_client, GLOBAL) == [first.at_us]
    assert await calendar(redis_client, DOMAIN) == [first.at_us]
    # The domain's next slot is ~20 ms away: with no room to wait, denied by the domain...
    verdict = await limiter.acquire([GLOBAL, DOMAIN], 0)
    assert isinstance(verdict, Denied)
    assert verdict.limit == "domain"
    assert 0 < verdict.wait_us <= 20_000
    # ...and the global limit lost nothing to the refusal.
    assert await calendar(redis_client, GLOBAL) == [first.at_us]
    # Another domain's send goes through on the global limit alone, after at most its 5 ms interval.
    granted = await limiter.acquire([GLOBAL], 10_000)
    assert isinstance(granted, Granted)
    assert granted.wait_us <= GLOBAL.interval_us


async def test_the_time_before_a_reservation_ahead_stays_free_for_other_sends(
    redis_client: aioredis.Redis,
) -> None:
    """ADR 25: a domain send reserved ahead leaves the shared limit's time before it to another domain."""
    slow = Limit("domain", f"{KEY_PREFIX}email:domain:slow.example", 5.0)  # one send per 200 ms
    limiter = RedisRateLimiter(redis_client)
    assert isinstance(await limiter.acquire([GLOBAL, slow], 0), Granted)
    ahead = await limiter.acquire([GLOBAL, slow], 300_000)  # the domain's next: ~200 ms ahead
    assert isinstance(ahead, Granted)
    # Another domain's send fits between the two (GCRA would have put it after the second).
    between = await limiter.acquire([GLOBAL], 300_000)
    assert isinstance(between, Granted)
    assert between.at_us <= ahead.at_us - GLOBAL.interval_us
    assert await calendar(redis_client, GLOBAL) == sorted(
        [*(await calendar(redis_client, slow)), between.at_us]
    )


async def test_calendars_expire_after_their_last_reservation(redis_client: aioredis.Redis) -> None:
    await RedisRateLimiter(redis_client).acquire([DOMAIN], 0)
    ttl_ms = await redis_client.pttl(DOMAIN.key)
    assert 0 < ttl_ms <= 1_020 + 50


async def test_old_instants_are_pruned(redis_client: aioredis.Redis) -> None:
    limiter = RedisRateLimiter(redis_client)
    for _ in range(3):
        assert isinstance(await limiter.acquire([GLOBAL], 0), Granted)
        await asyncio.sleep(GLOBAL.interval_us / 1_000_000 * 2)
    # Each call dropped the instants more than an interval old: only the last is left.
    assert len(await calendar(redis_client, GLOBAL)) == 1


async def test_lua_and_python_agree_on_a_reservation_horizon(redis_client: aioredis.Redis) -> None:
    limiter = RedisRateLimiter(redis_client)
    # 10 requests at once on 50/s with 100 ms of horizon: waits 0, 20, ..., 100 ms granted; the rest denied.
    started = time.monotonic()
    verdicts = [await limiter.acquire([DOMAIN], 100_000) for _ in range(10)]
    elapsed_us = (time.monotonic() - started) * 1_000_000
    granted = [v.wait_us for v in verdicts if isinstance(v, Granted)]
    assert len(granted) == 6
    # The i-th is reserved i intervals after the first, less the time the calls took on this machine.
    for i, wait in enumerate(granted):
        assert 20_000 * i - elapsed_us - 1_000 <= wait <= 20_000 * i + 1_000, (i, wait, elapsed_us)
    assert all(isinstance(v, Denied) and v.limit == "domain" for v in verdicts[6:])


async def _client(settings_url: str, limits: list[Limit], until: float, sends: list[float]) -> None:
    redis = aioredis.from_url(settings_url)
    limiter = RedisRateLimiter(redis)
    try:
        while time.monotonic() < until:
            verdict = await limiter.acquire(limits, 50_000)
            if isinstance(verdict, Granted):
                sends.append(verdict.at_us / 1_000_000)  # the reserved send instant, on Redis's clock
            else:
                await asyncio.sleep(verdict.wait_us / 1_000_000 / 2)
    finally:
        await redis.aclose()


def max_in_any_second(times: list[float]) -> int:
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


async def test_two_clients_never_exceed_the_limit_in_any_one_second_window(
    redis_client: aioredis.Redis, settings: Any
) -> None:
    sends: list[float] = []
    until = time.monotonic() + 3.0
    await asyncio.gather(*(_client(settings.redis_url, [DOMAIN], until, sends) for _ in range(2)))
    # Counted from the reservations, not timed: at most 50 in any one-second window...
    assert max_in_any_second(sends) <= 50
    # ...and the two clients together filled it (3 s of demand, minus at most one interval at each end).
    assert len(sends) >= 0.95 * 50 * 3
