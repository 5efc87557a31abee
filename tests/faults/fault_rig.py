"""The fault suite's rig: the whole system as real processes, one restock of 10,000 subscribers per case, a
fault injected with delivery in flight, and the accounting once everything has drained.

One ``Rig`` per module: the processes of ``restock_sandbox.stack`` on free ports, with a database and vhost
of their own (``own_env``: a job another test left in the run's database, its retry falling due here, would
otherwise be sent to the rig's peers and counted as a stray), a Redis db of their own (the Redis case wipes
it), spans not exported (10,000 jobs a case would flood the sandbox's receiver; the trace is asserted by
``tests/e2e``), short leases and sweeps so a case drains in seconds after its fault, not minutes. Each case
restocks its own variant of the one sandbox shop, so its jobs, and the peers' counts (cleared per case), are
its own.

The subscribers of a case, in subscription order (FIFO):
- 8,000 email subscribers over four domains, 50 of them at ``bounce.example``, which the SMTP peer refuses
  for good (550: ``failed-permanent``);
- 2,000 SMS subscribers (every fifth), at numbers phonenumbers deems valid (+1 415 2cc nnnn);
- the last 100 email subscribers unsubscribe once delivery is in flight (``skipped-opted-out`` at send
  time, or ``sent`` if their turn already came).
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import redis

from restock_sandbox.stack import (
    Ports,
    ProcessSpec,
    Stack,
    process_specs,
    register_shop,
    set_shop_rules,
)
from restock_sandbox.tcp_faults import FaultProxy, Mode
from restock_sender.providers.smtp import message_id

SHOP = "faults-shop.myshopify.com"
LOCATION_ID = 4001
SUBSCRIBERS = 10_000
SMS_EVERY = 5  # every fifth subscriber wants an SMS: 2,000
BOUNCE_DOMAIN = "bounce.example"
BOUNCING = 50
LATE_OPT_OUTS = 100
EMAIL_DOMAINS = ("example.com", "example.org", "example.net", "mail.example")
IN_FLIGHT = 1_500  # messages at the peers before the fault
DRAIN_DEADLINE_S = 300.0
# Two email senders: replicas share the queue and the limits, and a kill of one leaves the other working.
SECOND_EMAIL_SENDER = "sender-email-2"
EMAIL_SENDERS = ("sender-email", SECOND_EMAIL_SENDER)
SENDERS = ("sender-email", SECOND_EMAIL_SENDER, "sender-sms")
SERVICES = ("admin", "detector", "dispatcher", *SENDERS)
SENDER_CONCURRENCY = 8

TERMINAL = frozenset(
    {"sent", "failed-permanent", "dead-letter", "indeterminate", "skipped-opted-out", "duplicate-suppressed"}
)
SUPPRESSED = frozenset({"skipped-opted-out", "duplicate-suppressed"})


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _other_redis_db(url: str) -> str:
    """The run's Redis URL with another db index: the Redis case wipes this one, not the other tests'."""
    base, _, index = url.rpartition("/")
    return f"{base}/{(int(index) % 15) + 1 if index.isdigit() else 1}"


@dataclass
class CaseResult:
    """One case's figures, for the closing note."""

    case: str
    jobs: int = 0
    sent: int = 0
    suppressed: int = 0
    failed_permanent: int = 0
    dead_letter: int = 0
    indeterminate: int = 0
    smtp_duplicates: int = 0
    sms_duplicates: int = 0
    kills: int = 0
    email_sender_kills: int = 0  # the bound on indeterminate jobs (ADR 21)
    drain_s: float = 0.0
    indeterminate_at_peer: int = 0  # indeterminate email jobs whose message the SMTP peer did receive
    states: dict[str, int] = field(default_factory=dict)

    def row(self) -> str:
        return (
            f"| {self.case} | {self.jobs:,} | {self.sent:,} | {self.suppressed} | {self.failed_permanent} | "
            f"{self.dead_letter} | {self.indeterminate} ({self.indeterminate_at_peer} at peer) | "
            f"{self.smtp_duplicates} / {self.sms_duplicates} | "
            f"{self.kills} | {self.drain_s:.1f} s |"
        )


RESULTS: list[CaseResult] = []
TABLE_HEADER = (
    "| case | jobs | sent | suppressed | failed-permanent | dead-letter | indeterminate | "
    "duplicates (SMTP / Twilio) | kills | drain |\n|---|---|---|---|---|---|---|---|---|---|"
)


class ProxyThread:
    """A ``FaultProxy`` on its own event loop thread, so it keeps forwarding while the test waits."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.proxy = FaultProxy(upstream_host, upstream_port)
        self._call(self.proxy.start())

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    @property
    def port(self) -> int:
        return self.proxy.port

    def set_mode(self, mode: Mode) -> None:
        self.loop.call_soon_threadsafe(setattr, self.proxy, "mode", mode)

    def reset(self) -> None:
        self.loop.call_soon_threadsafe(self.proxy.reset)

    def close(self) -> None:
        self._call(self.proxy.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class Rig:
    """The running system and the means to hurt it."""

    def __init__(self, base_env: dict[str, str], log_dir: Path) -> None:
        self.ports = Ports.free()
        self.env = {
            **base_env,
            "RESTOCK_REDIS_URL": _other_redis_db(base_env["RESTOCK_REDIS_URL"]),
            "RESTOCK_SANDBOX_SHOP_DOMAIN": SHOP,
            "OTEL_TRACES_EXPORTER": "none",
            # Long enough that a send on this loaded machine never outlives its lease (a live sender's job
            # reaped as indeterminate), short enough that a killed sender's jobs are reaped within the case.
            "RESTOCK_LEASE_SECONDS": "30",
            "RESTOCK_SENDER_CONCURRENCY": str(SENDER_CONCURRENCY),
            "RESTOCK_TWILIO_SENDER_MPS": "1000",
            "RESTOCK_RETRY_POLL_SECONDS": "0.5",
            "RESTOCK_REPUBLISH_GRACE_SECONDS": "5",
            "RESTOCK_PUBLISH_SWEEP_AFTER_SECONDS": "5",
            "RESTOCK_PUBLISH_SWEEP_INTERVAL_SECONDS": "2",
            "RESTOCK_OUTBOX_POLL_SECONDS": "0.2",
        }
        self.database_url = self.env["RESTOCK_DATABASE_URL"]
        self.log_dir = log_dir
        self.stack = Stack(env=self.env, ports=self.ports, log_dir=log_dir)
        self.specs = {spec.name: spec for spec in process_specs(self.ports)}
        email = self.specs["sender-email"]
        self.specs[SECOND_EMAIL_SENDER] = ProcessSpec(SECOND_EMAIL_SENDER, email.argv, _free_port())
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.ports.sandbox}", timeout=60.0)
        self.cases = 0
        self.kills = 0
        self.email_sender_kills = 0
        self.armed_env: dict[str, dict[str, str]] = {}  # extra env per process for the current case

    # --- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> None:
        register_shop(self.env, SHOP)
        asyncio.run(
            set_shop_rules(
                self.database_url,
                SHOP,
                updated_by="fault-suite",
                debounce_seconds=0,
                # A 30-second SMTP outage is ridden out by retries, not dead-lettered.
                max_attempts=20,
                retry_base_seconds=1.0,
                retry_cap_seconds=8.0,
            )
        )
        self.stack.start()
        self.stack.wait_ready(timeout=120)
        self.stack._start(self.specs[SECOND_EMAIL_SENDER])
        self.wait_ready((SECOND_EMAIL_SENDER,))
        # Delivery receipts are not what this suite is about: 4,000 callbacks a case would only slow it.
        self.http.post("/twilio/config", json={"status_callbacks": False}).raise_for_status()

    def stop(self) -> dict[str, int]:
        self.http.close()
        return self.stack.stop()

    def restart(self, names: tuple[str, ...], extra_env: dict[str, str] | None = None) -> None:
        """Stop the named processes gracefully and start them again, with ``extra_env`` (or none)."""
        for name in names:
            process = self.stack.processes.get(name)
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        for name in names:
            self.stack._start(self.specs[name], extra_env)
        self.wait_ready(names)

    def wait_ready(self, names: tuple[str, ...], timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            for name in names:
                spec = self.specs[name]
                while True:
                    if self.stack.processes[name].poll() is not None:
                        raise AssertionError(f"{name} exited while starting\n{self.log_tail(name)}")
                    try:
                        if client.get(f"http://127.0.0.1:{spec.port}{spec.ready_path}").status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() > deadline:
                        raise AssertionError(f"{name} not ready\n{self.log_tail(name)}")
                    time.sleep(0.1)

    def log_tail(self, name: str, chars: int = 4000) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def revive_killed(self) -> int:
        """Start again, unarmed, every process that killed itself at its fault point; how many there were."""
        revived = 0
        for name in SERVICES:
            process = self.stack.processes.get(name)
            if process is not None and process.poll() is not None:
                assert process.returncode == -9, f"{name} exited with {process.returncode}, not by SIGKILL"
                self.stack._start(self.specs[name])
                self.wait_ready((name,))
                revived += 1
                self.email_sender_kills += name in EMAIL_SENDERS
        self.kills += revived
        return revived

    # --- one case -----------------------------------------------------------------------------------------

    @contextmanager
    def case(self, name: str) -> Iterator[Case]:
        self.cases += 1
        self.kills = 0
        self.email_sender_kills = 0
        case = Case(self, name, self.cases)
        case.prepare()
        try:
            yield case
        finally:
            RESULTS.append(case.result)


@dataclass
class Case:
    """One restock of its own variant."""

    rig: Rig
    name: str
    index: int
    tenant: int = 0
    restocked_at: float = 0.0
    result: CaseResult = field(init=False)

    def __post_init__(self) -> None:
        self.result = CaseResult(self.name)
        self.product_id = 70_000 + self.index
        self.variant_id = 80_000 + self.index
        self.inventory_item_id = 90_000 + self.index

    @property
    def http(self) -> httpx.Client:
        return self.rig.http

    def prepare(self) -> None:
        """Clear the peers, add the product (sold out), seed the subscribers."""
        for path in ("/inbox", "/smtp/faults", "/twilio/messages", "/twilio/faults"):
            assert self.http.delete(path).status_code in (200, 204), path
        rule = {"match": BOUNCE_DOMAIN, "code": 550, "message": "5.1.1 no such user", "times": None}
        assert self.http.post("/smtp/faults", json=rule).status_code == 201
        product = {
            "title": f"Fault case {self.name}",
            "variants": [
                {
                    "id": self.variant_id,
                    "title": "M",
                    "sku": f"FAULT-{self.index}",
                    "inventory_item_id": self.inventory_item_id,
                }
            ],
        }
        self._ok(self.http.put(f"/store/products/{self.product_id}", json=product))
        self.set_level(0)
        self.tenant = asyncio.run(self._seed())
        self._wait(lambda: asyncio.run(self._armed()), 60, "the variant's sold-out snapshot")

    def wait_outbox_published(self) -> None:
        """Until the detector's outbox holds nothing unpublished: a relay armed now dies on the restock's."""
        self._wait(lambda: asyncio.run(self._outbox_empty()), 60, "the outbox to be published")

    async def _outbox_empty(self) -> bool:
        connection = await self._connect()
        try:
            return not await connection.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        finally:
            await connection.close()

    def _ok(self, response: httpx.Response) -> None:
        assert response.status_code < 400, (response.status_code, response.text)

    def set_level(self, available: int) -> None:
        body = {
            "inventory_item_id": self.inventory_item_id,
            "location_id": LOCATION_ID,
            "available": available,
        }
        self._ok(self.http.post("/store/inventory_levels/set", json=body))

    async def _connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.rig.database_url)

    async def _seed(self) -> int:
        connection = await self._connect()
        try:
            tenant = await connection.fetchval("SELECT id FROM tenants WHERE shop_domain = $1", SHOP)
            await connection.execute(
                """
                INSERT INTO subscriptions (tenant, variant_id, product_id, channel, email, phone,
                                           contact_hash, state, subscribed_at, confirmed_at)
                SELECT $1, $2::bigint, $3::bigint,
                       CASE WHEN g % $5 = 0 THEN 'sms' ELSE 'email' END,
                       CASE WHEN g % $5 = 0 THEN NULL
                            WHEN g % 200 = 1 THEN 'c' || $4 || '-' || g || '@' || $6
                            ELSE 'c' || $4 || '-' || g || '@' || ($7::text[])[1 + g % 4] END,
                       CASE WHEN g % $5 = 0
                            THEN '+14152' || lpad($4::text, 2, '0') || lpad((g / $5)::text, 4, '0')
                            ELSE NULL END,
                       md5($2::bigint::text || ':' || g::text),
                       'confirmed', now() - interval '1 day' + g * interval '1 millisecond', now()
                FROM generate_series(1, $8) g
                """,
                tenant,
                self.variant_id,
                self.product_id,
                str(self.index),
                SMS_EVERY,
                BOUNCE_DOMAIN,
                list(EMAIL_DOMAINS),
                SUBSCRIBERS,
            )
            return int(tenant)
        finally:
            await connection.close()

    async def _armed(self) -> bool:
        connection = await self._connect()
        try:
            available = await connection.fetchval(
                "SELECT available FROM variant_states WHERE tenant = $1 AND variant_id = $2",
                self.tenant,
                self.variant_id,
            )
            return bool(available == 0)
        finally:
            await connection.close()

    def _wait(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.5)
        tails = "\n".join(f"--- {name}\n{self.rig.log_tail(name, 2500)}" for name in SERVICES)
        raise AssertionError(f"{self.name}: timed out waiting for {what}\n{tails}")

    # --- the restock and its delivery ---------------------------------------------------------------------

    def restock(self) -> None:
        self.restocked_at = time.monotonic()
        self.set_level(5)

    def delivered(self) -> int:
        """Messages at both peers so far (0 while the busy sandbox is slow to answer: asked again)."""
        try:
            inbox = self.http.get("/inbox/stats").json()["messages"]
            twilio = self.http.get("/twilio/stats").json()["accepted"]
        except httpx.TimeoutException:
            return 0
        return int(inbox) + int(twilio)

    def wait_in_flight(self, at_least: int = IN_FLIGHT, timeout: float = 180.0) -> None:
        """Until ``at_least`` messages reached the peers (reviving a sender that killed itself on the way);
        then the last subscribers opt out."""

        def reached() -> bool:
            self.rig.revive_killed()
            return self.delivered() >= at_least

        self._wait(reached, timeout, f"{at_least} messages at the peers")
        asyncio.run(self._late_opt_outs())

    async def _late_opt_outs(self) -> None:
        connection = await self._connect()
        try:
            await connection.execute(
                """
                UPDATE subscriptions SET state = 'unsubscribed', unsubscribed_at = now()
                WHERE id IN (SELECT id FROM subscriptions WHERE tenant = $1 AND variant_id = $2
                             AND channel = 'email' ORDER BY subscribed_at DESC LIMIT $3)
                """,
                self.tenant,
                self.variant_id,
                LATE_OPT_OUTS,
            )
        finally:
            await connection.close()

    async def _states(self) -> Counter[str]:
        connection = await self._connect()
        try:
            rows = await connection.fetch(
                "SELECT state, count(*) AS n FROM notification_jobs WHERE tenant = $1 AND variant_id = $2 "
                "GROUP BY state",
                self.tenant,
                self.variant_id,
            )
            return Counter({row["state"]: int(row["n"]) for row in rows})
        finally:
            await connection.close()

    def _drained(self, revive: bool) -> Counter[str] | None:
        if revive:
            self.rig.revive_killed()
        states = asyncio.run(self._states())
        if sum(states.values()) == SUBSCRIBERS and set(states) <= TERMINAL:
            return states
        return None

    def drain(self, *, revive: bool = True, deadline: float = DRAIN_DEADLINE_S) -> Counter[str]:
        """Until every job of the restock is terminal (reviving killed processes meanwhile)."""
        states: Counter[str] = self._wait(
            lambda: self._drained(revive), deadline, "every job to reach a terminal state"
        )
        self.result.drain_s = time.monotonic() - self.restocked_at
        return states

    # --- the accounting -----------------------------------------------------------------------------------

    def account(self, states: Counter[str]) -> CaseResult:
        """Every target accounted for; nothing sent twice; every message at a peer is a job's, once."""
        result = self.result
        result.states = dict(states)
        result.jobs = sum(states.values())
        result.sent = states["sent"]
        result.suppressed = sum(states[s] for s in SUPPRESSED)
        result.failed_permanent = states["failed-permanent"]
        result.dead_letter = states["dead-letter"]
        result.indeterminate = states["indeterminate"]
        result.kills = self.rig.kills
        result.email_sender_kills = self.rig.email_sender_kills
        jobs = asyncio.run(self._jobs())
        inbox = self.http.get("/inbox/stats").json()
        result.smtp_duplicates = sum(n - 1 for n in inbox["duplicates"].values())
        twilio_stats = self.http.get("/twilio/stats").json()
        result.sms_duplicates = int(twilio_stats["duplicates"])

        assert result.jobs == SUBSCRIBERS, result
        assert result.smtp_duplicates == 0, inbox["duplicates"]
        assert result.sms_duplicates == 0, twilio_stats

        # Email: every sent job's message is at the peer; every message at the peer is a sent job's or an
        # indeterminate one's (its sender died with the outcome unknown), never a skipped or failed job's.
        received = {mid for mid in self.http.get("/inbox/message-ids").json() if mid}
        email = [job for job in jobs if job["channel"] == "email"]
        by_message = {message_id(job["notification_key"], SHOP): job["state"] for job in email}
        sent_ids = {mid for mid, state in by_message.items() if state == "sent"}
        missing = sent_ids - received
        assert not missing, (
            f"{len(missing)} sent email jobs have no message at the peer, e.g. {sorted(missing)[:3]}; "
            f"received e.g. {sorted(received)[:3]}"
        )
        result.indeterminate_at_peer = sum(
            1 for mid, state in by_message.items() if state == "indeterminate" and mid in received
        )
        strays = {
            mid: by_message.get(mid)
            for mid in received
            if by_message.get(mid) not in ("sent", "indeterminate")
        }
        assert not strays, f"messages at the peer for jobs not sent: {list(strays.items())[:5]}"

        # SMS: one message per sent job's number, none for the others; never indeterminate.
        sms = [job for job in jobs if job["channel"] == "sms"]
        numbers = Counter(message["to"] for message in self.http.get("/twilio/messages").json())
        sent_numbers = {job["phone"] for job in sms if job["state"] == "sent"}
        assert sent_numbers == set(numbers), (len(sent_numbers), len(numbers))
        assert not [job for job in sms if job["state"] == "indeterminate"], "an SMS job ended indeterminate"
        return result

    async def _jobs(self) -> list[asyncpg.Record]:
        connection = await self._connect()
        try:
            rows: list[asyncpg.Record] = await connection.fetch(
                "SELECT j.id, j.channel, j.state, j.notification_key, s.phone FROM notification_jobs j "
                "JOIN subscriptions s ON s.id = j.subscription WHERE j.tenant = $1 AND j.variant_id = $2",
                self.tenant,
                self.variant_id,
            )
            return rows
        finally:
            await connection.close()


def flush_redis(url: str) -> None:
    """``FLUSHDB`` on the rig's db index, as a restart of a Redis that keeps nothing on disk would."""
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()
