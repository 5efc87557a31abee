"""The OTLP receiver's decoding (protobuf from the real encoder, OTLP/JSON as the spec writes it) and its
bounded store."""

from __future__ import annotations

import json

import msgspec
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, StatusCode

from restock_sandbox.otlp.spans import OtlpDecodeError, SpanStore, StoredSpan, decode_json, decode_protobuf


def _recorded_spans(service: str = "detector"):
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("restock.test")
    earlier = tracer.start_span("earlier")
    earlier.end()
    with (
        tracer.start_as_current_span("POST /webhooks/shopify", kind=SpanKind.SERVER) as root,
        tracer.start_as_current_span(
            "publish restock",
            kind=SpanKind.PRODUCER,
            attributes={"messaging.system": "rabbitmq", "n": 3, "ok": True, "ratio": 0.5, "keys": ("a", "b")},
            links=[Link(earlier.get_span_context(), {"restock.link.kind": "stored-traceparent"})],
        ) as child,
    ):
        child.add_event("confirm", {"delivery_tag": 7})
        child.set_status(StatusCode.ERROR, "nack")
    return exporter.get_finished_spans(), root, earlier


def test_protobuf_export_from_the_real_encoder_decodes_with_ids_parents_and_links() -> None:
    finished, root, earlier = _recorded_spans()
    body = encode_spans(finished).SerializeToString()

    spans = {span.name: span for span in decode_protobuf(body)}

    root_id = root.get_span_context()
    decoded_root, decoded_child = spans["POST /webhooks/shopify"], spans["publish restock"]
    assert decoded_root.trace_id == format(root_id.trace_id, "032x")
    assert decoded_root.span_id == format(root_id.span_id, "016x")
    assert decoded_root.parent_span_id is None
    assert decoded_root.kind == "SERVER"
    assert decoded_root.service == "detector"
    assert decoded_root.scope == "restock.test"
    assert decoded_child.parent_span_id == decoded_root.span_id
    assert decoded_child.kind == "PRODUCER"
    assert decoded_child.attributes == {
        "messaging.system": "rabbitmq",
        "n": 3,
        "ok": True,
        "ratio": 0.5,
        "keys": ["a", "b"],
    }
    [link] = decoded_child.links
    assert link.trace_id == format(earlier.get_span_context().trace_id, "032x")
    assert link.span_id == format(earlier.get_span_context().span_id, "016x")
    assert link.attributes == {"restock.link.kind": "stored-traceparent"}
    assert [(event.name, event.attributes) for event in decoded_child.events] == [
        ("confirm", {"delivery_tag": 7})
    ]
    assert (decoded_child.status_code, decoded_child.status_message) == ("ERROR", "nack")
    assert decoded_child.start_time_unix_nano <= decoded_child.end_time_unix_nano


OTLP_JSON = {
    "resourceSpans": [
        {
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "sender-email"}}]},
            "scopeSpans": [
                {
                    "scope": {"name": "restock.sender"},
                    "spans": [
                        {
                            "traceId": "5B8EFFF798038103D269B633813FC60C",
                            "spanId": "EEE19B7EC3C1B174",
                            "parentSpanId": "EEE19B7EC3C1B173",
                            "name": "send notification",
                            "kind": 3,
                            "startTimeUnixNano": "1544712660000000000",
                            "endTimeUnixNano": "1544712661000000000",
                            "attributes": [
                                {"key": "restock.job_id", "value": {"intValue": "42"}},
                                {"key": "tags", "value": {"arrayValue": {"values": [{"stringValue": "a"}]}}},
                                {
                                    "key": "map",
                                    "value": {
                                        "kvlistValue": {
                                            "values": [{"key": "k", "value": {"boolValue": True}}]
                                        }
                                    },
                                },
                                {"key": "raw", "value": {"bytesValue": "AQI="}},
                                {"key": "share", "value": {"doubleValue": 0.25}},
                            ],
                            "links": [
                                {
                                    "traceId": "0af7651916cd43dd8448eb211c80319c",
                                    "spanId": "b7ad6b7169203331",
                                    "attributes": [],
                                }
                            ],
                            "status": {"code": 2, "message": "421"},
                        },
                        {
                            "traceId": "5b8efff798038103d269b633813fc60c",
                            "spanId": "eee19b7ec3c1b173",
                            "parentSpanId": "",
                            "name": "process jobs.email",
                            "kind": "SPAN_KIND_CONSUMER",
                        },
                    ],
                }
            ],
        }
    ]
}


def test_otlp_json_decodes_hex_ids_string_integers_and_enum_names() -> None:
    send, process = decode_json(json.dumps(OTLP_JSON).encode())
    assert send == StoredSpan(
        service="sender-email",
        scope="restock.sender",
        name="send notification",
        kind="CLIENT",
        trace_id="5b8efff798038103d269b633813fc60c",
        span_id="eee19b7ec3c1b174",
        parent_span_id="eee19b7ec3c1b173",
        start_time_unix_nano=1544712660000000000,
        end_time_unix_nano=1544712661000000000,
        attributes={"restock.job_id": 42, "tags": ["a"], "map": {"k": True}, "raw": "0102", "share": 0.25},
        links=send.links,
        events=[],
        status_code="ERROR",
        status_message="421",
    )
    assert [(link.trace_id, link.span_id) for link in send.links] == [
        ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    ]
    assert process.kind == "CONSUMER"
    assert process.parent_span_id is None
    assert process.status_code == "UNSET"


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"resourceSpans": {}}',
        json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{"name": "x"}]}]}]}).encode(),
        json.dumps(
            {"resourceSpans": [{"scopeSpans": [{"spans": [{"name": "x", "traceId": "zz", "spanId": "00"}]}]}]}
        ).encode(),
        json.dumps(
            {
                "resourceSpans": [
                    {
                        "scopeSpans": [
                            {
                                "spans": [
                                    {
                                        "name": "x",
                                        "traceId": "5b8efff798038103d269b633813fc60c",
                                        "spanId": "eee19b7ec3c1b173",
                                        "kind": "SPAN_KIND_SIDEWAYS",
                                    }
                                ]
                            }
                        ]
                    }
                ]
            }
        ).encode(),
    ],
)
def test_malformed_json_is_a_decode_error(body: bytes) -> None:
    with pytest.raises(OtlpDecodeError):
        decode_json(body)


def test_malformed_protobuf_is_a_decode_error() -> None:
    with pytest.raises(OtlpDecodeError):
        decode_protobuf(b"\xff\xff\xff\xff not protobuf")


def _span(
    trace_id: str, span_id: str, *, service: str = "detector", start: int = 0, parent: str | None = None
):
    return StoredSpan(
        service=service,
        scope="s",
        name=f"span {span_id}",
        kind="INTERNAL",
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        start_time_unix_nano=start,
        end_time_unix_nano=start + 1,
        attributes={},
        links=[],
        events=[],
        status_code="UNSET",
        status_message="",
    )


A, B, C = "a" * 32, "b" * 32, "c" * 32


def test_store_returns_a_trace_by_start_time_and_lists_recent_traces_by_service() -> None:
    store = SpanStore()
    store.add([_span(A, "2" * 16, start=20, parent="1" * 16), _span(A, "1" * 16, start=10)])
    store.add([_span(B, "3" * 16, service="dispatcher", start=5)])
    store.add([_span(A, "4" * 16, service="sender-email", start=30, parent="2" * 16)])

    assert [span.span_id for span in store.trace(A.upper())] == ["1" * 16, "2" * 16, "4" * 16]
    assert store.trace(C) == []
    recent = store.recent()
    assert [summary.trace_id for summary in recent] == [A, B]  # A received a span last
    assert recent[0].services == ["detector", "sender-email"]
    assert recent[0].root == "span " + "1" * 16
    assert (recent[0].spans, recent[0].start_time_unix_nano) == (3, 10)
    assert [summary.trace_id for summary in store.recent("dispatcher")] == [B]
    assert store.recent("admin") == []
    assert [summary.trace_id for summary in store.recent(limit=1)] == [A]


def test_store_is_bounded_by_dropping_the_stalest_traces_whole() -> None:
    store = SpanStore(max_spans=4)
    store.add([_span(A, "1" * 16), _span(A, "2" * 16)])
    store.add([_span(B, "3" * 16), _span(B, "4" * 16)])
    store.add([_span(A, "5" * 16)])  # A is now the most recently updated
    store.add([_span(C, "6" * 16)])

    assert len(store) == 4
    assert store.trace(B) == []
    assert len(store.trace(A)) == 3
    assert len(store.trace(C)) == 1
    assert store.clear() == 4
    assert len(store) == 0
    assert store.recent() == []


def test_decoded_spans_serialize_for_the_http_answer() -> None:
    finished, *_ = _recorded_spans()
    spans = decode_protobuf(encode_spans(finished).SerializeToString())
    round_trip = msgspec.json.decode(msgspec.json.encode(spans), type=list[StoredSpan])
    assert round_trip == spans
