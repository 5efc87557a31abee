"""Build the PostgreSQL engine from settings and bind every table to it."""

from __future__ import annotations

from piccolo.engine.postgres import PostgresEngine

from restock_common.db.tables import ALL_TABLES
from restock_common.settings import Settings


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
