"""Telemetry: contact redaction (logs and spans), export configuration, linked spans, the HTTP plugin."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from litestar import Litestar, get, post
from litestar.params import FromPath
from litestar.testing import AsyncTestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from restock_common.service import health_routes
from restock_common.telemetry import (
    JsonFormatter,
    RedactingSpanProcessor,
    build_tracer_provider,
    current_traceparent,
    http_telemetry_plugins,
    otlp_traces_endpoint,
    redact,
    redact_value,
    redacted_span,
    span_context_of,
    span_linked_to,
)

_RECORDED = InMemorySpanExporter()


@pytest.fixture
def recorded() -> Iterator[InMemorySpanExporter]:
    """Spans of the process's tracer provider (an SDK one, as ``setup_tracing`` installs), recorded."""
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(TracerProvider())
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    if not getattr(provider, "_restock_telemetry_recorded", False):
        provider.add_span_processor(SimpleSpanProcessor(_RECORDED))
        provider._restock_telemetry_recorded = True  # type: ignore[attr-defined]
    _RECORDED.clear()
    yield _RECORDED
    _RECORDED.clear()


# ---------------------------------------------------------------------------------------------- redaction


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sent to ada@example.com", "sent to [email]"),
        ("rcpt <grace.hopper+alerts@mail.example.co.uk> refused", "rcpt <[email]> refused"),
        ("GET /signup?email=ada%40example.com HTTP/1.1", "GET [email] HTTP/1.1"),
        ("{'to': 'ada@example.com'}", "{'to': [email]'}"),
        ("sms to +15005550006 queued", "sms to [phone] queued"),
        ("call +44 20 7946 0958 now", "call [phone] now"),
        ("To=%2B15005550006&Body=hi", "To=[phone]&Body=hi"),
        ("+1 (555) 010-0000", "[phone]"),
        # Public link tokens are credentials.
        (
            "http://127.0.0.1:8000/u/WzEsImFiYyJd.aW1lc3RhbXA.c2lnbmF0dXJlX2hlcmU?x=1",
            "http://127.0.0.1:8000/u/{token}?x=1",
        ),
        ("GET /c/WzEsImFiYyJd.aW1lc3RhbXA.c2lnbmF0dXJl", "GET /c/{token}"),
        # Not contacts: left alone.
        ("/usr/lib/python3.11/site-packages/x.py", "/usr/lib/python3.11/site-packages/x.py"),
        ("2026-11-25T07:42:54+00:00", "2026-11-25T07:42:54+00:00"),
        (
            "job 42 attempt 3, contact_hash 9f86d081884c7d65",
            "job 42 attempt 3, contact_hash 9f86d081884c7d65",
        ),
        (
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
        ("1 + 2 = 3", "1 + 2 = 3"),
        ("a 50% discount", "a 50% discount"),
        ("", ""),
    ],
)
def test_redact_replaces_contacts_and_keeps_the_rest(text: str, expected: str) -> None:
    assert redact(text) == expected


@given(
    st.emails(), st.text(alphabet=" ,;:<>()[]\n", max_size=3), st.text(alphabet=" ,;:<>()[]\n", max_size=3)
)
def test_no_email_survives_redaction(email: str, before: str, after: str) -> None:
    redacted = redact(f"x{before}{email}{after}y")
    assert email not in redacted
    assert "@" not in redacted


@given(st.from_regex(r"\+[1-9][0-9]{6,14}", fullmatch=True), st.sampled_from(["", " ", "to=", "("]))
def test_no_e164_number_survives_redaction(number: str, prefix: str) -> None:
    redacted = redact(f"{prefix}{number} ok")
    assert number[1:] not in redacted
    assert redacted == f"{prefix}[phone] ok"


def test_redact_value_walks_structures_and_stringifies_the_rest() -> None:
    class Contact:
        def __str__(self) -> str:
            return "Contact(ada@example.com)"

    value = {
        "to": ["ada@example.com", ("+15005550006", 3)],
        "ada@example.com": 1.5,
        "ok": None,
        "o": Contact(),
    }
    assert redact_value(value) == {
        "to": ["[email]", ["[phone]", 3]],
        "[email]": 1.5,
        "ok": None,
        "o": "Contact([email])",
    }


# --------------------------------------------------------------------------------------------------- logs


def _record(msg: str, *args: object, exc: bool = False, **extra: object) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("recipient ada@example.com refused")
        except ValueError:
            exc_info = sys.exc_info()
    record = logging.LogRecord("restock.test", logging.ERROR, __file__, 1, msg, args, exc_info)
    record.__dict__.update(extra)
    return record


def test_json_line_has_no_contact_anywhere() -> None:
    record = _record(
        "send to %s failed",
        "grace@example.org",
        exc=True,
        reason="550 <ada@example.com> unknown",
        recipients={"sms": "+15005550006"},
        job_id=7,
    )
    line = JsonFormatter("sender").format(record)
    event = json.loads(line)
    assert "@example" not in line
    assert "5005550006" not in line
    assert event["msg"] == "send to [email] failed"
    assert event["reason"] == "550 <[email]> unknown"
    assert event["recipients"] == {"sms": "[phone]"}
    assert event["job_id"] == 7
    assert "ValueError: recipient [email] refused" in event["exc"]


def test_json_line_carries_the_active_trace_and_span_ids() -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("work") as span:
        event = json.loads(JsonFormatter("detector").format(_record("hello")))
    context = span.get_span_context()
    assert event["trace_id"] == format(context.trace_id, "032x")
    assert event["span_id"] == format(context.span_id, "016x")
    assert "trace_id" not in json.loads(JsonFormatter("detector").format(_record("outside")))


# -------------------------------------------------------------------------------------------------- spans


def test_exported_spans_are_redacted_everywhere() -> None:
    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(RedactingSpanProcessor(SimpleSpanProcessor(exported)))
    tracer = provider.get_tracer("test")
    linked = TracerProvider().get_tracer("other").start_span("earlier").get_span_context()
    with tracer.start_as_current_span(
        "notify ada@example.com",
        attributes={"rcpt": "ada@example.com", "to": ["+15005550006", "x"], "job_id": 9},
        links=[trace.Link(linked, {"who": "grace@example.org"})],
    ) as span:
        span.add_event("retry", {"detail": "421 for +15005550006"})
        span.record_exception(ValueError("bad address ada@example.com"))
        span.set_status(StatusCode.ERROR, "refused ada@example.com")

    [finished] = exported.get_finished_spans()
    assert finished.name == "notify [email]"
    assert dict(finished.attributes or {}) == {"rcpt": "[email]", "to": ("[phone]", "x"), "job_id": 9}
    assert finished.links[0].attributes == {"who": "[email]"}
    assert finished.links[0].context == linked
    assert finished.events[0].attributes == {"detail": "421 for [phone]"}
    exception = dict(finished.events[1].attributes or {})
    assert exception["exception.message"] == "bad address [email]"
    assert "ada@example.com" not in str(exception["exception.stacktrace"])
    assert finished.status.description == "refused [email]"
    assert finished.context == span.get_span_context()
    assert finished.parent is None


def test_spans_without_contacts_pass_unchanged_and_a_contact_anywhere_is_caught() -> None:
    tracer = TracerProvider().get_tracer("test")
    clean = tracer.start_span("send notification", attributes={"restock.job_id": 1, "keys": ("a", "b")})
    clean.end()
    assert redacted_span(clean) is clean  # type: ignore[arg-type]
    linked = tracer.start_span("x").get_span_context()
    only_in_link = tracer.start_span("send", links=[trace.Link(linked, {"to": ("ok", "ada@example.com")})])
    only_in_link.end()
    copy = redacted_span(only_in_link)  # type: ignore[arg-type]
    assert copy is not only_in_link
    assert copy.links[0].attributes == {"to": ("ok", "[email]")}


# ------------------------------------------------------------------------------------------ export config


@pytest.mark.parametrize(
    ("environ", "endpoint"),
    [
        ({}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, "http://collector:4318/v1/traces"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"}, "http://collector:4318/v1/traces"),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:1",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b:2/t",
            },
            "http://b:2/t",
        ),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, "http://localhost:4318/v1/traces"),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, None),
        ({"OTEL_TRACES_EXPORTER": "console"}, None),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, None),
        (
            {"OTEL_SDK_DISABLED": "false", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"},
            "http://c:4318/v1/traces",
        ),
    ],
)
def test_otlp_endpoint_follows_the_standard_variables(environ: dict[str, str], endpoint: str | None) -> None:
    assert otlp_traces_endpoint(environ) == endpoint


def _processors(provider: trace.TracerProvider) -> tuple[object, ...]:
    assert isinstance(provider, TracerProvider)
    return tuple(provider._active_span_processor._span_processors)


def test_built_provider_exports_redacted_spans_only_when_asked() -> None:
    assert _processors(build_tracer_provider("svc", {})) == ()
    assert _processors(build_tracer_provider("svc", {"OTEL_TRACES_EXPORTER": "none"})) == ()
    [processor] = _processors(build_tracer_provider("svc", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}))
    assert isinstance(processor, RedactingSpanProcessor)
    provider = build_tracer_provider("detector", {})
    assert isinstance(provider, TracerProvider)
    assert provider.resource.attributes["service.name"] == "detector"
    assert provider.get_tracer("t").start_span("s").is_recording()  # ids exist for logs without export


@pytest.mark.parametrize(
    ("kind", "under_a_span", "recorded"),
    [
        (SpanKind.CLIENT, False, False),  # a probe's or an idle poll's query: its own trace, dropped
        (SpanKind.CLIENT, True, True),  # a query of some work: kept, a child of that work
        (SpanKind.SERVER, False, True),
        (SpanKind.CONSUMER, False, True),
        (SpanKind.INTERNAL, False, True),
        (SpanKind.PRODUCER, False, True),
    ],
)
def test_only_client_spans_outside_any_operation_are_dropped(
    kind: SpanKind, under_a_span: bool, recorded: bool
) -> None:
    provider = build_tracer_provider("svc", {})
    tracer = provider.get_tracer("t")
    if under_a_span:
        with tracer.start_as_current_span("work"):
            span = tracer.start_span("SELECT", kind=kind)
    else:
        span = tracer.start_span("SELECT", kind=kind)
    assert span.is_recording() is recorded
    assert span.get_span_context().is_valid  # logs inside still carry ids


def test_disabled_sdk_gives_a_no_op_provider() -> None:
    provider = build_tracer_provider("svc", {"OTEL_SDK_DISABLED": "TRUE", "OTEL_TRACES_EXPORTER": "otlp"})
    assert isinstance(provider, trace.NoOpTracerProvider)
    assert not provider.get_tracer("t").start_span("s").is_recording()


# ------------------------------------------------------------------------------------------- linked spans

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.mark.parametrize(
    "value", [None, "", "garbage", "00-00000000000000000000000000000000-b7ad6b7169203331-01"]
)
def test_a_missing_or_malformed_traceparent_names_no_span(value: str | None) -> None:
    assert span_context_of(value) is None


def test_linked_span_links_the_stored_context_and_keeps_the_current_parent(
    recorded: InMemorySpanExporter,
) -> None:
    tracer = trace.get_tracer("test")
    with (
        tracer.start_as_current_span("scheduler tick") as tick,
        span_linked_to(TRACEPARENT, "retry job", kind=SpanKind.CONSUMER, attributes={"restock.job_id": 4}),
    ):
        inside = current_traceparent()
    spans = {span.name: span for span in recorded.get_finished_spans()}
    retry = spans["retry job"]
    assert retry.kind is SpanKind.CONSUMER
    assert retry.parent is not None
    assert retry.parent.span_id == tick.get_span_context().span_id
    assert retry.context is not None
    assert retry.context.trace_id == tick.get_span_context().trace_id
    [link] = retry.links
    assert format(link.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    assert format(link.context.span_id, "016x") == "b7ad6b7169203331"
    assert link.context.is_remote
    assert dict(retry.attributes or {}) == {"restock.job_id": 4}
    assert inside is not None
    assert format(retry.context.span_id, "016x") in inside  # it was the current span


def test_linked_span_can_start_its_own_trace(recorded: InMemorySpanExporter) -> None:
    cli = trace.get_tracer("test").start_as_current_span("cli")
    with cli as outer, span_linked_to(TRACEPARENT, "replay", new_trace=True):
        pass
    replay = next(span for span in recorded.get_finished_spans() if span.name == "replay")
    assert replay.parent is None
    assert replay.context is not None
    assert replay.context.trace_id not in {
        outer.get_span_context().trace_id,
        0x0AF7651916CD43DD8448EB211C80319C,
    }
    assert len(replay.links) == 1


def test_linked_span_without_a_stored_context_has_no_link(recorded: InMemorySpanExporter) -> None:
    with span_linked_to("not-a-traceparent", "wave"):
        pass
    [wave] = recorded.get_finished_spans()
    assert wave.links == ()


# --------------------------------------------------------------------------------------------------- HTTP


@get("/c/{token:str}", sync_to_thread=False)
def confirm(token: FromPath[str]) -> dict[str, int]:
    return {"length": len(token)}


@get("/metrics", sync_to_thread=False)
def metrics() -> str:
    return "# nothing"


@post("/v1/traces", sync_to_thread=False, status_code=200)
def otlp_export() -> dict[str, str]:
    return {}


@get("/broken", sync_to_thread=False)
def broken() -> dict[str, int]:
    raise RuntimeError("a bug")


def _app() -> Litestar:
    routes = [*health_routes({}), confirm, metrics, otlp_export, broken]
    return Litestar(routes, plugins=http_telemetry_plugins(), logging_config=None)


async def test_http_server_span_continues_the_callers_trace_with_a_route_name(
    recorded: InMemorySpanExporter,
) -> None:
    async with AsyncTestClient(_app()) as client:
        response = await client.get("/c/some-long-token", headers={"traceparent": TRACEPARENT})
    assert response.status_code == 200
    [server] = [span for span in recorded.get_finished_spans() if span.kind is SpanKind.SERVER]
    assert server.name == "GET /c/{token}"
    assert server.attributes is not None
    assert server.attributes["http.route"] == "/c/{token}"
    assert server.context is not None
    assert format(server.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    assert server.parent is not None
    assert format(server.parent.span_id, "016x") == "b7ad6b7169203331"
    assert len(recorded.get_finished_spans()) == 1  # no per-ASGI-message receive/send spans


async def test_probes_and_metrics_are_not_traced_and_unknown_routes_are_named_by_method(
    recorded: InMemorySpanExporter,
) -> None:
    async with AsyncTestClient(_app()) as client:
        for path in ("/healthz", "/readyz", "/metrics"):
            assert (await client.get(path)).status_code == 200
        assert (
            await client.post("/v1/traces")
        ).status_code == 200  # the sandbox receiver: no span per export
        assert (await client.get("/no/such/route/123")).status_code == 404
    names = [span.name for span in recorded.get_finished_spans()]
    assert names == ["GET"]


async def test_http_server_span_records_the_status_code_and_marks_server_errors(
    recorded: InMemorySpanExporter,
) -> None:
    async with AsyncTestClient(_app()) as client:
        assert (await client.get("/c/some-long-token")).status_code == 200
        assert (await client.get("/broken")).status_code == 500
        assert (await client.get("/no/such/route")).status_code == 404
    spans = {span.name: span for span in recorded.get_finished_spans()}
    assert set(spans) == {"GET /c/{token}", "GET /broken", "GET"}
    outcome = {
        name: (dict(span.attributes or {}).get("http.response.status_code"), span.status.status_code)
        for name, span in spans.items()
    }
    assert outcome == {
        "GET /c/{token}": (200, StatusCode.UNSET),
        "GET /broken": (500, StatusCode.ERROR),
        "GET": (404, StatusCode.UNSET),  # a client's error is not the server's
    }
    attributes = dict(spans["GET /c/{token}"].attributes or {})
    assert attributes["http.request.method"] == "GET"
    assert not any("some-long-token" in str(value) for value in attributes.values())  # no raw URL
