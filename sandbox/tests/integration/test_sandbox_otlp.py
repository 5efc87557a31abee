"""The sandbox's OTLP/HTTP receiver, fed by the real OpenTelemetry SDK and OTLP/HTTP exporter."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Link, SpanKind

pytestmark = pytest.mark.integration


@pytest.fixture
async def http(sandbox) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sandbox.url, timeout=5) as client:
        yield client


def _provider(url: str, service: str, compression: Compression = Compression.NoCompression) -> TracerProvider:
    """A service's provider exporting to the sandbox. Batch: the exporter's HTTP call is blocking and the
    sandbox answers on this test's loop, so the export must run on the processor's thread."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    exporter = OTLPSpanExporter(endpoint=f"{url}/v1/traces", compression=compression, timeout=5)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


async def _flush(provider: TracerProvider) -> None:
    assert await asyncio.to_thread(provider.force_flush, 10_000)
    await asyncio.to_thread(provider.shutdown)


async def test_exported_spans_come_back_by_trace_id_with_parents_and_links(sandbox, http) -> None:
    await http.delete("/otlp/spans")
    detector = _provider(sandbox.url, "detector")
    sender = _provider(sandbox.url, "sender-email", Compression.Gzip)
    earlier = sender.get_tracer("restock.sender").start_span("first attempt")
    earlier.end()
    tracer = detector.get_tracer("restock.detector")
    with (
        tracer.start_as_current_span("POST /webhooks/shopify", kind=SpanKind.SERVER) as webhook,
        tracer.start_as_current_span("publish restock", kind=SpanKind.PRODUCER) as publish,
    ):
        pass
    retry = sender.get_tracer("restock.sender").start_span(
        "send notification",
        context=None,
        kind=SpanKind.CLIENT,
        links=[Link(publish.get_span_context(), {"restock.link.kind": "stored-traceparent"})],
        attributes={"restock.job_id": 7},
    )
    retry.end()
    await _flush(detector)
    await _flush(sender)

    trace_id = format(webhook.get_span_context().trace_id, "032x")
    answer = await http.get(f"/otlp/traces/{trace_id}")
    assert answer.status_code == 200
    spans = answer.json()["spans"]
    assert [(span["service"], span["name"], span["kind"]) for span in spans] == [
        ("detector", "POST /webhooks/shopify", "SERVER"),
        ("detector", "publish restock", "PRODUCER"),
    ]
    assert spans[0]["parent_span_id"] is None
    assert (
        spans[1]["parent_span_id"]
        == spans[0]["span_id"]
        == format(webhook.get_span_context().span_id, "016x")
    )
    assert spans[1]["start_time_unix_nano"] >= spans[0]["start_time_unix_nano"]
    assert spans[1]["end_time_unix_nano"] <= spans[0]["end_time_unix_nano"]

    retry_trace = format(retry.get_span_context().trace_id, "032x")
    [linked] = (await http.get(f"/otlp/traces/{retry_trace}")).json()["spans"]
    assert linked["service"] == "sender-email"  # arrived gzip-compressed
    assert linked["attributes"] == {"restock.job_id": 7}
    assert linked["links"] == [
        {
            "trace_id": trace_id,
            "span_id": spans[1]["span_id"],
            "attributes": {"restock.link.kind": "stored-traceparent"},
        }
    ]

    recent = (await http.get("/otlp/traces", params={"service": "detector"})).json()
    assert [summary["trace_id"] for summary in recent] == [trace_id]
    assert recent[0]["root"] == "POST /webhooks/shopify"
    everything = {summary["trace_id"] for summary in (await http.get("/otlp/traces")).json()}
    assert everything == {trace_id, retry_trace, format(earlier.get_span_context().trace_id, "032x")}

    assert (await http.delete("/otlp/spans")).status_code == 204
    assert (await http.get(f"/otlp/traces/{trace_id}")).status_code == 404


OTLP_JSON = {
    "resourceSpans": [
        {
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "admin"}}]},
            "scopeSpans": [
                {
                    "scope": {"name": "manual"},
                    "spans": [
                        {
                            "traceId": "5b8efff798038103d269b633813fc60c",
                            "spanId": "eee19b7ec3c1b174",
                            "name": "GET /u/{token}",
                            "kind": 2,
                            "startTimeUnixNano": "1544712660000000000",
                            "endTimeUnixNano": "1544712661000000000",
                        }
                    ],
                }
            ],
        }
    ]
}


async def test_json_exports_are_accepted_and_bad_ones_refused_with_a_reason(sandbox, http) -> None:
    await http.delete("/otlp/spans")
    body = json.dumps(OTLP_JSON).encode()
    accepted = await http.post("/v1/traces", content=body, headers={"content-type": "application/json"})
    assert (accepted.status_code, accepted.json()) == (200, {})
    gzipped = await http.post(
        "/v1/traces",
        content=gzip.compress(body),
        headers={"content-type": "application/json", "content-encoding": "gzip"},
    )
    assert gzipped.status_code == 200
    [first, second] = (await http.get("/otlp/traces/5B8EFFF798038103D269B633813FC60C")).json()["spans"]
    assert first["service"] == second["service"] == "admin"
    assert first["kind"] == "SERVER"

    refused = await http.post("/v1/traces", content=b"{nope", headers={"content-type": "application/json"})
    assert refused.status_code == 400
    assert "OTLP/JSON" in refused.text
    garbage = await http.post(
        "/v1/traces", content=b"\xff\xff\xff", headers={"content-type": "application/x-protobuf"}
    )
    assert garbage.status_code == 400
    assert (
        await http.post("/v1/traces", content=b"x", headers={"content-type": "text/plain"})
    ).status_code == 415
    not_gzip = await http.post(
        "/v1/traces", content=b"x", headers={"content-type": "application/json", "content-encoding": "gzip"}
    )
    assert not_gzip.status_code == 400
    assert len((await http.get("/otlp/traces/5b8efff798038103d269b633813fc60c")).json()["spans"]) == 2
