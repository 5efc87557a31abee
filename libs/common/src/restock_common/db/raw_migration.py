"""What every hand-written (raw SQL) migration does, once: its statements forwards, its undo backwards,
each list in order inside the migration's one transaction (a failure rolls the whole list back).

Lives beside ``migrations/``, not in it: Piccolo takes every module of that folder for a migration.
"""

from __future__ import annotations

from collections.abc import Sequence

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table


class _Raw(Table):
    """A table to call ``raw`` on: its queries join the migration's transaction."""


def raw_migration(
    migration_id: str, description: str, forwards: Sequence[str], backwards: Sequence[str]
) -> MigrationManager:
    """The migration that runs ``forwards`` then, undone, ``backwards``, statement by statement."""
    manager = MigrationManager(migration_id=migration_id, app_name="restock", description=description)

    async def apply() -> None:
        for statement in forwards:
            await _Raw.raw(statement)

    async def undo() -> None:
        for statement in backwards:
            await _Raw.raw(statement)

    manager.add_raw(apply)
    manager.add_raw_backwards(undo)
    return manager
