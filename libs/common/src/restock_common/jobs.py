"""The values of ``notification_jobs.state`` and ``wave_plans.status``, shared by every service that writes
or reads them.

The transition table that moves a job between states lives with the sender (``restock_sender.delivery``),
the wave planner's decisions with the dispatcher; these enums are only the vocabulary, defined once. The
detector reads ``wave_plans.status`` too: a variant's stock changes matter downstream only while its line
is open (ADR 26).
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


# The states no automatic path moves a job out of: only an operator's replay (``restock_common.replay``; the
# sender's transition table agrees, its unit test checks). The admin API lists them, the sender's backlog
# gauges count them, and the partial index ``notification_jobs_needs_operator`` holds them.
NEEDS_AN_OPERATOR = frozenset({JobState.DEAD_LETTER, JobState.INDETERMINATE})


class WavePlanStatus(enum.StrEnum):
    """The values of ``wave_plans.status`` (the dispatcher's ``waves.plan`` decides them)."""

    IDLE = "idle"  # nobody waiting in the current window
    ACTIVE = "active"  # targets waiting and stock left: a next wave is scheduled
    SOLD_OUT = "sold-out"  # targets waiting, no stock
