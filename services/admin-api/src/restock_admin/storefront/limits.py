"""Signup rate limits as fixed windows. Pure: the clock's reading is passed in; the counting is a port.

Rules:
- Two limits guard the signup: per client IP (a script flooding the form) and per contact and shop (one
  victim's inbox flooded with confirmation requests through many IPs). Each is ``limit`` hits per window
  of ``window_seconds``, windows aligned on the epoch so every replica counts into the same key.
- Every attempt counts, accepted or not: a flood of invalid forms is still a flood.
- Past the limit the answer is 429 with ``Retry-After``: the seconds until the window ends (at least 1).
- The counter keys hold hashes only (the IP's keyed hash, the contact hash): no personal data in Redis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Limit:
    """``limit`` hits per ``window_seconds``, under the key prefix ``name``."""

    name: str
    limit: int
    window_seconds: int


@dataclass(frozen=True)
class Window:
    """The counter key of one window, and how long the window has left."""

    key: str
    seconds_left: int


def window(limit: Limit, subject: str, now: datetime) -> Window:
    """The window ``now`` falls in, for one subject (a hash)."""
    epoch = now.timestamp()
    index = int(epoch // limit.window_seconds)
    ends = (index + 1) * limit.window_seconds
    return Window(f"signup-limit:{limit.name}:{subject}:{index}", max(1, math.ceil(ends - epoch)))


def retry_after(limit: Limit, hits: int, current: Window) -> int | None:
    """None while ``hits`` (this one included) is within the limit; else the Retry-After seconds."""
    return None if hits <= limit.limit else current.seconds_left
