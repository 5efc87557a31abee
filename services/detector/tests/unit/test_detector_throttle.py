"""The throttle arithmetic (``throttle.py``): (bucket, cost, time) -> wait, and failures -> backoff."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from restock_detector import throttle
from restock_detector.throttle import Bucket, Failure

FULL = Bucket(maximum_available=2000.0, currently_available=2000.0, restore_rate=100.0, observed_at=10.0)
LOW = Bucket(maximum_available=2000.0, currently_available=50.0, restore_rate=100.0, observed_at=10.0)
TINY = Bucket(maximum_available=100.0, currently_available=0.0, restore_rate=10.0, observed_at=0.0)


def no_jitter() -> float:
    return 0.0


def full_jitter() -> float:
    return 0.999


@pytest.mark.parametrize(
    ("status", "failure"),
    [
        (200, None),
        (201, None),
        (401, Failure.UNAUTHORIZED),
        (403, Failure.UNAUTHORIZED),
        (429, Failure.RATE_LIMITED),
        (500, Failure.UNAVAILABLE),
        (502, Failure.UNAVAILABLE),
        (503, Failure.UNAVAILABLE),
        (400, Failure.REJECTED),
        (404, Failure.REJECTED),
        (422, Failure.REJECTED),
    ],
)
def test_http_statuses_are_classified(status: int, failure: Failure | None) -> None:
    assert throttle.classify_status(status) is failure


@pytest.mark.parametrize(
    ("bucket", "now", "points"),
    [
        (FULL, 10.0, 2000.0),
        (LOW, 10.0, 50.0),
        (LOW, 11.0, 150.0),  # restored at 100/s
        (LOW, 100.0, 2000.0),  # never above the maximum
        (LOW, 5.0, 50.0),  # a clock before the observation restores nothing
    ],
)
def test_the_bucket_restores_at_its_rate_up_to_its_maximum(bucket: Bucket, now: float, points: float) -> None:
    assert throttle.available_at(bucket, now) == pytest.approx(points)


@pytest.mark.parametrize(
    ("bucket", "cost", "now", "wait"),
    [
        (None, 500.0, 0.0, 0.0),  # no status yet: send
        (FULL, 500.0, 10.0, 0.0),
        (LOW, 50.0, 10.0, 0.0),  # exactly enough
        (LOW, 250.0, 10.0, 2.0),  # 200 points missing at 100/s
        (LOW, 250.0, 11.0, 1.0),  # one second later, half of it restored
        (LOW, 250.0, 13.0, 0.0),
        (TINY, 500.0, 0.0, 10.0),  # a cost above the maximum waits for a full bucket, not forever
        (Bucket(100.0, 0.0, 0.0, 0.0), 50.0, 0.0, 0.0),  # no restore rate reported: nothing to compute
    ],
)
def test_a_query_waits_for_its_cost_to_be_in_the_bucket(
    bucket: Bucket | None, cost: float, now: float, wait: float
) -> None:
    assert throttle.wait_before(bucket, cost, now) == pytest.approx(wait)


@pytest.mark.parametrize(
    ("bucket", "cost_per_variant", "size"),
    [
        (None, None, 10),  # defaults: 1000 * 0.5 / 50
        (FULL, 4.0, 250),  # capped at Shopify's 250
        (FULL, 10.0, 100),  # half of 2000 points / 10
        (FULL, 2_000.0, 1),  # at least one
        (TINY, 7.0, 7),  # a small bucket makes small pages
        (FULL, 0.0, 20),  # a nonsense cost falls back to the default
    ],
)
def test_a_sync_page_asks_for_what_half_the_bucket_pays(
    bucket: Bucket | None, cost_per_variant: float | None, size: int
) -> None:
    assert throttle.page_size(bucket, cost_per_variant) == size


@pytest.mark.parametrize(
    ("failure", "attempt", "kwargs", "wait"),
    [
        (Failure.UNAVAILABLE, 1, {}, 0.5),
        (Failure.UNAVAILABLE, 2, {}, 1.0),
        (Failure.UNAVAILABLE, 4, {}, 4.0),
        (Failure.RATE_LIMITED, 1, {"retry_after": 3.0}, 3.0),  # Retry-After honoured
        (Failure.RATE_LIMITED, 1, {"retry_after": 120.0}, 30.0),  # ... within the cap
        (Failure.RATE_LIMITED, 1, {"bucket": LOW, "cost": 250.0}, 2.0),  # else the restore arithmetic
        (Failure.RATE_LIMITED, 2, {}, 1.0),  # else exponential
        (Failure.THROTTLED, 1, {"bucket": LOW, "cost": 250.0}, 2.0),
        (Failure.THROTTLED, 1, {"bucket": LOW, "cost": 60.0}, 0.5),  # never below the base backoff
        (Failure.THROTTLED, 1, {"bucket": TINY, "cost": 5_000.0}, 10.0),
        (Failure.THROTTLED, 3, {}, 2.0),  # no status: exponential
    ],
)
def test_retried_failures_wait_by_their_kind(
    failure: Failure, attempt: int, kwargs: dict[str, object], wait: float
) -> None:
    assert throttle.backoff(failure, attempt, no_jitter, **kwargs) == pytest.approx(wait)  # type: ignore[arg-type]


@pytest.mark.parametrize("failure", [Failure.UNAUTHORIZED, Failure.REJECTED])
def test_bad_tokens_and_bad_requests_are_never_retried(failure: Failure) -> None:
    assert throttle.backoff(failure, 1, no_jitter) is None


@pytest.mark.parametrize("failure", sorted(throttle.RETRIED, key=lambda f: f.value))
def test_attempts_are_bounded(failure: Failure) -> None:
    assert throttle.backoff(failure, throttle.MAX_ATTEMPTS - 1, no_jitter) is not None
    assert throttle.backoff(failure, throttle.MAX_ATTEMPTS, no_jitter) is None


def test_jitter_stretches_a_wait_by_at_most_a_quarter() -> None:
    base = throttle.backoff(Failure.UNAVAILABLE, 3, no_jitter)
    stretched = throttle.backoff(Failure.UNAVAILABLE, 3, full_jitter)
    assert base == pytest.approx(2.0)
    assert stretched is not None
    assert base < stretched <= base * (1 + throttle.JITTER_SHARE)
    capped = throttle.backoff(Failure.RATE_LIMITED, 1, full_jitter, retry_after=999.0)
    assert capped is not None
    assert capped <= throttle.MAX_BACKOFF_SECONDS * (1 + throttle.JITTER_SHARE)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("2", 2.0),
        (" 1.5 ", 1.5),
        ("0", 0.0),
        ("-1", None),
        ("soon", None),
        ("nan", None),
        ("Wed, 21 Oct 2026 07:28:00 GMT", None),
    ],
)
def test_retry_after_is_read_as_seconds(header: str | None, seconds: float | None) -> None:
    assert throttle.parse_retry_after(header) == seconds


buckets = st.builds(
    Bucket,
    maximum_available=st.floats(1.0, 20_000.0),
    currently_available=st.floats(0.0, 20_000.0),
    restore_rate=st.floats(0.1, 1_000.0),
    observed_at=st.floats(0.0, 1_000.0),
)


@given(bucket=buckets, cost=st.floats(0.0, 50_000.0), later=st.floats(0.0, 100.0))
def test_after_the_wait_the_bucket_holds_the_cost_or_is_full(
    bucket: Bucket, cost: float, later: float
) -> None:
    now = bucket.observed_at + later
    wait = throttle.wait_before(bucket, cost, now)
    assert wait >= 0
    held = throttle.available_at(bucket, now + wait)
    assert held >= min(cost, bucket.maximum_available) - 1e-6 * max(1.0, cost)


@given(bucket=st.none() | buckets, per_variant=st.none() | st.floats(0.0, 10_000.0))
def test_a_page_is_between_one_and_250_and_fits_half_the_bucket_when_it_can(
    bucket: Bucket | None, per_variant: float | None
) -> None:
    size = throttle.page_size(bucket, per_variant)
    assert 1 <= size <= throttle.MAX_PAGE_SIZE
    if bucket is not None and per_variant and size > 1:
        assert size * per_variant <= bucket.maximum_available * throttle.PAGE_BUDGET_SHARE + 1e-6


@given(
    failure=st.sampled_from(list(Failure)),
    attempt=st.integers(1, 10),
    jitter=st.floats(0.0, 1.0),
    retry_after=st.none() | st.floats(0.0, 10_000.0),
)
def test_every_backoff_is_bounded_and_attempts_end(
    failure: Failure, attempt: int, jitter: float, retry_after: float | None
) -> None:
    wait = throttle.backoff(failure, attempt, lambda: jitter, bucket=LOW, cost=500.0, retry_after=retry_after)
    if failure not in throttle.RETRIED or attempt >= throttle.MAX_ATTEMPTS:
        assert wait is None
    else:
        assert wait is not None
        assert 0 <= wait <= throttle.MAX_BACKOFF_SECONDS * (1 + throttle.JITTER_SHARE)
