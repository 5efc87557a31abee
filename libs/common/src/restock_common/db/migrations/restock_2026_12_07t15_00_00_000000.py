"""The outbox wakes its relay (ADR 26): every statement that inserts outbox rows notifies the channel
``restock_outbox``, delivered at commit. The relay runs in the detector's worker process, not beside the
webhooks that write most rows, and whoever writes a row (webhooks, the reconciliation sync, the armed-restock
scheduler, the admin API's storefront) wakes it without knowing where it runs. Notifications of one
transaction are folded into one, so a batch of rows costs one."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-12-07T15:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "outbox inserts notify the relay"

CREATE = (
    "CREATE FUNCTION outbox_wake_relay() RETURNS trigger LANGUAGE plpgsql AS"
    " $$ BEGIN PERFORM pg_notify('restock_outbox', ''); RETURN NULL; END $$",
    "CREATE TRIGGER outbox_wake_relay AFTER INSERT ON outbox"
    " FOR EACH STATEMENT EXECUTE FUNCTION outbox_wake_relay()",
)
DROP = (
    "DROP TRIGGER IF EXISTS outbox_wake_relay ON outbox",
    "DROP FUNCTION IF EXISTS outbox_wake_relay()",
)


class _Raw(Table):
    """Table.raw runs inside the migration's transaction."""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="restock", description=DESCRIPTION)

    async def create() -> None:
        for statement in CREATE:
            await _Raw.raw(statement)

    async def drop() -> None:
        for statement in DROP:
            await _Raw.raw(statement)

    manager.add_raw(create)
    manager.add_raw_backwards(drop)
    return manager
