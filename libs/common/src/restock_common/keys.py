"""The notification key and the restock window: what "the same notification" means, defined once.

``notification_key = variant_id:subscription_id:restock_window``. A subscription is one contact on one
channel for one variant, so the key names exactly one message a shopper could receive. The restock
window is the index of the fixed-length UTC interval (default 24 h, aligned to the Unix epoch) that the
restock was detected in: two restocks of a variant inside one window are the same notification, and a
shopper is told once. The cooldown rule keeps restocks of a variant further apart than a window in the
usual case; the key is the guarantee when they are not.
"""

from __future__ import annotations

from datetime import datetime

DEFAULT_WINDOW_SECONDS = 86_400


def restock_window(detected_at: datetime, window_seconds: int = DEFAULT_WINDOW_SECONDS) -> int:
    """The window index of a detection time (timezone-aware)."""
    if detected_at.tzinfo is None:
        raise ValueError("detected_at must be timezone-aware")
    return int(detected_at.timestamp()) // window_seconds


def notification_key(variant_id: int, subscription_id: int, window: int) -> str:
    """The deduplication key of one notification."""
    return f"{variant_id}:{subscription_id}:{window}"


def notification_key_sql(variant_param: str, subscription_column: str, window_param: str) -> str:
    """The same key as an SQL expression, for set-based inserts (must equal ``notification_key``)."""
    return f"({variant_param})::text || ':' || ({subscription_column})::text || ':' || ({window_param})::text"
