"""Jobs that need an operator (``dead-letter``, ``indeterminate``): the sender's backlog gauges count them per
channel on every monitor tick, and the admin API lists a shop's newest first. Both read this small partial
index (index-only, thanks to INCLUDE) instead of every job of the channel or the shop."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from restock_common.db.raw_migration import raw_migration

ID = "2026-12-08T09:30:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "index of jobs that need an operator"

CREATE = """CREATE INDEX notification_jobs_needs_operator ON notification_jobs (tenant, id) INCLUDE (channel, state)
            WHERE state IN ('dead-letter', 'indeterminate')"""
DROP = "DROP INDEX IF EXISTS notification_jobs_needs_operator"


async def forwards() -> MigrationManager:
    return raw_migration(ID, DESCRIPTION, (CREATE,), (DROP,))
