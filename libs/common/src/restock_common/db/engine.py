"""Build the PostgreSQL engine from settings and bind every table to it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar, cast

import asyncpg
from piccolo.engine.base import Engine
from piccolo.engine.postgres import PostgresEngine, PostgresTransaction

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


class StatelessConnection(asyncpg.Connection):  # type: ignore[misc]  # asyncpg ships no types
    """A pooled connection given back to the pool without asyncpg's reset statements (``SELECT
    pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``): that is one more round trip, and four
    statements for the server, after every query a pool runs. An open transaction is still rolled back
    (asyncpg always does). Only for a process that leaves no session state on a connection: no advisory
    locks, no ``LISTEN``, no session ``SET``, no cursor held past its transaction (the sender, ADR 23)."""

    def get_reset_query(self) -> str:
        return ""


async def open_engine(
    settings: Settings, *, pool_size: int = 10, stateless_sessions: bool = False
) -> PostgresEngine:
    """The engine with a started connection pool; close it with ``engine.close_connection_pool()``.
    ``stateless_sessions``: connections go back to the pool without a reset (``StatelessConnection``)."""
    engine = make_engine(settings)
    extra: dict[str, Any] = {"connection_class": StatelessConnection} if stateless_sessions else {}
    await engine.start_connection_pool(min_size=1, max_size=pool_size, **extra)
    return engine


async def isolated(operation: Coroutine[Any, Any, T]) -> T:
    """One iteration of a long-lived loop, run in a task (and so a context) of its own.

    Piccolo keeps the current transaction in a context variable, and a transaction whose connection died
    (a failover, ``pg_terminate_backend``) fails its rollback before resetting it: every later query of the
    same task would run on the dead connection, forever (the fault suite saw a sender's scheduler fail every
    tick until restarted). In a task of its own, such a leak ends with the iteration.
    """
    return await asyncio.ensure_future(operation)


@contextlib.asynccontextmanager
async def transaction(engine: Engine[Any]) -> AsyncIterator[PostgresTransaction]:
    """``engine.transaction()``, safe when the connection dies under it.

    When PostgreSQL drops the connection (a failover, ``pg_terminate_backend``), Piccolo's transaction
    fails in its ``BEGIN``, ``COMMIT`` or ``ROLLBACK`` before it gives the connection back to the pool and
    resets its context variable: the pool is one connection short for good (a few failovers and every
    acquire waits forever), and every later query of the task runs on the dead connection. Here the
    failed transaction's connection is terminated, released, and the context variable reset, then the
    error goes on to the caller (``retry_on_connection_loss`` tries again on a fresh connection).
    """
    postgres = cast(PostgresEngine, engine)  # a table's ``_meta.db`` is typed as any engine; ours is this
    started = postgres.transaction()
    try:
        entered = await started.__aenter__()
    except BaseException:
        await _discard(postgres, started)
        raise
    try:
        yield entered
    except BaseException as error:
        await _exit(postgres, started, error)
        raise
    await _exit(postgres, started, None)


async def _exit(engine: PostgresEngine, started: PostgresTransaction, error: BaseException | None) -> None:
    try:
        if error is None:
            await started.__aexit__(None, None, None)
        else:
            await started.__aexit__(type(error), error, error.__traceback__)
    except BaseException:
        await _discard(engine, started)
        raise


async def _discard(engine: PostgresEngine, started: PostgresTransaction) -> None:
    """What Piccolo's ``__aexit__`` did not get to: a nested transaction owns nothing of its own."""
    if started._parent is not None:
        return
    context = getattr(started, "context", None)
    if context is not None:
        with contextlib.suppress(ValueError, RuntimeError):  # already reset
            engine.current_transaction.reset(context)
    connection = getattr(started, "connection", None)
    if connection is not None:
        # Dead, or alive mid-transaction: never handed out again. Either step fails harmlessly when a
        # partial exit already gave the connection back.
        with contextlib.suppress(Exception):
            connection.terminate()
        if engine.pool is not None:
            with contextlib.suppress(Exception):
                await engine.pool.release(connection)


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
