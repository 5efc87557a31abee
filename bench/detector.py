"""Benchmark of the detector (issue 4), against the real PostgreSQL and RabbitMQ on this machine.

In one run, in a private database and RabbitMQ vhost (both removed at the end, even on failure):

1. The real detector (``python -m restock_detector``) and a bare Litestar route that does no work
   (``bench/baseline/bare_webhook.py``, served the same way) run as subprocesses on free loopback ports.
2. A shop is registered with the admin CLI, given debounce 0, and its catalogue sent as ``products/update``.
3. Open-loop load: signed ``inventory_levels/update`` webhooks at ``RATE`` requests/s for ``DURATION_S``,
   first against the bare route, then against the detector. Request *i* is due at ``t0 + i / RATE``
   whatever happened to the earlier ones, and its latency counts from that due time, so a server that
   falls behind shows it as latency instead of slowing the generator (no coordinated omission). The
   levels cycle per variant through ``LOAD_LEVELS``: still out, a restock, still out, inside the cooldown,
   already available.
4. Webhook -> ``restock.detected``: restocking webhooks (0 -> 5 on fresh variants) every
   ``EVENT_SPACING_S``, timed from the request's send to the message's arrival on a queue bound to the
   ``restock`` exchange.
5. The detector's peak RSS (``VmHWM``) after the load.
6. What the machine gave each measured run (``tools/machine.py``): the CPU time the hypervisor stole, and
   the server's CPU and run-queue wait; a latency is comparable with another run's only when these are.

Prints a table and writes ``bench/results/detector.json`` (DESIGN.md's format). Run from the repository
root: ``uv run --frozen python bench/detector.py`` (``make bench``).
"""

from __future__ import annotations

import asyncio
import json
import signal
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import asyncpg
import httpx
from tools import loadgen, machine
from tools.harness import (
    AMQP_ROOT,
    ROOT,
    Service,
    cleanup,
    database_url,
    drop_database,
    free_port,
    metric,
    migrate,
    rabbitmqctl,
    run_checked,
    service,
)

from restock_common import messages, signatures, topology
from restock_common.broker import Broker
from restock_sandbox.stack import set_shop_rules

Webhook = tuple[bytes, dict[str, str]]  # a body and its headers

RESULTS = ROOT / "bench" / "results" / "detector.json"
BARE_APP = ROOT / "bench" / "baseline" / "bare_webhook.py"

SECRET = "bench-shopify-secret"
SHOP = "bench-shop.myshopify.com"
LOCATION_ID = 7001
WEBHOOK_PATH = "/webhooks/shopify"

RATE = 500  # requests/s
DURATION_S = 10.0
WARMUP_REQUESTS = 500  # at RATE, before each measured run: connections, pools and caches warm
REQUEST_TIMEOUT_S = 5.0  # from the request's due time; later answers count as errors
CONNECTIONS = 64  # keep-alive connections of the open-loop generator
LOAD_VARIANTS = 1_000
LOAD_LEVELS = (0, 5, 0, 3, 7)
WARMUP_VARIANTS = 250
EVENT_SAMPLES = 200
EVENT_SPACING_S = 0.02
VARIANTS_PER_PRODUCT = 250
# Id ranges of the three catalogues (load, warm-up, event), far apart so they never collide.
LOAD_BASE, WARMUP_BASE, EVENT_BASE = 100_000, 300_000, 500_000
ITEM_OFFSET = 1_000_000  # a variant's inventory item id is its id + this

DRAIN_TIMEOUT_S = 60.0
EVENT_TIMEOUT_S = 30.0


# --- private infrastructure -------------------------------------------------------------------------


@contextmanager
def private_infrastructure() -> Iterator[dict[str, str]]:
    """A migrated database ``restock_bench_<random>`` and a vhost of the same name; the RESTOCK_* env."""
    name = f"restock_bench_{uuid.uuid4().hex[:10]}"
    env = {
        "RESTOCK_DATABASE_URL": database_url(name),
        "RESTOCK_AMQP_URL": f"{AMQP_ROOT}/{name}",
        "RESTOCK_SHOPIFY_API_SECRET": SECRET,
        # No Admin API here: the shop's first reconciliation sync fails fast (connection refused) instead of
        # reaching whatever listens on the sandbox's default port.
        "RESTOCK_SHOPIFY_API_BASE_URL": f"http://127.0.0.1:{free_port()}",
    }
    try:
        rabbitmqctl("add_vhost", name)
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        migrate(env)
        yield env
    finally:
        cleanup(f"drop database {name}", lambda: asyncio.run(drop_database(name)))
        cleanup(f"delete vhost {name}", lambda: rabbitmqctl("delete_vhost", name))


# --- the shop and its catalogue ---------------------------------------------------------------------


async def register_shop(env: dict[str, str]) -> None:
    """``restock_admin shops add``, then debounce 0, as the sandbox does for its demo shop."""
    run_checked([sys.executable, "-m", "restock_admin", "shops", "add", SHOP, "--access-token", "x"], env)
    await set_shop_rules(env["RESTOCK_DATABASE_URL"], SHOP, updated_by="bench", debounce_seconds=0)


def signed(topic: str, payload: object) -> Webhook:
    """A webhook as Shopify sends it: JSON body, HMAC header, a unique webhook id."""
    body = json.dumps(payload).encode()
    return body, {
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Shop-Domain": SHOP,
        "X-Shopify-Webhook-Id": str(uuid.uuid4()),
        "X-Shopify-Hmac-Sha256": signatures.shopify_webhook_hmac(SECRET, body),
    }


def product_webhooks(variant_ids: list[int]) -> list[Webhook]:
    """``products/update`` webhooks naming every variant (one product per ``VARIANTS_PER_PRODUCT``)."""
    webhooks = []
    for start in range(0, len(variant_ids), VARIANTS_PER_PRODUCT):
        product_id = variant_ids[start] + 10 * ITEM_OFFSET
        variants = [
            {
                "id": variant,
                "product_id": product_id,
                "title": f"Size {variant}",
                "sku": f"SKU-{variant}",
                "inventory_item_id": variant + ITEM_OFFSET,
                "inventory_quantity": 0,
            }
            for variant in variant_ids[start : start + VARIANTS_PER_PRODUCT]
        ]
        product = {"id": product_id, "title": "Hoodie", "variants": variants}
        webhooks.append(signed("products/update", product))
    return webhooks


class Levels:
    """``inventory_levels/update`` webhooks with ever-newer ``updated_at`` (older ones would be stale)."""

    def __init__(self) -> None:
        self.updated_at = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def webhook(self, variant: int, available: int) -> Webhook:
        self.updated_at += timedelta(milliseconds=1)
        payload = {
            "inventory_item_id": variant + ITEM_OFFSET,
            "location_id": LOCATION_ID,
            "available": available,
            "updated_at": self.updated_at.isoformat(),
            "admin_graphql_api_id": f"gid://shopify/InventoryLevel/{variant}",
        }
        return signed("inventory_levels/update", payload)

    def load(self, count: int) -> list[Webhook]:
        """``count`` webhooks: round *r* sends every load variant its ``LOAD_LEVELS[r]`` level."""
        return [
            self.webhook(LOAD_BASE + i % LOAD_VARIANTS, LOAD_LEVELS[(i // LOAD_VARIANTS) % len(LOAD_LEVELS)])
            for i in range(count)
        ]

    def warmup(self) -> list[Webhook]:
        return [self.webhook(WARMUP_BASE + i % WARMUP_VARIANTS, 0) for i in range(WARMUP_REQUESTS)]


async def send_all(client: httpx.AsyncClient, url: str, webhooks: list[Webhook]) -> None:
    for body, headers in webhooks:
        answer = await client.post(url, content=body, headers=headers)
        if answer.status_code != 200:
            raise RuntimeError(f"setup webhook refused: {answer.status_code} {answer.text}")


# --- open-loop load ---------------------------------------------------------------------------------


@dataclass
class Load:
    """What one open-loop run measured."""

    latencies_ms: list[float]
    errors: int
    statuses: Counter[str]
    elapsed_s: float

    @property
    def rps(self) -> float:
        return len(self.latencies_ms) / self.elapsed_s

    def percentile(self, q: int) -> float:
        return _p(self.latencies_ms, q)


async def _timed(pool: loadgen.Pool, request: bytes, due: float) -> tuple[float | None, str, float]:
    """(latency from the due time in ms or None, status or error, when it ended); a request still
    unanswered ``REQUEST_TIMEOUT_S`` after its due time is abandoned and counted as an error."""
    try:
        async with asyncio.timeout_at(_loop_time(due + REQUEST_TIMEOUT_S)):
            answer = await pool.request(request)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, loadgen.ProtocolError) as error:
        return None, type(error).__name__, time.perf_counter()
    except TimeoutError:
        return None, "TimeoutError", time.perf_counter()
    done = time.perf_counter()
    if answer.status != 200:
        return None, f"http {answer.status}", done
    return (done - due) * 1000, str(json.loads(answer.body).get("status")), done


def _loop_time(perf_counter_at: float) -> float:
    """A ``time.perf_counter()`` instant on the event loop's clock."""
    return asyncio.get_running_loop().time() + perf_counter_at - time.perf_counter()


async def open_loop(url: str, webhooks: list[Webhook]) -> Load:
    """Send each webhook at its due time (``RATE`` per second), whether or not earlier ones answered.

    The requests are encoded before the run and sent by ``tools.loadgen`` over ``CONNECTIONS`` keep-alive
    connections: the generator shares this machine's two cores with the servers, and httpx's clients cost
    as much CPU per request as the detector spends answering it (ADR 22).
    """
    requests = [loadgen.encode_post(url, WEBHOOK_PATH, body, headers) for body, headers in webhooks]
    async with loadgen.Pool(url, CONNECTIONS) as pool:
        start = time.perf_counter() + 0.05
        tasks = []
        for i, request in enumerate(requests):
            due = start + i / RATE
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_timed(pool, request, due)))
        outcomes = await asyncio.gather(*tasks)
    latencies = [latency for latency, _, _ in outcomes if latency is not None]
    last_done = max(done for _, _, done in outcomes)
    return Load(
        latencies_ms=latencies,
        errors=len(outcomes) - len(latencies),
        statuses=Counter(status for _, status, _ in outcomes),
        elapsed_s=last_done - start,
    )


async def measured_run(server: Service, levels: Levels) -> tuple[Load, machine.Usage]:
    """The warm-up, then the measured load, with what the machine gave the server during the latter."""
    await open_loop(server.url, levels.warmup())
    load = levels.load(int(RATE * DURATION_S))
    began, before = time.perf_counter(), machine.sample(server.process.pid)
    measured = await open_loop(server.url, load)
    return measured, machine.usage(before, machine.sample(server.process.pid), time.perf_counter() - began)


# --- webhook -> restock.detected ----------------------------------------------------------------------


async def wait_outbox_drained(database_url: str) -> None:
    """Poll until the relay has published every outbox row, so the next phase does not queue behind them."""
    connection = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while await connection.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"outbox not drained within {DRAIN_TIMEOUT_S} s")
            await asyncio.sleep(0.1)
    finally:
        await connection.close()


async def wait_requests_settled(database_url: str) -> None:
    """Poll until no webhook was received for a second, then until the outbox is drained: a server that fell
    behind goes on with requests the load generator gave up on, and the next phase must not queue behind
    them (or it would measure that backlog, not the webhook -> event path)."""
    connection = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + 3 * DRAIN_TIMEOUT_S
        last = -1
        while (count := await connection.fetchval("SELECT count(*) FROM webhook_receipts")) != last:
            if time.monotonic() > deadline:
                raise RuntimeError(f"webhooks still arriving after {3 * DRAIN_TIMEOUT_S} s")
            last = count
            await asyncio.sleep(1.0)
    finally:
        await connection.close()
    await wait_outbox_drained(database_url)


async def webhook_to_event(url: str, amqp_url: str, levels: Levels) -> list[float]:
    """Milliseconds from sending each restocking webhook to its ``restock.detected`` arriving."""
    variants = [EVENT_BASE + j for j in range(EVENT_SAMPLES)]
    sent: dict[int, float] = {}
    arrived: dict[int, float] = {}
    all_arrived = asyncio.Event()

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        at = time.perf_counter()
        event = messages.decode(message.body, messages.RestockDetected)
        arrived.setdefault(event.variant_id, at)
        if len(arrived) >= EVENT_SAMPLES:
            all_arrived.set()

    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue("", exclusive=True)  # server-named, gone with the connection
        await queue.bind(topology.EXCHANGE, topology.RESTOCK_DETECTED)
        await queue.consume(on_message, no_ack=True)
        async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S) as client:
            await send_all(client, WEBHOOK_PATH, [levels.webhook(variant, 0) for variant in variants])
            await _send_spaced(client, [(variant, levels.webhook(variant, 5)) for variant in variants], sent)
        await asyncio.wait_for(all_arrived.wait(), EVENT_TIMEOUT_S)
    finally:
        await connection.close()
    return [(arrived[variant] - sent[variant]) * 1000 for variant in variants]


async def _send_spaced(
    client: httpx.AsyncClient, webhooks: list[tuple[int, Webhook]], sent: dict[int, float]
) -> None:
    async def send(variant: int, body: bytes, headers: dict[str, str]) -> None:
        sent[variant] = time.perf_counter()
        answer = await client.post(WEBHOOK_PATH, content=body, headers=headers)
        if answer.json().get("status") != "restock":
            raise RuntimeError(f"expected a restock, got {answer.status_code} {answer.text}")

    start = time.perf_counter()
    tasks = []
    for j, (variant, (body, headers)) in enumerate(webhooks):
        delay = start + j * EVENT_SPACING_S - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(variant, body, headers)))
    await asyncio.gather(*tasks)


# --- the run ----------------------------------------------------------------------------------------


def _p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


async def measure(env: dict[str, str], detector: Service, bare: Service) -> tuple[dict[str, Any], str]:
    await register_shop(env)
    # The dispatcher's queue, as in production: without a bound queue every restock.detected publish
    # would be unroutable and the relay would retry instead of publishing.
    broker = await Broker.connect(env["RESTOCK_AMQP_URL"])
    try:
        await broker.declare_queue(topology.dispatcher_queue(broker.delivery_limit))
    finally:
        await broker.close()
    catalogue = [
        *range(LOAD_BASE, LOAD_BASE + LOAD_VARIANTS),
        *range(WARMUP_BASE, WARMUP_BASE + WARMUP_VARIANTS),
        *range(EVENT_BASE, EVENT_BASE + EVENT_SAMPLES),
    ]
    async with httpx.AsyncClient(base_url=detector.url, timeout=REQUEST_TIMEOUT_S) as client:
        await send_all(client, WEBHOOK_PATH, product_webhooks(catalogue))
    # The bare route first: the detector's relay then publishes its backlog while nothing is measured.
    bare_load, bare_machine = await measured_run(bare, Levels())
    levels = Levels()
    detector_load, detector_machine = await measured_run(detector, levels)
    await wait_requests_settled(env["RESTOCK_DATABASE_URL"])
    event_ms = await webhook_to_event(detector.url, env["RESTOCK_AMQP_URL"], levels)
    results = {
        "webhook_p99_ms": metric(detector_load.percentile(99), "ms", bare_load.percentile(99)),
        "webhook_p50_ms": metric(detector_load.percentile(50), "ms", bare_load.percentile(50)),
        "webhook_rps": metric(detector_load.rps, "requests/s", bare_load.rps),
        "webhook_errors": metric(detector_load.errors, "requests", bare_load.errors),
        "webhook_to_event_p99_ms": metric(_p(event_ms, 99), "ms"),
        "webhook_to_event_p50_ms": metric(_p(event_ms, 50), "ms"),
        "detector_rss_mb": metric(detector.peak_rss_mib(), "MiB", bare.peak_rss_mib()),
        # What the machine gave each run (tools/machine.py): latencies of runs are comparable only when
        # these are too. Steal is of all CPU time; the others are of one CPU, for the server's main thread.
        "cpu_steal_pct": metric(detector_machine.steal_pct, "%", bare_machine.steal_pct),
        "server_cpu_pct": metric(detector_machine.cpu_pct, "% of a CPU", bare_machine.cpu_pct),
        "server_runqueue_wait_pct": metric(
            detector_machine.runqueue_wait_pct, "% of a CPU", bare_machine.runqueue_wait_pct
        ),
    }
    mix = ", ".join(f"{status} {count}" for status, count in sorted(detector_load.statuses.items()))
    return results, mix


def table(results: dict[str, Any], mix: str) -> str:
    """The figures beside their baselines (the bare route's where there is one)."""
    rows = [f"{'metric':<26}{'value':>12}  {'unit':<11}{'baseline':>12}{'ratio':>9}"]
    for name, figure in results.items():
        baseline = "-" if figure["baseline"] is None else f"{figure['baseline']:.2f}"
        ratio = "-" if figure["ratio"] is None else f"{figure['ratio']:.2f}"
        rows.append(f"{name:<26}{figure['value']:>12.2f}  {figure['unit']:<11}{baseline:>12}{ratio:>9}")
    return "\n".join(
        [
            f"detector: open loop {RATE} req/s x {DURATION_S:.0f} s, baseline = bare Litestar route; "
            f"p50/p99 of answered requests; errors: not 200 or no answer {REQUEST_TIMEOUT_S:.0f} s after due",
            *rows,
            f"detector responses: {mix}",
            f"webhook -> restock.detected: {EVENT_SAMPLES} restocks, {EVENT_SPACING_S * 1000:.0f} ms apart",
        ]
    )


def _stop(signum: int, _: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    # Stopped by a signal, the run still removes its database, vhost and servers (the ``finally``s):
    # SIGTERM becomes an exception too, and SIGINT is restored for a shell that started us ignoring it.
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    began = time.monotonic()
    with (
        private_infrastructure() as env,
        service(["-m", "restock_detector"], env) as detector,
        service([str(BARE_APP)], env) as bare,
    ):
        results, mix = asyncio.run(measure(env, detector, bare))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results, mix))
    print(f"wrote {RESULTS.relative_to(ROOT)} in {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
