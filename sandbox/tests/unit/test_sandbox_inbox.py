"""The inbox's fault table and message parsing, without a server."""

from __future__ import annotations

import time
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
    stored = inbox.store(mail.as_bytes(), "from@x", ["to@y"], NOW).parsed()
    assert (stored.subject, stored.message_id, stored.html) == ("Hello", "<id@x>", None)
    assert stored.text.strip() == "plain body"  # type: ignore[union-attr]
    assert [v for k, v in stored.headers if k == "X-Trace"] == ["one", "two"]
    assert inbox.received("TO@y") == [stored]
    assert inbox.received("other@y") == []


def test_an_outage_rule_answers_everyone_until_it_expires() -> None:
    inbox = Inbox()
    inbox.add_fault(FaultRule("*", 421, "try later", times=None, expires_at=time.monotonic() + 0.2))
    assert [inbox.take_fault("rcpt", ["a@b.co"]).code for _ in range(3)] == [421] * 3  # type: ignore[union-attr]
    time.sleep(0.25)
    assert inbox.take_fault("rcpt", ["a@b.co"]) is None
    assert inbox.faults == []


def _mail(message_id: str) -> bytes:
    mail = EmailMessage()
    mail["Message-ID"] = message_id
    mail.set_content("x")
    return mail.as_bytes()


def test_stats_count_messages_and_the_message_ids_received_twice() -> None:
    inbox = Inbox()
    assert inbox.stats().messages == 0
    for message_id in ["<a@x>", "<b@x>", "<a@x>", "<c@x>", "<a@x>"]:
        inbox.store(_mail(message_id), "from@x", ["to@y"], NOW)
    stats = inbox.stats()
    assert (stats.messages, stats.distinct_message_ids, stats.duplicates) == (5, 3, {"<a@x>": 3})
    assert stats.first_received_at == stats.last_received_at == NOW


def test_a_folded_message_id_is_read_unfolded() -> None:
    raw = (
        b"Message-ID:\r\n <0123456789abcdef0123456789abcdef@restock.a-long-shop-name.myshopify.com>\r\n"
        b"\r\nbody"
    )
    inbox = Inbox()
    received = inbox.store(raw, "from@x", ["to@y"], NOW)
    expected = "<0123456789abcdef0123456789abcdef@restock.a-long-shop-name.myshopify.com>"
    assert received.message_id == received.parsed().message_id == expected


@pytest.mark.parametrize(
    ("rule", "stores"),
    [
        (FaultRule("*", None, stage="data", delay_seconds=1), True),  # a slow answer: accepted
        (FaultRule("*", None, stage="data", drop=True, accepted=True), True),  # the reply lost
        (FaultRule("*", None, stage="data", drop=True), False),  # dropped before accepting
        (FaultRule("*", 452, stage="data", delay_seconds=1), False),  # a slow refusal
    ],
)
def test_which_data_rules_let_the_message_into_the_inbox(rule: FaultRule, stores: bool) -> None:
    assert rule.stores_message is stores
