"""The Twilio peer's pure parts: segments, the fault table, error bodies, the list filters and pages,
rate windows, and the callback signature checked by twilio's own RequestValidator."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from restock_common.signatures import twilio_signature
from restock_sandbox.twilio.faults import TwilioFault, TwilioFaultTable, error_body, is_known_code
from restock_sandbox.twilio.messages import ListFilter, MessageRecord, max_in_window, page, resource
from restock_sandbox.twilio.peer import basic_credentials, create_error, inbound_params, status_params
from restock_sandbox.twilio.segments import segment

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("body", "encoding", "segments"),
    [
        ("", "GSM-7", 1),
        ("a" * 160, "GSM-7", 1),
        ("a" * 161, "GSM-7", 2),
        ("a" * 306, "GSM-7", 2),
        ("a" * 307, "GSM-7", 3),
        ("€" * 80, "GSM-7", 1),  # 160 septets
        ("€" * 81, "GSM-7", 2),
        ("a" * 152 + "€" + "a" * 10, "GSM-7", 2),  # the escape pair is not split: 152 + 2 > 153
        ("é" * 160, "GSM-7", 1),  # é is in the GSM basic table
        ("ç" * 70, "UCS-2", 1),  # ç (lower case) is not
        ("ç" * 71, "UCS-2", 2),
        ("a" * 134, "GSM-7", 1),
        ("\N{FIRE}" * 35, "UCS-2", 1),  # 70 UTF-16 code units
        ("\N{FIRE}" * 36, "UCS-2", 2),
        ("a" * 66 + "\N{FIRE}" + "a" * 66, "UCS-2", 3),  # 134 units, but the pair is not split after 66
        ("x" * 1600, "GSM-7", 11),
    ],
)
def test_segments(body: str, encoding: str, segments: int) -> None:
    result = segment(body)
    assert (result.encoding, result.segments) == (encoding, segments)


@given(st.text(max_size=400), st.text(min_size=1, max_size=5))
def test_appending_never_reduces_segments(body: str, more: str) -> None:
    assert segment(body + more).segments >= segment(body).segments >= 1


def test_fault_table_matches_number_prefix_and_everyone_and_uses_rules_up() -> None:
    table = TwilioFaultTable()
    table.add(TwilioFault("+15551230000", "error", 21211, times=2))
    table.add(TwilioFault("+44*", "error", 21408, times=None))
    table.add(TwilioFault("*", "delay", delay_ms=10))
    assert [r.code for r in (table.take("+15551230000"), table.take("+15551230000"))] == [21211, 21211]
    assert table.take("+15551230000").mode == "delay"  # exhausted: the next rule applies
    assert table.take("+15551230000") is None
    assert all(table.take("+447700900123").code == 21408 for _ in range(3))
    assert table.take("+4") is None


def test_error_bodies_are_twilios() -> None:
    assert error_body(21610, "+1555") == (
        400,
        {
            "code": 21610,
            "message": "Attempt to send to unsubscribed recipient",
            "more_info": "https://www.twilio.com/docs/errors/21610",
            "status": 400,
        },
    )
    assert error_body(20429)[0] == 429
    assert error_body(20003)[0] == 401
    assert error_body(500)[1]["code"] == 20500
    assert all(is_known_code(c) for c in (21211, 21610, 21614, 21408, 20429, 20003, 500, 30005, 30006))
    assert not is_known_code(12345)
    assert TwilioFault("*", "error", 30005).delivery_error
    assert not TwilioFault("*", "error", 21211).delivery_error


@pytest.mark.parametrize(
    ("form", "code"),
    [
        ({"To": "+14155550123", "From": "+15005550006", "Body": "hi"}, None),
        ({"To": "+14155550123", "MessagingServiceSid": "MG1", "Body": "hi"}, None),
        ({"From": "+1", "Body": "hi"}, 21604),
        ({"To": "14155550123", "From": "+1", "Body": "hi"}, 21211),
        ({"To": "+0123456789", "From": "+1", "Body": "hi"}, 21211),
        ({"To": "+14155550123", "Body": "hi"}, 21603),
        ({"To": "+14155550123", "From": "+1"}, 21602),
        ({"To": "+14155550123", "From": "+1", "Body": "x" * 1601}, 21617),
    ],
)
def test_create_validation(form: dict[str, str], code: int | None) -> None:
    assert create_error(form) == code


def test_basic_credentials() -> None:
    assert basic_credentials("Basic QUMxOnRva2Vu") == ("AC1", "token")
    assert basic_credentials("Bearer x") is None
    assert basic_credentials("Basic !!!") is None
    assert basic_credentials(None) is None


def _message(to: str, created: datetime, sent: datetime | None = None, sid: str = "SM1") -> MessageRecord:
    return MessageRecord(
        sid=sid, account_sid="AC1", to=to, from_="+1500", body="hi", num_segments=1, encoding="GSM-7",
        date_created=created, date_sent=sent, status="sent" if sent else "queued",
    )  # fmt: skip


def test_resource_has_twilios_types() -> None:
    body = resource(_message("+1415", NOW, NOW))
    assert body["date_created"] == "Sun, 01 Jun 2025 12:00:00 +0000"
    assert (body["num_segments"], body["num_media"], body["direction"]) == ("1", "0", "outbound-api")
    assert body["uri"] == "/2010-04-01/Accounts/AC1/Messages/SM1.json"
    assert resource(_message("+1415", NOW))["price"] is None


@pytest.mark.parametrize(
    ("wanted", "expected"),
    [
        (ListFilter(to="+1415"), ["b", "a"]),
        (ListFilter(to="+1415", sent_on="2025-06-01"), ["a"]),
        (ListFilter(to="+1415", sent_on="2025-06-01T00:00:00Z"), ["a"]),
        (ListFilter(sent_after="2025-06-01T12:00:00Z"), ["a", "c"]),
        (ListFilter(sent_after="2025-06-01T12:00:01Z"), ["c"]),
        (ListFilter(sent_before="2025-06-01"), ["a"]),
        (ListFilter(sent_before="2025-06-01T11:59:59Z"), []),
        (ListFilter(to="+999"), []),
    ],
)
def test_list_filters(wanted: ListFilter, expected: list[str]) -> None:
    messages = [
        _message("+1415", NOW, NOW, "a"),
        _message("+1415", NOW + timedelta(seconds=1), None, "b"),  # queued: never matches DateSent
        _message("+1416", NOW + timedelta(days=1), NOW + timedelta(days=1), "c"),
    ]
    assert sorted(m.sid for m in messages if wanted.matches(m)) == sorted(expected)


def test_pages_are_newest_first_with_relative_next_page_uri() -> None:
    messages = [_message("+1415", NOW + timedelta(seconds=n), NOW, f"SM{n}") for n in range(5)]
    first = page("AC1", messages, ListFilter(to="+1415"), 0, 2)
    assert [m["sid"] for m in first["messages"]] == ["SM4", "SM3"]
    assert first["next_page_uri"] == "/2010-04-01/Accounts/AC1/Messages.json?To=%2B1415&PageSize=2&Page=1"
    last = page("AC1", messages, ListFilter(to="+1415"), 2, 2)
    assert [m["sid"] for m in last["messages"]] == ["SM0"]
    assert last["next_page_uri"] is None
    assert set(first) - {"messages"} <= {
        "end", "first_page_uri", "next_page_uri", "last_page_uri", "page", "page_size", "previous_page_uri",
        "total", "num_pages", "start", "uri",
    }  # fmt: skip


def test_max_in_window() -> None:
    times = [NOW + timedelta(milliseconds=ms) for ms in (0, 100, 999, 1000, 1500, 1999, 2000, 5000)]
    # Windows are [t, t + 1 s): {0, 100, 999} and {1000, 1500, 1999} hold 3; 999 and 1999 are 1 s apart.
    assert max_in_window(times, 1.0) == 3
    assert max_in_window(times, 1.001) == 4
    assert max_in_window([], 1.0) == 0


def test_status_callback_and_inbound_signatures_pass_twilios_validator() -> None:
    record = _message("+14155550123", NOW, NOW)
    record.error_code = 30005
    params = status_params(record)
    url = "https://admin.example.com/twilio/status?job=1"
    signature = twilio_signature("token", url, params)
    validator = RequestValidator("token")
    assert validator.validate(url, params, signature)
    assert params["ErrorCode"] == "30005"
    assert params["SmsSid"] == params["MessageSid"]
    inbound = inbound_params("AC1", "+14155550123", "+15005550006", "STOP")
    assert validator.validate(url, inbound, twilio_signature("token", url, inbound))
    assert not RequestValidator("other").validate(url, inbound, twilio_signature("token", url, inbound))
