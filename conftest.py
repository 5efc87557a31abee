"""Test infrastructure shared by every test directory.

Each test run gets its own PostgreSQL database (migrated), RabbitMQ vhost and Redis db index, so it never
disturbs a running ``make run`` or another run, and removes them at the end. Integration tests use the
``settings``/``engine``/``broker`` fixtures; end-to-end tests pass ``test_env`` to the processes they start.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import aio_pika
import asyncpg
import pytest
import redis.asyncio as aioredis

from restock_common import topology
from restock_common.broker import Broker
from restock_common.db.engine import open_engine
from restock_common.db.tables import ALL_TABLES
from restock_common.messages import CHANNELS
from restock_common.settings import Settings

PG_ADMIN_URL = os.environ.get("RESTOCK_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_ROOT = os.environ.get("RESTOCK_TEST_AMQP_ROOT", "amqp://guest:guest@127.0.0.1:5672")
REDIS_ROOT = os.environ.get("RESTOCK_TEST_REDIS_ROOT", "redis://127.0.0.1:6379")


def _rabbitmqctl(*args: str) -> None:
    ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    subprocess.run([ctl, "-q", *args], check=True, capture_output=True, timeout=60)


async def _drop_database(name: str) -> None:
    connection = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


@contextmanager
def private_environment(redis_url: str) -> Iterator[dict[str, str]]:
    """The RESTOCK_* environment of a new migrated database and vhost (both removed afterwards), with
    ``redis_url``."""
    run = f"restock_test_{uuid.uuid4().hex[:10]}"
    env = {
        "RESTOCK_DATABASE_URL": f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{run}",
        "RESTOCK_AMQP_URL": f"{AMQP_ROOT}/{run}",
        "RESTOCK_REDIS_URL": redis_url,
        "RESTOCK_SHOPIFY_API_SECRET": "test-shopify-secret",
        "RESTOCK_TWILIO_AUTH_TOKEN": "test-twilio-token",
    }
    _rabbitmqctl("add_vhost", run)
    _rabbitmqctl("set_permissions", "-p", run, "guest", ".*", ".*", ".*")
    migrate = subprocess.run(
        [sys.executable, "-m", "restock_common.migrate"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrate.returncode == 0, migrate.stderr
    try:
        yield env
    finally:
        asyncio.run(_drop_database(run))
        _rabbitmqctl("delete_vhost", run)


@pytest.fixture(scope="session")
def test_env() -> Iterator[dict[str, str]]:
    """The RESTOCK_* environment of this run's private database, vhost and Redis db."""
    with private_environment(f"{REDIS_ROOT}/{1 + os.getpid() % 15}") as env:
        yield env


@pytest.fixture(scope="module")
def own_env(test_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """A database and vhost of the module's own (the run's Redis db): for a module that runs the whole
    system, whose processes would otherwise also pick up jobs and messages other tests left in the run's
    database and queues (a retry of theirs falling due) and send them to its peers."""
    with private_environment(test_env["RESTOCK_REDIS_URL"]) as env:
        yield env


@pytest.fixture(scope="session")
def settings(test_env: dict[str, str]) -> Settings:
    return Settings(
        database_url=test_env["RESTOCK_DATABASE_URL"],
        amqp_url=test_env["RESTOCK_AMQP_URL"],
        redis_url=test_env["RESTOCK_REDIS_URL"],
        shopify_api_secret=test_env["RESTOCK_SHOPIFY_API_SECRET"],
        twilio_auth_token=test_env["RESTOCK_TWILIO_AUTH_TOKEN"],
    )


@pytest.fixture(scope="session")
async def engine(settings: Settings) -> AsyncIterator[object]:
    """A pooled Piccolo engine on this run's database, bound to every table."""
    db = await open_engine(settings)
    yield db
    await db.close_connection_pool()


@pytest.fixture
async def clean_db(engine: object, settings: Settings) -> None:
    """Empty every table before the test (ids restart at 1), and the services' queues with them: a
    message left by an earlier test would name ids that now belong to this test's rows."""
    names = ", ".join(table._meta.tablename for table in ALL_TABLES)
    await ALL_TABLES[0].raw(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    await _purge_service_queues(settings)


async def _purge_service_queues(settings: Settings) -> None:
    service_queues = [
        topology.dispatcher_queue(settings.delivery_limit).name,
        topology.dispatcher_inventory_queue(settings.delivery_limit).name,
        *(topology.sender_queue(channel, settings.delivery_limit).name for channel in CHANNELS),
        *(topology.sender_confirm_queue(channel, settings.delivery_limit).name for channel in CHANNELS),
    ]
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        for name in service_queues:
            channel = await connection.channel()
            try:  # passive: a queue no test declared yet stays undeclared (unroutable publishes are tested)
                queue = await channel.declare_queue(name, passive=True)
                await queue.purge()
                await channel.close()
            except aio_pika.exceptions.ChannelClosed:
                pass
    finally:
        await connection.close()


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """A plain asyncpg connection to this run's database, for tests that run an app on another event loop
    (Litestar's AsyncTestClient), where the session's Piccolo pool cannot be used."""
    connection = await asyncpg.connect(settings.database_url)
    yield connection
    await connection.close()


@pytest.fixture
async def redis_client(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(settings.redis_url)
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


@pytest.fixture
async def broker(settings: Settings) -> AsyncIterator[Broker]:
    connection = await Broker.connect(settings.amqp_url, delivery_limit=settings.delivery_limit)
    yield connection
    await connection.close()
