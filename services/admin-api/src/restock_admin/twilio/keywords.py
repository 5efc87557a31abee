"""What an inbound SMS asks for, and the TwiML we answer. Pure.

Rules:
- The keywords are Twilio's own (Advanced Opt-Out defaults): STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT
  opt out; START, UNSTOP, YES opt back in (YES also confirms a pending double opt-in). A keyword is the whole
  message, case-insensitive, surrounding spaces and a trailing ``.`` or ``!`` ignored ("Stop." stops,
  "don't stop" does not).
- On a long code, Twilio itself answers STOP / START / UNSTOP and blocks the number after STOP; it still
  forwards the message to us. So those get an empty ``<Response/>`` (a second reply would duplicate
  Twilio's, and after STOP it could not be delivered anyway). YES gets our short confirmation.
- Anything else: ``<Response/>``; we do not run a conversation.
"""

from __future__ import annotations

from enum import StrEnum
from xml.sax.saxutils import escape


class Keyword(StrEnum):
    """What the shopper asked for."""

    OPT_OUT = "opt-out"
    OPT_IN = "opt-in"  # START / UNSTOP
    CONFIRM = "confirm"  # YES


_KEYWORDS = {
    **dict.fromkeys(("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"), Keyword.OPT_OUT),
    **dict.fromkeys(("START", "UNSTOP"), Keyword.OPT_IN),
    "YES": Keyword.CONFIRM,
}

EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
CONFIRMED_TEXT = "You're subscribed to back-in-stock alerts. Reply STOP to cancel."


def keyword(body: str) -> Keyword | None:
    """The keyword an inbound message is, if any."""
    return _KEYWORDS.get(body.strip().rstrip(".!").strip().upper())


def message(text: str) -> str:
    """TwiML answering with one SMS."""
    return f'<?xml version="1.0" encoding="UTF-8"?><Response><Message>{escape(text)}</Message></Response>'


def reply(asked: Keyword | None, changed: int) -> str:
    """The TwiML answer to a keyword that changed ``changed`` subscriptions."""
    if asked is Keyword.CONFIRM and changed:
        return message(CONFIRMED_TEXT)
    return EMPTY
