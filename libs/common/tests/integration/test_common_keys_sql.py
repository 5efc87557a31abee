"""The SQL form of the notification key equals the Python one, on the real PostgreSQL."""

from __future__ import annotations

import pytest

from restock_common.db.tables import Tenant
from restock_common.keys import notification_key, notification_key_sql

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("variant", "subscription", "window"), [(1, 2, 3), (9_007_199_254_740_993, 1, 20_417)]
)
async def test_sql_key_equals_python_key(
    engine: object, variant: int, subscription: int, window: int
) -> None:
    expression = notification_key_sql("{}::bigint", "{}::bigint", "{}::bigint")
    rows = await Tenant.raw(f"SELECT {expression} AS key", variant, subscription, window).run()
    assert rows[0]["key"] == notification_key(variant, subscription, window)
