"""The promise under faults (issue 8): kill, restart and starve every part while a restock of 10,000
subscribers is being delivered, and lose nothing, send nothing twice.

Each case restocks its own variant (``rig``), hurts the system once delivery is in flight, waits until every
job is terminal and then accounts for every target (``Case.account``): sent, suppressed with a reason,
failed-permanent or dead-letter; duplicates at the SMTP peer (by Message-ID) and at the Twilio peer (by
number) are zero; every message at a peer is a sent job's (or an indeterminate one's). Per case:

- ``indeterminate`` jobs exist only where an email sender died with a send between its provider-call mark
  and its record: at most one per kill (ADR 21: ``email_unconfirmed_sends`` is 1; claims that never
  reached the mark are sent again). SMS jobs are resolved by asking Twilio, never indeterminate.
- Without a kill of a sender there are none at all: a graceful stop (SIGTERM) finishes what it started,
  and a lost database connection (a claim's, a mark's or a record's) loses no outcome.

The figures of every case are printed at the end of the run (``conftest.py``) and go in the closing note.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator

import asyncpg
import pytest
from fault_rig import (
    EMAIL_SENDERS,
    SENDERS,
    SERVICES,
    Case,
    ProxyThread,
    Rig,
    flush_redis,
)

from restock_sandbox.tcp_faults import Mode

# Each case delivers 10,000 messages on a shared 2-core machine: minutes, not the default 300 s.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def rig(own_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    running = Rig(own_env, tmp_path_factory.mktemp("fault-logs"))
    try:
        running.start()
        yield running
    finally:
        codes = running.stop()
        # Whatever was done to them, every process still stops gracefully (SIGTERM, exit 0).
        assert all(code == 0 for code in codes.values()), codes


def _assert_no_indeterminate(case: Case) -> None:
    assert case.result.indeterminate == 0, case.result


def _assert_indeterminate_bounded(case: Case) -> None:
    assert case.result.kills >= 1, "the armed sender never reached its fault point"
    assert case.result.indeterminate <= case.result.email_sender_kills, case.result


def test_control_no_fault(rig: Rig) -> None:
    with rig.case("control (no fault)") as case:
        case.restock()
        case.wait_in_flight()
        case.account(case.drain())
    _assert_no_indeterminate(case)
    assert case.result.failed_permanent == 50
    assert case.result.dead_letter == 0


# (point, nth reach): a sender reaches the job points once per job and ``after_commit_before_ack`` once per
# batch of 100 jobs, so each dies a few hundred messages into the delivery.
SENDER_POINTS = [
    ("after_claim", {"email": 400, "sms": 150}),
    ("before_provider_call", {"email": 400, "sms": 150}),
    ("after_provider_ok_before_commit", {"email": 400, "sms": 150}),
    ("after_commit_before_ack", {"email": 4, "sms": 2}),
]


@pytest.mark.parametrize(("point", "nth"), SENDER_POINTS, ids=[point for point, _ in SENDER_POINTS])
def test_sigkill_senders_at_each_named_point(rig: Rig, point: str, nth: dict[str, int]) -> None:
    for name in SENDERS:
        count = nth["email" if name in EMAIL_SENDERS else "sms"]
        rig.restart((name,), {"RESTOCK_FAULT_POINT": f"{point}@{count}"})
    try:
        with rig.case(f"SIGKILL senders at {point}") as case:
            case.restock()
            case.wait_in_flight()
            case.account(case.drain())
    finally:
        rig.restart(SENDERS)  # unarmed, whether they died or not
    _assert_indeterminate_bounded(case)
    assert case.result.kills == len(SENDERS), case.result  # each armed sender died once, and once only


@pytest.mark.parametrize(
    ("process", "point"),
    [("dispatcher", "after_confirm_before_commit"), ("detector", "after_confirm_before_outbox_mark")],
)
def test_sigkill_between_confirm_and_commit(rig: Rig, process: str, point: str) -> None:
    try:
        with rig.case(f"SIGKILL {process} at {point}") as case:
            # Armed now: the sold-out level is recorded and relayed, so the next publish is the restock's.
            case.wait_outbox_published()
            rig.restart((process,), {"RESTOCK_FAULT_POINT": point})
            case.restock()
            case.wait_in_flight()
            case.account(case.drain())
    finally:
        rig.restart((process,))  # unarmed, whether it died or not
    assert case.result.kills == 1, case.result
    _assert_no_indeterminate(case)


def test_half_open_broker_connection(rig: Rig) -> None:
    """The broker's connections black-holed (open, silent): heartbeats notice, consumers come back."""
    amqp = rig.env["RESTOCK_AMQP_URL"]
    host_port, _, vhost = amqp.rpartition("/")
    proxy = ProxyThread("127.0.0.1", int(host_port.rsplit(":", 1)[1]))
    through_proxy = {
        "RESTOCK_AMQP_URL": f"{host_port.rsplit(':', 1)[0]}:{proxy.port}/{vhost}",
        "RESTOCK_AMQP_HEARTBEAT_SECONDS": "2",
    }
    rig.restart(SERVICES, through_proxy)
    try:
        with rig.case("broker half-open (black-holed 15 s)") as case:
            case.restock()
            case.wait_in_flight()
            proxy.set_mode(Mode.BLACKHOLE)
            time.sleep(15)
            proxy.set_mode(Mode.FORWARD)
            proxy.reset()  # the healed network: the broker's side of the stale connections is gone too
            case.account(case.drain())
    finally:
        rig.restart(SERVICES)
        proxy.close()
    _assert_no_indeterminate(case)


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=120)


def test_rabbitmq_restart_mid_delivery(rig: Rig) -> None:
    with rig.case("RabbitMQ stop_app / start_app") as case:
        case.restock()
        case.wait_in_flight()
        try:
            _rabbitmqctl("stop_app")
            time.sleep(3)
        finally:
            _rabbitmqctl("start_app")
        case.account(case.drain())
    _assert_no_indeterminate(case)


def test_redis_wiped_mid_delivery(rig: Rig) -> None:
    with rig.case("Redis wiped (FLUSHDB)") as case:
        case.restock()
        case.wait_in_flight()
        flush_redis(rig.env["RESTOCK_REDIS_URL"])
        case.account(case.drain())
    _assert_no_indeterminate(case)


async def _terminate_backends(database_url: str) -> int:
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return len(rows)
    finally:
        await connection.close()


def test_postgres_connections_terminated_mid_delivery(rig: Rig) -> None:
    with rig.case("pg_terminate_backend (every connection, twice)") as case:
        case.restock()
        case.wait_in_flight()
        terminated = asyncio.run(_terminate_backends(rig.database_url))
        time.sleep(1)
        terminated += asyncio.run(_terminate_backends(rig.database_url))
        assert terminated > 0
        case.account(case.drain())
    # A claim whose commit the terminated connection took with it is an unmarked claim: its lease ends and
    # it is sent again (ADR 21). Marks and records are retried on a fresh connection.
    _assert_no_indeterminate(case)


def test_smtp_421_for_30_seconds(rig: Rig) -> None:
    with rig.case("SMTP 421 for 30 s") as case:
        case.restock()
        case.wait_in_flight()
        outage = {"match": "*", "code": 421, "message": "4.3.2 service not available", "seconds": 30}
        assert rig.http.post("/smtp/faults", json=outage).status_code == 201
        case.account(case.drain())
    _assert_no_indeterminate(case)
    assert case.result.dead_letter == 0, case.result


def test_sigterm_everything_mid_delivery(rig: Rig) -> None:
    with rig.case("SIGTERM every service, start again") as case:
        case.restock()
        case.wait_in_flight()
        codes = {}
        for name in SERVICES:
            process = rig.stack.processes[name]
            process.terminate()
        for name in SERVICES:
            codes[name] = rig.stack.processes[name].wait(60)
        assert all(code == 0 for code in codes.values()), codes
        rig.restart(SERVICES)
        case.account(case.drain())
    _assert_no_indeterminate(case)
