"""``setup_tracing`` in a real process: once per process, asyncpg and redis instrumented, spans exported over
OTLP/HTTP (to the sandbox's receiver) as the standard variables say, contacts redacted on the way out."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import uvicorn
from litestar import Litestar

from restock_sandbox.otlp.routes import otlp_router
from restock_sandbox.otlp.spans import SpanStore

pytestmark = pytest.mark.integration

PROBE = """
import asyncio, os
import asyncpg
import redis.asyncio as aioredis
from opentelemetry import trace
from restock_common.telemetry import current_trace_id, setup_tracing

provider = setup_tracing("probe")
assert setup_tracing("again") is provider, "a second setup must return the process's provider"


async def main() -> None:
    idle = await asyncpg.connect(os.environ["RESTOCK_DATABASE_URL"])
    await idle.fetchval("SELECT 1")  # outside any operation, as a readiness probe: not exported
    await idle.close()
    with trace.get_tracer("probe").start_as_current_span("probe for ada@example.com"):
        connection = await asyncpg.connect(os.environ["RESTOCK_DATABASE_URL"])
        await connection.fetchval("SELECT $1::text", "grace@example.org")
        await connection.close()
        client = aioredis.from_url(os.environ["RESTOCK_REDIS_URL"])
        await client.set("probe:+15005550006", "1")
        await client.delete("probe:+15005550006")
        await client.aclose()
        print(current_trace_id())


asyncio.run(main())
# No explicit flush: the SDK provider flushes at exit, as every service relies on after a graceful stop.
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def _receiver(store: SpanStore) -> AsyncIterator[str]:
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(Litestar([otlp_router(store)]), host="127.0.0.1", port=port, log_config=None)
    )
    task = asyncio.create_task(server.serve())
    deadline = asyncio.get_running_loop().time() + 10
    while not server.started:
        assert not task.done(), "receiver failed to start"
        assert asyncio.get_running_loop().time() < deadline, "receiver did not start in time"
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def _run_probe(test_env: dict[str, str], **otel: str) -> str:
    environ = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        PROBE,
        env={**environ, **test_env, **otel},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, stderr.decode()
    return stdout.decode().strip()


async def test_a_process_exports_its_spans_with_database_and_redis_children(test_env: dict[str, str]) -> None:
    store = SpanStore()
    async with _receiver(store) as url:
        trace_id = await _run_probe(test_env, OTEL_EXPORTER_OTLP_ENDPOINT=url)

    assert [summary.trace_id for summary in store.recent()] == [trace_id]  # the idle query made no trace
    spans = store.trace(trace_id)
    [root] = [span for span in spans if span.parent_span_id is None]
    assert root.service == "probe"  # the first setup's name: the second call changed nothing
    assert root.name == "probe for [email]"
    children = [span for span in spans if span.parent_span_id == root.span_id]
    postgres = [span for span in children if span.attributes.get("db.system") == "postgresql"]
    redis = [span for span in children if span.attributes.get("db.system") == "redis"]
    assert postgres
    assert redis
    assert all(span.kind == "CLIENT" for span in postgres + redis)
    assert any("SELECT $1::text" in str(span.attributes.get("db.statement")) for span in postgres)
    assert {str(span.attributes.get("db.statement")) for span in redis} >= {"SET ? ?", "DEL ?"}
    everything = repr(spans)
    assert "example.org" not in everything  # parameters are not captured
    assert "example.com" not in everything
    assert "5005550006" not in everything


async def test_export_none_keeps_spans_local_and_a_disabled_sdk_makes_none(test_env: dict[str, str]) -> None:
    store = SpanStore()
    async with _receiver(store) as url:
        traced = await _run_probe(test_env, OTEL_EXPORTER_OTLP_ENDPOINT=url, OTEL_TRACES_EXPORTER="none")
        disabled = await _run_probe(test_env, OTEL_EXPORTER_OTLP_ENDPOINT=url, OTEL_SDK_DISABLED="true")

    assert len(traced) == 32  # spans still exist (ids for logs and traceparents) ...
    assert len(store) == 0  # ... but none left the process (both processes exited after shutdown)
    assert disabled == "None"


LOGGING_PROBE = """
import logging, warnings
from opentelemetry import trace
from restock_common.telemetry import setup_logging, setup_tracing

setup_logging("probe")
setup_tracing("probe")
log = logging.getLogger("restock.probe")
log.info("outside any span")
with trace.get_tracer("probe").start_as_current_span("work"):
    log.warning("sent to %s", "ada@example.com", extra={"to": "+15005550006", "job_id": 3})
warnings.warn("old api", DeprecationWarning, stacklevel=1)
raise RuntimeError("crash while mailing grace@example.org")
"""


async def test_a_process_writes_nothing_but_json_lines_with_trace_ids_and_no_contacts() -> None:
    environ = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-W",
        "always",
        "-c",
        LOGGING_PROBE,
        env=environ,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1  # the uncaught exception still ends the process as a failure
    assert stdout == b""
    text = stderr.decode()
    events = [json.loads(line) for line in text.splitlines()]  # every line is one JSON event
    assert "example.com" not in text
    assert "example.org" not in text
    assert "5005550006" not in text
    by_message = {event["msg"]: event for event in events}
    assert "trace_id" not in by_message["outside any span"]
    inside = by_message["sent to [email]"]
    assert len(inside["trace_id"]) == 32
    assert len(inside["span_id"]) == 16
    assert (inside["to"], inside["job_id"], inside["service"]) == ("[phone]", 3, "probe")
    assert any("old api" in event["msg"] and event["logger"] == "py.warnings" for event in events)
    crash = by_message["uncaught exception"]
    assert crash["level"] == "critical"
    assert "RuntimeError: crash while mailing [email]" in crash["exc"]
