"""A version on each variant's state row, for the detector's two-trip webhook (ADR 27).

A level webhook of a known variant reads the variant's state, its version and its other levels in one
statement, decides in Python, then writes everything in one statement whose first step updates the state row
only if its version is still the one read. So the version must change whenever anything a decision depends
on may have changed: a trigger bumps it on every update of the row, whoever makes it. Every writer of a known
variant's levels updates the row first (the detector's lock statements are upserts that rewrite it), the
dispatcher's freeze reads the total with an update (a line it opens must fail a write planned before it), and
an uninstall disarms the shop's variants by an update. A trigger rather than a ``version + 1`` in each of
those statements: a future writer cannot forget it.

``restock_claim_lost`` is the write's way out when, after its state update, the receipt turns out to be
claimed by a concurrent delivery of the same webhook: raising rolls the whole statement back (the state
update with it), as a unique violation, which is what happened."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from restock_common.db.raw_migration import raw_migration

ID = "2026-12-07T20:10:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "variant state version"

CREATE = (
    "ALTER TABLE variant_states ADD COLUMN version bigint NOT NULL DEFAULT 0",
    "CREATE FUNCTION variant_states_bump_version() RETURNS trigger LANGUAGE plpgsql AS"
    " $$ BEGIN NEW.version := OLD.version + 1; RETURN NEW; END $$",
    "CREATE TRIGGER variant_states_bump_version BEFORE UPDATE ON variant_states"
    " FOR EACH ROW EXECUTE FUNCTION variant_states_bump_version()",
    "CREATE FUNCTION restock_claim_lost(webhook_id text) RETURNS boolean LANGUAGE plpgsql AS"
    " $$ BEGIN RAISE EXCEPTION 'webhook % was claimed by a concurrent delivery', webhook_id"
    " USING ERRCODE = 'unique_violation', CONSTRAINT = 'restock_claim_lost'; END $$",
)
DROP = (
    "DROP FUNCTION IF EXISTS restock_claim_lost(text)",
    "DROP TRIGGER IF EXISTS variant_states_bump_version ON variant_states",
    "DROP FUNCTION IF EXISTS variant_states_bump_version()",
    "ALTER TABLE variant_states DROP COLUMN IF EXISTS version",
)


async def forwards() -> MigrationManager:
    return raw_migration(ID, DESCRIPTION, CREATE, DROP)
