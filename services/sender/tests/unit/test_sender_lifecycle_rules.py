"""The rules the scheduler and replay rely on: retry-due and replay rows, reaping per channel, exhaustion."""

from __future__ import annotations

import pytest

from restock_common import replay
from restock_common.messages import CHANNELS, Channel
from restock_sender.delivery import (
    LEASE_EXPIRY,
    TRANSITIONS,
    Decision,
    Event,
    InvalidTransition,
    JobState,
    LeaseExpiry,
    Retry,
    RetryPolicy,
    decide,
    next_state,
    reaped_state,
)

S, E = JobState, Event


@pytest.mark.parametrize(
    ("channel", "expected"),
    [("email", S.INDETERMINATE), ("sms", None)],
)
def test_reaped_state_per_channel(channel: Channel, expected: JobState | None) -> None:
    assert reaped_state(channel) is expected


def test_every_channel_has_a_lease_expiry_rule() -> None:
    assert set(LEASE_EXPIRY) == set(CHANNELS)
    assert LEASE_EXPIRY["sms"] is LeaseExpiry.ASK_PROVIDER


@pytest.mark.parametrize("state", [s for s in S if s is not S.FAILED_TEMPORARY])
def test_only_failed_temporary_is_retried(state: JobState) -> None:
    with pytest.raises(InvalidTransition):
        next_state(state, E.RETRY_DUE)


@pytest.mark.parametrize("state", [s for s in S if s is not S.PROCESSING])
def test_only_processing_jobs_expire(state: JobState) -> None:
    with pytest.raises(InvalidTransition):
        next_state(state, E.LEASE_EXPIRED)


def test_replayable_states_of_the_shared_replay_agree_with_the_table() -> None:
    from_table = {state.value for (state, event) in TRANSITIONS if event is E.REPLAY}
    assert from_table == replay.REPLAYABLE_STATES
    assert {target.value for (_, event), target in TRANSITIONS.items() if event is E.REPLAY} == {
        replay.REPLAYED_STATE
    }


@pytest.mark.parametrize(
    ("max_attempts", "attempt", "expected"),
    [
        (2, 1, S.FAILED_TEMPORARY),
        (2, 2, S.DEAD_LETTER),
        (1, 1, S.DEAD_LETTER),
        (6, 5, S.FAILED_TEMPORARY),
        (6, 6, S.DEAD_LETTER),
    ],
)
def test_a_temporary_failure_on_the_last_attempt_goes_straight_to_dead_letter(
    max_attempts: int, attempt: int, expected: JobState
) -> None:
    decision = decide(Retry("451"), attempt, RetryPolicy(max_attempts, 1.0, 10.0), lambda: 0.5)
    assert next_state(S.PROCESSING, decision.event) is expected
    assert (decision.retry_in is None) == (expected is S.DEAD_LETTER)


def test_a_retry_series_ends_sent_or_dead_letter() -> None:
    policy = RetryPolicy(3, 1.0, 10.0)
    state, history = S.PENDING, []
    for attempt in range(1, 4):
        state = next_state(
            next_state(state, E.CLAIM), decide(Retry("451"), attempt, policy, lambda: 0.0).event
        )
        history.append(state)
        if state is S.FAILED_TEMPORARY:
            state = next_state(state, E.RETRY_DUE)
    assert history == [S.FAILED_TEMPORARY, S.FAILED_TEMPORARY, S.DEAD_LETTER]
    assert next_state(S.DEAD_LETTER, E.REPLAY) is S.PENDING
    assert decide(None, 1, policy, lambda: 0.0) == Decision(E.DELIVERED)
