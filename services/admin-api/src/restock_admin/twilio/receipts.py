"""Twilio message status callbacks, as data. Pure.

Rules:
- Statuses progress ``accepted/queued < sending < sent < delivered|undelivered|failed`` (``read`` after
  delivered, WhatsApp only). Callbacks can arrive out of order, so a status never replaces a later one:
  ``sent`` arriving after ``delivered`` is ignored; a terminal status is final.
- ``undelivered`` / ``failed`` with an ErrorCode is the carrier's or Twilio's verdict after the API accepted
  the message: 30003-30008 and 21610 are permanent for that number (30005 unknown destination, 30006
  landline or unreachable carrier); anything else keeps ``temporary``.
- 21610 means the recipient had opted out (replied STOP to the sender number): the subscription is ended
  as an unsubscribe, the same as a STOP we received ourselves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_RANK = {
    "accepted": 0,
    "queued": 0,
    "scheduled": 0,
    "sending": 1,
    "sent": 2,
    "receiving": 2,
    "received": 3,
    "delivered": 3,
    "undelivered": 3,
    "failed": 3,
    "canceled": 3,
    "read": 4,
}
# A Message SID is "SM" (SMS) or "MM" (MMS) and 32 hex digits; a Twilio error code is a number. Anything
# else in a signed callback is refused before it reaches a column (PostgreSQL cannot hold a NUL, say).
_MESSAGE_SID = re.compile(r"(?:SM|MM)[0-9a-fA-F]{32}")
_ERROR_CODE = re.compile(r"\d{1,6}")
PERMANENT_CODES = frozenset({"21610", "30003", "30004", "30005", "30006", "30007", "30008"})
OPT_OUT_CODE = "21610"


@dataclass(frozen=True)
class Receipt:
    """One status callback."""

    message_sid: str
    status: str
    error_code: str | None


def message_sid(value: str) -> str | None:
    """``value`` if it is a Message SID, else None."""
    return value if _MESSAGE_SID.fullmatch(value) else None


def error_code(value: str | None) -> str | None:
    """``value`` if it is a Twilio error code, else None."""
    return value if value and _ERROR_CODE.fullmatch(value) else None


def is_known(status: str) -> bool:
    """Whether ``status`` is one of Twilio's message statuses."""
    return status in _RANK


def supersedes(incoming: str, recorded: str | None) -> bool:
    """Whether ``incoming`` may replace the recorded status (see the rules)."""
    if recorded is None or recorded not in _RANK:
        return True
    return _RANK[incoming] > _RANK[recorded]


def error_kind(receipt: Receipt) -> str | None:
    """``permanent`` / ``temporary`` for a failed delivery with an error code, else None."""
    if receipt.status not in ("undelivered", "failed") or not receipt.error_code:
        return None
    return "permanent" if receipt.error_code in PERMANENT_CODES else "temporary"


def opted_out(receipt: Receipt) -> bool:
    """Whether the receipt says the recipient opted out (21610)."""
    return receipt.error_code == OPT_OUT_CODE
