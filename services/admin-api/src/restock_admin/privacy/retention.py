"""When a subscription's personal data is due for erasure. Pure: the rules and the clock's reading are
passed in.

Rules (per shop, ``restock_common.rules``):
- A subscription still ``pending`` ``unconfirmed_ttl_hours`` after its signup never got its double opt-in:
  it is ended (``expired``) and its email / phone erased (``redacted``).
- A subscription that ended (unsubscribed), was fulfilled (the shopper bought the variant), or was last
  notified ``retention_days`` ago has served its purpose: ended if still live, then erased. Counting from
  the last notification means a subscription that keeps being notified keeps its data.
- Erasure keeps the row (ids, variant, state, timestamps: the KPIs and the consent evidence stay) and the
  consent events (hashed IP, consent text version: the proof of consent outlives the data, as the
  regulators expect); it nulls ``email`` and ``phone`` and sets ``redacted_at``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from restock_common.rules import Rules


@dataclass(frozen=True)
class Cutoffs:
    """Subscriptions older than these are due."""

    unconfirmed_before: datetime
    ended_before: datetime


def cutoffs(rules: Rules, now: datetime) -> Cutoffs:
    """The cutoffs of one shop at ``now``."""
    return Cutoffs(
        unconfirmed_before=now - timedelta(hours=rules.unconfirmed_ttl_hours),
        ended_before=now - timedelta(days=rules.retention_days),
    )
