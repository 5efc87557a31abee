"""Twilio's rows of the classification table, and the SMS lease-expiry transitions (table-driven)."""

from __future__ import annotations

import pytest

from restock_sender.delivery import (
    Configuration,
    Event,
    JobState,
    Permanent,
    ProviderError,
    Retry,
    classify,
    next_state,
)


def twilio(code: str | None, status: int | None, kind: str = "response") -> ProviderError:
    return ProviderError(kind, code, "detail", provider="twilio", status=status)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "expected", "opted_out"),
    [
        (twilio("20429", 429), Retry, False),
        (twilio("429", 429), Retry, False),  # a 429 without Twilio's code
        (twilio("20500", 500), Retry, False),
        (twilio("500", 503), Retry, False),
        (twilio("21211", 400), Permanent, False),
        (twilio("21614", 400), Permanent, False),
        (twilio("21408", 400), Permanent, False),
        (twilio("30005", None), Permanent, False),
        (twilio("30006", None), Permanent, False),
        (twilio("21610", 400), Permanent, True),
        (twilio("20003", 401), Configuration, False),
        (twilio("20404", 404), Permanent, False),  # any other 4xx: the same request is refused again
        (twilio("20005", 403), Configuration, False),  # forbidden: our account, not the recipient
        (twilio(None, None, "timeout"), Retry, False),
        (twilio(None, None, "connection"), Retry, False),
        (twilio(None, None, "protocol"), Retry, False),
    ],
)
def test_classify_twilio_errors(error: ProviderError, expected: type, opted_out: bool) -> None:
    classification = classify(error)
    assert isinstance(classification, expected)
    assert getattr(classification, "opted_out", False) is opted_out


def test_a_twilio_code_is_not_read_as_an_smtp_reply() -> None:
    # "550" from SMTP is permanent; the same digits as a Twilio HTTP status are a server error.
    assert isinstance(classify(ProviderError("response", "550", "x")), Permanent)
    assert isinstance(classify(twilio("550", 550)), Retry)


@pytest.mark.parametrize(
    ("event", "expected"),
    [(Event.FOUND_AT_PROVIDER, JobState.SENT), (Event.NOT_AT_PROVIDER, JobState.PENDING)],
)
def test_an_expired_sms_lease_is_resolved_by_asking_the_provider(event: Event, expected: JobState) -> None:
    assert next_state(JobState.PROCESSING, event) is expected
