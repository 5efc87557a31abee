"""How fast may we ask a shop's GraphQL Admin API? Pure: no I/O; the clock (monotonic seconds) and the
jitter source are passed in.

Rules
-----
Shopify meters each shop (per app) with a leaky bucket of cost points: every response reports its
``throttleStatus`` (``maximumAvailable``, ``currentlyAvailable``, ``restoreRate`` points per second).

1. Before sending, the bucket is projected to now (``currentlyAvailable + restoreRate * elapsed``, capped at
   ``maximumAvailable``); if it holds less than the query's cost we wait for the difference to restore, so a
   well-behaved client rarely meets ``THROTTLED`` at all. No status yet: send at once.
2. A page of the reconciliation sync asks for as many variants as fit in ``PAGE_BUDGET_SHARE`` of the
   bucket (the rest stays for webhooks' lookups and confirmation reads), from the cost per variant the last
   page reported, within Shopify's 1..250.
3. After a failed attempt, the wait before the next one depends on what failed:
   - ``THROTTLED`` (HTTP 200 with that error code): the time the missing points take to restore;
   - HTTP 429: ``Retry-After`` when given, else the same restore arithmetic;
   - 5xx, timeouts, connection errors: exponential backoff from ``BASE_BACKOFF_SECONDS``;
   every wait capped at ``MAX_BACKOFF_SECONDS`` and stretched by up to ``JITTER_SHARE`` of itself, so the
   replicas and shops that failed together do not retry together.
4. Attempts are bounded (``MAX_ATTEMPTS``). Bad credentials (401, 403) are never retried: the shop's token
   is wrong until the merchant reinstalls, and retrying would only burn its bucket.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass

MAX_ATTEMPTS = 5
BASE_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 30.0
JITTER_SHARE = 0.25
PAGE_BUDGET_SHARE = 0.5
MAX_PAGE_SIZE = 250  # Shopify's cap on ``first``
# Until a page reports its cost: Shopify's documented cost of query (c) is about 2 + first * 7 with 20
# levels per item; a guess on the high side keeps the first page small.
DEFAULT_COST_PER_VARIANT = 50.0

Jitter = Callable[[], float]  # uniform in [0, 1)


@dataclass(frozen=True)
class Bucket:
    """A shop's ``throttleStatus`` as of ``observed_at`` (monotonic seconds)."""

    maximum_available: float
    currently_available: float
    restore_rate: float
    observed_at: float


class Failure(enum.Enum):
    """How an attempt failed, as far as retrying is concerned."""

    THROTTLED = "throttled"  # HTTP 200, errors[].extensions.code == "THROTTLED"
    RATE_LIMITED = "rate_limited"  # HTTP 429
    UNAVAILABLE = "unavailable"  # 5xx, timeout, connection refused or reset
    UNAUTHORIZED = "unauthorized"  # 401 / 403: the shop's access token is bad
    REJECTED = "rejected"  # any other 4xx or a GraphQL error: our request is wrong, retrying won't help


RETRIED = frozenset({Failure.THROTTLED, Failure.RATE_LIMITED, Failure.UNAVAILABLE})


def classify_status(status_code: int) -> Failure | None:
    """The failure an HTTP status means (None: 2xx, read the body)."""
    if 200 <= status_code < 300:
        return None
    if status_code in (401, 403):
        return Failure.UNAUTHORIZED
    if status_code == 429:
        return Failure.RATE_LIMITED
    if status_code >= 500:
        return Failure.UNAVAILABLE
    return Failure.REJECTED


def available_at(bucket: Bucket, now: float) -> float:
    """Points in the bucket at ``now``, restored since it was observed."""
    elapsed = max(now - bucket.observed_at, 0.0)
    return min(bucket.maximum_available, bucket.currently_available + bucket.restore_rate * elapsed)


def wait_before(bucket: Bucket | None, cost: float, now: float) -> float:
    """Seconds to wait before sending a query of ``cost`` points (rule 1)."""
    if bucket is None or bucket.restore_rate <= 0:
        return 0.0
    missing = min(cost, bucket.maximum_available) - available_at(bucket, now)
    return max(missing, 0.0) / bucket.restore_rate


def page_size(bucket: Bucket | None, cost_per_variant: float | None) -> int:
    """How many variants the next sync page asks for (rule 2)."""
    per_variant = cost_per_variant if cost_per_variant and cost_per_variant > 0 else DEFAULT_COST_PER_VARIANT
    maximum = bucket.maximum_available if bucket is not None else 1_000.0
    affordable = maximum * PAGE_BUDGET_SHARE / per_variant  # inf for a vanishing cost: capped below
    return max(1, min(MAX_PAGE_SIZE, math.floor(min(affordable, MAX_PAGE_SIZE))))


def backoff(
    failure: Failure,
    attempt: int,
    jitter: Jitter,
    *,
    bucket: Bucket | None = None,
    cost: float = 0.0,
    retry_after: float | None = None,
) -> float | None:
    """Seconds to wait after failed attempt number ``attempt`` (1-based), or None: give up (rules 3, 4)."""
    if failure not in RETRIED or attempt >= MAX_ATTEMPTS:
        return None
    exponential = BASE_BACKOFF_SECONDS * 2 ** (attempt - 1)
    if failure is Failure.RATE_LIMITED and retry_after is not None and retry_after >= 0:
        wait = retry_after
    elif failure in (Failure.THROTTLED, Failure.RATE_LIMITED) and bucket is not None:
        wait = max(wait_before(bucket, cost, bucket.observed_at), BASE_BACKOFF_SECONDS)
    else:
        wait = exponential
    wait = min(wait, MAX_BACKOFF_SECONDS)
    return wait * (1.0 + JITTER_SHARE * min(max(jitter(), 0.0), 1.0))


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds (Shopify sends delta-seconds; an HTTP date or garbage is ignored)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
