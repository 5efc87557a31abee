"""``FastDedup`` over Redis: one pipelined ``SET NX GET EX`` per page of notification keys."""

from __future__ import annotations

import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from restock_dispatcher.dedup import redis_key

log = logging.getLogger(__name__)


class RedisFastDedup:
    """Claims keys in Redis; an unreachable Redis is reported as ``None``, never raised."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client

    async def claim(self, keys: list[str], owner: int, ttl_seconds: int) -> list[bytes | str | None] | None:
        try:
            # transaction=False: no MULTI/EXEC, each SET stands alone; one round trip for the page.
            async with self.client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.set(redis_key(key), owner, nx=True, get=True, ex=ttl_seconds)
                results: list[bytes | str | None] = await pipe.execute()
        except (RedisError, OSError) as error:
            log.warning(
                "redis unavailable: dedup by PostgreSQL alone",
                extra={"restock_event_id": owner, "error": type(error).__name__},
            )
            return None
        return results
