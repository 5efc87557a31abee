"""``restock_common.db.engine.transaction`` when PostgreSQL drops the connection under it: the pool gets
its connection back and the task's context forgets the dead transaction, where Piccolo's own
``engine.transaction()`` leaks both (a pool of one then waits forever)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
from piccolo.engine.postgres import PostgresEngine

from restock_common.db.engine import close_engine, transaction
from restock_common.db.retry import CONNECTION_LOSS
from restock_common.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
async def single(settings: Settings) -> AsyncIterator[PostgresEngine]:
    """An engine whose pool holds one connection: a connection never given back stalls the next query."""
    own = PostgresEngine(config={"dsn": settings.database_url}, extensions=())
    await own.start_connection_pool(min_size=1, max_size=1)
    try:
        yield own
    finally:
        await close_engine(own, timeout=2)


async def _kill(settings_url: str, pid: int) -> None:
    """Terminate a backend from another connection, as an administrator or a failover would."""
    connection = await asyncpg.connect(settings_url)
    try:
        await connection.execute("SELECT pg_terminate_backend($1)", pid)
    finally:
        await connection.close()


async def _usable(engine: PostgresEngine) -> None:
    """A fresh query on the pool, within seconds (a leaked connection would make it wait forever)."""
    assert engine.pool is not None
    assert await asyncio.wait_for(engine.pool.fetchval("SELECT 1"), 10) == 1


async def _die_inside(engine: PostgresEngine, database_url: str, *, at_commit: bool) -> None:
    async with transaction(engine) as started:
        pid = await started.connection.fetchval("SELECT pg_backend_pid()")
        await _kill(database_url, pid)
        await asyncio.sleep(0.2)  # the FATAL reaches the client
        if not at_commit:
            await started.connection.execute("SELECT 1")


@pytest.mark.parametrize("at_commit", [False, True], ids=["in_a_statement", "at_commit"])
async def test_a_transaction_whose_connection_died_gives_it_back_and_leaves_no_context(
    single: PostgresEngine, at_commit: bool, settings: Settings
) -> None:
    with pytest.raises(CONNECTION_LOSS):
        await _die_inside(single, settings.database_url, at_commit=at_commit)
    assert single.current_transaction.get() is None
    await _usable(single)
