"""The dispatcher's Redis dedup fast path, as rules (pure: no I/O, no clock).

Theory of operation:
- Before a page of targets is frozen, each target's notification key is claimed in Redis with
  ``SET <prefix><key> <restock_event_id> NX GET EX <restock window>``: the value names the restock event
  that claimed the key, and it expires with the window (a key means nothing once its window is over).
- The previous value says who held the key: nobody (the key is ours now), this very event (an earlier
  delivery claimed it and died before its freeze committed: still ours), or another event: a *suspect*
  duplicate, whose pending insert is not even attempted.
- A suspect is only a hint. Redis keeps nothing on disk and a claim may belong to a freeze that never
  committed, so a suspect is suppressed only when PostgreSQL shows the job holding its key; otherwise it
  is frozen like any other target and the UNIQUE ``notification_key`` decides.
"""

from __future__ import annotations

from collections.abc import Sequence

REDIS_PREFIX = "restock:freeze:"
DUPLICATE_STATE = "duplicate-suppressed"


def redis_key(notification_key: str) -> str:
    """The Redis key of a notification key's fast-path claim."""
    return REDIS_PREFIX + notification_key


def claim_ttl_seconds(window_seconds: int) -> int:
    """How long a claim lives: a whole window, so it covers the rest of the window it was made in."""
    return max(1, window_seconds)


def suspects(
    subscription_ids: Sequence[int], previous: Sequence[bytes | str | None], restock_event_id: int
) -> list[int]:
    """The subscriptions whose key Redis says another restock event claimed first (in input order)."""
    if len(subscription_ids) != len(previous):
        raise ValueError("one previous value per subscription")
    own = str(restock_event_id)
    return [
        subscription_id
        for subscription_id, holder in zip(subscription_ids, previous, strict=True)
        if holder is not None and _text(holder) != own
    ]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
