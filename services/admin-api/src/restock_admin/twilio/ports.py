"""The Twilio webhooks' store; adapter in ``repository.py`` (consent changes go through the ledger)."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from restock_admin.twilio.receipts import Receipt


class DeliveryReceipts(Protocol):
    """Where provider receipts are recorded on the attempt logs."""

    async def record(self, receipt: Receipt, error_kind: str | None, now: datetime) -> list[int] | None:
        """Record the receipt on the log rows of its MessageSid (unless they hold a later status); the ids of
        their subscriptions, or None when no log row has that MessageSid."""
        ...
