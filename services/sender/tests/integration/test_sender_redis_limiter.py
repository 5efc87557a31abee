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


async def tat(redis: aioredis.Redis, limit: Limit) -> int | None:
    value = await redis.get(limit.key)
    return None if value is None else int(value)


async def test_granted_takes_every_limit_and_denied_takes_nothing(redis_client: aioredis.Redis) -> None:
    limiter = RedisRateLimiter(redis_client)
    assert await limiter.acquire([GLOBAL, DOMAIN], 0) == Granted(0)
    global_tat, domain_tat = await tat(redis_client, GLOBAL), await tat(redis_client, DOMAIN)
    assert global_tat is not None
    assert domain_tat is not None
    assert domain_tat - global_tat == DOMAIN.interval_us - GLOBAL.interval_us  # both moved from one instant
    # The domain's next slot is ~20 ms away: with no room to wait, denied by the domain...
    verdict = await limiter.acquire([GLOBAL, DOMAIN], 0)
    assert isinstance(verdict, Denied)
    assert verdict.limit == "domain"
    assert 0 < verdict.wait_us <= 20_000
    # ...and the global limit lost nothing to the refusal.
    assert await tat(redis_client, GLOBAL) == global_tat
    # Another domain's send goes through on the global limit alone, after at most its 5 ms interval.
    granted = await limiter.acquire([GLOBAL], 10_000)
    assert isinstance(granted, Granted)
    assert granted.wait_us <= GLOBAL.interval_us


async def test_keys_expire_after_their_tat(redis_client: aioredis.Redis) -> None:
    await RedisRateLimiter(redis_client).acquire([DOMAIN], 0)
    ttl_ms = await redis_client.pttl(DOMAIN.key)
    assert 0 < ttl_ms <= 1_020 + 50


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
