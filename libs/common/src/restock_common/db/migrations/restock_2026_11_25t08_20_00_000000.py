"""The waiting line of the dispatcher's waves: the next N waiting jobs of one variant in FIFO order are
read and released on every wave and stock change; without this index each release scans the variant's
jobs of every state."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-11-25T08:20:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "index of the waves' waiting line"

CREATE = """CREATE INDEX notification_jobs_waiting ON notification_jobs (tenant, variant_id, priority_at, id)
            WHERE state = 'waiting'"""
DROP = "DROP INDEX IF EXISTS notification_jobs_waiting"


class _Raw(Table):
    """Table.raw runs inside the migration's transaction."""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="restock", description=DESCRIPTION)

    async def create() -> None:
        await _Raw.raw(CREATE)

    async def drop() -> None:
        await _Raw.raw(DROP)

    manager.add_raw(create)
    manager.add_raw_backwards(drop)
    return manager
