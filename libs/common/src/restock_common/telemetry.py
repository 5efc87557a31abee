"""Tracing and structured logs, set up once per process by its composition root (ADR 19).

Tracing: ``setup_tracing`` installs an OpenTelemetry ``TracerProvider`` named after the service and
instruments asyncpg and redis, once per process. Spans are exported over OTLP/HTTP when the standard
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) is set or ``OTEL_TRACES_EXPORTER`` names
``otlp``; ``OTEL_TRACES_EXPORTER=none`` turns export off and ``OTEL_SDK_DISABLED=true`` turns tracing off.
Without export spans are still created, so trace ids propagate and appear in logs. A client span (a query,
a Redis command) outside any operation is dropped: probes and idle polls are not traces.
HTTP: ``http_telemetry_plugins`` gives a Litestar app its SERVER span per request (HTTP semconv names,
continuing the caller's ``traceparent``; probes and metrics are not traced).
Logs: one JSON object per line on stderr, with the current ``trace_id`` and ``span_id``; extra fields come
from ``logger.info(..., extra={...})``.

Never put an email address or a phone number in a span or a log line: use ids and ``contact_hash``. As a
second line of defence, anything shaped like one is replaced by ``[email]`` / ``[phone]`` in every log
line (message, extras, traceback) and in every exported span (name, attributes, events, links, status).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from litestar.enums import ScopeType
from litestar.middleware.base import DefineMiddleware
from litestar.plugins import InitPlugin
from litestar.plugins.opentelemetry import OpenTelemetryPlugin as LitestarOpenTelemetryPlugin
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, TracerProvider, sampling
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes, AttributeValue

log = logging.getLogger(__name__)
tracer = trace.get_tracer("restock.telemetry")

# ---------------------------------------------------------------------------------------------- redaction

# An address (also URL-encoded, as in a query string): every character RFC 5322 allows unquoted in the local
# part, so a URL or a quoted string around an address may go with it (over-redacting is the safe side).
# A phone number: a plus (or %2B) and 7 to 15 digits, optionally grouped by spaces, dots, dashes or
# parentheses. "+00:00" in a timestamp has too few.
_EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+(?:@|%40)[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_PHONE = re.compile(r"(?:\+|%2[Bb])[1-9](?:[ .()-]{0,2}\d){6,14}(?!\d)")
# The public links' tokens (/c/{token}, /u/{token}) are bearer credentials: whoever holds one can confirm
# or unsubscribe. A request's URL (``http.url``, ``http.target``) would carry them into every trace.
_LINK_TOKEN = re.compile(r"/([cu])/[A-Za-z0-9_.-]{16,}")


def redact(text: str) -> str:
    """``text`` with every email address and phone number replaced by ``[email]`` / ``[phone]``, and the
    token of a public link by ``{token}``."""
    if "/" in text:
        text = _LINK_TOKEN.sub(r"/\1/{token}", text)
    if "@" not in text and "+" not in text and "%" not in text:
        return text  # the common case, without running the patterns
    return _PHONE.sub("[phone]", _EMAIL.sub("[email]", text))


def redact_value(value: Any) -> Any:
    """A log field with every string in it redacted; values JSON cannot hold become redacted strings."""
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {redact(str(key)): redact_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(item) for item in value]
    return redact(str(value))


def _redact_attribute(value: AttributeValue) -> AttributeValue:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Sequence) and value and isinstance(value[0], str):
        return tuple(redact(str(item)) for item in value)
    return value


def _redact_attributes(attributes: Attributes) -> dict[str, AttributeValue]:
    return {key: _redact_attribute(value) for key, value in (attributes or {}).items()}


def _texts(span: ReadableSpan) -> Iterator[str]:
    yield span.name
    yield span.status.description or ""
    for attributes in (
        span.attributes,
        *(e.attributes for e in span.events),
        *(k.attributes for k in span.links),
    ):
        for value in (attributes or {}).values():
            if isinstance(value, str):
                yield value
            elif isinstance(value, Sequence):
                yield from (item for item in value if isinstance(item, str))


def redacted_span(span: ReadableSpan) -> ReadableSpan:
    """The finished span, or a copy with its name, attributes, events, links and status redacted if any of
    them carries a contact (most spans do not: they are passed on as they are)."""
    if all(redact(text) == text for text in _texts(span)):
        return span
    status = span.status
    return ReadableSpan(
        name=redact(span.name),
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=_redact_attributes(span.attributes),
        events=[
            Event(event.name, _redact_attributes(event.attributes), event.timestamp) for event in span.events
        ],
        links=[Link(link.context, _redact_attributes(link.attributes)) for link in span.links],
        kind=span.kind,
        status=Status(status.status_code, redact(status.description)) if status.description else status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class RedactingSpanProcessor(SpanProcessor):
    """Hands ``delegate`` (the exporting processor) a redacted copy of each finished span."""

    def __init__(self, delegate: SpanProcessor) -> None:
        self.delegate = delegate

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        self.delegate.on_start(span, parent_context)  # type: ignore[arg-type]

    def on_end(self, span: ReadableSpan) -> None:
        self.delegate.on_end(redacted_span(span))

    def shutdown(self) -> None:
        self.delegate.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.delegate.force_flush(timeout_millis)


# ------------------------------------------------------------------------------------------------- logs

# Record attributes that are not event fields (uvicorn's color_message duplicates msg with ANSI codes).
_STANDARD_ATTRIBUTES = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys()
    | {"message", "asctime", "taskName", "color_message"}
)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, carrying the active trace and span ids; contacts redacted."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            event["trace_id"] = format(context.trace_id, "032x")
            event["span_id"] = format(context.span_id, "016x")
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRIBUTES and not key.startswith("_"):
                event[key] = redact_value(value)
        if record.exc_info:
            event["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(event, default=str)


def setup_logging(service: str, level: str = "INFO") -> None:
    """Route every logger (ours, uvicorn's, aio-pika's), Python warnings and an uncaught exception through
    the JSON formatter on stderr: one event per line, nothing else on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("aiormq").setLevel(logging.WARNING)
    logging.getLogger("aio_pika").setLevel(logging.WARNING)
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught


def _log_uncaught(kind: type[BaseException], error: BaseException, traceback: TracebackType | None) -> None:
    # The default hook prints a multi-line traceback that no log pipeline can parse as one event.
    logging.getLogger("restock").critical("uncaught exception", exc_info=(kind, error, traceback))


# ---------------------------------------------------------------------------------------------- tracing

_process_provider: trace.TracerProvider | None = None


def _is_true(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def otlp_traces_endpoint(environ: Mapping[str, str]) -> str | None:
    """Where spans go, from the standard variables; ``None`` when nothing asks for OTLP export."""
    exporters = {name.strip().lower() for name in environ.get("OTEL_TRACES_EXPORTER", "").split(",")}
    if "none" in exporters or _is_true(environ.get("OTEL_SDK_DISABLED")):
        return None
    if traces := environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return traces
    if base := environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return base.rstrip("/") + "/v1/traces"
    # Only an explicit OTEL_TRACES_EXPORTER=otlp exports to the default collector address: a developer's
    # machine has none, and the default used to be "no export" before this variable was honoured.
    return "http://localhost:4318/v1/traces" if "otlp" in exporters else None


class NoOrphanClientSpans(Sampler):
    """Drops a CLIENT span that has no parent, and leaves every other decision to ``delegate`` (the
    ``OTEL_TRACES_SAMPLER`` one). A query or Redis command outside any operation is a readiness probe or
    an idle poll (the outbox relay, the schedulers: several a second per process), each its own
    one-span trace that nobody follows. Work a poll finds starts its own span (or continues a stored
    traceparent), and its queries are kept as its children."""

    def __init__(self, delegate: Sampler) -> None:
        self.delegate = delegate

    def should_sample(
        self,
        parent_context: otel_context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: trace.TraceState | None = None,
    ) -> SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        if kind is SpanKind.CLIENT and not parent.is_valid:
            return SamplingResult(Decision.DROP)
        return self.delegate.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"NoOrphanClientSpans{{{self.delegate.get_description()}}}"


def build_tracer_provider(service: str, environ: Mapping[str, str]) -> trace.TracerProvider:
    """The provider ``setup_tracing`` installs: a no-op one when the SDK is disabled, else an SDK provider
    exporting (redacted) spans over OTLP/HTTP when the environment asks for it."""
    if _is_true(environ.get("OTEL_SDK_DISABLED")):
        return trace.NoOpTracerProvider()
    provider = TracerProvider(
        resource=Resource.create({"service.name": service}),
        sampler=NoOrphanClientSpans(sampling._get_from_env_or_default()),
    )
    endpoint = otlp_traces_endpoint(environ)
    if endpoint is not None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        if environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf") != "http/protobuf":
            log.warning("only OTLP over http/protobuf is installed; using it", extra={"service": service})
        exporter = OTLPSpanExporter(endpoint=endpoint)
        provider.add_span_processor(RedactingSpanProcessor(BatchSpanProcessor(exporter)))
    return provider


def setup_tracing(service: str, environ: Mapping[str, str] | None = None) -> trace.TracerProvider:
    """Install the process's tracer provider and instrument asyncpg and redis with it. Once per process:
    a second call returns the first provider (a CLI command and the app it runs may both call it)."""
    global _process_provider  # the process has exactly one provider, by design
    if _process_provider is not None:
        return _process_provider
    provider = build_tracer_provider(service, os.environ if environ is None else environ)
    trace.set_tracer_provider(provider)
    _instrument_clients(provider)
    _process_provider = provider
    return provider


def _instrument_clients(provider: trace.TracerProvider) -> None:
    """Client spans for every PostgreSQL query and Redis command. Neither records values: asyncpg's
    parameters are not captured and redis commands are sanitized to ``SET ? ?``."""
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    asyncpg = AsyncPGInstrumentor()  # type: ignore[no-untyped-call]
    for instrumentor in (asyncpg, RedisInstrumentor()):
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(tracer_provider=provider)


# -------------------------------------------------------------------------------------------------- HTTP

# Kubernetes probes and Prometheus scrapes: a span each every few seconds per pod, and nobody follows them.
# The sandbox's OTLP receiver too: tracing the export of spans would export a span per export, forever.
UNTRACED_PATHS = ("/healthz", "/readyz", "/metrics", "/v1/traces")


def http_telemetry_plugins() -> list[InitPlugin]:
    """One SERVER span per request continuing an incoming ``traceparent``, named ``{method} {route
    template}`` (HTTP semconv) with ``http.route`` set, and the probe and metrics routes not traced. Pass the
    list to ``Litestar(plugins=[...])``."""
    return [OpenTelemetryPlugin(), _RouteNamesServerSpan()]


class OpenTelemetryPlugin(LitestarOpenTelemetryPlugin):
    """Litestar's OpenTelemetry plugin with ``ServerSpanMiddleware`` in place of the generic ASGI
    instrumentation (ADR 27). Litestar wraps the whole app, routing included, in the middleware of the plugin
    it finds by the class name ``OpenTelemetryPlugin`` (``PluginRegistry.get``), hence this one's name."""

    @property
    def middleware(self) -> DefineMiddleware:
        return DefineMiddleware(ServerSpanMiddleware)


class ServerSpanMiddleware:
    """The SERVER span of a request, and nothing else: the method, the scheme and the response's status code
    (``http.response.status_code``; 5xx and an escaping exception mark it an error). The generic ASGI
    instrumentation it replaces also collected every header-derived attribute, the raw URL (which carries
    the public links' tokens) and per-message hooks: on the detector's webhook it cost about 100 µs of CPU
    per request, a tenth of the whole request's, for attributes nobody reads (ADR 27)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # The headers the global propagator reads (W3C trace context and baggage unless OTEL_PROPAGATORS
        # says otherwise), as ASGI spells them: only these are copied out of the request for it.
        self.propagated = {
            name.lower().encode("latin-1"): name.lower() for name in propagate.get_global_textmap().fields
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope["path"] in UNTRACED_PATHS:
            await self.app(scope, receive, send)
            return
        carrier = {
            self.propagated[name]: value.decode("latin-1")
            for name, value in scope["headers"]
            if name in self.propagated
        }
        parent = propagate.extract(carrier) if carrier else None
        method = str(scope.get("method") or "HTTP")
        span = http_tracer.start_span(
            method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.scheme": str(scope.get("scheme", "http"))},
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        status_code: int | None = None

        async def send_noting_status(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        except BaseException as error:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            raise
        finally:
            if status_code is not None:
                span.set_attribute("http.response.status_code", status_code)
                if status_code >= 500:
                    span.set_status(Status(StatusCode.ERROR))
            otel_context.detach(token)
            span.end()


http_tracer = trace.get_tracer("restock.http")


class _RouteNamesServerSpan(InitPlugin):
    """Adds the middleware that renames the SERVER span once the router knows the route template."""

    def on_app_init(self, app_config: Any) -> Any:
        app_config.middleware.append(_name_server_span_after_routing)
        return app_config


def _name_server_span_after_routing(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        span = trace.get_current_span()
        template = scope.get("path_template")
        if template and getattr(span, "kind", None) is SpanKind.SERVER and span.is_recording():
            method = str(scope.get("method") or "HTTP")
            span.update_name(f"{method} {template}")
            span.set_attribute("http.route", str(template))
        await app(scope, receive, send)

    return middleware


# ------------------------------------------------------------------------------------------ trace context

_W3C = TraceContextTextMapPropagator()


def current_traceparent() -> str | None:
    """The W3C traceparent of the current span, to store on a row so later work can join the trace."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


def current_trace_id() -> str | None:
    """The hex trace id of the current span, if any."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def span_context_of(traceparent: str | None) -> trace.SpanContext | None:
    """The span context a stored W3C ``traceparent`` names, or ``None`` if it is missing or malformed."""
    if not traceparent:
        return None
    context = trace.get_current_span(_W3C.extract({"traceparent": traceparent})).get_span_context()
    return context if context.is_valid else None


@contextmanager
def span_linked_to(
    traceparent: str | None,
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Attributes = None,
    new_trace: bool = False,
) -> Iterator[Span]:
    """Start (as current) a span that LINKS to the span a stored ``traceparent`` names, without making it
    the parent: for work that happens long after, or because of, that span (a retry an hour later, an
    operator's replay, a wave sent tomorrow). The parent is the current span, or none with ``new_trace``
    (the work then starts its own trace). A missing or malformed ``traceparent`` gives a span without
    link rather than an error: the work matters more than its trace."""
    linked = span_context_of(traceparent)
    links = [Link(linked, {"restock.link.kind": "stored-traceparent"})] if linked else []
    parent = otel_context.Context() if new_trace else None
    with tracer.start_as_current_span(
        name, context=parent, kind=kind, attributes=attributes, links=links
    ) as span:
        yield span
