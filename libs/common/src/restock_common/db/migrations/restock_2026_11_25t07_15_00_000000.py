"""Indexes for the new hot lookups: Twilio status callbacks find the attempt by its message SID; the
retention job and the one-unconfirmed-per-contact guard read subscriptions by state and time."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-11-25T07:15:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "provider message and retention indexes"

INDEXES = [
    """CREATE INDEX notification_logs_provider_message ON notification_logs (provider_message_id)
       WHERE provider_message_id IS NOT NULL""",
    "CREATE INDEX subscriptions_state_time ON subscriptions (tenant, state, subscribed_at)",
]

DROP = [f"DROP INDEX IF EXISTS {statement.split()[2]}" for statement in INDEXES]


class _Raw(Table):
    """Table.raw runs inside the migration's transaction."""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="restock", description=DESCRIPTION)

    async def create() -> None:
        for statement in INDEXES:
            await _Raw.raw(statement)

    async def drop() -> None:
        for statement in DROP:
            await _Raw.raw(statement)

    manager.add_raw(create)
    manager.add_raw_backwards(drop)
    return manager
