"""Indexes the auto-generated migration cannot express (partial, multi-column); each serves a hot query."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from restock_common.db.raw_migration import raw_migration

ID = "2026-11-25T04:50:45:765540"
VERSION = "1.38.0"
DESCRIPTION = "partial indexes"

INDEXES = [
    # The freeze: confirmed, live subscriptions of one variant, FIFO by subscription time.
    """CREATE INDEX subscriptions_targets ON subscriptions (tenant, variant_id, subscribed_at, id)
       WHERE state = 'confirmed' AND fulfilled_at IS NULL""",
    "CREATE INDEX subscriptions_contact ON subscriptions (tenant, contact_hash)",
    # Jobs of one restock by state: publishing, sweeping, the admin's execution view.
    "CREATE INDEX notification_jobs_event_state ON notification_jobs (restock_event, state, priority_at)",
    "CREATE INDEX notification_jobs_tenant_state ON notification_jobs (tenant, state)",
    # The retry scheduler and the lease reaper.
    "CREATE INDEX notification_jobs_due ON notification_jobs (next_attempt_at) WHERE state = 'failed-temporary'",
    "CREATE INDEX notification_jobs_leased ON notification_jobs (lease_until) WHERE state = 'processing'",
    # The outbox relay reads unpublished rows in order.
    "CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL",
    "CREATE INDEX restock_events_variant ON restock_events (tenant, variant_id, detected_at)",
]

DROP = [f"DROP INDEX IF EXISTS {statement.split()[2]}" for statement in INDEXES]


async def forwards() -> MigrationManager:
    return raw_migration(ID, DESCRIPTION, INDEXES, DROP)
