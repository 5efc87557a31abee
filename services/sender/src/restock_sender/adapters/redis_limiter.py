"""``RateLimiter`` in Redis: ``limiter.acquire`` as one Lua script over every key of one send.

A script runs atomically on the Redis server, so any number of sender replicas share each limit exactly:
no read-modify-write race, no lock, one round trip. The clock is Redis's own ``TIME`` (one clock for all
replicas; Redis 7 replicates the script's effects, not the script, so replicas stay identical). The keys
share one hash tag (``limiter.KEY_PREFIX``) so the script is valid on a Redis Cluster too. Each limit's
calendar is a sorted set of reserved instants (integer microseconds, score and member alike: two
reservations on one limit are at least one interval apart, so an instant names one), pruned of the
instants more than an interval old on every call, and expiring just past its last reservation: an idle
limit costs nothing, and a lost Redis only forgets reservations (the next sends start from "now"), never
a job. While Redis does not answer, every send is denied as ``unavailable`` for a second (logged): jobs
wait, deferred in PostgreSQL, rather than go out unlimited or burn their batch's delivery limit.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from redis.asyncio import Redis
from redis.exceptions import RedisError

from restock_sender.limiter import Denied, Granted, Limit, Verdict

log = logging.getLogger(__name__)

UNAVAILABLE_WAIT_US = 1_000_000

# KEYS: one calendar per limit. ARGV[1]: max wait (us); ARGV[1 + i]: emission interval (us) of KEYS[i].
# Returns {granted (1|0), wait (us), index of the binding key (0: none), the reserved instant (us)}.
# Mirrors limiter.acquire: the earliest instant at least one interval from every reservation of every key.
ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function us(x) return string.format('%.0f', x) end
for i = 1, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', us(now - tonumber(ARGV[i + 1])))
end
local start, binding, moved = now, 0, true
while moved do
  moved = false
  for i = 1, #KEYS do
    local interval = tonumber(ARGV[i + 1])
    local clash = redis.call('ZREVRANGEBYSCORE', KEYS[i], '(' .. us(start + interval),
                             '(' .. us(start - interval), 'WITHSCORES', 'LIMIT', 0, 1)
    if #clash > 0 then start, binding, moved = tonumber(clash[2]) + interval, i, true end
  end
  if start - now > tonumber(ARGV[1]) then return {0, start - now, binding, 0} end
end
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], us(start), us(start))
  local last = tonumber(redis.call('ZRANGE', KEYS[i], -1, -1, 'WITHSCORES')[2])
  redis.call('PEXPIRE', KEYS[i], math.ceil((last + tonumber(ARGV[i + 1]) - now) / 1000) + 1000)
end
return {1, start - now, binding, start}
"""


class RedisRateLimiter:
    """Reservations in every calendar of a send at once (``limiter``'s rules), in one script call."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._script = redis.register_script(ACQUIRE)

    async def acquire(self, limits: Sequence[Limit], max_wait_us: int) -> Verdict:
        if not limits:
            return Granted(0)
        args = [max_wait_us, *(limit.interval_us for limit in limits)]
        try:
            granted, wait, binding, start = await self._script(
                keys=[limit.key for limit in limits], args=args
            )
        except RedisError as error:
            log.warning("rate limiter unavailable; send deferred", extra={"reason": str(error)[:200]})
            return Denied(UNAVAILABLE_WAIT_US, "unavailable", "unavailable", UNAVAILABLE_WAIT_US)
        if granted:
            return Granted(int(wait), int(start))
        limit = limits[int(binding) - 1]
        return Denied(int(wait), limit.name, limit.key, limit.interval_us)
