"""``staff_permissions``: which staff user of a shop may use the admin API, and with which role (ADR 29).

One row per (shop, Shopify staff user id); no row, no access. The role is checked by the database too, so a
row written by hand cannot grant a role the admin API does not know. A removed shop takes its grants with it
(``ON DELETE CASCADE``, like every other table's tenant key). The guard's lookup is by (tenant, user_id):
the unique constraint's index serves it."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from restock_common.db.raw_migration import raw_migration

ID = "2026-12-07T22:40:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "staff permissions"

CREATE = (
    "CREATE TABLE staff_permissions ("
    " id bigserial PRIMARY KEY,"
    " tenant bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE ON UPDATE CASCADE,"
    " user_id varchar(64) NOT NULL,"
    " role varchar(16) NOT NULL CONSTRAINT staff_permissions_role CHECK (role IN ('viewer', 'operator')),"
    " created_at timestamptz NOT NULL DEFAULT now(),"
    " created_by varchar(255) NOT NULL DEFAULT 'system',"
    " CONSTRAINT one_per_user UNIQUE (tenant, user_id))",
)
DROP = ("DROP TABLE IF EXISTS staff_permissions",)


async def forwards() -> MigrationManager:
    return raw_migration(ID, DESCRIPTION, CREATE, DROP)
