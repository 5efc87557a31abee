"""``make migrate``: create the database named by ``RESTOCK_DATABASE_URL`` if missing, then apply every
Piccolo migration. The only place migrations run: services never migrate at start-up."""

from __future__ import annotations

import asyncio
import os
import sys
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from restock_common.settings import Settings


async def create_database_if_missing(database_url: str) -> bool:
    """Create the URL's database (connecting to ``postgres``); True when it had to be created."""
    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    connection = await asyncpg.connect(admin_url)
    try:
        exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await connection.execute(f'CREATE DATABASE "{name}"')
        return not exists
    finally:
        await connection.close()


async def migrate(settings: Settings) -> None:
    """Apply all migrations to the settings' database."""
    os.environ["PICCOLO_CONF"] = "restock_common.db.piccolo_conf"
    os.environ["RESTOCK_DATABASE_URL"] = settings.database_url
    from piccolo.apps.migrations.commands.forwards import run_forwards

    await create_database_if_missing(settings.database_url)
    result = await run_forwards(app_name="restock")
    if not result.success:
        raise SystemExit(f"migration failed: {result.message}")


def main() -> None:
    asyncio.run(migrate(Settings()))
    print("migrations applied", file=sys.stderr)


if __name__ == "__main__":
    main()
