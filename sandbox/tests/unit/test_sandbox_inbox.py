"""The inbox's fault table and message parsing, without a server."""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage

import pytest

from restock_sandbox.smtp.inbox import FaultRule, Inbox

NOW = datetime(2025, 6, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("match", "address", "matches"),
    [
        ("ada@example.com", "ada@example.com", True),
        ("ada@example.com", "ADA@Example.com", True),
        ("ada@example.com", "grace@example.com", False),
        ("example.com", "grace@example.com", True),
        ("@example.com", "grace@EXAMPLE.com", True),
        ("example.com", "grace@sub.example.com", False),
        ("example.com", "example.com@evil.org", False),
        ("*", "anyone@anywhere.net", True),
    ],
)
def test_rule_matching(match: str, address: str, matches: bool) -> None:
    assert FaultRule(match, 450, "busy").matches(address) is matches


def test_a_rule_is_used_up_after_its_times_and_others_wait_their_turn() -> None:
    inbox = Inbox()
    inbox.add_fault(FaultRule("example.com", 451, "later", times=2))
    inbox.add_fault(FaultRule("*", 550, "no", times=1))
    answers = [inbox.take_fault("rcpt", ["ada@example.com"]) for _ in range(4)]
    assert [a.code if a else None for a in answers] == [451, 451, 550, None]
    assert inbox.faults == []


def test_stage_is_respected_and_unlimited_rules_stay() -> None:
    inbox = Inbox()
    inbox.add_fault(FaultRule("*", 552, "too big", times=None, stage="data"))
    assert inbox.take_fault("rcpt", ["a@b.co"]) is None
    assert [inbox.take_fault("data", ["a@b.co"]).code for _ in range(5)] == [552] * 5  # type: ignore[union-attr]
    inbox.clear_faults()
    assert inbox.take_fault("data", ["a@b.co"]) is None


def test_stored_message_keeps_headers_and_parts() -> None:
    mail = EmailMessage()
    mail["Subject"] = "Hello"
    mail["Message-ID"] = "<id@x>"
    mail["X-Trace"] = "one"
    mail["X-Trace"] = "two"
    mail.set_content("plain body")
    inbox = Inbox()
    stored = inbox.store(mail.as_bytes(), "from@x", ["to@y"], NOW)
    assert (stored.subject, stored.message_id, stored.html) == ("Hello", "<id@x>", None)
    assert stored.text.strip() == "plain body"  # type: ignore[union-attr]
    assert [v for k, v in stored.headers if k == "X-Trace"] == ["one", "two"]
    assert inbox.received("TO@y") == [stored]
    assert inbox.received("other@y") == []
