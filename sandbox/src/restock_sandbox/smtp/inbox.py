"""The inbox: every message the sandbox SMTP server accepted, and the failures it is told to answer.

Rules of the fault table:
- A rule matches a recipient by exact address (``ada@example.com``), by domain (``example.com`` or
  ``@example.com``), or everyone (``*``); case-insensitive.
- It applies at one SMTP stage: ``rcpt`` (the RCPT TO of a matching recipient, where real servers answer
  "mailbox unavailable" or greylist), ``data`` (the reply to the final dot, when any recipient matches) or
  ``auth`` (the AUTH command; the rule matches the login name instead of a recipient).
- What it does, after waiting ``delay_seconds`` (0: none):
  ``code``   answer ``code message`` instead of accepting; at ``data`` nothing is stored.
  ``drop``   close the connection without any reply. At ``data``, ``accepted`` says whether the message
             was stored first: the ambiguous case where the server has it and the client never hears 250.
  neither    a slow answer: then accept as usual. At ``data`` the message is stored before the wait, so a
             client that gives up waiting has still delivered it.
  At ``auth`` only ``code`` is served (aiosmtpd checks logins synchronously: no wait, no drop).
- The first matching rule applies and uses up one of its ``times``; a rule with ``times`` None applies to
  every attempt until the table is cleared. Exhausted rules disappear, so the next attempt is accepted:
  "answer 451 twice, then take it".
- A rule with ``expires_at`` (a ``time.monotonic()`` instant) also disappears then: "answer 421 to
  everyone for 30 seconds, then recover", an outage rather than a count.
"""

from __future__ import annotations

import email
import email.policy
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Literal

import msgspec

Stage = Literal["auth", "rcpt", "data"]


class StoredMessage(msgspec.Struct, frozen=True, kw_only=True):
    """One accepted message, as ``GET /inbox`` shows it."""

    id: str
    mail_from: str
    rcpt_tos: list[str]
    headers: list[tuple[str, str]]  # every header, in order, repeated names kept
    subject: str | None
    message_id: str | None
    text: str | None
    html: str | None
    received_at: datetime
    size: int


class InboxStats(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /inbox/stats``: the inbox in numbers."""

    messages: int
    distinct_message_ids: int
    duplicates: dict[str, int]  # Message-ID -> times received, only those received more than once
    first_received_at: datetime | None
    last_received_at: datetime | None


@dataclass
class FaultRule:
    """What matching attempts meet, ``times`` times (None: until cleared): a reply ``code message``, a
    dropped connection, or (neither) a slow answer; each after ``delay_seconds``."""

    match: str
    code: int | None
    message: str = "4.3.0 sandbox fault"
    times: int | None = 1
    stage: Stage = "rcpt"
    expires_at: float | None = None  # time.monotonic(); None: only ``times`` ends the rule
    delay_seconds: float = 0.0
    drop: bool = False
    accepted: bool = False  # a drop at ``data``: the message was stored before the connection closed

    @property
    def stores_message(self) -> bool:
        """Whether a ``data`` rule lets the message into the inbox (a slow answer, or an accepted drop)."""
        return self.code is None and (self.accepted or not self.drop)

    def expired(self, now: float) -> bool:
        """Whether the rule's outage is over."""
        return self.expires_at is not None and now >= self.expires_at

    def matches(self, address: str) -> bool:
        """Whether this rule applies to one recipient address."""
        pattern, address = self.match.strip().lower(), address.strip().lower()
        if pattern == "*":
            return True
        if "@" in pattern.lstrip("@"):
            return address == pattern
        return address.rsplit("@", 1)[-1] == pattern.lstrip("@")

    def reply(self) -> str:
        """The SMTP reply line."""
        return f"{self.code} {self.message}"


def _part(message: EmailMessage, subtype: str) -> str | None:
    body = message.get_body(preferencelist=(subtype,))
    if body is None or body.get_content_type() != f"text/{subtype}":
        return None
    content = body.get_content()
    return content if isinstance(content, str) else None


def parse_message(
    raw: bytes, mail_from: str, rcpt_tos: list[str], received_at: datetime, message_id: str
) -> StoredMessage:
    """A stored message from the raw bytes of an SMTP DATA."""
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)  # the default policy always builds EmailMessage
    return StoredMessage(
        id=message_id,
        mail_from=mail_from,
        rcpt_tos=list(rcpt_tos),
        headers=[(name, str(value)) for name, value in parsed.items()],
        subject=str(parsed["Subject"]) if parsed["Subject"] is not None else None,
        message_id=header_message_id(raw),
        text=_part(parsed, "plain"),
        html=_part(parsed, "html"),
        received_at=received_at,
        size=len(raw),
    )


@dataclass
class Received:
    """One accepted message as it came off the wire; parsed into a ``StoredMessage`` only when read, so
    accepting a message costs the peer a header scan, not a MIME parse (the fault suite sends 10,000)."""

    id: str
    raw: bytes
    mail_from: str
    rcpt_tos: list[str]
    received_at: datetime
    message_id: str | None
    _parsed: StoredMessage | None = None

    def parsed(self) -> StoredMessage:
        if self._parsed is None:
            self._parsed = parse_message(self.raw, self.mail_from, self.rcpt_tos, self.received_at, self.id)
        return self._parsed


_HEADERS_ONLY = BytesHeaderParser(policy=compat32)


def header_message_id(raw: bytes) -> str | None:
    """The Message-ID header, unfolded, from the header block alone (pure)."""
    value = _HEADERS_ONLY.parsebytes(raw).get("Message-ID")
    if value is None:
        return None
    return "".join(str(value).split()) or None


class Inbox:
    """Messages and the fault table, in memory (the sandbox is a development and test peer)."""

    def __init__(self) -> None:
        self.messages: list[Received] = []
        self.faults: list[FaultRule] = []

    def store(self, raw: bytes, mail_from: str, rcpt_tos: list[str], received_at: datetime) -> Received:
        """Keep an accepted message."""
        message = Received(
            uuid.uuid4().hex, raw, mail_from, list(rcpt_tos), received_at, header_message_id(raw)
        )
        self.messages.append(message)
        return message

    def received(self, to: str | None = None) -> list[StoredMessage]:
        """Every message, or those with ``to`` among their envelope recipients."""
        if to is None:
            return [m.parsed() for m in self.messages]
        wanted = to.strip().lower()
        return [m.parsed() for m in self.messages if wanted in (r.lower() for r in m.rcpt_tos)]

    def stats(self) -> InboxStats:
        """Counts for a test that cannot afford to read every message: how many, and which Message-IDs
        arrived more than once (a duplicate send, since the sender's Message-ID is one per job)."""
        counts = Counter(m.message_id for m in self.messages if m.message_id is not None)
        moments = [m.received_at for m in self.messages]
        return InboxStats(
            messages=len(self.messages),
            distinct_message_ids=len(counts),
            duplicates={key: n for key, n in counts.items() if n > 1},
            first_received_at=min(moments, default=None),
            last_received_at=max(moments, default=None),
        )

    def clear(self) -> None:
        """Forget every message."""
        self.messages.clear()

    def add_fault(self, rule: FaultRule) -> None:
        """Append a rule (rules are consulted in the order they were added)."""
        self.faults.append(rule)

    def clear_faults(self) -> None:
        """Accept everything again."""
        self.faults.clear()

    def take_fault(self, stage: Stage, recipients: list[str]) -> FaultRule | None:
        """The rule that answers this attempt, if any, using up one of its times."""
        now = time.monotonic()
        self.faults[:] = [rule for rule in self.faults if not rule.expired(now)]
        for rule in self.faults:
            if rule.stage == stage and any(rule.matches(r) for r in recipients):
                if rule.times is not None:
                    rule.times -= 1
                    if rule.times <= 0:
                        self.faults.remove(rule)
                return rule
        return None
