"""OTLP trace exports decoded into plain span records, and the bounded store that keeps them.

Rules:
- An export is an ``ExportTraceServiceRequest``: resource spans -> scope spans -> spans. A span's service is
  its resource's ``service.name``.
- Protobuf (``application/x-protobuf``, what ``opentelemetry-exporter-otlp-proto-http`` sends) carries ids
  as raw bytes. OTLP/JSON is not proto3's JSON mapping: ids are lowercase hex, enums are integers (names
  accepted too), 64-bit integers may be strings. Both become the same record, ids in hex.
- Anything undecodable is an ``OtlpDecodeError`` with a reason (the route answers 400), never half-stored.
- The store keeps at most ``max_spans`` spans. Past that, the traces that received nothing for the longest
  go first, whole; ``recent`` lists traces by their last arrival, newest first.
"""

from __future__ import annotations

import base64
import binascii
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
STATUS_CODES = {0: "UNSET", 1: "OK", 2: "ERROR"}


class OtlpDecodeError(ValueError):
    """The body is not an OTLP trace export."""


class SpanLink(msgspec.Struct, frozen=True):
    trace_id: str
    span_id: str
    attributes: dict[str, Any]


class SpanEvent(msgspec.Struct, frozen=True):
    name: str
    time_unix_nano: int
    attributes: dict[str, Any]


class StoredSpan(msgspec.Struct, frozen=True, kw_only=True):
    """One received span, ids in lowercase hex, ``parent_span_id`` ``None`` for a root span."""

    service: str
    scope: str
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str | None
    start_time_unix_nano: int
    end_time_unix_nano: int
    attributes: dict[str, Any]
    links: list[SpanLink]
    events: list[SpanEvent]
    status_code: str
    status_message: str


class TraceSummary(msgspec.Struct, frozen=True):
    trace_id: str
    services: list[str]
    spans: int
    root: str | None
    start_time_unix_nano: int


# ------------------------------------------------------------------------------------------------ protobuf


def decode_protobuf(body: bytes) -> list[StoredSpan]:
    """The spans of a protobuf ``ExportTraceServiceRequest``."""
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except DecodeError as error:
        raise OtlpDecodeError(f"not an ExportTraceServiceRequest: {error}") from error
    spans: list[StoredSpan] = []
    for resource_spans in request.resource_spans:
        service = _service_name(_pb_attributes(resource_spans.resource.attributes))
        for scope_spans in resource_spans.scope_spans:
            spans.extend(_pb_span(span, service, scope_spans.scope.name) for span in scope_spans.spans)
    return spans


def _pb_span(span: Span, service: str, scope: str) -> StoredSpan:
    return StoredSpan(
        service=service,
        scope=scope,
        name=span.name,
        kind=KINDS.get(span.kind, "UNSPECIFIED"),
        trace_id=_trace_id(span.trace_id.hex()),
        span_id=_span_id(span.span_id.hex()),
        parent_span_id=_span_id(span.parent_span_id.hex()) if span.parent_span_id else None,
        start_time_unix_nano=span.start_time_unix_nano,
        end_time_unix_nano=span.end_time_unix_nano,
        attributes=_pb_attributes(span.attributes),
        links=[
            SpanLink(
                _trace_id(link.trace_id.hex()), _span_id(link.span_id.hex()), _pb_attributes(link.attributes)
            )
            for link in span.links
        ],
        events=[
            SpanEvent(event.name, event.time_unix_nano, _pb_attributes(event.attributes))
            for event in span.events
        ],
        status_code=STATUS_CODES.get(span.status.code, "UNSET"),
        status_message=span.status.message,
    )


def _pb_attributes(attributes: Iterable[KeyValue]) -> dict[str, Any]:
    return {item.key: _pb_value(item.value) for item in attributes}


def _pb_value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_pb_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return _pb_attributes(value.kvlist_value.values)
    if kind == "bytes_value":
        return value.bytes_value.hex()
    if kind in {"string_value", "bool_value", "int_value", "double_value"}:
        return getattr(value, kind)
    return None


# ---------------------------------------------------------------------------------------------------- JSON


def decode_json(body: bytes) -> list[StoredSpan]:
    """The spans of an OTLP/JSON ``ExportTraceServiceRequest``."""
    try:
        request = msgspec.json.decode(body)
        return [
            _json_span(span, _service_name(_json_attributes(resource_spans.get("resource", {}))), scope_spans)
            for resource_spans in _list(request, "resourceSpans")
            for scope_spans in _list(resource_spans, "scopeSpans")
            for span in _list(scope_spans, "spans")
        ]
    except (msgspec.DecodeError, KeyError, TypeError, ValueError, AttributeError) as error:
        raise OtlpDecodeError(f"not an OTLP/JSON trace export: {error!r}") from error


def _json_span(span: Mapping[str, Any], service: str, scope_spans: Mapping[str, Any]) -> StoredSpan:
    status = span.get("status") or {}
    parent = span.get("parentSpanId") or ""
    return StoredSpan(
        service=service,
        scope=str((scope_spans.get("scope") or {}).get("name", "")),
        name=str(span["name"]),
        kind=_enum(span.get("kind", 0), KINDS, "SPAN_KIND_"),
        trace_id=_trace_id(span["traceId"]),
        span_id=_span_id(span["spanId"]),
        parent_span_id=_span_id(parent) if parent else None,
        start_time_unix_nano=int(span.get("startTimeUnixNano", 0)),
        end_time_unix_nano=int(span.get("endTimeUnixNano", 0)),
        attributes=_json_attributes(span),
        links=[
            SpanLink(_trace_id(link["traceId"]), _span_id(link["spanId"]), _json_attributes(link))
            for link in _list(span, "links")
        ],
        events=[
            SpanEvent(str(event.get("name", "")), int(event.get("timeUnixNano", 0)), _json_attributes(event))
            for event in _list(span, "events")
        ],
        status_code=_enum(status.get("code", 0), STATUS_CODES, "STATUS_CODE_"),
        status_message=str(status.get("message", "")),
    )


def _list(container: Mapping[str, Any], key: str) -> list[Any]:
    value = container.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise TypeError(f"{key} is not a list")
    return value


def _json_attributes(container: Mapping[str, Any]) -> dict[str, Any]:
    return {str(item["key"]): _json_value(item.get("value") or {}) for item in _list(container, "attributes")}


def _json_value(value: Mapping[str, Any]) -> Any:
    if "arrayValue" in value:
        return [_json_value(item) for item in _list(value["arrayValue"], "values")]
    if "kvlistValue" in value:
        return {
            str(item["key"]): _json_value(item.get("value") or {})
            for item in _list(value["kvlistValue"], "values")
        }
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "bytesValue" in value:
        try:
            return base64.b64decode(value["bytesValue"], validate=True).hex()
        except binascii.Error as error:
            raise ValueError(f"bytesValue is not base64: {error}") from error
    return value.get("stringValue", value.get("boolValue"))


def _enum(value: int | str, names: Mapping[int, str], prefix: str) -> str:
    if isinstance(value, str) and not value.isdigit():
        name = value.removeprefix(prefix)
        if name not in names.values():
            raise ValueError(f"unknown enum value {value!r}")
        return name
    return names.get(int(value), next(iter(names.values())))


# ------------------------------------------------------------------------------------------------- shared


def _service_name(resource_attributes: Mapping[str, Any]) -> str:
    return str(resource_attributes.get("service.name") or "unknown_service")


def _trace_id(value: str) -> str:
    return _hex_id(value, 32, "trace id")


def _span_id(value: str) -> str:
    return _hex_id(value, 16, "span id")


def _hex_id(value: str, length: int, what: str) -> str:
    text = str(value).lower()
    if len(text) != length or any(char not in "0123456789abcdef" for char in text):
        raise OtlpDecodeError(f"{what} {value!r} is not {length} hex digits")
    return text


# -------------------------------------------------------------------------------------------------- store


class SpanStore:
    """Received spans by trace, bounded (see the module's rules)."""

    def __init__(self, max_spans: int = 100_000) -> None:
        self.max_spans = max_spans
        self._traces: OrderedDict[str, list[StoredSpan]] = OrderedDict()
        self._count = 0

    def add(self, spans: Iterable[StoredSpan]) -> None:
        for span in spans:
            self._traces.setdefault(span.trace_id, []).append(span)
            self._traces.move_to_end(span.trace_id)
            self._count += 1
        while self._count > self.max_spans and len(self._traces) > 1:
            _, dropped = self._traces.popitem(last=False)
            self._count -= len(dropped)

    def trace(self, trace_id: str) -> list[StoredSpan]:
        """The trace's spans by start time (empty if unknown)."""
        return sorted(self._traces.get(trace_id.lower(), []), key=lambda span: span.start_time_unix_nano)

    def recent(self, service: str | None = None, limit: int = 100) -> list[TraceSummary]:
        """The traces that received a span most recently, newest first; with ``service``, only traces
        with a span of that service."""
        summaries: list[TraceSummary] = []
        for trace_id in reversed(self._traces):
            spans = self._traces[trace_id]
            services = sorted({span.service for span in spans})
            if service is not None and service not in services:
                continue
            summaries.append(_summary(trace_id, spans, services))
            if len(summaries) >= limit:
                break
        return summaries

    def clear(self) -> int:
        """Forget everything; the number of spans forgotten."""
        count, self._count = self._count, 0
        self._traces.clear()
        return count

    def __len__(self) -> int:
        return self._count


def _summary(trace_id: str, spans: list[StoredSpan], services: list[str]) -> TraceSummary:
    roots = [span for span in spans if span.parent_span_id is None]
    root = min(roots, key=lambda span: span.start_time_unix_nano).name if roots else None
    start = min(span.start_time_unix_nano for span in spans)
    return TraceSummary(trace_id, services, len(spans), root, start)
