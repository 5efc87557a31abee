"""A claim's provider-call mark (ADR 21): set right before the provider is called, cleared by each claim,
so a lease that expires unmarked is known never to have reached the provider. Nullable without a default:
adding it rewrites nothing."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-11-25T14:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "provider-call mark on notification jobs"

CREATE = "ALTER TABLE notification_jobs ADD COLUMN provider_called_at timestamptz NULL"
DROP = "ALTER TABLE notification_jobs DROP COLUMN IF EXISTS provider_called_at"


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
