"""Messages as Twilio's API shows them: the resource JSON, the list filters and the paging envelope. Pure.

Rules:
- A sid is ``SM`` + 32 hex digits; dates are RFC 2822 in GMT (``Sun, 01 Jun 2025 12:00:00 +0000``);
  ``num_segments`` and ``num_media`` are strings, ``price`` is null until sent, as Twilio's are.
- The list (``GET .../Messages.json``) is newest first and filters on ``To``, ``From`` and ``DateSent``:
  ``DateSent=`` the UTC day of the given date (or datetime), ``DateSent>`` / ``DateSent<`` (on the wire
  ``DateSent>=`` / ``DateSent<=``) inclusive bounds: a bare date bounds the whole day, a datetime the
  second. A message not yet sent has no ``date_sent`` and never matches a ``DateSent`` filter.
- Pages: ``PageSize`` (default 50, at most 1000) and ``Page`` (from 0); ``next_page_uri`` is relative to
  the API base, exactly as Twilio's, so the official client follows it under any base URL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlencode

API_VERSION = "2010-04-01"
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


@dataclass
class MessageRecord:
    """One accepted message and what became of it."""

    sid: str
    account_sid: str
    to: str
    from_: str
    body: str
    num_segments: int
    encoding: str
    date_created: datetime
    status: str = "queued"
    status_callback: str | None = None
    messaging_service_sid: str | None = None
    date_sent: datetime | None = None
    date_updated: datetime | None = None
    error_code: int | None = None
    error_message: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    traceparent: str | None = None


def rfc2822(moment: datetime | None) -> str | None:
    """Twilio's date format, in GMT."""
    return None if moment is None else format_datetime(moment.astimezone(UTC))


def message_uri(account_sid: str, sid: str | None = None) -> str:
    """The API path of the list, or of one message."""
    base = f"/{API_VERSION}/Accounts/{account_sid}/Messages"
    return f"{base}/{sid}.json" if sid else f"{base}.json"


def resource(message: MessageRecord) -> dict[str, Any]:
    """The Message resource JSON, every field the official client reads."""
    uri = message_uri(message.account_sid, message.sid)
    sent = message.status in ("sent", "delivered", "undelivered")
    return {
        "account_sid": message.account_sid,
        "api_version": API_VERSION,
        "body": message.body,
        "date_created": rfc2822(message.date_created),
        "date_sent": rfc2822(message.date_sent),
        "date_updated": rfc2822(message.date_updated or message.date_created),
        "direction": "outbound-api",
        "error_code": message.error_code,
        "error_message": message.error_message,
        "from": message.from_,
        "messaging_service_sid": message.messaging_service_sid,
        "num_media": "0",
        "num_segments": str(message.num_segments),
        "price": f"-{0.0079 * message.num_segments:.5f}" if sent else None,
        "price_unit": "USD",
        "sid": message.sid,
        "status": message.status,
        "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
        "to": message.to,
        "uri": uri,
    }


def _parse_bound(value: str) -> tuple[datetime, datetime]:
    """The inclusive [start, end] a DateSent value names: a whole day for a date, a second otherwise."""
    text = value.strip()
    if len(text) == 10:
        day = datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
        return day, day + timedelta(days=1) - timedelta(microseconds=1)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment, moment + timedelta(seconds=1) - timedelta(microseconds=1)


@dataclass(frozen=True)
class ListFilter:
    """The list's filters; raises ValueError on a malformed date."""

    to: str | None = None
    from_: str | None = None
    sent_on: str | None = None  # DateSent
    sent_after: str | None = None  # DateSent>
    sent_before: str | None = None  # DateSent<

    def matches(self, message: MessageRecord) -> bool:
        if self.to is not None and message.to != self.to:
            return False
        if self.from_ is not None and message.from_ != self.from_:
            return False
        return self._date_matches(message.date_sent)

    def _date_matches(self, sent: datetime | None) -> bool:
        if self.sent_on is None and self.sent_after is None and self.sent_before is None:
            return True
        if sent is None:
            return False
        if self.sent_on is not None and _parse_bound(self.sent_on)[0].date() != sent.astimezone(UTC).date():
            return False
        if self.sent_after is not None and sent < _parse_bound(self.sent_after)[0]:
            return False
        return self.sent_before is None or sent <= _parse_bound(self.sent_before)[1]

    def validate(self) -> None:
        """Raise ValueError when a date cannot be read."""
        for value in (self.sent_on, self.sent_after, self.sent_before):
            if value is not None:
                _parse_bound(value)

    def query(self) -> list[tuple[str, str]]:
        pairs = [
            ("To", self.to),
            ("From", self.from_),
            ("DateSent", self.sent_on),
            ("DateSent>", self.sent_after),
            ("DateSent<", self.sent_before),
        ]
        return [(key, value) for key, value in pairs if value is not None]


def list_filter(params: Mapping[str, str]) -> ListFilter:
    """The filters of a list request's query parameters."""
    return ListFilter(
        to=params.get("To"),
        from_=params.get("From"),
        sent_on=params.get("DateSent"),
        sent_after=params.get("DateSent>"),
        sent_before=params.get("DateSent<"),
    )


def page(
    account_sid: str,
    messages: Sequence[MessageRecord],
    wanted: ListFilter,
    page_number: int,
    page_size: int,
) -> dict[str, Any]:
    """Twilio's paging envelope over the matching messages, newest first."""
    matching = sorted((m for m in messages if wanted.matches(m)), key=lambda m: m.date_created, reverse=True)
    start = page_number * page_size
    chunk = matching[start : start + page_size]
    base = message_uri(account_sid)

    def uri(number: int) -> str:
        return f"{base}?{urlencode([*wanted.query(), ('PageSize', str(page_size)), ('Page', str(number))])}"

    has_next = start + page_size < len(matching)
    return {
        "messages": [resource(m) for m in chunk],
        "uri": uri(page_number),
        "first_page_uri": uri(0),
        "next_page_uri": uri(page_number + 1) if has_next else None,
        "previous_page_uri": uri(page_number - 1) if page_number > 0 else None,
        "page": page_number,
        "page_size": page_size,
        "start": start,
        "end": start + len(chunk) - 1 if chunk else start,
    }


def max_in_window(moments: Sequence[datetime], seconds: float = 1.0) -> int:
    """The most moments inside any window of ``seconds`` (a sliding window, for rate observation)."""
    ordered = sorted(moments)
    best, left = 0, 0
    for right, moment in enumerate(ordered):
        while (moment - ordered[left]).total_seconds() >= seconds:
            left += 1
        best = max(best, right - left + 1)
    return best
