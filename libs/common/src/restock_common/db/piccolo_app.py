"""The one Piccolo app: every table and the one migrations folder."""

import os

from piccolo.conf.apps import AppConfig

from restock_common.db.tables import ALL_TABLES

APP_CONFIG = AppConfig(
    app_name="restock",
    migrations_folder_path=os.path.join(os.path.dirname(__file__), "migrations"),
    table_classes=list(ALL_TABLES),
    migration_dependencies=[],
    commands=[],
)
