"""Benchmark of the dispatcher's fan-out (issue 6), against the real PostgreSQL, Redis and RabbitMQ here.

In one run, in a private database and RabbitMQ vhost (both removed at the end, even on failure) and
under a variant id of its own in Redis db ``RESTOCK_BENCH_REDIS_DB`` (its keys deleted at the end):

1. A shop and 100,000 confirmed subscriptions of one variant, seeded with one ``generate_series`` insert.
2. The real dispatcher (``python -m restock_dispatcher``, a subprocess) consumes one ``restock.detected``
   for that variant. Measured: from publishing the event to the later of the last job id arriving on
   ``jobs.email`` (a consumer in this process) and the event's publish cursor committed at its end
   (``published_at``, ADR 24), no job left without ``enqueued_at``; the broker hops of the event and of
   the last batch are inside the figure. Then the
   database is checked: 100,000 jobs, every one ``enqueued_at``.
3. The baseline, in the same run and vhost: 100,000 individual persistent messages (one job id each)
   published with aio-pika, each awaiting its publisher confirm, as a per-message dispatcher would.
4. Peak RSS (``VmHWM``) of the dispatcher after the 100,000 fan-out, and of a fresh dispatcher after a
   1,000,000-subscriber fan-out (another variant): flat means the targets are streamed, not loaded.

Prints a table and writes ``bench/results/dispatch.json`` (DESIGN.md's format). Run from the repository
root: ``uv run --frozen python bench/dispatch.py`` (``make bench``); ``--small`` runs 10,000 / 100,000.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import aio_pika
import asyncpg
import redis.asyncio as aioredis
from tools.harness import (
    AMQP_ROOT,
    ROOT,
    Service,
    cleanup,
    database_url,
    drop_database,
    migrate,
    rabbitmqctl,
    service,
)

from restock_common import keys, messages, topology
from restock_common.broker import Broker
from restock_common.messages import JobBatch, RestockDetected

RESULTS = ROOT / "bench" / "results" / "dispatch.json"

REDIS_ROOT = os.environ.get("RESTOCK_BENCH_REDIS_ROOT", "redis://127.0.0.1:6379")
REDIS_DB = int(os.environ.get("RESTOCK_BENCH_REDIS_DB", "15"))
SHOP = "bench-dispatch.myshopify.com"

FANOUT_TIMEOUT_S = 600.0


# --- private infrastructure -------------------------------------------------------------------------


async def _delete_redis_keys(redis_url: str, pattern: str) -> None:
    client = aioredis.from_url(redis_url)
    try:
        batch = []
        async for key in client.scan_iter(match=pattern, count=10_000):
            batch.append(key)
            if len(batch) >= 10_000:
                await client.unlink(*batch)
                batch.clear()
        if batch:
            await client.unlink(*batch)
    finally:
        await client.aclose()


@contextmanager
def private_infrastructure(variants: list[int]) -> Iterator[dict[str, str]]:
    """A migrated database and a vhost ``restock_bench_<random>``; the RESTOCK_* env of the run."""
    name = f"restock_bench_{uuid.uuid4().hex[:10]}"
    env = {
        "RESTOCK_DATABASE_URL": database_url(name),
        "RESTOCK_AMQP_URL": f"{AMQP_ROOT}/{name}",
        "RESTOCK_REDIS_URL": f"{REDIS_ROOT}/{REDIS_DB}",
    }
    try:
        rabbitmqctl("add_vhost", name)
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        migrate(env)
        yield env
    finally:
        cleanup(f"drop database {name}", lambda: asyncio.run(drop_database(name)))
        cleanup(f"delete vhost {name}", lambda: rabbitmqctl("delete_vhost", name))
        for variant in variants:
            pattern = f"restock:freeze:{variant}:*"
            cleanup(
                f"remove the redis keys {pattern}",
                lambda pattern=pattern: asyncio.run(_delete_redis_keys(env["RESTOCK_REDIS_URL"], pattern)),
            )


@contextmanager
def dispatcher(env: dict[str, str]) -> Iterator[Service]:
    """``python -m restock_dispatcher``, ready, stopped with SIGTERM at the end."""
    with service(["-m", "restock_dispatcher"], env, stop_timeout=60) as running:
        yield running


# --- the shop and its subscribers -------------------------------------------------------------------


async def seed(database_url: str, variants: dict[int, int]) -> int:
    """The shop, and ``count`` confirmed subscriptions per variant (one statement per variant)."""
    connection = await asyncpg.connect(database_url)
    try:
        tenant = await connection.fetchval("INSERT INTO tenants (shop_domain) VALUES ($1) RETURNING id", SHOP)
        for variant, count in variants.items():
            await connection.execute(
                "INSERT INTO subscriptions (tenant, variant_id, channel, email, contact_hash, state,"
                " subscribed_at, confirmed_at)"
                " SELECT $1, $2::bigint, 'email', 'shopper' || g || '@example.com',"
                " md5($2::bigint::text || ':' || g::text),"
                " 'confirmed', now() - interval '30 days' + g * interval '1 millisecond', now()"
                " FROM generate_series(1, $3) g",
                tenant,
                variant,
                count,
            )
        await connection.execute("ANALYZE subscriptions")
        return int(tenant)
    finally:
        await connection.close()


async def restock_event(database_url: str, tenant: int, variant: int) -> RestockDetected:
    now = datetime.now(UTC)
    window = keys.restock_window(now)
    connection = await asyncpg.connect(database_url)
    try:
        event_id = await connection.fetchval(
            "INSERT INTO restock_events (tenant, variant_id, available, restock_window, source, detected_at)"
            " VALUES ($1, $2, 10, $3, 'webhook', $4) RETURNING id",
            tenant,
            variant,
            window,
            now,
        )
    finally:
        await connection.close()
    return RestockDetected(
        restock_event_id=event_id,
        tenant_id=tenant,
        shop_domain=SHOP,
        variant_id=variant,
        available=10,
        restock_window=window,
        detected_at=now,
    )


# --- measurements -----------------------------------------------------------------------------------


async def fanout(env: dict[str, str], event: RestockDetected, targets: int) -> float:
    """Seconds from publishing ``restock.detected`` to the last of ``targets`` job ids on ``jobs.email``."""
    connection = await aio_pika.connect(env["RESTOCK_AMQP_URL"])
    seen: set[int] = set()
    done = asyncio.Event()
    last_at = 0.0

    async def on_batch(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal last_at
        seen.update(messages.decode(message.body, JobBatch).job_ids)
        if len(seen) >= targets and not done.is_set():
            last_at = time.perf_counter()
            done.set()

    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=1000)
        spec = topology.sender_queue("email", 5)
        queue = await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments, passive=True)
        await queue.purge()
        await queue.consume(on_batch, no_ack=True)
        broker = await Broker.connect(env["RESTOCK_AMQP_URL"])
        try:
            started = time.perf_counter()
            await broker.publish(event, topology.RESTOCK_DETECTED)
        finally:
            await broker.close()
        await asyncio.wait_for(done.wait(), FANOUT_TIMEOUT_S)
        # The last page's cursor commits just after its confirms: the fan-out ends when it has.
        committed_at = await all_published(env["RESTOCK_DATABASE_URL"], event.restock_event_id)
        await queue.purge()
    finally:
        await connection.close()
    return max(last_at, committed_at) - started


async def all_published(database_url: str, event_id: int) -> float:
    """When the event's publish cursor reached its end (``published_at``; ADR 24) and no job of the event is
    left pending without ``enqueued_at`` (polled every 10 ms)."""
    connection = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + FANOUT_TIMEOUT_S
        while await connection.fetchval(
            "SELECT EXISTS (SELECT 1 FROM restock_events WHERE id = $1 AND published_at IS NULL)"
            " OR EXISTS (SELECT 1 FROM notification_jobs WHERE restock_event = $1 AND state = 'pending'"
            " AND enqueued_at IS NULL)",
            event_id,
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("event left unpublished")
            await asyncio.sleep(0.01)
        return time.perf_counter()
    finally:
        await connection.close()


async def check_committed(database_url: str, event_id: int, targets: int) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        total, enqueued = await connection.fetchrow(
            "SELECT count(*), count(enqueued_at) FROM notification_jobs WHERE restock_event = $1", event_id
        )
    finally:
        await connection.close()
    if (total, enqueued) != (targets, targets):
        raise RuntimeError(f"expected {targets} jobs enqueued, found {total} jobs, {enqueued} enqueued")


async def per_message_baseline(amqp_url: str, count: int) -> float:
    """Seconds to publish ``count`` persistent messages one by one, each awaiting its confirm."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(
            "bench.per-message", durable=True, arguments={"x-queue-type": "quorum"}
        )
        exchange = channel.default_exchange
        started = time.perf_counter()
        for job_id in range(count):
            body = messages.encode(JobBatch(channel="email", job_ids=[job_id]))
            await exchange.publish(
                aio_pika.Message(
                    body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, message_id=str(job_id)
                ),
                routing_key=queue.name,
                mandatory=True,
            )
        elapsed = time.perf_counter() - started
        await queue.delete(if_unused=False, if_empty=False)
    finally:
        await connection.close()
    return elapsed


# --- the run ----------------------------------------------------------------------------------------


def _metric(
    value: float, unit: str, baseline: float | None = None, *, inverse: bool = False
) -> dict[str, Any]:
    """``ratio`` = value / baseline, or baseline / value with ``inverse`` (a speed-up for durations)."""
    ratio = None
    if baseline:
        ratio = round(baseline / value if inverse else value / baseline, 3)
    return {
        "value": round(value, 3),
        "unit": unit,
        "baseline": None if baseline is None else round(baseline, 3),
        "ratio": ratio,
    }


async def measure_fanout(env: dict[str, str], tenant: int, variant: int, targets: int) -> tuple[float, float]:
    with dispatcher(env) as running:
        event = await restock_event(env["RESTOCK_DATABASE_URL"], tenant, variant)
        seconds = await fanout(env, event, targets)
        await check_committed(env["RESTOCK_DATABASE_URL"], event.restock_event_id, targets)
        return seconds, running.peak_rss_mib()


async def measure(env: dict[str, str], small: int, large: int, variants: tuple[int, int]) -> dict[str, Any]:
    tenant = await seed(env["RESTOCK_DATABASE_URL"], {variants[0]: small, variants[1]: large})
    broker = await Broker.connect(env["RESTOCK_AMQP_URL"])
    try:  # the sender's queue exists in production; without it a batch would be unroutable
        await broker.declare_queue(topology.sender_queue("email", broker.delivery_limit))
    finally:
        await broker.close()
    fanout_s, rss_small = await measure_fanout(env, tenant, variants[0], small)
    baseline_s = await per_message_baseline(env["RESTOCK_AMQP_URL"], small)
    fanout_large_s, rss_large = await measure_fanout(env, tenant, variants[1], large)
    small_label, large_label = _label(small), _label(large)
    return {
        f"fanout_{small_label}_s": _metric(fanout_s, "s", baseline_s, inverse=True),
        f"fanout_{small_label}_jobs_per_s": _metric(small / fanout_s, "jobs/s", small / baseline_s),
        f"rss_{small_label}_mb": _metric(rss_small, "MiB"),
        f"rss_{large_label}_mb": _metric(rss_large, "MiB", rss_small),
        f"fanout_{large_label}_s": _metric(fanout_large_s, "s"),
    }


def _label(count: int) -> str:
    return f"{count // 1_000_000}m" if count >= 1_000_000 else f"{count // 1000}k"


def table(results: dict[str, Any]) -> str:
    rows = [f"{'metric':<24}{'value':>12}  {'unit':<8}{'baseline':>12}{'ratio':>9}"]
    for name, metric in results.items():
        baseline = "-" if metric["baseline"] is None else f"{metric['baseline']:.2f}"
        ratio = "-" if metric["ratio"] is None else f"{metric['ratio']:.2f}"
        rows.append(f"{name:<24}{metric['value']:>12.2f}  {metric['unit']:<8}{baseline:>12}{ratio:>9}")
    return "\n".join(
        [
            "dispatch: restock.detected published -> last job id on jobs.email (dispatcher subprocess);",
            "baseline = the same number of single-id messages published one by one with confirms (aio-pika);",
            "ratio of fanout = baseline / value (speed-up); of rss_large = value / rss_small (flat = 1)",
            *rows,
        ]
    )


def _stop(signum: int, _: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="10,000 and 100,000 subscribers (a quick check)")
    args = parser.parse_args()
    small, large = (10_000, 100_000) if args.small else (100_000, 1_000_000)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    began = time.monotonic()
    base = random.randrange(10**12, 10**13)  # variant ids of this run alone (their Redis keys are deleted)
    variants = (base, base + 1)
    with private_infrastructure(list(variants)) as env:
        results = asyncio.run(measure(env, small, large, variants))
    if not args.small:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    where = RESULTS.relative_to(ROOT) if not args.small else "nothing (--small)"
    print(f"wrote {where} in {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
