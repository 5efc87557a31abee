"""An index for the two loops that publish pending jobs with no message (ADR 10): the dispatcher's
sweeper and the sender's scheduler both scan ``state = 'pending' AND enqueued_at IS NULL`` per channel in
FIFO order; without it every tick reads the whole job table."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from restock_common.db.raw_migration import raw_migration

ID = "2026-11-25T06:50:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "index of unpublished pending jobs"

CREATE = """CREATE INDEX notification_jobs_unpublished ON notification_jobs (channel, priority_at, id)
            WHERE state = 'pending' AND enqueued_at IS NULL"""
DROP = "DROP INDEX IF EXISTS notification_jobs_unpublished"


async def forwards() -> MigrationManager:
    return raw_migration(ID, DESCRIPTION, (CREATE,), (DROP,))
