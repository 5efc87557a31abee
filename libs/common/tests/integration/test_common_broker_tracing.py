"""Trace context over the real RabbitMQ: the consumer's span continues the publisher's trace, and both
spans follow the OpenTelemetry messaging conventions."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import aio_pika
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from restock_common import topology
from restock_common.broker import Broker, Outcome
from restock_common.messages import JobBatch
from restock_common.telemetry import current_trace_id

pytestmark = pytest.mark.integration

_RECORDED = InMemorySpanExporter()


@pytest.fixture
def recorded() -> Iterator[InMemorySpanExporter]:
    """Spans of the process's tracer provider (an SDK one, as ``setup_tracing`` installs), recorded."""
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(TracerProvider())
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    if not getattr(provider, "_restock_broker_recorded", False):
        provider.add_span_processor(SimpleSpanProcessor(_RECORDED))
        provider._restock_broker_recorded = True  # type: ignore[attr-defined]
    _RECORDED.clear()
    yield _RECORDED
    _RECORDED.clear()


async def _wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def _one(spans: tuple[ReadableSpan, ...], kind: SpanKind) -> ReadableSpan:
    [span] = [span for span in spans if span.kind is kind]
    return span


async def test_consumer_span_continues_the_publishers_trace(
    broker: Broker, recorded: InMemorySpanExporter
) -> None:
    spec = topology.QueueSpec("test.trace", ("test.trace.jobs",), topology.queue_arguments(3))
    seen_trace_ids: list[str | None] = []

    async def handler(batch: JobBatch) -> Outcome:
        seen_trace_ids.append(current_trace_id())
        return Outcome.ACK

    consumer = await broker.consume(spec, JobBatch, handler, prefetch=4)
    with trace.get_tracer("test").start_as_current_span("webhook") as webhook:
        await broker.publish(JobBatch(channel="email", job_ids=[1]), "test.trace.jobs", message_id="m-1")
    await _wait_for(lambda: any(span.kind is SpanKind.CONSUMER for span in recorded.get_finished_spans()))
    await consumer.stop()

    trace_id = webhook.get_span_context().trace_id
    assert seen_trace_ids == [format(trace_id, "032x")]  # the handler ran inside the publisher's trace
    spans = recorded.get_finished_spans()
    producer, consumer_span = _one(spans, SpanKind.PRODUCER), _one(spans, SpanKind.CONSUMER)
    assert producer.name == "publish restock"
    assert producer.parent is not None
    assert producer.parent.span_id == webhook.get_span_context().span_id
    assert dict(producer.attributes or {}) == {
        "messaging.system": "rabbitmq",
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
        "messaging.destination.name": "restock",
        "messaging.rabbitmq.destination.routing_key": "test.trace.jobs",
        "messaging.message.id": "m-1",
        "messaging.message.body.size": producer.attributes["messaging.message.body.size"],  # type: ignore[index]
    }
    assert consumer_span.name == "process test.trace"
    assert consumer_span.context is not None
    assert consumer_span.context.trace_id == trace_id
    assert consumer_span.parent is not None
    assert consumer_span.parent.span_id == producer.context.span_id  # type: ignore[union-attr]
    assert consumer_span.parent.is_remote  # it came through RabbitMQ's headers, not this process's context
    attributes = dict(consumer_span.attributes or {})
    assert attributes["messaging.system"] == "rabbitmq"
    assert attributes["messaging.operation.type"] == "process"
    assert attributes["messaging.destination.name"] == "restock"
    assert attributes["messaging.destination.subscription.name"] == "test.trace"
    assert attributes["messaging.rabbitmq.destination.routing_key"] == "test.trace.jobs"
    assert attributes["messaging.message.id"] == "m-1"
    assert attributes["messaging.message.body.size"] == producer.attributes["messaging.message.body.size"]  # type: ignore[index]
    assert isinstance(attributes["messaging.rabbitmq.message.delivery_tag"], int)
    assert attributes["restock.message.outcome"] == "ack"


async def test_a_stored_traceparent_parents_the_publish(
    broker: Broker, recorded: InMemorySpanExporter
) -> None:
    """The outbox relay publishes in the trace of the webhook that wrote the row, hours later or not."""
    spec = topology.QueueSpec("test.trace.relay", ("test.trace.relay",), topology.queue_arguments(3))
    await broker.declare_queue(spec)
    stored = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    await broker.publish_raw(b'{"x": 1}', "test.trace.relay", traceparent=stored)
    producer = _one(recorded.get_finished_spans(), SpanKind.PRODUCER)
    assert producer.context is not None
    assert format(producer.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    assert producer.parent is not None
    assert format(producer.parent.span_id, "016x") == "b7ad6b7169203331"


async def test_message_without_trace_context_starts_a_trace_and_poison_is_marked(
    broker: Broker, recorded: InMemorySpanExporter
) -> None:
    spec = topology.QueueSpec("test.trace.poison", ("test.trace.poison",), topology.queue_arguments(3))

    async def handler(batch: JobBatch) -> Outcome:
        return Outcome.ACK

    consumer = await broker.consume(spec, JobBatch, handler, prefetch=4)
    channel = await broker.connection.channel()
    exchange = await channel.get_exchange(topology.EXCHANGE)
    await exchange.publish(
        aio_pika.Message(b"{not json", message_id="bad-1"), routing_key="test.trace.poison"
    )
    await _wait_for(lambda: any(span.kind is SpanKind.CONSUMER for span in recorded.get_finished_spans()))
    await consumer.stop()
    await channel.close()

    consumer_span = _one(recorded.get_finished_spans(), SpanKind.CONSUMER)
    assert consumer_span.parent is None  # no traceparent header: a new trace, not an error
    attributes = dict(consumer_span.attributes or {})
    assert attributes["restock.message.outcome"] == "poison"
    assert attributes["error.type"] == "poison"
    assert attributes["messaging.message.id"] == "bad-1"


async def test_malformed_trace_headers_neither_crash_nor_stall_the_consumer(
    broker: Broker, recorded: InMemorySpanExporter
) -> None:
    spec = topology.QueueSpec("test.trace.headers", ("test.trace.headers",), topology.queue_arguments(3))
    seen: list[str | None] = []

    async def handler(batch: JobBatch) -> Outcome:
        seen.append(current_trace_id())
        return Outcome.ACK

    consumer = await broker.consume(spec, JobBatch, handler, prefetch=4)
    channel = await broker.connection.channel()
    exchange = await channel.get_exchange(topology.EXCHANGE)
    body = b'{"schema_version": 1, "channel": "email", "job_ids": [1]}'
    for traceparent in (bytearray(b"\xff\xfe"), 42, "00-not-a-traceparent", ["00-x"]):
        message = aio_pika.Message(body, headers={"traceparent": traceparent})
        await exchange.publish(message, routing_key="test.trace.headers")
    await _wait_for(lambda: len(seen) == 4)
    await consumer.stop()
    await channel.close()
    assert all(trace_id is not None and len(trace_id) == 32 for trace_id in seen)  # each in a new trace
    consumers = [span for span in recorded.get_finished_spans() if span.kind is SpanKind.CONSUMER]
    assert [span.parent for span in consumers] == [None] * 4
