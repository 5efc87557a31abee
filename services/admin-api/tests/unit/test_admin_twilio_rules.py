"""Inbound SMS keywords, their TwiML answers, and the ordering of status callbacks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from restock_admin.twilio import receipts
from restock_admin.twilio.keywords import CONFIRMED_TEXT, EMPTY, Keyword, keyword, message, reply
from restock_admin.twilio.receipts import Receipt, error_kind, opted_out, supersedes


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("STOP", Keyword.OPT_OUT),
        ("stop", Keyword.OPT_OUT),
        ("  Stop. ", Keyword.OPT_OUT),
        ("STOPALL", Keyword.OPT_OUT),
        ("unsubscribe", Keyword.OPT_OUT),
        ("Cancel", Keyword.OPT_OUT),
        ("END", Keyword.OPT_OUT),
        ("quit!", Keyword.OPT_OUT),
        ("START", Keyword.OPT_IN),
        ("unstop", Keyword.OPT_IN),
        ("Yes", Keyword.CONFIRM),
        ("YES!", Keyword.CONFIRM),
        ("don't stop", None),
        ("stop it", None),
        ("", None),
        ("HELP", None),
    ],
)
def test_keywords_are_the_whole_message(body: str, expected: Keyword | None) -> None:
    assert keyword(body) is expected


@pytest.mark.parametrize(
    ("asked", "changed", "answer"),
    [
        (Keyword.OPT_OUT, 2, EMPTY),  # Twilio answers STOP itself on a long code
        (Keyword.OPT_IN, 1, EMPTY),
        (Keyword.CONFIRM, 1, message(CONFIRMED_TEXT)),
        (Keyword.CONFIRM, 0, EMPTY),
        (None, 0, EMPTY),
    ],
)
def test_replies(asked: Keyword | None, changed: int, answer: str) -> None:
    assert reply(asked, changed) == answer


def test_twiml_message_is_escaped() -> None:
    assert "<Message>a &lt;b&gt; &amp; c</Message>" in message("a <b> & c")


@pytest.mark.parametrize(
    ("incoming", "recorded", "expected"),
    [
        ("queued", None, True),
        ("sent", "queued", True),
        ("delivered", "sent", True),
        ("sent", "delivered", False),  # out of order: the later status stays
        ("undelivered", "delivered", False),
        ("failed", "sending", True),
        ("read", "delivered", True),
        ("sent", "something-new", True),
    ],
)
def test_statuses_never_go_back(incoming: str, recorded: str | None, expected: bool) -> None:
    assert supersedes(incoming, recorded) is expected


@pytest.mark.parametrize(
    ("status", "code", "kind", "opt_out"),
    [
        ("undelivered", "30005", "permanent", False),
        ("undelivered", "30006", "permanent", False),
        ("failed", "21610", "permanent", True),
        ("undelivered", "30001", "temporary", False),
        ("delivered", None, None, False),
        ("sent", "30005", None, False),
    ],
)
def test_failed_receipts_are_classified(
    status: str, code: str | None, kind: str | None, opt_out: bool
) -> None:
    receipt = Receipt("SM1", status, code)
    assert (error_kind(receipt), opted_out(receipt)) == (kind, opt_out)


STATUSES = ["accepted", "queued", "sending", "sent", "delivered", "undelivered", "failed", "read"]


@given(st.lists(st.sampled_from(STATUSES), min_size=1, max_size=12))
def test_any_arrival_order_keeps_the_furthest_status(arrivals: list[str]) -> None:
    """Whatever order the callbacks arrive in, the recorded status is one of the furthest along."""
    recorded: str | None = None
    for status in arrivals:
        if supersedes(status, recorded):
            recorded = status
    assert recorded is not None
    assert not any(supersedes(status, recorded) for status in arrivals)


@given(st.text(max_size=40))
def test_keyword_is_total_and_only_whole_words(body: str) -> None:
    found = keyword(body)
    if found is not None:
        assert body.strip().rstrip(".!").strip().upper() in {
            "STOP",
            "STOPALL",
            "UNSUBSCRIBE",
            "CANCEL",
            "END",
            "QUIT",
            "START",
            "UNSTOP",
            "YES",
        }


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("SM" + "a" * 32, "SM" + "a" * 32),
        ("MM" + "0123456789abcdef" * 2, "MM" + "0123456789abcdef" * 2),
        ("SM" + "a" * 31, None),
        ("SM" + "a" * 31 + "\x00", None),
        ("XX" + "a" * 32, None),
        ("", None),
    ],
)
def test_only_a_message_sid_is_a_message_sid(value: str, expected: str | None) -> None:
    assert receipts.message_sid(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"), [("30005", "30005"), ("21610", "21610"), ("", None), (None, None), ("3\x00", None)]
)
def test_only_a_number_is_an_error_code(value: str | None, expected: str | None) -> None:
    assert receipts.error_code(value) == expected
