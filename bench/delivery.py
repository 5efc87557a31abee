"""Benchmark of the sender (issue 7, "bench/delivery"), against the real PostgreSQL, RabbitMQ and Redis.

In one run, in a private database, RabbitMQ vhost and Redis db (removed or emptied at the end), with the
sandbox (SMTP server and Twilio API) and the sender as real subprocesses on free loopback ports:

(a) Unthrottled email, end to end: ``EMAIL_JOBS`` pending jobs are published as ``JobBatch``es of 100 (what
    the dispatcher does) and timed from the first publish to the last message the sandbox SMTP server
    accepted (its ``received_at``). Baseline: ``bench/baseline/smtp_blast.py``, a raw aiosmtplib blast
    over the same number of connections (``RESTOCK_SENDER_CONCURRENCY``) to the same peer.
(b) Limits 200/s global and 50/s for ``limited.test``, measured at the peer:
    1. global: ``GLOBAL_JOBS`` jobs to 50 other domains at once: the achieved rate and the most messages
       in any one-second window (baseline: the limit);
    2. other domains alone: open loop, ``OTHER_RATE`` jobs/s for ``OTHER_SECONDS`` (10 per publish), the
       p99 latency from each job's publish to its acceptance: the baseline of 3;
    3. the same open loop while a backlog of ``DOMAIN_JOBS`` jobs for ``limited.test`` (20 s of its limit)
       was published first: the domain's achieved rate and busiest second (baseline 50), and the p99 of
       the other domains' mail (goal under 1 s: no head-of-line blocking).
(c) SMS through the sandbox Twilio API with a 100 MPS sender limit: ``SMS_JOBS`` jobs, the achieved rate and
    the busiest second (its ``accepted_at``), baseline the limit.
(d) A fresh email sender's peak RSS (``VmHWM``) after ``RSS_JOBS`` jobs, baseline its RSS when it was
    ready and idle. Last, and long: the figures of (a)-(c) are written before it starts.

Prints a table and writes ``bench/results/delivery.json`` (DESIGN.md's format). Run from the repository
root: ``uv run --frozen python bench/delivery.py`` (``make bench``). ``RESTOCK_BENCH_RSS_JOBS`` shrinks (d).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import asyncpg
import httpx
import redis.asyncio as aioredis

from restock_common import topology
from restock_common.broker import Broker
from restock_common.messages import Channel, JobBatch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "delivery.json"
BLAST = ROOT / "bench" / "baseline" / "smtp_blast.py"

PG_ADMIN_URL = os.environ.get("RESTOCK_BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_ROOT = os.environ.get("RESTOCK_BENCH_AMQP_ROOT", "amqp://guest:guest@127.0.0.1:5672")
REDIS_ROOT = os.environ.get("RESTOCK_BENCH_REDIS_ROOT", "redis://127.0.0.1:6379")
REDIS_DB = int(os.environ.get("RESTOCK_BENCH_REDIS_DB", "15"))

SHOP = "bench-shop.myshopify.com"
VARIANT = 4_001
CONNECTIONS = 8  # RESTOCK_SENDER_CONCURRENCY: the sender's SMTP pool, and the blast's connections
BATCH = 100
QUICK = os.environ.get("RESTOCK_BENCH_QUICK") == "1"  # a smoke run of the script itself; no results file
# (a)-(c) only; (d)'s figure is carried over from the results file, marked so (it takes most of the run).
SKIP_RSS = os.environ.get("RESTOCK_BENCH_SKIP_RSS") == "1"
EMAIL_JOBS = 300 if QUICK else 5_000
RSS_JOBS = 600 if QUICK else int(os.environ.get("RESTOCK_BENCH_RSS_JOBS", "100000"))
RSS_CHUNK = 10_000
GLOBAL_LIMIT, DOMAIN_LIMIT = 200.0, 50.0
GLOBAL_JOBS = 400 if QUICK else 3_000
DOMAIN_JOBS = 100 if QUICK else 1_000
# Keep the open loop plus the domain's 50/s under the sender's capacity on this machine (unthrottled (a)),
# or (b)3 measures the queue of an overloaded sender rather than head-of-line blocking.
OTHER_RATE = int(os.environ.get("RESTOCK_BENCH_OTHER_RATE", "100"))
OTHER_SECONDS, OTHER_PER_PUBLISH = 2.0 if QUICK else 10.0, 10
SMS_MPS = 100.0
SMS_JOBS = 200 if QUICK else 1_500

READY_TIMEOUT_S = 60.0
DRAIN_TIMEOUT_S = 600.0


# --- private infrastructure and processes ----------------------------------------------------------------


def _rabbitmqctl(*args: str) -> None:
    ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    subprocess.run([ctl, "-q", *args], check=True, capture_output=True, timeout=60)


async def _drop_database(name: str) -> None:
    connection = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


async def _forget_limits(redis_url: str) -> None:
    redis = aioredis.from_url(redis_url)
    try:
        async for key in redis.scan_iter(match="restock:*", count=1000):
            await redis.delete(key)
    finally:
        await redis.aclose()


@contextmanager
def private_infrastructure() -> Iterator[dict[str, str]]:
    """A migrated database and a vhost named ``restock_bench_<random>``, a Redis db; the RESTOCK_* env."""
    name = f"restock_bench_{uuid.uuid4().hex[:10]}"
    env = {
        "RESTOCK_DATABASE_URL": f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}",
        "RESTOCK_AMQP_URL": f"{AMQP_ROOT}/{name}",
        "RESTOCK_REDIS_URL": f"{REDIS_ROOT}/{REDIS_DB}",
        "RESTOCK_SENDER_CONCURRENCY": str(CONNECTIONS),
    }
    try:
        _rabbitmqctl("add_vhost", name)
        _rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        done = subprocess.run(
            [sys.executable, "-m", "restock_common.migrate"],
            env={**os.environ, **env},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"migrate failed: {done.stderr[-2000:]}")
        asyncio.run(_forget_limits(env["RESTOCK_REDIS_URL"]))
        yield env
    finally:
        cleanups: list[tuple[str, Callable[[], object]]] = [
            ("drop database", lambda: asyncio.run(_drop_database(name))),
            ("delete vhost", lambda: _rabbitmqctl("delete_vhost", name)),
            ("forget limits", lambda: asyncio.run(_forget_limits(env["RESTOCK_REDIS_URL"]))),
        ]
        for step, cleanup in cleanups:
            try:
                cleanup()
            except Exception as error:
                print(f"warning: could not {step}: {error}", file=sys.stderr)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Process:
    """A service subprocess on a loopback port."""

    process: subprocess.Popen[bytes]
    port: int
    log: IO[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-3000:]

    def memory_mib(self, field: str) -> float:
        """``VmHWM`` (peak) or ``VmRSS`` (now) of the process, in MiB."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        line = next(line for line in status.splitlines() if line.startswith(f"{field}:"))
        return int(line.split()[1]) / 1024


@contextmanager
def process(argv: list[str], env: dict[str, str], port: int) -> Iterator[Process]:
    """Start ``python argv`` with ``RESTOCK_HTTP_PORT=port``, wait for ``/readyz``, SIGTERM it at the end."""
    with tempfile.TemporaryFile() as log:
        popen = subprocess.Popen(
            [sys.executable, *argv],
            env={**os.environ, **env, "RESTOCK_HTTP_PORT": str(port)},
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        running = Process(popen, port, log)
        try:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while True:
                if popen.poll() is not None:
                    raise RuntimeError(f"{argv} exited with {popen.returncode}:\n{running.log_tail()}")
                with suppress(httpx.HTTPError):
                    if httpx.get(f"{running.url}/readyz", timeout=1.0).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{argv} not ready:\n{running.log_tail()}")
                time.sleep(0.1)
            yield running
        finally:
            popen.terminate()
            try:
                popen.wait(timeout=60)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()


# --- jobs -----------------------------------------------------------------------------------------------

_SEED = """
WITH subs AS (
    INSERT INTO subscriptions (tenant, variant_id, channel, email, phone, contact_hash, state, source,
                               subscribed_at, confirmed_at)
    SELECT $1::bigint, $2::bigint, $3::varchar,
           CASE WHEN $3::varchar = 'email' THEN format($4::text, g, g % $5::int) END,
           CASE WHEN $3::varchar = 'sms' THEN format($4::text, lpad(g::text, 6, '0')) END,
           md5($3::varchar || ':' || g), 'confirmed', 'import',
           now() - interval '1 day' + g * interval '1 millisecond', now()
      FROM generate_series($6::int, $7::int) AS g
    RETURNING id, subscribed_at
)
INSERT INTO notification_jobs (tenant, restock_event, subscription, variant_id, channel, notification_key,
                               state, priority_at)
SELECT $1::bigint, $8::bigint, s.id, $2::bigint, $3::varchar, $2::bigint || ':' || s.id || ':' || $9::bigint,
       'pending', s.subscribed_at
  FROM subs s
RETURNING id, subscription
"""


@dataclass
class Shop:
    """The bench's shop and its restock event."""

    tenant: int
    event: int
    window: int


async def create_shop(db: asyncpg.Connection) -> Shop:
    tenant = await db.fetchval("INSERT INTO tenants (shop_domain) VALUES ($1) RETURNING id", SHOP)
    await db.execute(
        "INSERT INTO inventory_items (tenant, inventory_item_id, variant_id, title) VALUES ($1, 1, $2, $3)",
        tenant,
        VARIANT,
        "Red Scarf",
    )
    window = 1
    event = await db.fetchval(
        "INSERT INTO restock_events (tenant, variant_id, available, restock_window, source) "
        "VALUES ($1, $2, 100000, $3, 'webhook') RETURNING id",
        tenant,
        VARIANT,
        window,
    )
    return Shop(tenant, event, window)


class Seeder:
    """Pending jobs in bulk (one statement a chunk), numbered across the run so contacts stay unique."""

    def __init__(self, db: asyncpg.Connection, shop: Shop) -> None:
        self.db, self.shop, self.next = db, shop, 1

    async def seed(self, channel: Channel, contact: str, count: int, domains: int = 1) -> list[int]:
        """``count`` jobs, FIFO; ``contact`` is a ``format`` pattern (email: index and domain number)."""
        first, last = self.next, self.next + count - 1
        self.next += count
        rows = await self.db.fetch(
            _SEED,
            self.shop.tenant,
            VARIANT,
            channel,
            contact,
            domains,
            first,
            last,
            self.shop.event,
            self.shop.window,
        )
        return sorted(int(row["id"]) for row in rows)

    async def sent(self, job_ids: list[int]) -> int:
        return int(
            await self.db.fetchval(
                "SELECT count(*) FROM notification_jobs WHERE id = ANY($1::bigint[]) AND state = 'sent'",
                job_ids,
            )
        )

    async def states(self, job_ids: list[int]) -> dict[str, int]:
        rows = await self.db.fetch(
            "SELECT state, count(*) AS n FROM notification_jobs WHERE id = ANY($1::bigint[]) GROUP BY state",
            job_ids,
        )
        return {row["state"]: int(row["n"]) for row in rows}


async def publish(broker: Broker, channel: Channel, job_ids: list[int]) -> None:
    for start in range(0, len(job_ids), BATCH):
        await broker.publish(
            JobBatch(channel=channel, job_ids=job_ids[start : start + BATCH]),
            topology.jobs_routing_key(channel),
        )


async def wait_sent(seeder: Seeder, job_ids: list[int], timeout: float = DRAIN_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while await seeder.sent(job_ids) < len(job_ids):
        if time.monotonic() > deadline:
            raise TimeoutError(f"not all sent: {await seeder.states(job_ids)}")
        await asyncio.sleep(0.2)


# --- the peers' observations --------------------------------------------------------------------------


async def inbox(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await client.get("/inbox/", timeout=120)
    response.raise_for_status()
    return list(response.json())


def received_times(messages: list[dict[str, Any]], domain: str | None = None) -> list[float]:
    """Acceptance instants (epoch seconds) of messages, those to ``domain`` only when given."""
    return sorted(
        datetime.fromisoformat(m["received_at"]).timestamp()
        for m in messages
        if domain is None or m["rcpt_tos"][0].endswith(f"@{domain}")
    )


def rate(times: list[float]) -> float:
    """Messages per second between the first and the last."""
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0


def max_in_any_second(times: list[float]) -> int:
    best, start = 0, 0
    for end, moment in enumerate(times):
        while moment - times[start] >= 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98] if len(values) > 1 else values[0]


# --- the measurements -------------------------------------------------------------------------------------


def sender_env(env: dict[str, str], smtp_port: int, sandbox_port: int, **extra: str) -> dict[str, str]:
    return {
        **env,
        "RESTOCK_SMTP_HOST": "127.0.0.1",
        "RESTOCK_SMTP_PORT": str(smtp_port),
        "RESTOCK_TWILIO_BASE_URL": f"http://127.0.0.1:{sandbox_port}/twilio",
        "RESTOCK_SHOPIFY_API_BASE_URL": f"http://127.0.0.1:{sandbox_port}",
        # Nobody listens there: the status callbacks of (c) fail fast instead of loading the peer we measure.
        "RESTOCK_PUBLIC_BASE_URL": f"http://127.0.0.1:{free_port()}",
        **extra,
    }


def smtp_blast(smtp_port: int, messages: int) -> float:
    done = subprocess.run(
        [sys.executable, str(BLAST), "127.0.0.1", str(smtp_port), str(CONNECTIONS), str(messages)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"smtp blast failed: {done.stderr[-2000:]}")
    result = json.loads(done.stdout)
    return float(result["sent"]) / float(result["seconds"])


async def end_to_end(seeder: Seeder, broker: Broker, sandbox: httpx.AsyncClient) -> float:
    """(a): EMAIL_JOBS from the first publish to the last acceptance at the peer, per second."""
    job_ids = await seeder.seed("email", "a%s@bench%s.test", EMAIL_JOBS, domains=20)
    started = time.time()
    await publish(broker, "email", job_ids)
    await wait_sent(seeder, job_ids)
    last = received_times(await inbox(sandbox))[-1]
    await sandbox.delete("/inbox/")
    return len(job_ids) / (last - started)


async def memory(
    seeder: Seeder, broker: Broker, sandbox: httpx.AsyncClient, sender: Process
) -> dict[str, float]:
    """(d): a fresh sender's RSS when ready, and its peak after RSS_JOBS jobs (in chunks; the inbox is
    emptied after each so the peer's memory stays flat)."""
    idle_rss, done = sender.memory_mib("VmRSS"), 0
    while done < RSS_JOBS:
        chunk = await seeder.seed("email", "r%s@rss%s.test", min(RSS_CHUNK, RSS_JOBS - done), domains=20)
        await publish(broker, "email", chunk)
        await wait_sent(seeder, chunk, timeout=DRAIN_TIMEOUT_S * 3)
        await sandbox.delete("/inbox/")
        done += len(chunk)
        print(f"(d) {done} jobs sent, peak RSS {sender.memory_mib('VmHWM'):.1f} MiB", flush=True)
    return {"idle_rss": idle_rss, "peak_rss": sender.memory_mib("VmHWM"), "jobs": done}


async def open_loop(seeder: Seeder, broker: Broker, prefix: str) -> dict[int, float]:
    """OTHER_RATE jobs/s to 50 other domains for OTHER_SECONDS; each job's publish instant, by its contact
    number (the digits after ``prefix`` in the recipient's local part)."""
    total = int(OTHER_RATE * OTHER_SECONDS)
    first = seeder.next
    job_ids = await seeder.seed("email", f"{prefix}%s@other%s.test", total, domains=50)
    published: dict[int, float] = {}
    started = time.monotonic()
    for tick, start in enumerate(range(0, total, OTHER_PER_PUBLISH)):
        due = started + tick * OTHER_PER_PUBLISH / OTHER_RATE
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        chunk = job_ids[start : start + OTHER_PER_PUBLISH]
        await broker.publish(JobBatch(channel="email", job_ids=chunk), topology.jobs_routing_key("email"))
        moment = time.time()
        published.update(dict.fromkeys(range(first + start, first + start + len(chunk)), moment))
    await wait_sent(seeder, job_ids)
    return published


async def other_latencies(
    sandbox: httpx.AsyncClient, prefix: str, published: dict[int, float]
) -> list[float]:
    """Publish -> acceptance of each open-loop job, in ms (the index is in the recipient's local part)."""
    latencies = []
    for message in await inbox(sandbox):
        local = message["rcpt_tos"][0].split("@", 1)[0]
        if local.startswith(prefix):
            index = int(local[len(prefix) :])
            latencies.append(
                (datetime.fromisoformat(message["received_at"]).timestamp() - published[index]) * 1000
            )
    return latencies


async def limited(seeder: Seeder, broker: Broker, sandbox: httpx.AsyncClient) -> dict[str, float]:
    """(b): the global limit filled; the other domains alone; then beside a saturated domain."""
    job_ids = await seeder.seed("email", "g%s@other%s.test", GLOBAL_JOBS, domains=50)
    await publish(broker, "email", job_ids)
    await wait_sent(seeder, job_ids)
    global_times = received_times(await inbox(sandbox))
    await sandbox.delete("/inbox/")

    alone = await open_loop(seeder, broker, "ob")
    alone_ms = await other_latencies(sandbox, "ob", alone)
    await sandbox.delete("/inbox/")

    backlog = await seeder.seed("email", "l%s@limited.test", DOMAIN_JOBS)
    await publish(broker, "email", backlog)
    beside = await open_loop(seeder, broker, "oc")
    await wait_sent(seeder, backlog)
    messages = await inbox(sandbox)
    beside_ms = await other_latencies(sandbox, "oc", beside)
    domain_times = received_times(messages, "limited.test")
    return {
        "global_rate": rate(global_times),
        "global_max_1s": max_in_any_second(global_times),
        "alone_p99_ms": p99(alone_ms),
        "beside_p99_ms": p99(beside_ms),
        "domain_rate": rate(domain_times),
        "domain_max_1s": max_in_any_second(domain_times),
        "beside_global_max_1s": max_in_any_second(received_times(messages)),
    }


async def sms(seeder: Seeder, broker: Broker, sandbox: httpx.AsyncClient) -> dict[str, float]:
    """(c): SMS_JOBS through the sandbox Twilio API at a 100 MPS sender limit."""
    job_ids = await seeder.seed("sms", "+14152%s", SMS_JOBS)  # valid US numbers (phonenumbers)
    await publish(broker, "sms", job_ids)
    await wait_sent(seeder, job_ids)
    response = await sandbox.get("/twilio/messages", timeout=120)
    response.raise_for_status()
    times = sorted(datetime.fromisoformat(m["accepted_at"]).timestamp() for m in response.json())
    return {"rate": rate(times), "max_1s": max_in_any_second(times), "count": len(times)}


# --- the run ----------------------------------------------------------------------------------------------


def figure(value: float, unit: str, baseline: float | None) -> dict[str, Any]:
    ratio = round(value / baseline, 3) if baseline else None
    return {
        "value": round(value, 3),
        "unit": unit,
        "baseline": baseline and round(baseline, 3),
        "ratio": ratio,
    }


async def measure(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    carried = carried_rss() if SKIP_RSS else {}  # read before this run writes the file
    sandbox_port, smtp_port = free_port(), free_port()
    sandbox_env = sender_env(env, smtp_port, sandbox_port)
    email = ["-m", "restock_sender", "--channel", "email"]
    db = await asyncpg.connect(env["RESTOCK_DATABASE_URL"])
    broker = await Broker.connect(env["RESTOCK_AMQP_URL"])
    try:
        seeder = Seeder(db, await create_shop(db))
        with process(["-m", "restock_sandbox"], sandbox_env, sandbox_port):
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{sandbox_port}") as sandbox:
                # In a thread: the event loop keeps the broker connection's heartbeats going meanwhile.
                blast = await asyncio.to_thread(smtp_blast, smtp_port, EMAIL_JOBS)
                await sandbox.delete("/inbox/")
                with process(email, sandbox_env, free_port()):
                    e2e = await end_to_end(seeder, broker, sandbox)
                print(f"(a) {e2e:.1f}/s end to end, raw blast {blast:.1f}/s", flush=True)
                limits = {
                    "RESTOCK_EMAIL_GLOBAL_PER_SECOND": str(GLOBAL_LIMIT),
                    "RESTOCK_EMAIL_DOMAIN_LIMITS": json.dumps({"limited.test": DOMAIN_LIMIT}),
                }
                with process(email, {**sandbox_env, **limits}, free_port()):
                    capped = await limited(seeder, broker, sandbox)
                print(f"(b) {capped}", flush=True)
                sms_env = {**sandbox_env, "RESTOCK_TWILIO_SENDER_MPS": str(SMS_MPS)}
                with process(["-m", "restock_sender", "--channel", "sms"], sms_env, free_port()):
                    texts = await sms(seeder, broker, sandbox)
                print(f"(c) {texts}", flush=True)
                results = {
                    "email_e2e_per_s": figure(e2e, "messages/s", blast),
                    "limited_global_per_s": figure(capped["global_rate"], "messages/s", GLOBAL_LIMIT),
                    "limited_domain_per_s": figure(capped["domain_rate"], "messages/s", DOMAIN_LIMIT),
                    "limited_max_1s_window": figure(capped["global_max_1s"], "messages", GLOBAL_LIMIT),
                    "limited_domain_max_1s_window": figure(capped["domain_max_1s"], "messages", DOMAIN_LIMIT),
                    "limited_beside_max_1s_window": figure(
                        capped["beside_global_max_1s"], "messages", GLOBAL_LIMIT
                    ),
                    "other_domains_p99_ms": figure(capped["beside_p99_ms"], "ms", capped["alone_p99_ms"]),
                    "sms_per_s": figure(texts["rate"], "messages/s", SMS_MPS),
                    "sms_max_1s_window": figure(texts["max_1s"], "messages", SMS_MPS),
                }
                write(results)  # (d) is long: what is measured so far is kept should it be stopped
                if SKIP_RSS:
                    return {**results, **carried}
                with process(email, sandbox_env, free_port()) as sender:
                    rss = await memory(seeder, broker, sandbox, sender)
                unit = f"MiB (peak, after {rss['jobs']} jobs)"
                results["sender_rss_mb"] = figure(rss["peak_rss"], unit, rss["idle_rss"])
    finally:
        await broker.close()
        await db.close()
    return results


def carried_rss() -> dict[str, dict[str, Any]]:
    """(d)'s figure from the last results file, its unit marked as carried over."""
    if not RESULTS.exists():
        return {}
    previous = json.loads(RESULTS.read_text()).get("sender_rss_mb")
    if previous is None:
        return {}
    unit = str(previous["unit"])
    if "earlier run" not in unit:
        unit += ", from an earlier run"
    return {"sender_rss_mb": {**previous, "unit": unit}}


def write(results: dict[str, dict[str, Any]]) -> None:
    if not QUICK:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")


def main() -> None:
    with private_infrastructure() as env:
        results = asyncio.run(measure(env))
    write(results)
    print(f"{'metric':32} {'value':>12} {'baseline':>12} {'ratio':>8}  unit")
    for name, row in results.items():
        baseline = "" if row["baseline"] is None else row["baseline"]
        ratio = "" if row["ratio"] is None else row["ratio"]
        print(f"{name:32} {row['value']:>12} {baseline!s:>12} {ratio!s:>8}  {row['unit']}")


if __name__ == "__main__":
    main()
