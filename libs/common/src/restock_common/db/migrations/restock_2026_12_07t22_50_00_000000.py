"""Jobs that need an operator (``dead-letter``, ``indeterminate``): the sender's backlog gauges count them per
channel on every monitor tick from this small partial index instead of every job of the channel. The admin
API's list of a shop's such jobs, newest first, reads it backwards, index-only, whenever PostgreSQL plans
the statement for its states (a custom plan; a generic one falls back to ``(tenant, state)`` and a sort)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from restock_common.db.raw_migration import raw_migration

ID = "2026-12-07T22:50:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "index of jobs that need an operator"

CREATE = """CREATE INDEX notification_jobs_needs_operator ON notification_jobs (tenant, id) INCLUDE (channel, state)
            WHERE state IN ('dead-letter', 'indeterminate')"""
DROP = "DROP INDEX IF EXISTS notification_jobs_needs_operator"


async def forwards() -> MigrationManager:
    return raw_migration(ID, DESCRIPTION, (CREATE,), (DROP,))
