"""The stack's process handling: an optional process (the SMS sender) that dies or is not ready is
dropped with a warning while the rest runs on; a required one failing still fails the stack."""

from __future__ import annotations

import sys

import pytest

from restock_sandbox.stack import Ports, ProcessSpec, Stack, process_specs

pytestmark = pytest.mark.integration


def _http_server(name: str, port: int, *, optional: bool = False) -> ProcessSpec:
    return ProcessSpec(
        name, (sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"), port, "/", optional
    )


def _exits(name: str, port: int, *, optional: bool) -> ProcessSpec:
    return ProcessSpec(name, (sys.executable, "-c", "raise SystemExit(3)"), port, "/", optional)


def _hangs(name: str, port: int) -> ProcessSpec:
    return ProcessSpec(name, (sys.executable, "-c", "import time; time.sleep(60)"), port, "/", True)


def test_ports_agree_on_the_twilio_peer_and_the_inbound_webhook() -> None:
    ports = Ports.free()
    assert len({ports.admin, ports.detector, ports.dispatcher, ports.sender_email, ports.sender_sms,
                ports.sandbox, ports.smtp}) == 7  # fmt: skip
    env = ports.env()
    assert env["RESTOCK_TWILIO_BASE_URL"] == f"http://127.0.0.1:{ports.sandbox}/twilio"
    assert env["RESTOCK_SANDBOX_TWILIO_INBOUND_URL"] == f"http://127.0.0.1:{ports.admin}/twilio/inbound"
    sms = next(spec for spec in process_specs(ports) if spec.name == "sender-sms")
    assert (sms.argv[-2:], sms.port, sms.optional) == (("--channel", "sms"), ports.sender_sms, True)
    assert [spec.name for spec in process_specs(ports) if not spec.optional][-1] == "sender-email"


def test_an_optional_process_that_dies_or_hangs_is_dropped_and_the_rest_runs(tmp_path) -> None:
    ports = Ports.free()
    stack = Stack(env={}, ports=ports, log_dir=tmp_path)
    stack._start(_http_server("web", ports.admin))
    stack._start(_exits("sms-dies", ports.sender_sms, optional=True))
    stack._start(_hangs("sms-hangs", ports.dispatcher))
    try:
        stack.wait_ready(timeout=8)
        assert set(stack.processes) == {"web"}
        assert stack.dropped == {
            "sms-dies": "sms-dies exited with 3",
            "sms-hangs": f"sms-hangs not ready at http://127.0.0.1:{ports.dispatcher}/",
        }
        assert stack.first_exited() is None
    finally:
        codes = stack.stop(timeout=10)
    assert set(codes) == {"web"}


def test_a_required_process_that_dies_fails_the_stack(tmp_path) -> None:
    ports = Ports.free()
    stack = Stack(env={}, ports=ports, log_dir=tmp_path)
    stack._start(_exits("admin", ports.admin, optional=False))
    try:
        with pytest.raises(RuntimeError, match="admin exited with 3"):
            stack.wait_ready(timeout=8)
    finally:
        stack.stop(timeout=10)


def test_processes_export_spans_to_the_sandbox_unless_the_user_chose_a_collector(monkeypatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    ports = Ports.free()
    assert Stack(env={}, ports=ports)._trace_export() == {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{ports.sandbox}"
    }
    chosen = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    assert Stack(env=chosen, ports=ports)._trace_export() == {}
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://collector:4318/v1/traces")
    assert Stack(env={}, ports=ports)._trace_export() == {}
