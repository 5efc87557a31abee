"""Build the PostgreSQL engine from settings and bind every table to it."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from piccolo.engine.postgres import PostgresEngine

from restock_common.db.tables import ALL_TABLES
from restock_common.settings import Settings

T = TypeVar("T")


def bind_tables(engine: PostgresEngine) -> None:
    """Make every table run its queries on ``engine`` (Piccolo looks a table's engine up per query)."""
    for table in ALL_TABLES:
        table._meta.db = engine


def make_engine(settings: Settings) -> PostgresEngine:
    """An engine for ``RESTOCK_DATABASE_URL``, bound to every table (no pool yet: see ``open_engine``)."""
    engine = PostgresEngine(config={"dsn": settings.database_url}, extensions=())
    bind_tables(engine)
    return engine


async def open_engine(settings: Settings, *, pool_size: int = 10) -> PostgresEngine:
    """The engine with a started connection pool; close it with ``engine.close_connection_pool()``."""
    engine = make_engine(settings)
    await engine.start_connection_pool(min_size=1, max_size=pool_size)
    return engine


async def isolated(operation: Coroutine[Any, Any, T]) -> T:
    """One iteration of a long-lived loop, run in a task (and so a context) of its own.

    Piccolo keeps the current transaction in a context variable, and a transaction whose connection died
    (a failover, ``pg_terminate_backend``) fails its rollback before resetting it: every later query of the
    same task would run on the dead connection, forever (the fault suite saw a sender's scheduler fail every
    tick until restarted). In a task of its own, such a leak ends with the iteration.
    """
    return await asyncio.ensure_future(operation)


# A connection a dead transaction never gave back would make ``Pool.close()`` wait forever, and a graceful
# stop with it: closing gets this long, then the pool's connections are terminated.
POOL_CLOSE_SECONDS = 10.0


async def close_pool(pool: Any, timeout: float = POOL_CLOSE_SECONDS) -> None:
    """Close an asyncpg pool gracefully, or terminate it after ``timeout``."""
    try:
        await asyncio.wait_for(pool.close(), timeout)
    except TimeoutError:
        pool.terminate()


async def close_engine(engine: PostgresEngine, timeout: float = POOL_CLOSE_SECONDS) -> None:
    """``close_connection_pool``, bounded (see ``close_pool``)."""
    if engine.pool is not None:
        await close_pool(engine.pool, timeout)
        engine.pool = None
