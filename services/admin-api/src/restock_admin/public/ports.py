"""The public links' read side; adapter in ``repository.py``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class LinkedSubscription:
    """What an unsubscribe link needs to know about its subscription."""

    id: int
    tenant_id: int
    contact_hash: str
    state: str


class LinkReader(Protocol):
    """Reads the subscription a link names."""

    async def subscription(self, subscription_id: int) -> LinkedSubscription | None:
        """The subscription, or None when it no longer exists (its shop was redacted)."""
        ...
