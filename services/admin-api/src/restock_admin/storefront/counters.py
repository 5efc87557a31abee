"""Counters of the storefront: rate-limit windows in Redis, product views in PostgreSQL."""

from __future__ import annotations

import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from restock_common.db.tables import ProductView

logger = logging.getLogger(__name__)

# One statement: the shop is resolved, the day's row created or incremented. No personal data.
_COUNT_VIEW = """
INSERT INTO product_views (tenant, variant_id, day, views)
SELECT id, {}, {}, 1 FROM tenants WHERE shop_domain = {} AND uninstalled_at IS NULL
ON CONFLICT (tenant, variant_id, day) DO UPDATE SET views = product_views.views + 1
RETURNING views
"""


class RedisHitCounter:
    """``ports.HitCounter``: INCR and EXPIRE in one round trip."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client

    async def hit(self, key: str, ttl_seconds: int) -> int | None:
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.expire(key, ttl_seconds)
                hits, _ = await pipe.execute()
        except (RedisError, OSError) as error:
            # Redis may lose state (DESIGN.md): the signup goes on without the guard, and says so.
            logger.warning("signup rate limit unavailable", extra={"error": type(error).__name__})
            return None
        return int(hits)


class PiccoloViewCounter:
    """``ports.ViewCounter`` on ``product_views``."""

    async def count_view(self, shop_domain: str, variant_id: int, day: str) -> bool:
        return bool(await ProductView.raw(_COUNT_VIEW, variant_id, day, shop_domain))
