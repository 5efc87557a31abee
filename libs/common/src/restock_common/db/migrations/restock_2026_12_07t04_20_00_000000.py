"""The publish cursor of a restock event (ADR 24): the jobs a freeze makes pending are published by the
event's cursor instead of one ``enqueued_at`` update per job. ``published_at`` says every one of them has
had its batch confirmed by the broker; until then ``published_through_at``/``published_through_id`` is the
last confirmed job in FIFO (``priority_at``, ``id``) order, so a redelivered event or the sweeper carries on
from there. Events frozen before this migration were published job by job: they count as published.
The partial index is the sweeper's: frozen events whose publish never finished. The jobs' index by event and
state gains ``id``, so a page of the cursor is read in (``priority_at``, ``id``) order straight from the
index (without it every page sorted every pending job of the event: 180 ms a page at 100,000). The jobs'
foreign keys go: their checks were over half of each inserted job's cost. Subscriptions and events are
never deleted but with their shop; a shop's deletion deletes its jobs by a trigger on ``tenants``, as the
tenant key's cascade did (ADR 24)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from restock_common.db.raw_migration import raw_migration

ID = "2026-12-07T04:20:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "publish cursor on restock events"

CREATE = (
    "ALTER TABLE restock_events ADD COLUMN published_at timestamptz NULL,"
    " ADD COLUMN published_through_at timestamptz NULL, ADD COLUMN published_through_id bigint NULL",
    "UPDATE restock_events SET published_at = frozen_at WHERE frozen_at IS NOT NULL",
    "CREATE INDEX restock_events_unpublished ON restock_events (frozen_at)"
    " WHERE published_at IS NULL AND frozen_at IS NOT NULL",
    "DROP INDEX notification_jobs_event_state",
    "CREATE INDEX notification_jobs_event_state ON notification_jobs (restock_event, state, priority_at, id)",
    "ALTER TABLE notification_jobs DROP CONSTRAINT notification_jobs_subscription_fkey,"
    " DROP CONSTRAINT notification_jobs_restock_event_fkey, DROP CONSTRAINT notification_jobs_tenant_fkey",
    # What the tenant's ON DELETE CASCADE did, paid once per deleted shop instead of once per inserted job.
    "CREATE FUNCTION notification_jobs_follow_tenant() RETURNS trigger LANGUAGE plpgsql AS"
    " $$ BEGIN DELETE FROM notification_jobs WHERE tenant = OLD.id; RETURN OLD; END $$",
    "CREATE TRIGGER notification_jobs_follow_tenant BEFORE DELETE ON tenants"
    " FOR EACH ROW EXECUTE FUNCTION notification_jobs_follow_tenant()",
)
DROP = (
    "DROP TRIGGER IF EXISTS notification_jobs_follow_tenant ON tenants",
    "DROP FUNCTION IF EXISTS notification_jobs_follow_tenant()",
    "ALTER TABLE notification_jobs ADD CONSTRAINT notification_jobs_tenant_fkey FOREIGN KEY (tenant)"
    " REFERENCES tenants (id) ON UPDATE CASCADE ON DELETE CASCADE",
    "ALTER TABLE notification_jobs ADD CONSTRAINT notification_jobs_subscription_fkey FOREIGN KEY (subscription)"
    " REFERENCES subscriptions (id) ON UPDATE CASCADE ON DELETE CASCADE,"
    " ADD CONSTRAINT notification_jobs_restock_event_fkey FOREIGN KEY (restock_event)"
    " REFERENCES restock_events (id) ON UPDATE CASCADE ON DELETE CASCADE",
    "DROP INDEX IF EXISTS notification_jobs_event_state",
    "CREATE INDEX notification_jobs_event_state ON notification_jobs (restock_event, state, priority_at)",
    "DROP INDEX IF EXISTS restock_events_unpublished",
    "ALTER TABLE restock_events DROP COLUMN IF EXISTS published_at,"
    " DROP COLUMN IF EXISTS published_through_at, DROP COLUMN IF EXISTS published_through_id",
)


async def forwards() -> MigrationManager:
    return raw_migration(ID, DESCRIPTION, CREATE, DROP)
