"""Benchmark of the storefront signup (issue 5), against the real PostgreSQL and Redis on this machine.

In one run, in a private database (removed at the end, even on failure):

1. The real admin-api (``python -m restock_admin``) with the signup rate limits raised out of the way,
   and a bare Litestar route at the same path (``/proxy/subscriptions``) that reads the JSON body and
   answers 201 with no other work (this file, run with ``--serve-bare``), both served by uvicorn exactly as
   every service is (``restock_common.service.serve``), on free loopback ports.
2. Two shops registered with the admin CLI: one with double opt-in off (a signup is one transaction: the
   subscription and its consent event), one with ``double_opt_in: email`` (plus its outbox row).
3. Closed loop: ``WORKERS`` concurrent shoppers, each sending its next signed App Proxy request as soon as
   the previous one answered, every request a distinct contact (so each one is a new subscription), for
   ``DURATION_S`` after ``WARMUP_S``; first against the bare route, then the admin-api (DOI off), then the
   admin-api (DOI email). Throughput is answered requests per second; latency is per request.
4. The admin-api's peak RSS (``VmHWM``).

The admin-api is checked, not trusted: every measured request must answer 201, and the database must hold
exactly one subscription and one consent event per answered signup (and one outbox row per DOI signup).

Prints a table and writes ``bench/results/signup.json`` (DESIGN.md's format). Run from the repository
root: ``uv run --frozen python bench/signup.py`` (``make bench``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
import httpx
from tools.harness import (
    ROOT,
    Service,
    cleanup,
    database_url,
    drop_database,
    metric,
    migrate,
    run_checked,
    service,
)

from restock_common import signatures
from restock_sandbox.stack import set_shop_rules

RESULTS = ROOT / "bench" / "results" / "signup.json"

# Redis: the counters' keys expire within a minute (RESTOCK_SIGNUP_*_WINDOW_SECONDS below) and hold hashes
# only, so the bench shares the development db instead of flushing one a test run may be using.
REDIS_URL = os.environ.get("RESTOCK_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
SECRET = "bench-shopify-secret"
SHOP = "bench-signup.myshopify.com"
DOI_SHOP = "bench-signup-doi.myshopify.com"
PATH = "/proxy/subscriptions"

WORKERS = 16
CLIENTS = 4  # httpx clients, the workers round robin over them (one client's overhead grows with in-flight)
WARMUP_S = 2.0
DURATION_S = 10.0
REQUEST_TIMEOUT_S = 10.0


# --- the bare baseline ------------------------------------------------------------------------------


def serve_bare() -> None:
    """The baseline server: the same path, the body received and decoded, 201, nothing else."""
    from litestar import Litestar, Request, post

    from restock_common.service import health_routes, serve
    from restock_common.settings import Settings

    @post(PATH, status_code=201)
    async def subscribe(request: Request[Any, Any, Any]) -> dict[str, Any]:
        body = await request.json()
        return {"id": 1, "variant_id": body.get("variant_id"), "channel": "email", "state": "confirmed"}

    settings = Settings()
    serve(
        Litestar(route_handlers=[*health_routes({}), subscribe], logging_config=None),
        host="127.0.0.1",
        port=settings.http_port or 8199,
    )


# --- private infrastructure -------------------------------------------------------------------------


@contextmanager
def private_database() -> Iterator[dict[str, str]]:
    """A migrated database ``restock_bench_<random>``; the RESTOCK_* env of the admin-api."""
    name = f"restock_bench_{uuid.uuid4().hex[:10]}"
    env = {
        "RESTOCK_DATABASE_URL": database_url(name),
        "RESTOCK_REDIS_URL": REDIS_URL,
        "RESTOCK_SHOPIFY_API_SECRET": SECRET,
        # Limits out of the way: every request comes from one IP here, and the limits are not measured.
        "RESTOCK_SIGNUP_IP_LIMIT": "100000000",
        "RESTOCK_SIGNUP_IP_WINDOW_SECONDS": "60",
        "RESTOCK_SIGNUP_CONTACT_WINDOW_SECONDS": "60",
        "RESTOCK_RETENTION_INTERVAL_SECONDS": "86400",
    }
    try:
        migrate(env)
        yield env
    finally:
        cleanup(f"drop database {name}", lambda: asyncio.run(drop_database(name)))


def signed_path(shop: str) -> str:
    """The App Proxy URL of a signup, signed now as Shopify signs it."""
    params = [
        ("shop", shop),
        ("logged_in_customer_id", ""),
        ("path_prefix", "/apps/restock"),
        ("timestamp", str(int(time.time()))),
    ]
    params.append(("signature", signatures.app_proxy_signature(SECRET, params)))
    return f"{PATH}?{urlencode(params)}"


@dataclass
class Load:
    """What one closed-loop run measured (the requests that started inside the measured window)."""

    latencies_ms: list[float]
    statuses: Counter[str]
    elapsed_s: float
    created: int  # 201 answers of the whole run, warm-up included: what the database must hold

    @property
    def rps(self) -> float:
        return len(self.latencies_ms) / self.elapsed_s

    def percentile(self, q: int) -> float:
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[q - 1]


async def closed_loop(url: str, shop: str, run: str) -> Load:
    """``WORKERS`` shoppers signing up distinct contacts back to back (see the module's rules)."""
    counter = itertools.count()
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    created = 0
    start = time.perf_counter()
    measure_from, stop_at = start + WARMUP_S, start + WARMUP_S + DURATION_S

    async def shopper(client: httpx.AsyncClient) -> None:
        nonlocal created
        while (began := time.perf_counter()) < stop_at:
            n = next(counter)
            body = {"variant_id": 1000 + n % 500, "email": f"shopper-{run}-{n}@example.com", "consent": True}
            try:
                answer = await client.post(signed_path(shop), json=body)
                status = str(answer.status_code)
            except httpx.HTTPError as error:
                status = type(error).__name__
            done = time.perf_counter()
            created += status == "201"
            if began >= measure_from:
                statuses[status] += 1
                if status == "201":
                    latencies.append((done - began) * 1000)

    limits = httpx.Limits(max_connections=WORKERS // CLIENTS)
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=url, limits=limits, timeout=REQUEST_TIMEOUT_S)
            )
            for _ in range(CLIENTS)
        ]
        await asyncio.gather(*(shopper(clients[i % CLIENTS]) for i in range(WORKERS)))
    return Load(latencies, statuses, DURATION_S, created)


async def check_stored(database_url: str, shop: str, load: Load, outbox_per_signup: int) -> None:
    """Every 201 is one subscription and one consent event (and its outbox row) in the database."""
    connection = await asyncpg.connect(database_url)
    try:
        tenant = await connection.fetchval("SELECT id FROM tenants WHERE shop_domain = $1", shop)
        subscriptions = await connection.fetchval(
            "SELECT count(*) FROM subscriptions WHERE tenant = $1", tenant
        )
        events = await connection.fetchval("SELECT count(*) FROM consent_events WHERE tenant = $1", tenant)
        outbox = await connection.fetchval("SELECT count(*) FROM outbox WHERE tenant = $1", tenant)
    finally:
        await connection.close()
    expected = (load.created, load.created, load.created * outbox_per_signup)
    if (subscriptions, events, outbox) != expected:
        raise RuntimeError(f"{shop}: stored {(subscriptions, events, outbox)}, expected {expected}")


# --- the run ----------------------------------------------------------------------------------------


async def measure(env: dict[str, str], admin: Service, bare: Service) -> tuple[dict[str, Any], list[str]]:
    for shop in (SHOP, DOI_SHOP):
        run_checked([sys.executable, "-m", "restock_admin", "shops", "add", shop, "--access-token", "x"], env)
    await set_shop_rules(env["RESTOCK_DATABASE_URL"], DOI_SHOP, updated_by="bench", double_opt_in="email")
    bare_load = await closed_loop(bare.url, SHOP, "bare")
    signup = await closed_loop(admin.url, SHOP, "off")
    doi = await closed_loop(admin.url, DOI_SHOP, "doi")
    await check_stored(env["RESTOCK_DATABASE_URL"], SHOP, signup, 0)
    await check_stored(env["RESTOCK_DATABASE_URL"], DOI_SHOP, doi, 1)
    results = {
        "signup_rps": metric(signup.rps, "signups/s", bare_load.rps),
        "signup_p99_ms": metric(signup.percentile(99), "ms", bare_load.percentile(99)),
        "signup_p50_ms": metric(signup.percentile(50), "ms", bare_load.percentile(50)),
        "signup_double_opt_in_rps": metric(doi.rps, "signups/s", bare_load.rps),
        "signup_double_opt_in_p99_ms": metric(doi.percentile(99), "ms", bare_load.percentile(99)),
        "signup_non_201": metric(
            sum(n for s, n in (signup.statuses + doi.statuses).items() if s != "201"), "requests"
        ),
        "admin_rss_mb": metric(admin.peak_rss_mib(), "MiB", bare.peak_rss_mib()),
    }
    mixes = [
        f"{name}: " + ", ".join(f"{s} {n}" for s, n in sorted(load.statuses.items()))
        for name, load in (("bare", bare_load), ("doi off", signup), ("doi email", doi))
    ]
    return results, mixes


def table(results: dict[str, Any], mixes: list[str]) -> str:
    rows = [f"{'metric':<30}{'value':>12}  {'unit':<10}{'baseline':>12}{'ratio':>9}"]
    for name, figure in results.items():
        baseline = "-" if figure["baseline"] is None else f"{figure['baseline']:.2f}"
        ratio = "-" if figure["ratio"] is None else f"{figure['ratio']:.2f}"
        rows.append(f"{name:<30}{figure['value']:>12.2f}  {figure['unit']:<10}{baseline:>12}{ratio:>9}")
    return "\n".join(
        [
            f"signup: closed loop, {WORKERS} concurrent shoppers, {DURATION_S:.0f} s after {WARMUP_S:.0f} s"
            " warm-up, distinct contacts; baseline = bare Litestar route at the same path, same run",
            *rows,
            *(f"responses {mix}" for mix in mixes),
        ]
    )


def _stop(signum: int, _: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    began = time.monotonic()
    with (
        private_database() as env,
        service(["-m", "restock_admin"], env) as admin,
        service([str(Path(__file__).resolve()), "--serve-bare"], env) as bare,
    ):
        results, mixes = asyncio.run(measure(env, admin, bare))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results, mixes))
    print(f"wrote {RESULTS.relative_to(ROOT)} in {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve-bare"]:
        serve_bare()
    else:
        main()
