"""Roles and permissions (``restock_admin.staff.roles``): the table, row by row."""

from __future__ import annotations

import pytest

from restock_admin.staff.roles import Permission, permits

CASES = [
    ("viewer", Permission.JOBS_READ, True),
    ("viewer", Permission.JOBS_REPLAY, False),
    ("operator", Permission.JOBS_READ, True),
    ("operator", Permission.JOBS_REPLAY, True),
    (None, Permission.JOBS_READ, False),  # no grant at the shop
    (None, Permission.JOBS_REPLAY, False),
    ("admin", Permission.JOBS_READ, False),  # a role the table does not know grants nothing
    ("Operator", Permission.JOBS_REPLAY, False),
]


@pytest.mark.parametrize(("role", "permission", "allowed"), CASES)
def test_permits(role: str | None, permission: Permission, allowed: bool) -> None:
    assert permits(role, permission) is allowed
