"""The lifecycle of a notification job: states, events, the transition table, and the retry decision.

Theory of operation
-------------------
A job is born ``pending`` (the dispatcher's freeze), or ``waiting`` when the shop's inventory-aware
waves hold it back until the wave planner releases it (``wave-release``) into ``pending``. A sender
*claims* it (compare-and-set in PostgreSQL) and it becomes ``processing``: a checkpoint committed
before the provider is called, with the attempt number. From ``processing`` exactly one outcome is recorded:

- the provider accepted the message: ``sent``;
- the subscription was unsubscribed (or has no address) when re-checked: ``skipped-opted-out``, no send;
- a temporary failure (4xx, timeout, dropped connection) with attempts left: ``failed-temporary``, with
  ``next_attempt_at`` after a jittered exponential backoff; without attempts left: ``dead-letter``;
- a permanent failure (5xx): ``failed-permanent``;
- the request went out but its answer was lost (an SMTP connection dropped or timed out after the final
  dot): the provider may have the message and nobody can ask it, so ``indeterminate``, as for a sender
  that died there (ADR 28); sending it again automatically could send it twice;
- the job's pinned template cannot be rendered (gone, or it fails on this job's variables): no attempt of
  this job can succeed until someone acts, so ``dead-letter`` at once, where operators see it (ADR 28);
- our own configuration is wrong (e.g. SMTP auth): the job goes back to ``pending`` untouched by the
  recipient's fate, due again at once, its attempt given back (a pause never spends the retry budget);
  the channel, not the job, is at fault, and pauses (``restock_sender.pause``) until its provider accepts
  our configuration.

Before the claim, admission (``restock_sender.admission``) may ``defer`` a pending job: it stays
``pending`` with a ``next_attempt_at`` (a rate limit, a send window, a paused channel) and no attempt
spent, and the scheduler publishes it again when due.

A job left in ``processing`` past its lease (its sender died) is reaped. Right before the provider call the
sender commits a mark on the claim (ADR 21); a lease that ended unmarked never reached the provider, and the
job goes back to ``pending`` (``not-sent``) to be sent again, whatever the channel. A marked one is reaped
per channel (``LEASE_EXPIRY``): for email the outcome is unknowable, so it becomes ``indeterminate`` (a
sender keeps at most ``email_unconfirmed_sends`` such sends in flight, so a crash leaves no more); for SMS
the provider is asked (Twilio's message list): found, the job is ``sent`` (``found-at-provider``); not
found, it goes back to ``pending`` for a new attempt (``not-at-provider``); when Twilio cannot be asked it
stays ``processing`` until it can.
Only ``failed-temporary`` is retried automatically: when due, the retry scheduler moves it back to
``pending`` and republishes it, so every send starts with the same claim. ``dead-letter`` and
``indeterminate`` leave only through a manual, audited ``replay``. ``sent``, ``failed-permanent``,
``duplicate-suppressed`` and ``skipped-opted-out`` are final. Anything not in ``TRANSITIONS`` is refused.

Pure: no I/O, no clock, randomness passed in.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from restock_common.jobs import JobState as JobState  # re-exported: the sender's vocabulary
from restock_common.messages import Channel


class Event(enum.StrEnum):
    """What can happen to a job."""

    CLAIM = "claim"
    DELIVERED = "delivered"
    TEMPORARY_FAILURE = "temporary-failure"
    ATTEMPTS_EXHAUSTED = "attempts-exhausted"
    PERMANENT_FAILURE = "permanent-failure"
    CONFIGURATION_ERROR = "configuration-error"
    OPTED_OUT = "opted-out"
    DUPLICATE = "duplicate"
    LEASE_EXPIRED = "lease-expired"
    RETRY_DUE = "retry-due"
    REPLAY = "replay"
    WAVE_RELEASE = "wave-release"  # the dispatcher's wave planner lets a waiting job go
    DEFER = "defer"  # admission holds a pending job back unclaimed (limit, send window, pause; ADR 16)
    FOUND_AT_PROVIDER = "found-at-provider"  # lease expired; the provider's list shows the message went out
    NOT_AT_PROVIDER = "not-at-provider"  # lease expired; the provider's list shows it never went out
    NOT_SENT = "not-sent"  # the attempt failed before the provider was called: the claim is given back
    OUTCOME_UNKNOWN = "outcome-unknown"  # the request went out, its answer was lost; nobody can be asked
    UNRENDERABLE = "unrenderable"  # the pinned template cannot render this job: no retry can help


S, E = JobState, Event

TRANSITIONS: dict[tuple[JobState, Event], JobState] = {
    (S.WAITING, E.WAVE_RELEASE): S.PENDING,
    (S.WAITING, E.OPTED_OUT): S.SKIPPED_OPTED_OUT,
    (S.PENDING, E.CLAIM): S.PROCESSING,
    (S.PENDING, E.DUPLICATE): S.DUPLICATE_SUPPRESSED,
    (S.PENDING, E.OPTED_OUT): S.SKIPPED_OPTED_OUT,
    (S.PENDING, E.DEFER): S.PENDING,
    (S.PROCESSING, E.DELIVERED): S.SENT,
    (S.PROCESSING, E.TEMPORARY_FAILURE): S.FAILED_TEMPORARY,
    (S.PROCESSING, E.ATTEMPTS_EXHAUSTED): S.DEAD_LETTER,
    (S.PROCESSING, E.PERMANENT_FAILURE): S.FAILED_PERMANENT,
    (S.PROCESSING, E.CONFIGURATION_ERROR): S.PENDING,
    (S.PROCESSING, E.OPTED_OUT): S.SKIPPED_OPTED_OUT,
    (S.PROCESSING, E.DUPLICATE): S.DUPLICATE_SUPPRESSED,
    (S.PROCESSING, E.LEASE_EXPIRED): S.INDETERMINATE,
    (S.PROCESSING, E.OUTCOME_UNKNOWN): S.INDETERMINATE,
    (S.PROCESSING, E.UNRENDERABLE): S.DEAD_LETTER,
    (S.PROCESSING, E.NOT_SENT): S.PENDING,
    (S.PROCESSING, E.FOUND_AT_PROVIDER): S.SENT,
    (S.PROCESSING, E.NOT_AT_PROVIDER): S.PENDING,
    (S.FAILED_TEMPORARY, E.RETRY_DUE): S.PENDING,
    (S.DEAD_LETTER, E.REPLAY): S.PENDING,
    (S.INDETERMINATE, E.REPLAY): S.PENDING,
}

TERMINAL_STATES = frozenset(
    {S.SENT, S.FAILED_PERMANENT, S.DEAD_LETTER, S.DUPLICATE_SUPPRESSED, S.SKIPPED_OPTED_OUT, S.INDETERMINATE}
)


# Events after which the claimed attempt does not count against the retry budget: nothing was sent
# (``not-sent``, the claim given back), or our own setup failed, not the recipient (``configuration-error``),
# so a paused channel never spends a job's attempts into dead-letter.
ATTEMPT_GIVEN_BACK = frozenset({Event.NOT_SENT, Event.CONFIGURATION_ERROR})


def spends_attempt(event: Event) -> bool:
    """Whether the attempt that ended with ``event`` counts against the job's retry budget."""
    return event not in ATTEMPT_GIVEN_BACK


class InvalidTransition(ValueError):
    """The event cannot happen to a job in this state."""


def next_state(state: JobState, event: Event) -> JobState:
    """The state after ``event``; raises ``InvalidTransition`` when the table does not allow it."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTransition(f"{event.value} is not allowed in state {state.value}") from None


# --- classifying provider errors -----------------------------------------------------------------------

# ``lost-reply``: the request was sent whole and its answer never came (after SMTP's final dot); ``setup``:
# the provider cannot be used as configured (no AUTH offered for our credentials, no STARTTLS, a TLS
# handshake refused), which no recipient causes.
ErrorKind = Literal["response", "timeout", "connection", "protocol", "lost-reply", "setup"]
Provider = Literal["smtp", "twilio"]


class ProviderError(Exception):
    """A provider call that did not deliver, as data: ``kind`` of failure, the provider's ``code`` (an SMTP
    reply code such as ``"550"`` or an enhanced status such as ``"5.1.1"``; a Twilio error code such as
    ``"21211"``; ``None`` without a reply) and its ``detail`` text. ``provider`` says whose code it is, and
    ``status`` is the HTTP status of an HTTP provider's answer."""

    def __init__(
        self,
        kind: ErrorKind,
        code: str | None,
        detail: str,
        *,
        provider: Provider = "smtp",
        status: int | None = None,
    ) -> None:
        super().__init__(kind, code, detail)
        self.kind = kind
        self.code = code
        self.detail = detail
        self.provider = provider
        self.status = status


@dataclass(frozen=True)
class Retry:
    """Temporary: the same message may succeed later."""

    reason: str
    kind: Literal["temporary"] = "temporary"


@dataclass(frozen=True)
class Permanent:
    """The recipient or the message is refused for good; ``opted_out``: the recipient told the provider to
    stop (Twilio 21610), so the subscription is unsubscribed too."""

    reason: str
    kind: Literal["permanent"] = "permanent"
    opted_out: bool = False


@dataclass(frozen=True)
class Configuration:
    """Our own setup is wrong (credentials): no recipient is at fault, every send would fail the same."""

    reason: str
    kind: Literal["configuration"] = "configuration"


@dataclass(frozen=True)
class Unknown:
    """The provider may or may not have the message, and cannot be asked: never sent again automatically."""

    reason: str
    kind: Literal["unknown"] = "unknown"


Classification = Retry | Permanent | Configuration | Unknown

# SMTP replies that blame our credentials or policy, not the recipient (RFC 4954, RFC 3463).
_CONFIGURATION_CODES = frozenset({"530", "534", "535", "538", "5.7.8", "5.7.9", "5.7.11"})
_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
_BASIC = re.compile(r"^([245])\d\d$")


def _status_class(code: str | None, detail: str) -> tuple[str | None, str | None]:
    """The reply class digit and the enhanced status (from ``code`` or the head of ``detail``)."""
    enhanced_match = _ENHANCED.match(code or "") or _ENHANCED.match(detail)
    enhanced = ".".join(enhanced_match.groups()) if enhanced_match else None
    if code and _BASIC.match(code):
        return code[0], enhanced
    return (enhanced[0] if enhanced else None), enhanced


# Twilio error codes (https://www.twilio.com/docs/api/errors), by what they say about the recipient.
TWILIO_CODES: dict[str, Classification] = {
    "20003": Configuration("twilio 20003: authentication failed"),
    "20429": Retry("twilio 20429: too many requests"),
    "21211": Permanent("twilio 21211: invalid 'To' number"),
    "21408": Permanent("twilio 21408: region not enabled for this number"),
    "21610": Permanent("twilio 21610: recipient replied STOP", opted_out=True),
    "21614": Permanent("twilio 21614: 'To' is not a mobile number"),
    "30005": Permanent("twilio 30005: unknown destination handset"),
    "30006": Permanent("twilio 30006: landline or unreachable carrier"),
}


def _classify_twilio(error: ProviderError) -> Classification:
    """Known codes first; then the HTTP status: 429 and 5xx are temporary, 401/403 blame our credentials,
    any other 4xx refuses this request for good (the same request would be refused again)."""
    known = TWILIO_CODES.get(error.code or "")
    if known is not None:
        return known
    status = error.status or 0
    if status == 429 or status >= 500:
        return Retry(f"twilio http {status} ({error.code})")
    if status in (401, 403):
        return Configuration(f"twilio http {status} ({error.code})")
    if 400 <= status < 500:
        return Permanent(f"twilio http {status} ({error.code})")
    return Retry(f"twilio unclassified ({error.code})")


def classify(error: ProviderError) -> Classification:
    """Temporary, permanent, configuration or unknown, from an SMTP reply, a Twilio error, or the absence of
    one."""
    if error.kind == "lost-reply":
        return Unknown(f"answer lost after the request went out: {error.detail}")
    if error.kind == "setup":
        return Configuration(f"provider unusable as configured: {error.detail}")
    if error.kind in ("timeout", "connection"):
        return Retry(f"{error.kind}: no reply")
    if error.provider == "twilio":
        return _classify_twilio(error)
    digit, enhanced = _status_class(error.code, error.detail)
    if error.code in _CONFIGURATION_CODES or enhanced in _CONFIGURATION_CODES:
        return Configuration(f"authentication or policy refused ({error.code})")
    if digit == "4":
        return Retry(f"transient reply {error.code}")
    if digit == "5":
        return Permanent(f"permanent reply {error.code}")
    # A reply we cannot read says nothing about the recipient: try again, within the attempt budget.
    return Retry(f"unclassified reply {error.code}")


# --- retry schedule ------------------------------------------------------------------------------------


def backoff(attempt: int, base: float, cap: float, rng: Callable[[], float]) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based): exponential, capped, full jitter
    (uniform in [0, min(cap, base * 2**(attempt-1))]), so retries of one burst spread out."""
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, 62))
    return ceiling * rng()


@dataclass(frozen=True)
class RetryPolicy:
    """A shop's retry budget (from ``restock_common.rules.Rules``)."""

    max_attempts: int
    base_seconds: float
    cap_seconds: float


@dataclass(frozen=True)
class Decision:
    """What to record after an attempt: the event, and for a retry how long to wait."""

    event: Event
    retry_in: float | None = None


def decide(
    outcome: Classification | None, attempt: int, policy: RetryPolicy, rng: Callable[[], float]
) -> Decision:
    """The event of an attempt (``None``: delivered), with the backoff of a retry that is still allowed."""
    if outcome is None:
        return Decision(Event.DELIVERED)
    if isinstance(outcome, Permanent):
        return Decision(Event.PERMANENT_FAILURE)
    if isinstance(outcome, Unknown):
        return Decision(Event.OUTCOME_UNKNOWN)
    if isinstance(outcome, Configuration):
        # Due at once: the scheduler publishes it again as soon as the paused channel resumes (ADR 16).
        return Decision(Event.CONFIGURATION_ERROR, 0.0)
    if attempt >= policy.max_attempts:
        return Decision(Event.ATTEMPTS_EXHAUSTED)
    return Decision(Event.TEMPORARY_FAILURE, backoff(attempt, policy.base_seconds, policy.cap_seconds, rng))


# --- lease expiry --------------------------------------------------------------------------------------


class LeaseExpiry(enum.Enum):
    """What the reaper does with a job of a channel found in ``processing`` past its lease."""

    MARK_INDETERMINATE = "mark-indeterminate"  # SMTP cannot be asked whether it got the message
    ASK_PROVIDER = "ask-provider"  # Twilio's message list can tell (``restock_sender.lease``)


LEASE_EXPIRY: dict[Channel, LeaseExpiry] = {
    "email": LeaseExpiry.MARK_INDETERMINATE,
    "sms": LeaseExpiry.ASK_PROVIDER,
}

UNRENDERABLE_DECISION = "template-error"  # the decision of a job dead-lettered by ``unrenderable``
LEASE_EXPIRED_DECISION = "lease-expired"
LEASE_EXPIRED_DETAIL = "lease expired after the provider call started; outcome unknown"
# Every channel: a lease that ended before the provider-call mark (ADR 21) proves nothing was sent.
LEASE_UNSTARTED_DECISION = "lease-expired:unsent"
LEASE_UNSTARTED_DETAIL = "lease expired before the provider call; sent again"


def reaped_state(channel: Channel) -> JobState | None:
    """The state an expired job of ``channel`` is moved to by the reaper; ``None``: leave it alone."""
    if LEASE_EXPIRY[channel] is LeaseExpiry.MARK_INDETERMINATE:
        return next_state(JobState.PROCESSING, Event.LEASE_EXPIRED)
    return None
