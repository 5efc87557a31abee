"""One receipt per Shopify event: a unique index on ``webhook_receipts (shop_domain, event_id)`` where the
event id is known. Shopify names a resend of one event under a new webhook id by the same
``X-Shopify-Event-Id``; the detector's receipt insert now skips such a resend by ``ON CONFLICT DO NOTHING``
(any unique index) in the statement that claims the receipt, instead of serializing resends on an advisory
lock in a statement of its own: one round trip less on every webhook that carries an event id, which is
every webhook Shopify sends. A concurrent insert of the same event waits for the first to commit, then
inserts nothing, as the lock made it. Receipts that already share an event (none can, since the lock, but an
older database may hold some) keep their oldest."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from restock_common.db.raw_migration import raw_migration

ID = "2026-12-07T18:50:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "one webhook receipt per shop event"

CREATE = (
    "DELETE FROM webhook_receipts newer USING webhook_receipts older"
    " WHERE newer.event_id IS NOT NULL AND newer.shop_domain = older.shop_domain"
    " AND newer.event_id = older.event_id AND newer.id > older.id",
    "CREATE UNIQUE INDEX webhook_receipts_one_per_event ON webhook_receipts (shop_domain, event_id)"
    " WHERE event_id IS NOT NULL",
)
DROP = ("DROP INDEX IF EXISTS webhook_receipts_one_per_event",)


async def forwards() -> MigrationManager:
    return raw_migration(ID, DESCRIPTION, CREATE, DROP)
