"""``StatelessConnection``: a pooled connection goes back to its pool without asyncpg's reset statements (one
round trip and four statements saved after every query), and an open transaction is still rolled back."""

from __future__ import annotations

import asyncpg
import pytest

from restock_common.db.engine import StatelessConnection
from restock_common.settings import Settings

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("connection_class", "reset"), [(asyncpg.Connection, True), (StatelessConnection, False)]
)
async def test_a_stateless_connection_is_given_back_without_the_reset_statements(
    settings: Settings, connection_class: type[asyncpg.Connection], reset: bool
) -> None:
    pool = await asyncpg.create_pool(
        settings.database_url, min_size=1, max_size=1, connection_class=connection_class
    )
    queries: list[str] = []
    try:
        async with pool.acquire() as connection:
            connection.add_query_logger(lambda record: queries.append(record.query))
            await connection.execute("BEGIN")  # left open: the pool still rolls it back
        async with pool.acquire() as connection:
            assert not connection.is_in_transaction()
            assert await connection.fetchval("SELECT 1") == 1
    finally:
        await pool.close()
    assert any("RESET ALL" in query for query in queries) is reset, queries
