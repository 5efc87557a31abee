"""The values of ``notification_jobs.state``, shared by every service that writes or reads a job.

The transition table that moves a job between them lives with the sender (``restock_sender.delivery``),
the wave planner's decisions with the dispatcher; this enum is only the vocabulary, defined once.
"""

from __future__ import annotations

import enum


class JobState(enum.StrEnum):
    """The values of ``notification_jobs.state``."""

    WAITING = "waiting"  # frozen but held back by the wave planner; keeps its place in line
    PENDING = "pending"  # frozen (or released from a wave), waiting for a sender
    PROCESSING = "processing"  # claimed under a lease; the provider may be being called
    SENT = "sent"  # the provider accepted it
    FAILED_TEMPORARY = "failed-temporary"  # will be retried at next_attempt_at
    FAILED_PERMANENT = "failed-permanent"  # the provider refused it for good
    DEAD_LETTER = "dead-letter"  # temporary failures exhausted the attempts
    DUPLICATE_SUPPRESSED = "duplicate-suppressed"  # the same notification was already sent
    SKIPPED_OPTED_OUT = "skipped-opted-out"  # the shopper unsubscribed before we sent
    INDETERMINATE = "indeterminate"  # lease expired mid-send: maybe sent, never resent automatically
