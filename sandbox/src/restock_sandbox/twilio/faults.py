"""Twilio's error answers, and the peer's fault table: which recipients get which failure. Pure, in memory.

Rules of the fault table (like the SMTP server's):
- A rule matches a recipient by exact E.164 number (``+15551234567``), by prefix when it ends with ``*``
  (``+44*``: every UK number), or everyone (``*``).
- Its mode says what the ``Messages.json`` create answers instead of accepting plainly:
  ``error``              a REST error code (21211, 21610, 21614, 21408, 20429, 20003, 20500, ...): the real
                         HTTP status and Twilio's error JSON, nothing accepted; a delivery error code
                         (30003-30008): the message is accepted (201, ``queued``), then its status
                         callback says ``undelivered`` (or ``failed``) with that ``ErrorCode``.
  ``delay``              answer ``delay_ms`` late, then accept (a slow provider).
  ``drop``               close the connection without an answer; nothing accepted.
  ``drop-after-accept``  accept and record the message, then close the connection: the sender cannot
                         know it went out (what the lease reaper must resolve by listing messages).
- The first matching rule (in the order added) applies and uses up one of its ``times``; a rule with
  ``times`` None applies until the table is cleared. Exhausted rules disappear.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["error", "delay", "drop", "drop-after-accept"]
FinalStatus = Literal["undelivered", "failed"]

# Twilio REST errors: code -> (HTTP status, message). ``{to}`` is the recipient.
REST_ERRORS: dict[int, tuple[int, str]] = {
    20003: (401, "Authenticate"),
    20404: (404, "The requested resource was not found"),
    20429: (429, "Too Many Requests"),
    20500: (500, "An internal server error has occurred"),
    21211: (400, "The 'To' number {to} is not a valid phone number."),
    21408: (
        400,
        "Permission to send an SMS has not been enabled for the region indicated by the 'To' number: {to}.",
    ),
    21602: (400, "Message body is required."),
    21603: (400, "A 'From' phone number is required."),
    21604: (400, "A 'To' phone number is required."),
    21610: (400, "Attempt to send to unsubscribed recipient"),
    21614: (400, "'To' number is not a valid mobile number"),
    21617: (400, "The concatenated message body exceeds the 1600 character limit."),
}
# Plain HTTP 500 is asked for as code 500 and answered as Twilio's 20500.
ALIASES = {500: 20500}
# Carrier-side failures: accepted by the API, reported by the status callback.
DELIVERY_ERRORS: dict[int, str] = {
    30003: "Unreachable destination handset",
    30004: "Message blocked",
    30005: "Unknown destination handset",
    30006: "Landline or unreachable carrier",
    30007: "Message filtered",
    30008: "Unknown error",
}


def twilio_error(code: int, status: int, message: str) -> dict[str, object]:
    """Twilio's error JSON (the legacy shape the official client reads into ``TwilioRestException``)."""
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


def error_body(code: int, to: str = "") -> tuple[int, dict[str, object]]:
    """The HTTP status and Twilio's error JSON for a REST error code."""
    code = ALIASES.get(code, code)
    status, message = REST_ERRORS[code]
    return status, twilio_error(code, status, message.format(to=to))


def is_known_code(code: int) -> bool:
    """Whether a fault may name this code."""
    return ALIASES.get(code, code) in REST_ERRORS or code in DELIVERY_ERRORS


@dataclass
class TwilioFault:
    """Apply ``mode`` to messages for ``match``, ``times`` times (None: until cleared)."""

    match: str
    mode: Mode
    code: int | None = None  # ``error`` only
    times: int | None = 1
    delay_ms: int = 0  # ``delay`` only
    final_status: FinalStatus = "undelivered"  # delivery error codes only

    def matches(self, to: str) -> bool:
        """Whether this rule applies to a message for ``to``."""
        pattern, to = self.match.strip(), to.strip()
        if pattern == "*":
            return True
        if pattern.endswith("*"):
            return to.startswith(pattern[:-1])
        return to == pattern

    @property
    def delivery_error(self) -> bool:
        """True when the message is accepted and fails at the carrier."""
        return self.mode == "error" and self.code in DELIVERY_ERRORS


@dataclass
class TwilioFaultTable:
    """The rules, consulted in the order they were added."""

    rules: list[TwilioFault] = field(default_factory=list)

    def add(self, rule: TwilioFault) -> None:
        """Append a rule."""
        self.rules.append(rule)

    def clear(self) -> None:
        """Accept everything again."""
        self.rules.clear()

    def take(self, to: str) -> TwilioFault | None:
        """The rule that answers the next message for ``to``, if any, using up one of its times."""
        for rule in self.rules:
            if rule.matches(to):
                if rule.times is not None:
                    rule.times -= 1
                    if rule.times <= 0:
                        self.rules.remove(rule)
                return rule
        return None
