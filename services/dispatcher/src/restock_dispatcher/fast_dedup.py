"""``FastDedup`` over Redis: one script call per page of notification keys (``SET NX GET EX`` each).

A server-side script instead of a pipeline of ``SET`` commands: the page's keys travel as one command, so
a page of 1,000 costs one round trip and one command to encode instead of 1,000 (measured by
bench/dispatch.py: the pipeline was the freeze's second-largest cost).
"""

from __future__ import annotations

import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from restock_dispatcher.dedup import redis_key

log = logging.getLogger(__name__)

# KEYS: the page's keys; ARGV: owner, ttl. Returns each key's previous value (false: it was free), in order.
_CLAIM = """
local previous = {}
for i, key in ipairs(KEYS) do
  previous[i] = redis.call('SET', key, ARGV[1], 'NX', 'GET', 'EX', ARGV[2])
end
return previous
"""


class RedisFastDedup:
    """Claims keys in Redis; an unreachable Redis is reported as ``None``, never raised."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.script = client.register_script(_CLAIM)

    async def claim(self, keys: list[str], owner: int, ttl_seconds: int) -> list[bytes | str | None] | None:
        if not keys:
            return []
        try:
            results = await self.script(keys=[redis_key(key) for key in keys], args=[owner, ttl_seconds])
        except (RedisError, OSError) as error:
            log.warning(
                "redis unavailable: dedup by PostgreSQL alone",
                extra={"restock_event_id": owner, "error": type(error).__name__},
            )
            return None
        return list(results)
