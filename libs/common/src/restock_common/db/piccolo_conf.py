"""Piccolo's configuration module, used only by the migration step (``make migrate``).

Piccolo looks its engine up by importing this module (``PICCOLO_CONF``), so this is the migration tool's
composition root; services build their engine in their own ``app.py`` through ``restock_common.db.engine``.
"""

from piccolo.conf.apps import AppRegistry

from restock_common.db.engine import make_engine
from restock_common.settings import Settings

DB = make_engine(Settings())
APP_REGISTRY = AppRegistry(apps=["restock_common.db.piccolo_app"])
