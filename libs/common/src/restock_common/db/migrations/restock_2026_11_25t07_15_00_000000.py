"""Indexes for the new hot lookups: Twilio status callbacks find the attempt by its message SID; the
retention job and the one-unconfirmed-per-contact guard read subscriptions by state and time."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from restock_common.db.raw_migration import raw_migration

ID = "2026-11-25T07:15:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "provider message and retention indexes"

INDEXES = [
    """CREATE INDEX notification_logs_provider_message ON notification_logs (provider_message_id)
       WHERE provider_message_id IS NOT NULL""",
    "CREATE INDEX subscriptions_state_time ON subscriptions (tenant, state, subscribed_at)",
]

DROP = [f"DROP INDEX IF EXISTS {statement.split()[2]}" for statement in INDEXES]


async def forwards() -> MigrationManager:
    return raw_migration(ID, DESCRIPTION, INDEXES, DROP)
