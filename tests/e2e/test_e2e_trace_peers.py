"""End to end, issue 8's "done means": the trace id that the sandbox's SMTP server and Twilio peer
received is the trace id of the detector's webhook SERVER span, for a job sent at once, for one that was
retried and for one that an operator replayed out of the dead letters.

One restock of one variant with five subscribers, through the real processes (the sandbox store, the
detector, the dispatcher and both senders, exporting spans to the sandbox's OTLP receiver):

- ``AT_ONCE`` (email) and ``SMS_AT_ONCE`` (SMS) are delivered at the first attempt;
- ``RETRIED`` (email) gets 451 at RCPT once and ``SMS_RETRIED`` Twilio's 20429 once: the shop's rules
  (``max_attempts`` 2, backoff of 1-2 s) retry them and the second attempt delivers;
- ``REPLAYED`` (email) gets 451 twice: both attempts fail, the job is ``dead-letter``; an operator replays
  it with ``python -m restock_admin jobs replay`` and the next attempt delivers.

The restock's trace is found from the webhook's side (the one trace in which the detector's SERVER span
for ``POST /webhooks/shopify`` published ``restock.detected``), never from the messages. Per ADR 19 the
sender opens every attempt's ``send notification`` span as a child of the traceparent stored on the job at
freeze, a retry's and a replay's included, so each attempt is a span of the restock's trace itself (not a
span of another trace linked to it) and a peer sees the restock's trace id.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import pytest

from restock_common.db.tables import NotificationJob
from restock_sandbox import demo
from restock_sandbox.stack import Ports, Stack, register_shop, set_shop_rules

pytestmark = pytest.mark.e2e

SHOP = "trace-peers-shop.myshopify.com"
AT_ONCE = "ada.peers@example.com"
RETRIED = "grace.peers@example.com"
REPLAYED = "alan.peers@example.com"
SMS_AT_ONCE = "+14155550123"
SMS_RETRIED = "+14155550124"
EMAILS = (AT_ONCE, RETRIED, REPLAYED)
PHONES = (SMS_AT_ONCE, SMS_RETRIED)
MAX_ATTEMPTS = 2
# Each job's attempts (``send notification`` spans, ``notification_logs`` rows) by number, in order; the
# last one delivered. A replay starts a new attempt series, at 1.
ATTEMPTS = {AT_ONCE: [1], SMS_AT_ONCE: [1], RETRIED: [1, 2], SMS_RETRIED: [1, 2], REPLAYED: [1, 2, 1]}
SENDERS = {"sender-email": EMAILS, "sender-sms": PHONES}
WEBHOOK_ROUTE = "/webhooks/shopify"

T = TypeVar("T")


@pytest.fixture(scope="module")
def peers_ports() -> Ports:
    return Ports.free()


@pytest.fixture(scope="module")
def peers_env(test_env: dict[str, str], peers_ports: Ports) -> dict[str, str]:
    # Every test of the run shares one Redis db and signs up from 127.0.0.1: the per-IP signup limit (tested
    # on its own in the admin-api's tests) would refuse this stack's signups after earlier tests'.
    env = {
        **test_env,
        "RESTOCK_SIGNUP_IP_LIMIT": "1000000",
        "RESTOCK_SANDBOX_SHOP_DOMAIN": SHOP,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{peers_ports.sandbox}",
        "OTEL_BSP_SCHEDULE_DELAY": "200",  # export every 0.2 s instead of 5 s: the test reads the trace
        "RESTOCK_TWILIO_SENDER_MPS": "100",  # the sender's pacing of our one number stays out of the way
        "RESTOCK_RETRY_POLL_SECONDS": "0.2",  # a due retry and a replayed job are published soon
    }
    register_shop(env, SHOP)
    asyncio.run(
        set_shop_rules(
            env["RESTOCK_DATABASE_URL"],
            SHOP,
            updated_by="e2e",
            max_attempts=MAX_ATTEMPTS,
            retry_base_seconds=1.0,
            retry_cap_seconds=2.0,
        )
    )
    return env


@pytest.fixture(scope="module")
def peers_stack(
    peers_env: dict[str, str], peers_ports: Ports, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    running = Stack(env=peers_env, ports=peers_ports, log_dir=tmp_path_factory.mktemp("trace-peers-logs"))
    try:
        running.start()
        running.wait_ready(timeout=90)
        # The SMS sender is optional for ``make run``; here its peer is half of what is tested.
        assert running.dropped == {}, running.dropped
        yield running
    finally:
        running.stop()


def _log_tails(stack: Stack) -> str:
    assert stack.log_dir is not None
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(stack.log_dir.glob("*.log")))


async def _eventually(stack: Stack, probe: Callable[[], Awaitable[T | None]], timeout: float, what: str) -> T:
    """The first truthy answer of ``probe``; generous deadlines, the machine is shared."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await probe()
        if value:
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}\n{_log_tails(stack)}")


async def _settled(probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], timeout: float) -> T:
    """The first answer of ``probe`` that is ``done``, or the last one at the deadline."""
    deadline = time.monotonic() + timeout
    value = await probe()
    while not done(value) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        value = await probe()
    return value


# ------------------------------------------------------------------------------------------------- peers


def _email_traceparent(message: dict[str, Any]) -> str:
    [value] = [value for name, value in message["headers"] if name.lower() == "traceparent"]
    return str(value)


async def _inbox(client: httpx.AsyncClient, base: str, to: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = (await client.get(f"{base}/inbox", params={"to": to})).json()
    return messages


async def _texts(client: httpx.AsyncClient, base: str, to: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = (await client.get(f"{base}/twilio/messages", params={"to": to})).json()
    return messages


async def _traceparents(client: httpx.AsyncClient, base: str) -> dict[str, str] | None:
    """Contact -> the ``traceparent`` its peer received, once every contact has exactly one message."""
    received: dict[str, str] = {}
    for email in EMAILS:
        messages = await _inbox(client, base, email)
        if len(messages) != 1:
            return None
        received[email] = _email_traceparent(messages[0])
    for phone in PHONES:
        texts = await _texts(client, base, phone)
        if len(texts) != 1:
            return None
        received[phone] = texts[0]["traceparent"]
    return received


async def _subscribe(client: httpx.AsyncClient, base: str, form: dict[str, Any]) -> None:
    answer = await client.post(f"{base}/store/apps/proxy/subscriptions", json=form)
    assert answer.status_code in (200, 201), answer.text
    assert answer.json()["state"] == "confirmed", answer.text  # the shop has no double opt-in


async def _fault(client: httpx.AsyncClient, url: str, rule: dict[str, Any]) -> None:
    answer = await client.post(url, json=rule)
    assert answer.status_code == 201, answer.text


# --------------------------------------------------------------------------------------------- database

_JOBS = """
SELECT j.id, j.state, j.traceparent, s.email, s.phone
  FROM notification_jobs j
  JOIN subscriptions s ON s.id = j.subscription
  JOIN tenants t ON t.id = j.tenant
 WHERE t.shop_domain = {}
"""

_LOGS = """
SELECT job, attempt, outcome, trace_id FROM notification_logs WHERE job = ANY({}::bigint[]) ORDER BY id
"""


async def _jobs() -> dict[str, dict[str, Any]]:
    """Contact -> its job row, for this module's shop (the run's database is shared)."""
    rows = await NotificationJob.raw(_JOBS, SHOP)
    return {row["email"] or row["phone"]: row for row in rows}


async def _job_in_state(contact: str, state: str) -> dict[str, Any] | None:
    job = (await _jobs()).get(contact)
    return job if job is not None and job["state"] == state else None


async def _all_sent() -> dict[str, dict[str, Any]] | None:
    jobs = await _jobs()
    everyone = set(EMAILS) | set(PHONES)
    return jobs if set(jobs) == everyone and all(job["state"] == "sent" for job in jobs.values()) else None


# ------------------------------------------------------------------------------------------------ spans


async def _trace(client: httpx.AsyncClient, base: str, trace_id: str) -> list[dict[str, Any]]:
    answer = await client.get(f"{base}/otlp/traces/{trace_id}")
    return answer.json()["spans"] if answer.status_code == 200 else []


def _webhook_spans(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        span
        for span in spans
        if span["service"] == "detector"
        and span["kind"] == "SERVER"
        and span["attributes"].get("http.route") == WEBHOOK_ROUTE
    ]


def _publishes_restock(spans: list[dict[str, Any]]) -> bool:
    return any(
        span["service"] == "detector"
        and span["kind"] == "PRODUCER"
        and span["attributes"].get("messaging.rabbitmq.destination.routing_key") == "restock.detected"
        for span in spans
    )


async def _restock_trace_ids(client: httpx.AsyncClient, base: str) -> list[str]:
    """The traces whose detector webhook SERVER span published a restock (the sold-out webhook of the
    seed published none)."""
    answer = await client.get(f"{base}/otlp/traces", params={"service": "detector", "limit": 1000})
    found = []
    for summary in answer.json():
        spans = await _trace(client, base, summary["trace_id"])
        if _webhook_spans(spans) and _publishes_restock(spans):
            found.append(summary["trace_id"])
    return found


def _send_spans(spans: list[dict[str, Any]], job_id: int) -> list[dict[str, Any]]:
    return [
        span
        for span in spans
        if span["name"] == "send notification" and span["attributes"].get("restock.job_id") == job_id
    ]


def _ancestors(spans: list[dict[str, Any]], span: dict[str, Any]) -> list[dict[str, Any]]:
    """``span``'s parents up to the first one that did not arrive (or the root), nearest first."""
    by_id = {each["span_id"]: each for each in spans}
    chain = []
    while (parent := by_id.get(span["parent_span_id"] or "")) is not None:
        chain.append(parent)
        span = parent
    return chain


def _complete(spans: list[dict[str, Any]], jobs: dict[str, dict[str, Any]]) -> bool:
    """Every attempt's span arrived, and each one's parents up to the webhook's span (each process exports
    on its own schedule)."""
    webhook_ids = {span["span_id"] for span in _webhook_spans(spans)}
    for contact, attempts in ATTEMPTS.items():
        sends = _send_spans(spans, jobs[contact]["id"])
        if len(sends) != len(attempts):
            return False
        if not all(webhook_ids & {parent["span_id"] for parent in _ancestors(spans, send)} for send in sends):
            return False
    return True


# ---------------------------------------------------------------------------------------------- scenario


@dataclass(frozen=True)
class Restocked:
    """What the peers, the OTLP receiver and the database saw of the one restock, all delivered."""

    trace_id: str  # of the detector's webhook SERVER span
    spans: list[dict[str, Any]]  # the whole trace
    traceparents: dict[str, str]  # contact -> the traceparent its peer received
    jobs: dict[str, dict[str, Any]]  # contact -> its job row
    logs: dict[str, list[dict[str, Any]]]  # contact -> its notification_logs rows, oldest first
    dead_letter: dict[str, Any]  # the REPLAYED job's row before the replay
    replay: subprocess.CompletedProcess[str]


OPERATOR = ("--actor", "e2e-operator", "--reason", "the greylisting is over")


def _replay(env: dict[str, str], job_id: int) -> subprocess.CompletedProcess[str]:
    """What an operator runs: the admin CLI (audited), in its own process."""
    return subprocess.run(
        [sys.executable, "-m", "restock_admin", "jobs", "replay", "--job", str(job_id), *OPERATOR],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
async def restocked(peers_stack: Stack, peers_env: dict[str, str], engine: object) -> Restocked:
    ports = peers_stack.ports
    base = f"http://127.0.0.1:{ports.sandbox}"
    await asyncio.to_thread(demo.seed, ports, AT_ONCE)  # the product, sold out, and the first subscriber
    async with httpx.AsyncClient(timeout=10.0) as client:
        for email in (RETRIED, REPLAYED):
            await _subscribe(client, base, {"variant_id": demo.VARIANT_ID, "email": email})
        for phone in PHONES:
            form = {"variant_id": demo.VARIANT_ID, "channel": "sms", "phone": phone, "consent": True}
            await _subscribe(client, base, form)
        rcpt_451 = {"code": 451, "stage": "rcpt", "message": "4.7.1 greylisted, try again later"}
        await _fault(client, f"{base}/smtp/faults", {**rcpt_451, "match": RETRIED, "times": 1})
        await _fault(client, f"{base}/smtp/faults", {**rcpt_451, "match": REPLAYED, "times": MAX_ATTEMPTS})
        await _fault(client, f"{base}/twilio/faults", {"match": SMS_RETRIED, "mode": "error", "code": 20429})

        level = {"inventory_item_id": demo.INVENTORY_ITEM_ID, "location_id": demo.LOCATION_ID, "available": 5}
        assert (await client.post(f"{base}/store/inventory_levels/set", json=level)).status_code < 400

        dead = await _eventually(
            peers_stack, lambda: _job_in_state(REPLAYED, "dead-letter"), 90, "the job to exhaust its attempts"
        )
        replay = await asyncio.to_thread(_replay, peers_env, dead["id"])
        assert replay.returncode == 0, replay.stdout + replay.stderr  # else no message would ever come
        traceparents = await _eventually(
            peers_stack, lambda: _traceparents(client, base), 90, "one message to every subscriber"
        )
        jobs = await _eventually(peers_stack, _all_sent, 60, "every job to be recorded sent")
        [trace_id] = await _eventually(
            peers_stack, lambda: _restock_trace_ids(client, base), 60, "the restock's webhook trace"
        )

        # Each process exports on its own schedule: wait for every attempt's span and its parents up to the
        # webhook's, but then take the trace as it is, so a missing span fails the test that names it.
        spans = await _settled(
            lambda: _trace(client, base, trace_id), lambda spans: _complete(spans, jobs), 60
        )
    logs = await NotificationJob.raw(_LOGS, [job["id"] for job in jobs.values()])
    contact_of = {job["id"]: contact for contact, job in jobs.items()}
    by_contact: dict[str, list[dict[str, Any]]] = {contact: [] for contact in jobs}
    for row in logs:
        by_contact[contact_of[row["job"]]].append(row)
    return Restocked(trace_id, spans, traceparents, jobs, by_contact, dead, replay)


def _trace_id_of(traceparent: str) -> str:
    version, trace_id, span_id, flags = traceparent.split("-")
    assert (version, len(trace_id), len(span_id), len(flags)) == ("00", 32, 16, 2), traceparent
    return trace_id


# ------------------------------------------------------------------------------------------------- tests


def test_the_restock_trace_is_the_trace_of_the_detectors_webhook_span(restocked: Restocked) -> None:
    [webhook] = _webhook_spans(restocked.spans)
    assert webhook["name"] == f"POST {WEBHOOK_ROUTE}"
    assert webhook["attributes"]["shopify.topic"] == "inventory_levels/update"
    assert webhook["trace_id"] == restocked.trace_id


@pytest.mark.parametrize("contact", [AT_ONCE, SMS_AT_ONCE], ids=["email", "sms"])
def test_a_message_sent_at_once_carries_the_webhooks_trace_id(restocked: Restocked, contact: str) -> None:
    assert _trace_id_of(restocked.traceparents[contact]) == restocked.trace_id


@pytest.mark.parametrize("contact", [RETRIED, SMS_RETRIED], ids=["email", "sms"])
def test_a_retried_message_carries_the_webhooks_trace_id(restocked: Restocked, contact: str) -> None:
    assert _trace_id_of(restocked.traceparents[contact]) == restocked.trace_id
    logs = restocked.logs[contact]
    assert len(logs) == 2, logs
    assert logs[0]["outcome"] != "sent"
    assert logs[-1]["outcome"] == "sent"


def test_a_replayed_message_carries_the_webhooks_trace_id(restocked: Restocked) -> None:
    job_id = restocked.jobs[REPLAYED]["id"]
    assert json.loads(restocked.replay.stdout) == {"replayed": [job_id], "refused": {}}
    assert restocked.dead_letter["traceparent"] == restocked.jobs[REPLAYED]["traceparent"]
    assert _trace_id_of(restocked.traceparents[REPLAYED]) == restocked.trace_id
    logs = restocked.logs[REPLAYED]
    assert [row["attempt"] for row in logs] == ATTEMPTS[REPLAYED], logs  # two failures, then the replay
    assert all(row["outcome"] != "sent" for row in logs[:MAX_ATTEMPTS])
    assert logs[-1]["outcome"] == "sent"


@pytest.mark.parametrize(
    "contact",
    list(ATTEMPTS),
    ids=["email-at-once", "sms-at-once", "email-retried", "sms-retried", "email-replayed"],
)
def test_every_attempt_is_a_span_of_the_restocks_trace(restocked: Restocked, contact: str) -> None:
    """A retry or a replay is not a new trace linked to the restock's: its ``send notification`` span is a
    child of the traceparent stored on the job, inside the webhook's trace (ADR 19), and the message the
    peer received names the delivering attempt's span."""
    job = restocked.jobs[contact]
    stored = job["traceparent"]
    assert _trace_id_of(stored) == restocked.trace_id
    sends = _send_spans(restocked.spans, job["id"])
    assert sorted(span["attributes"]["restock.attempt"] for span in sends) == sorted(ATTEMPTS[contact])
    [webhook] = _webhook_spans(restocked.spans)
    for send in sends:
        assert send["parent_span_id"] == stored.split("-")[2]
        assert webhook in _ancestors(restocked.spans, send)
        assert contact in SENDERS[send["service"]]
    delivering = restocked.traceparents[contact].split("-")[2]
    [named] = [span for span in sends if span["span_id"] == delivering]
    # The delivering attempt: the last of the series (of the replay's, for the replayed job).
    assert named["span_id"] == max(sends, key=lambda span: span["start_time_unix_nano"])["span_id"]
    assert named["attributes"]["restock.attempt"] == ATTEMPTS[contact][-1]
    # Every log row of the job names the same trace, the operator's replay included.
    assert {row["trace_id"] for row in restocked.logs[contact]} == {restocked.trace_id}


def test_no_span_of_the_trace_names_a_contact(restocked: Restocked) -> None:
    dumped = json.dumps(restocked.spans)
    for contact in (*EMAILS, *PHONES):
        assert contact not in dumped
    for phone in PHONES:
        assert phone.lstrip("+") not in dumped  # not even without its plus
    assert "@example.com" not in dumped
