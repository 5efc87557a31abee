"""A claim's provider-call mark (ADR 21): set right before the provider is called, cleared by each claim,
so a lease that expires unmarked is known never to have reached the provider. Nullable without a default:
adding it rewrites nothing."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from restock_common.db.raw_migration import raw_migration

ID = "2026-11-25T14:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "provider-call mark on notification jobs"

CREATE = "ALTER TABLE notification_jobs ADD COLUMN provider_called_at timestamptz NULL"
DROP = "ALTER TABLE notification_jobs DROP COLUMN IF EXISTS provider_called_at"


async def forwards() -> MigrationManager:
    return raw_migration(ID, DESCRIPTION, (CREATE,), (DROP,))
