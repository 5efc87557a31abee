"""Named kill points for the fault suite (``RESTOCK_FAULT_POINT``).

A service calls ``faults.reach("after_claim")`` at each point where a crash matters. When the armed
name matches, the process kills itself with SIGKILL: no cleanup, no flush, exactly as a lost machine.
Unset (production), ``reach`` is one string comparison against ``None``.
"""

from __future__ import annotations

import os
import signal


class FaultPoints:
    """The armed kill point of this process, if any."""

    def __init__(self, armed: str | None) -> None:
        self.armed = armed or None

    def reach(self, name: str) -> None:
        """Die here if this is the armed point."""
        if self.armed == name:
            os.kill(os.getpid(), signal.SIGKILL)
