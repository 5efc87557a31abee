"""What each staff role may do in the admin API. Pure: the table is the rule.

Rules:
- A staff user has one role per shop (a ``staff_permissions`` row), or none: no row, no access (403).
- ``viewer`` reads (``jobs.read``); ``operator`` also acts (``jobs.replay``). A permission not in a role's
  row is refused, so a new permission is nobody's until it is added here.
- Every route names the one permission it needs; the guard (``restock_admin.staff.guard``) asks ``permits``.
"""

from __future__ import annotations

import enum


class Role(enum.StrEnum):
    """The values of ``staff_permissions.role`` (the table's CHECK constraint lists the same)."""

    VIEWER = "viewer"  # sees the shop's jobs
    OPERATOR = "operator"  # and replays them


class Permission(enum.StrEnum):
    """What a route needs."""

    JOBS_READ = "jobs.read"
    JOBS_REPLAY = "jobs.replay"


PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: frozenset({Permission.JOBS_READ}),
    Role.OPERATOR: frozenset({Permission.JOBS_READ, Permission.JOBS_REPLAY}),
}


def permits(role: str | None, permission: Permission) -> bool:
    """Whether a staff user of ``role`` (None: no grant; an unknown name: none either) may ``permission``."""
    try:
        known = Role(role) if role is not None else None
    except ValueError:
        return False
    return known is not None and permission in PERMISSIONS[known]
