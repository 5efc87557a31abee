"""Deferred pending jobs (rate limits, send windows, a paused channel) are republished by the sender's
scheduler when ``next_attempt_at`` comes, FIFO; without this index each tick scans every pending job."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from restock_common.db.raw_migration import raw_migration

ID = "2026-11-25T09:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "index of deferred pending jobs"

CREATE = """CREATE INDEX notification_jobs_deferred ON notification_jobs (channel, next_attempt_at)
            WHERE state = 'pending' AND next_attempt_at IS NOT NULL"""
DROP = "DROP INDEX IF EXISTS notification_jobs_deferred"


async def forwards() -> MigrationManager:
    return raw_migration(ID, DESCRIPTION, (CREATE,), (DROP,))
