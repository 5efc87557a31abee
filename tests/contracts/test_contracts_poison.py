"""Poison messages on every queue a service consumes, published raw (aio-pika) on the run's vhost.

For each consumed queue (and, on the shared ``dispatcher.inventory``, for each of its routing keys): a
malformed JSON body, bytes that are not even text, valid JSON of the wrong shape (one field of the right
name with the wrong type), and a message of a ``schema_version`` newer than the code supports; plus a
routing key ``dispatcher.inventory`` has no schema for. Each must be refused at once (``x-death`` reason
``rejected``, not ``delivery_limit`` after retries), end in ``restock.poison``, and be logged by its consumer
as ``poison message`` with its ``message_id`` and a ``reason``. Then valid work published afterwards, by the
real producers, must still be done by every consumer: a restock freezes jobs and the alert reaches the
sandbox SMTP inbox and the sandbox Twilio; double opt-in signups get their confirmation email and SMS; an
order fulfils the buyer's subscription.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
import asyncpg
import httpx
import msgspec
import pytest

from restock_common import topology
from restock_common.messages import (
    ConfirmationRequested,
    JobBatch,
    Message,
    OrderCreated,
    OrderLine,
    RestockDetected,
    StockChanged,
    encode,
)
from restock_common.signatures import contact_hash
from restock_sandbox import demo
from restock_sandbox.stack import Stack, set_shop_rules

pytestmark = pytest.mark.e2e

SHOP = "contracts-shop.myshopify.com"  # see conftest: the sandbox store's shop, seeded by demo.seed
SMS_SUBSCRIBER = "+14155552673"
CONFIRM_EMAIL = "confirm-me@example.com"
CONFIRM_PHONE = "+14155552674"
DEADLINE = 60.0

NOW = datetime(2026, 1, 1, tzinfo=UTC)
# A valid message of each routing key: the base of its wrong-shape and future-version poison.
SAMPLES: dict[str, Message] = {
    topology.RESTOCK_DETECTED: RestockDetected(
        restock_event_id=1,
        tenant_id=1,
        shop_domain=SHOP,
        variant_id=1,
        available=1,
        restock_window=1,
        detected_at=NOW,
    ),
    topology.STOCK_CHANGED: StockChanged(
        tenant_id=1,
        shop_domain=SHOP,
        variant_id=1,
        available=1,
        previous=0,
        observed_at=NOW,
        source="webhook",
    ),
    topology.ORDER_CREATED: OrderCreated(
        tenant_id=1,
        shop_domain=SHOP,
        order_id=1,
        lines=[OrderLine(variant_id=1)],
        contact_hashes=[],
        ordered_at=NOW,
    ),
    "jobs.email": JobBatch(channel="email", job_ids=[1]),
    "jobs.sms": JobBatch(channel="sms", job_ids=[1]),
    "confirm.email": ConfirmationRequested(tenant_id=1, subscription_id=1, channel="email", requested_at=NOW),
    "confirm.sms": ConfirmationRequested(tenant_id=1, subscription_id=1, channel="sms", requested_at=NOW),
}
# One field of the right name with the wrong type: JSON a careless producer could really write.
WRONG_FIELDS: dict[str, dict[str, Any]] = {
    topology.RESTOCK_DETECTED: {"variant_id": "2001x"},
    topology.STOCK_CHANGED: {"available": "lots"},
    topology.ORDER_CREATED: {"lines": {"variant_id": 1}},
    "jobs.email": {"job_ids": "1,2,3"},
    "jobs.sms": {"channel": "pigeon"},
    "confirm.email": {"subscription_id": None},
    "confirm.sms": {"requested_at": "yesterday"},
}
# routing key -> (queue, the process consuming it)
CONSUMERS = {
    topology.RESTOCK_DETECTED: ("dispatcher.restock-detected", "dispatcher"),
    topology.STOCK_CHANGED: ("dispatcher.inventory", "dispatcher"),
    topology.ORDER_CREATED: ("dispatcher.inventory", "dispatcher"),
    "jobs.email": ("sender.email", "sender-email"),
    "jobs.sms": ("sender.sms", "sender-sms"),
    "confirm.email": ("sender.email.confirm", "sender-email"),
    "confirm.sms": ("sender.sms.confirm", "sender-sms"),
}


def malformed(_: str) -> bytes:
    return b'{"schema_version": 1, "job_ids": [1, 2'  # cut off mid-array


def not_json(_: str) -> bytes:
    return b"\xff\xfe\x00 not even text"


def wrong_shape(routing_key: str) -> bytes:
    fields = msgspec.to_builtins(SAMPLES[routing_key])
    return msgspec.json.encode({**fields, **WRONG_FIELDS[routing_key]})


def future_version(routing_key: str) -> bytes:
    sample = SAMPLES[routing_key]
    return encode(msgspec.structs.replace(sample, schema_version=sample.SUPPORTED_VERSION + 1))


POISONS: dict[str, Callable[[str], bytes]] = {
    "malformed": malformed,
    "not-json": not_json,
    "wrong-shape": wrong_shape,
    "future-version": future_version,
}
CASES = [(key, kind) for key in CONSUMERS for kind in POISONS]


@dataclass(frozen=True)
class Poisoned:
    """What became of the poison: ``message_id`` -> the dead-lettered message's headers."""

    ids: dict[tuple[str, str], str]  # (routing key, kind) -> message id
    dead: dict[str, dict[str, Any]]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _publish(exchange: aio_pika.abc.AbstractExchange, body: bytes, key: str, message_id: str) -> None:
    message = aio_pika.Message(
        body,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message_id,
    )
    await exchange.publish(message, routing_key=key, mandatory=True)


async def _collect_dead(channel: aio_pika.abc.AbstractChannel, wanted: set[str]) -> dict[str, dict[str, Any]]:
    """Take ours out of the poison queue (acked); others' messages stay (requeued when the channel closes)."""
    queue = await channel.declare_queue(topology.POISON_QUEUE, passive=True)
    found: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + DEADLINE
    while wanted - found.keys() and time.monotonic() < deadline:
        message = await queue.get(no_ack=False, fail=False)
        if message is None:
            await asyncio.sleep(0.1)
            continue
        if message.message_id in wanted:
            found[message.message_id] = dict(message.headers or {})
            await message.ack()
    return found


@pytest.fixture(scope="package")
async def poisoned(stack: Stack, contracts_env: dict[str, str]) -> AsyncIterator[Poisoned]:
    """Every poison published (each consumer's queue is declared by its running process), then collected
    from the poison queue."""
    run = uuid.uuid4().hex[:8]
    ids = {(key, kind): f"poison-{run}-{key}-{kind}" for key, kind in CASES}
    ids[("dispatcher.inventory", "unknown-key")] = f"poison-{run}-unknown-key"
    connection = await aio_pika.connect(contracts_env["RESTOCK_AMQP_URL"])
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await channel.get_exchange(topology.EXCHANGE)
        for (key, kind), message_id in ids.items():
            if kind != "unknown-key":
                await _publish(exchange, POISONS[kind](key), key, message_id)
        # Straight into dispatcher.inventory (default exchange): a routing key it has no schema for.
        body = encode(SAMPLES[topology.STOCK_CHANGED])
        await _publish(
            channel.default_exchange,
            body,
            "dispatcher.inventory",
            ids[("dispatcher.inventory", "unknown-key")],
        )
        dead = await _collect_dead(channel, set(ids.values()))
        yield Poisoned(ids, dead)
    finally:
        await connection.close()


@pytest.mark.parametrize(("routing_key", "kind"), CASES)
async def test_poison_is_dead_lettered_at_once(poisoned: Poisoned, routing_key: str, kind: str) -> None:
    message_id = poisoned.ids[(routing_key, kind)]
    assert message_id in poisoned.dead, f"{kind} on {routing_key} never reached {topology.POISON_QUEUE}"
    deaths = poisoned.dead[message_id]["x-death"]
    queue, _ = CONSUMERS[routing_key]
    assert [(_text(d["queue"]), _text(d["reason"])) for d in deaths] == [(queue, "rejected")], deaths


async def _logged(
    read_log: Callable[[str], list[dict[str, Any]]], process: str, match: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        for event in read_log(process):
            if match(event):
                return event
        await asyncio.sleep(0.2)
    raise AssertionError(f"{process} never logged it")


@pytest.mark.parametrize(("routing_key", "kind"), CASES)
async def test_poison_is_logged_with_a_reason(
    poisoned: Poisoned, read_log: Callable[[str], list[dict[str, Any]]], routing_key: str, kind: str
) -> None:
    message_id = poisoned.ids[(routing_key, kind)]
    queue, process = CONSUMERS[routing_key]
    event = await _logged(
        read_log, process, lambda e: e.get("msg") == "poison message" and e.get("message_id") == message_id
    )
    assert event["queue"] == queue
    assert event["level"] == "error"
    assert isinstance(event.get("reason"), str), event
    assert event["reason"].strip(), event


async def test_unknown_routing_key_is_poison_with_a_reason(
    poisoned: Poisoned, read_log: Callable[[str], list[dict[str, Any]]]
) -> None:
    message_id = poisoned.ids[("dispatcher.inventory", "unknown-key")]
    assert message_id in poisoned.dead
    deaths = poisoned.dead[message_id]["x-death"]
    assert [(_text(d["queue"]), _text(d["reason"])) for d in deaths] == [("dispatcher.inventory", "rejected")]
    event = await _logged(
        read_log,
        "dispatcher",
        lambda e: e.get("msg") == "poison message" and e.get("message_id") == message_id,
    )
    assert event["queue"] == "dispatcher.inventory"
    assert "routing key" in event["reason"], event


# ------------------------------------------------------------------------- the consumers still work


@dataclass(frozen=True)
class Work:
    """Valid work done through the real producers after every poison was dead-lettered."""

    tenant_id: int


async def _sandbox(client: httpx.AsyncClient, method: str, path: str, body: object | None = None) -> Any:
    response = await client.request(method, path, json=body)
    assert response.status_code < 400, (path, response.status_code, response.text)
    return response.json()


async def _signup(client: httpx.AsyncClient, **form: object) -> None:
    await _sandbox(client, "POST", "/store/apps/proxy/subscriptions", {"variant_id": demo.VARIANT_ID, **form})


async def _eventually(probe: Callable[[], Awaitable[Any]], what: str) -> Any:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if value := await probe():
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


async def _inbox(client: httpx.AsyncClient, to: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = (await client.get("/inbox", params={"to": to})).json()
    return messages


async def _texts(client: httpx.AsyncClient, to: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = (await client.get("/twilio/messages", params={"to": to})).json()
    return messages


@pytest.fixture(scope="package")
async def work(poisoned: Poisoned, stack: Stack, contracts_env: dict[str, str]) -> Work:
    """Depends on ``poisoned``: everything here is published after every poison was dead-lettered."""
    database_url = contracts_env["RESTOCK_DATABASE_URL"]
    connection = await asyncpg.connect(database_url)
    try:
        tenant_id = await connection.fetchval("SELECT id FROM tenants WHERE shop_domain = $1", SHOP)
    finally:
        await connection.close()
    base = f"http://127.0.0.1:{stack.ports.sandbox}"
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        # Single opt-in (the shop's default): an SMS subscriber for the restock.
        await _signup(client, channel="sms", phone=SMS_SUBSCRIBER, consent=True)
        # Double opt-in: these two wait for their confirmation (sender.<channel>.confirm).
        await set_shop_rules(database_url, SHOP, updated_by="contracts", double_opt_in="email+sms")
        await _signup(client, email=CONFIRM_EMAIL)
        await _signup(client, channel="sms", phone=CONFIRM_PHONE, consent=True)
        # The restock (detector -> restock.detected -> dispatcher -> jobs.email / jobs.sms -> senders).
        body = {"inventory_item_id": demo.INVENTORY_ITEM_ID, "location_id": demo.LOCATION_ID, "available": 5}
        await _sandbox(client, "POST", "/store/inventory_levels/set", body)
        await _eventually(lambda: _inbox(client, demo.SUBSCRIBER), "the restock alert email")
        # The shopper buys it (detector -> order.created -> dispatcher.inventory: fulfilled).
        order = {"line_items": [{"variant_id": demo.VARIANT_ID}], "email": demo.SUBSCRIBER}
        await _sandbox(client, "POST", "/store/orders", order)
    return Work(tenant_id)


@pytest.fixture
async def sandbox(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.ports.sandbox}", timeout=30) as client:
        yield client


async def test_restock_after_poison_freezes_jobs_and_emails_the_alert(
    work: Work, sandbox: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    # dispatcher.restock-detected froze the targets; sender.email sent the alert.
    messages = await _inbox(sandbox, demo.SUBSCRIBER)
    assert len(messages) == 1, messages
    assert str(demo.VARIANT_ID) in f"{messages[0].get('subject')} {messages[0].get('text')}"
    sent = await db.fetchval(
        "SELECT count(*) FROM notification_jobs WHERE tenant = $1 AND channel = 'email' AND state = 'sent'",
        work.tenant_id,
    )
    assert sent == 1


async def test_restock_after_poison_texts_the_sms_subscriber(work: Work, sandbox: httpx.AsyncClient) -> None:
    texts = await _eventually(lambda: _texts(sandbox, SMS_SUBSCRIBER), "the SMS alert at the sandbox Twilio")
    assert len(texts) == 1, texts


async def test_confirmations_after_poison_are_sent(work: Work, sandbox: httpx.AsyncClient) -> None:
    emails = await _eventually(lambda: _inbox(sandbox, CONFIRM_EMAIL), "the confirmation email")
    texts = await _eventually(lambda: _texts(sandbox, CONFIRM_PHONE), "the confirmation SMS")
    assert len(emails) == 1, emails
    assert len(texts) == 1, texts
    assert "/c/" in f"{emails[0].get('text')} {emails[0].get('html')}"
    assert "YES" in texts[0]["body"]


async def test_order_after_poison_fulfils_the_buyer(work: Work, db: asyncpg.Connection) -> None:
    async def fulfilled() -> bool:
        row = await db.fetchrow(
            "SELECT fulfilled_at FROM subscriptions"
            " WHERE tenant = $1 AND contact_hash = $2 AND channel = 'email'",
            work.tenant_id,
            contact_hash(demo.SUBSCRIBER),
        )
        return row is not None and row["fulfilled_at"] is not None

    await _eventually(fulfilled, "the order's fulfilment of the buyer's subscription")
