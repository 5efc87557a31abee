"""End to end, issue 8 items 1 and 2 as the real processes do them: every service exports its spans to the
sandbox's OTLP receiver (the standard ``OTEL_*`` variables only), one restock is one trace from the detector
to the sender across RabbitMQ, the email carries that trace, and every line any process writes is a JSON
event with no contact in it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from restock_sandbox import demo
from restock_sandbox.stack import Ports, Stack, register_shop

pytestmark = pytest.mark.e2e

SHOP = "trace-shop.myshopify.com"
SHOPPER = "ada.trace@example.com"
SERVICES = {"admin", "detector", "dispatcher", "sender-email"}


@pytest.fixture(scope="module")
def traced_stack(test_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    ports = Ports.free()
    # Every test of the run shares one Redis db and signs up from 127.0.0.1: the per-IP signup limit (tested
    # on its own in the admin-api's tests) would refuse this stack's demo signups after earlier tests'.
    env = {
        **test_env,
        "RESTOCK_SIGNUP_IP_LIMIT": "1000000",
        "RESTOCK_SANDBOX_SHOP_DOMAIN": SHOP,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{ports.sandbox}",
        "OTEL_BSP_SCHEDULE_DELAY": "200",  # export every 0.2 s instead of 5 s: the test reads the trace
    }
    register_shop(env, SHOP)
    running = Stack(env=env, ports=ports, log_dir=tmp_path_factory.mktemp("trace-logs"))
    try:
        running.start(["sandbox", *sorted(SERVICES)])
        running.wait_ready(timeout=90)
        yield running
    finally:
        running.stop()


def _wait_for(stack: Stack, predicate, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    assert stack.log_dir is not None
    tails = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(stack.log_dir.glob("*.log")))
    raise AssertionError(f"timed out waiting for {what}\n{tails}")


def _traceparent(message: dict[str, Any]) -> str:
    return next(value for name, value in message["headers"] if name.lower() == "traceparent")


def _spans_of_every_hop(client: httpx.Client, base: str, trace_id: str) -> list[dict[str, Any]] | None:
    answer = client.get(f"{base}/otlp/traces/{trace_id}")
    if answer.status_code != 200:
        return None
    # Each process exports on its own schedule: wait for the webhook's span, both consumers and their parents.
    spans: list[dict[str, Any]] = answer.json()["spans"]
    ids = {span["span_id"] for span in spans}
    consumers = [span for span in spans if span["kind"] == "CONSUMER"]
    webhook = any(span["kind"] == "SERVER" and span["service"] == "detector" for span in spans)
    every_hop = {"dispatcher", "sender-email"} <= {span["service"] for span in consumers}
    parents = all(span["parent_span_id"] in ids for span in consumers)
    return spans if webhook and every_hop and parents else None


def test_one_restock_is_one_trace_across_every_service(traced_stack: Stack) -> None:
    ports = traced_stack.ports
    base = f"http://127.0.0.1:{ports.sandbox}"
    demo.seed(ports, subscriber=SHOPPER)
    with httpx.Client(timeout=10.0) as client:
        demo.set_level(client, ports, 5)
        [message] = _wait_for(traced_stack, lambda: demo.inbox(client, ports, SHOPPER), 60, "the alert email")
        trace_id = _traceparent(message).split("-")[1]
        spans = _wait_for(
            traced_stack, lambda: _spans_of_every_hop(client, base, trace_id), 30, "every hop's spans"
        )

    by_id = {span["span_id"]: span for span in spans}
    assert {"detector", "dispatcher", "sender-email"} <= {span["service"] for span in spans}
    webhook = [span for span in spans if span["kind"] == "SERVER" and span["service"] == "detector"]
    assert webhook, "the webhook's span is in the email's trace"
    for consumer in (span for span in spans if span["kind"] == "CONSUMER"):
        producer = by_id.get(consumer["parent_span_id"])
        assert producer is not None, f"{consumer['name']}: its parent arrived too"
        assert producer["kind"] == "PRODUCER"
        assert producer["name"] == "publish restock"
        assert consumer["name"].startswith("process ")
        assert consumer["attributes"]["messaging.system"] == "rabbitmq"
        assert (
            consumer["attributes"]["messaging.message.id"] == producer["attributes"]["messaging.message.id"]
        )
    database = [span for span in spans if span["attributes"].get("db.system") == "postgresql"]
    assert database, "asyncpg is instrumented in the services"
    assert SHOPPER not in json.dumps(spans)


def test_every_line_of_every_process_is_a_json_event_without_contacts(traced_stack: Stack) -> None:
    traced_stack.stop()  # flushes and closes every log; the module's other test ran first
    log_dir = traced_stack.log_dir
    assert log_dir is not None
    for name in SERVICES:
        lines = Path(log_dir, f"{name}.log").read_text().splitlines()
        assert lines, f"{name} wrote nothing"
        for line in lines:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                pytest.fail(f"{name} wrote a line that is not JSON: {line[:300]}")
            assert {"ts", "level", "service", "logger", "msg"} <= event.keys(), line
            assert event["service"] in {name, "admin-api"}, line
            assert SHOPPER not in line
            assert "@example.com" not in line, line
            if "trace_id" in event:
                assert len(event["trace_id"]) == 32
                assert len(event["span_id"]) == 16
