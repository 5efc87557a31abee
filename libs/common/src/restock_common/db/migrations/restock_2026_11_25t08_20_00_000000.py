"""The waiting line of the dispatcher's waves: the next N waiting jobs of one variant in FIFO order are
read and released on every wave and stock change; without this index each release scans the variant's
jobs of every state."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from restock_common.db.raw_migration import raw_migration

ID = "2026-11-25T08:20:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "index of the waves' waiting line"

CREATE = """CREATE INDEX notification_jobs_waiting ON notification_jobs (tenant, variant_id, priority_at, id)
            WHERE state = 'waiting'"""
DROP = "DROP INDEX IF EXISTS notification_jobs_waiting"


async def forwards() -> MigrationManager:
    return raw_migration(ID, DESCRIPTION, (CREATE,), (DROP,))
