"""Deferred pending jobs (rate limits, send windows, a paused channel) are republished by the sender's
scheduler when ``next_attempt_at`` comes, FIFO; without this index each tick scans every pending job."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-11-25T09:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "index of deferred pending jobs"

CREATE = """CREATE INDEX notification_jobs_deferred ON notification_jobs (channel, next_attempt_at)
            WHERE state = 'pending' AND next_attempt_at IS NOT NULL"""
DROP = "DROP INDEX IF EXISTS notification_jobs_deferred"


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
