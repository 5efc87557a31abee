"""Named kill points for the fault suite (``RESTOCK_FAULT_POINT``).

A service calls ``faults.reach("after_claim")`` at each point where a crash matters. When the armed
name matches, the process kills itself with SIGKILL: no cleanup, no flush, exactly as a lost machine.
Unset (production), ``reach`` is one string comparison against ``None``.

``RESTOCK_FAULT_POINT=after_claim`` dies the first time the point is reached; ``after_claim@500`` the
500th time, so a test can kill a sender with delivery in flight, deterministically, instead of racing a
timer against it.
"""

from __future__ import annotations

import os
import signal


def parse_armed(value: str | None) -> tuple[str | None, int]:
    """``"name@n"`` -> ``("name", n)``; ``"name"`` -> ``("name", 1)``; empty -> ``(None, 0)`` (pure)."""
    if not value or not value.strip():
        return None, 0
    name, separator, count = value.strip().partition("@")
    if not name:
        raise ValueError(f"fault point {value!r} has no name")
    if not separator:
        return name, 1
    if not count.isdigit() or int(count) < 1:
        raise ValueError(f"fault point {value!r}: the count after '@' must be a positive integer")
    return name, int(count)


class FaultPoints:
    """The armed kill point of this process, if any."""

    def __init__(self, armed: str | None) -> None:
        self.armed, self.remaining = parse_armed(armed)

    def reach(self, name: str) -> None:
        """Die here if this is the armed point and its count is used up."""
        if self.armed == name:
            self.remaining -= 1
            if self.remaining <= 0:
                os.kill(os.getpid(), signal.SIGKILL)
