"""The job lifecycle as data: transitions, classification of SMTP replies, backoff, the retry decision."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from restock_sender.delivery import (
    TERMINAL_STATES,
    TRANSITIONS,
    Configuration,
    Decision,
    Event,
    InvalidTransition,
    JobState,
    Permanent,
    ProviderError,
    Retry,
    RetryPolicy,
    Unknown,
    backoff,
    classify,
    decide,
    next_state,
    spends_attempt,
)

S, E = JobState, Event


@pytest.mark.parametrize(
    ("state", "event", "expected"),
    [
        (S.PENDING, E.CLAIM, S.PROCESSING),
        (S.PENDING, E.OPTED_OUT, S.SKIPPED_OPTED_OUT),
        (S.PENDING, E.DUPLICATE, S.DUPLICATE_SUPPRESSED),
        (S.PENDING, E.DEFER, S.PENDING),
        (S.PROCESSING, E.DELIVERED, S.SENT),
        (S.PROCESSING, E.TEMPORARY_FAILURE, S.FAILED_TEMPORARY),
        (S.PROCESSING, E.ATTEMPTS_EXHAUSTED, S.DEAD_LETTER),
        (S.PROCESSING, E.PERMANENT_FAILURE, S.FAILED_PERMANENT),
        (S.PROCESSING, E.CONFIGURATION_ERROR, S.PENDING),
        (S.PROCESSING, E.OPTED_OUT, S.SKIPPED_OPTED_OUT),
        (S.PROCESSING, E.LEASE_EXPIRED, S.INDETERMINATE),
        (S.PROCESSING, E.OUTCOME_UNKNOWN, S.INDETERMINATE),
        (S.PROCESSING, E.UNRENDERABLE, S.DEAD_LETTER),
        (S.FAILED_TEMPORARY, E.RETRY_DUE, S.PENDING),
        (S.DEAD_LETTER, E.REPLAY, S.PENDING),
        (S.INDETERMINATE, E.REPLAY, S.PENDING),
    ],
)
def test_allowed_transitions(state: JobState, event: Event, expected: JobState) -> None:
    assert next_state(state, event) is expected


@pytest.mark.parametrize(
    ("state", "event"),
    [
        (S.SENT, E.CLAIM),
        (S.SENT, E.REPLAY),
        (S.PROCESSING, E.CLAIM),
        (S.PENDING, E.DELIVERED),
        (S.FAILED_PERMANENT, E.RETRY_DUE),
        (S.FAILED_TEMPORARY, E.CLAIM),
        (S.SKIPPED_OPTED_OUT, E.CLAIM),
        (S.DUPLICATE_SUPPRESSED, E.REPLAY),
        (S.INDETERMINATE, E.CLAIM),
        (S.PENDING, E.OUTCOME_UNKNOWN),
        (S.SENT, E.UNRENDERABLE),
    ],
)
def test_refused_transitions(state: JobState, event: Event) -> None:
    with pytest.raises(InvalidTransition):
        next_state(state, event)


def test_every_state_is_reachable_from_a_birth_state() -> None:
    # A job is born pending, or waiting when the shop's waves hold it back.
    reached, frontier = {S.PENDING, S.WAITING}, [S.PENDING, S.WAITING]
    while frontier:
        state = frontier.pop()
        for (source, _), target in TRANSITIONS.items():
            if source is state and target not in reached:
                reached.add(target)
                frontier.append(target)
    assert reached == set(JobState)


@given(st.lists(st.sampled_from(list(Event)), max_size=40))
def test_no_job_leaves_a_terminal_state_except_by_replay(events: list[Event]) -> None:
    state = S.PENDING
    for event in events:
        try:
            after = next_state(state, event)
        except InvalidTransition:
            continue
        if state in TERMINAL_STATES:
            assert event is E.REPLAY
            assert after is S.PENDING
        state = after


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ProviderError("response", "421", "Service not available, closing channel"), Retry),
        (ProviderError("response", "450", "Mailbox unavailable"), Retry),
        (ProviderError("response", "451", "4.3.0 Local error in processing"), Retry),
        (ProviderError("response", "452", "4.2.2 Mailbox full"), Retry),
        (ProviderError("response", "550", "5.1.1 User unknown"), Permanent),
        (ProviderError("response", "552", "5.3.4 Message too big"), Permanent),
        (ProviderError("response", "553", "Mailbox name not allowed"), Permanent),
        (ProviderError("response", "554", "5.7.1 Rejected by policy"), Permanent),
        (ProviderError("response", "535", "5.7.8 Authentication credentials invalid"), Configuration),
        (ProviderError("response", "530", "5.7.0 Authentication required"), Configuration),
        (ProviderError("response", "534", "Authentication mechanism is too weak"), Configuration),
        (ProviderError("response", "4.7.0", "Try again later"), Retry),
        (ProviderError("response", "5.2.1", "Mailbox disabled"), Permanent),
        (ProviderError("response", None, "4.4.1 No answer from host"), Retry),
        (ProviderError("response", None, "5.1.2 Bad destination system"), Permanent),
        (ProviderError("timeout", None, "timed out"), Retry),
        (ProviderError("connection", None, "Connection refused"), Retry),
        (ProviderError("protocol", None, "garbled reply"), Retry),
        (ProviderError("protocol", "5.6.0", "message could not be composed"), Permanent),
        # After the final dot nobody can say whether the server kept the message: never retried (ADR 28).
        (ProviderError("lost-reply", None, "connection after the final dot"), Unknown),
        (ProviderError("lost-reply", None, "timeout after the final dot"), Unknown),
        # The server lacks what our settings ask for: the channel pauses, no recipient pays (ADR 28).
        (ProviderError("setup", None, "SMTP STARTTLS extension not supported by server."), Configuration),
        (ProviderError("setup", None, "The SMTP AUTH extension is not supported"), Configuration),
    ],
)
def test_classify_smtp_errors(error: ProviderError, expected: type) -> None:
    assert isinstance(classify(error), expected)


@pytest.mark.parametrize(
    ("attempt", "base", "cap", "ceiling"),
    [
        (1, 30.0, 3600.0, 30.0),
        (2, 30.0, 3600.0, 60.0),
        (5, 30.0, 3600.0, 480.0),
        (10, 30.0, 3600.0, 3600.0),
        (500, 30.0, 3600.0, 3600.0),
    ],
)
def test_backoff_is_full_jitter_under_the_exponential_ceiling(
    attempt: int, base: float, cap: float, ceiling: float
) -> None:
    assert backoff(attempt, base, cap, lambda: 0.0) == 0.0
    assert backoff(attempt, base, cap, lambda: 0.5) == pytest.approx(ceiling / 2)
    assert backoff(attempt, base, cap, lambda: 0.999999) == pytest.approx(ceiling, rel=1e-5)


@given(st.integers(1, 10_000), st.floats(0.1, 600), st.floats(1, 86_400), st.integers(0, 2**32))
def test_backoff_bounds(attempt: int, base: float, cap: float, seed: int) -> None:
    delay = backoff(attempt, base, cap, random.Random(seed).random)
    assert 0.0 <= delay <= min(cap, base * 2 ** min(attempt - 1, 62))


def test_backoff_rejects_attempt_zero() -> None:
    with pytest.raises(ValueError):
        backoff(0, 30, 3600, lambda: 0.5)


POLICY = RetryPolicy(max_attempts=3, base_seconds=10.0, cap_seconds=100.0)


@pytest.mark.parametrize(
    ("outcome", "attempt", "expected"),
    [
        (None, 1, Decision(E.DELIVERED)),
        (Permanent("550"), 1, Decision(E.PERMANENT_FAILURE)),
        (Configuration("535"), 1, Decision(E.CONFIGURATION_ERROR, 0.0)),
        (Unknown("lost reply"), 1, Decision(E.OUTCOME_UNKNOWN)),
        (Unknown("lost reply"), 3, Decision(E.OUTCOME_UNKNOWN)),
        (Retry("451"), 1, Decision(E.TEMPORARY_FAILURE, 5.0)),
        (Retry("451"), 2, Decision(E.TEMPORARY_FAILURE, 10.0)),
        (Retry("451"), 3, Decision(E.ATTEMPTS_EXHAUSTED)),
        (Retry("451"), 7, Decision(E.ATTEMPTS_EXHAUSTED)),
    ],
)
def test_decide_retry_or_dead_letter(
    outcome: Retry | Permanent | Configuration | Unknown | None, attempt: int, expected: Decision
) -> None:
    assert decide(outcome, attempt, POLICY, lambda: 0.5) == expected


@pytest.mark.parametrize(
    ("event", "spent"),
    [
        (E.DELIVERED, True),
        (E.TEMPORARY_FAILURE, True),
        (E.ATTEMPTS_EXHAUSTED, True),
        (E.PERMANENT_FAILURE, True),
        (E.OUTCOME_UNKNOWN, True),
        (E.UNRENDERABLE, True),
        (E.OPTED_OUT, True),
        (E.CONFIGURATION_ERROR, False),  # our setup failed, not the recipient: a pause spends nothing
        (E.NOT_SENT, False),  # the claim given back before the provider call
    ],
)
def test_which_attempts_count_against_the_retry_budget(event: Event, spent: bool) -> None:
    assert spends_attempt(event) is spent
