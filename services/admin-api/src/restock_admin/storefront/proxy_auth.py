"""Is a request really from Shopify's App Proxy, and recent? Pure: the clock is passed in.

Rules, checked in this order:
- The ``signature`` query parameter must be the HMAC of all the other parameters under the app secret
  (Shopify's algorithm, ``restock_common.signatures``, compared in constant time). Otherwise: INVALID.
- The signed ``timestamp`` (Unix seconds) must be at most ``MAX_AGE`` old and at most ``MAX_AHEAD`` in the
  future. A captured URL can so be replayed only briefly (and a replayed signup is idempotent anyway).
  A missing or malformed timestamp cannot prove freshness: STALE.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from enum import StrEnum

from restock_common.signatures import verify_app_proxy

MAX_AGE = timedelta(minutes=5)
# Shopify's clock and ours are both NTP-synced; a minute ahead is skew, more is a forged or replayed URL.
MAX_AHEAD = timedelta(minutes=1)


class ProxyVerdict(StrEnum):
    """The outcome of the check; the values are the reasons given to a rejected caller."""

    AUTHENTIC = "authentic"
    INVALID = "invalid signature"
    STALE = "stale signature"


def check_proxy_request(secret: str, params: Iterable[tuple[str, str]], now: datetime) -> ProxyVerdict:
    """The verdict on a request's query parameters at ``now`` (timezone-aware)."""
    pairs = list(params)
    if not verify_app_proxy(secret, pairs):
        return ProxyVerdict.INVALID
    timestamps = [value for key, value in pairs if key == "timestamp"]
    if len(timestamps) != 1 or not timestamps[0].isdigit():
        return ProxyVerdict.STALE
    age = now.timestamp() - int(timestamps[0])
    if age > MAX_AGE.total_seconds() or -age > MAX_AHEAD.total_seconds():
        return ProxyVerdict.STALE
    return ProxyVerdict.AUTHENTIC
