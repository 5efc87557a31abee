"""The OTLP/HTTP receiver's routes. Point a service at it with
``OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:8025`` (the exporter appends ``/v1/traces``).

  ``POST   /v1/traces``                 an OTLP export, protobuf or JSON (gzip/deflate accepted)
  ``GET    /otlp/traces/{trace_id}``    the trace's spans, by start time (404 if none arrived)
  ``GET    /otlp/traces?service=&limit=``   recent traces, newest first
  ``DELETE /otlp/spans``                forget every span
"""

from __future__ import annotations

import gzip
import zlib
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, Router, delete, get, post
from litestar.di import NamedDependency, Provide
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, QueryParameter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from restock_sandbox.otlp.spans import (
    OtlpDecodeError,
    SpanStore,
    StoredSpan,
    TraceSummary,
    decode_json,
    decode_protobuf,
)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
MAX_EXPORT_BYTES = 16 * 1024 * 1024


class TraceOut(msgspec.Struct, frozen=True):
    trace_id: str
    spans: list[StoredSpan]


class OtlpReceiver(Controller):
    """Receives OTLP/HTTP trace exports and serves what arrived."""

    @post("/v1/traces", request_max_body_size=MAX_EXPORT_BYTES, status_code=200)
    async def export(
        self, request: Request[Any, Any, Any], span_store: NamedDependency[SpanStore]
    ) -> Response[Any]:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in {PROTOBUF, JSON}:
            return Response(
                f"unsupported content type {content_type!r}", status_code=415, media_type="text/plain"
            )
        try:
            body = _decompressed(await request.body(), request.headers.get("content-encoding", ""))
            spans = decode_protobuf(body) if content_type == PROTOBUF else decode_json(body)
        except (OtlpDecodeError, OSError, EOFError, zlib.error) as error:
            return Response(str(error)[:500], status_code=400, media_type="text/plain")
        span_store.add(spans)
        if content_type == PROTOBUF:
            return Response(ExportTraceServiceResponse().SerializeToString(), media_type=PROTOBUF)
        return Response(b"{}", media_type=JSON)

    @get("/otlp/traces/{trace_id:str}")
    async def trace(self, trace_id: FromPath[str], span_store: NamedDependency[SpanStore]) -> TraceOut:
        spans = span_store.trace(trace_id)
        if not spans:
            raise NotFoundException(f"no span of trace {trace_id} received")
        return TraceOut(trace_id.lower(), spans)

    @get("/otlp/traces")
    async def recent(
        self,
        span_store: NamedDependency[SpanStore],
        service: Annotated[str | None, QueryParameter()] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    ) -> list[TraceSummary]:
        return span_store.recent(service, limit)

    @delete("/otlp/spans")
    async def clear(self, span_store: NamedDependency[SpanStore]) -> None:
        span_store.clear()


def _decompressed(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding not in {"", "identity"}:
        raise OtlpDecodeError(f"unsupported content encoding {encoding!r}")
    return body


def otlp_router(store: SpanStore) -> Router:
    """The receiver's routes with ``store`` behind them, to mount on the sandbox app."""
    return Router(
        path="/",
        route_handlers=[OtlpReceiver],
        dependencies={"span_store": Provide(lambda: store, sync_to_thread=False, use_cache=True)},
    )
