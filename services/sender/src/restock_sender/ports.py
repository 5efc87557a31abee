"""The sender's ports (Protocols) and the data that crosses them.

The handler talks only to these; ``app.py`` wires the real adapters (PostgreSQL job store, SMTP provider,
Jinja renderer) and unit tests wire recording fakes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from restock_common.messages import Channel
from restock_sender.delivery import JobState, RetryPolicy


@dataclass(frozen=True)
class ClaimedJob:
    """A job this sender now holds under a lease, with what it needs to send it."""

    job_id: int
    tenant_id: int
    subscription_id: int
    variant_id: int
    channel: str
    notification_key: str
    attempt: int
    traceparent: str | None
    shop_domain: str
    product_title: str | None
    email: str | None
    subscription_state: str
    unsubscribed_at: datetime | None
    policy: RetryPolicy
    state: JobState = JobState.PROCESSING


@dataclass(frozen=True)
class NotClaimable:
    """The job is not pending (already sent, claimed by another sender, gone): nothing to do."""

    job_id: int


@dataclass(frozen=True)
class TemplateRecord:
    """One immutable template version; ``template_id`` is ``None`` for the built-in one."""

    name: str
    version: int
    subject: str
    body_text: str
    body_html: str | None
    template_id: int | None = None


@dataclass(frozen=True)
class RenderedMessage:
    """A template rendered with resolved variables."""

    subject: str
    text: str
    html: str | None


@dataclass(frozen=True)
class EmailMessage:
    """One email to one recipient; the provider adds From, Message-ID and the MIME structure."""

    to: str
    subject: str
    text: str
    html: str | None
    notification_key: str
    shop_domain: str
    traceparent: str | None


@dataclass(frozen=True)
class ProviderReceipt:
    """The provider accepted the message."""

    provider: str
    message_id: str
    response: str


@dataclass(frozen=True)
class AttemptRecord:
    """Everything one attempt commits: the job's new state and the attempt's log row."""

    job: ClaimedJob
    state: JobState
    provider: str | None = None
    receipt: ProviderReceipt | None = None
    error_kind: str | None = None
    error_code: str | None = None
    error_detail: str | None = None
    next_attempt_at: datetime | None = None
    decision: str | None = None
    template: TemplateRecord | None = None
    variables: Mapping[str, Any] = field(default_factory=dict)
    trace_id: str | None = None
    started_at: datetime | None = None


class JobStore(Protocol):
    """Notification jobs in PostgreSQL: the claim (compare-and-set) and the attempt's record."""

    async def claim(self, job_id: int, lease_seconds: int) -> ClaimedJob | NotClaimable:
        """Move a pending job to processing (attempt + 1, lease) iff it is still pending."""
        ...

    async def record(self, record: AttemptRecord) -> bool:
        """In one transaction: the job's new state (only if still processing), the log row, and on
        ``sent`` the subscription's counters. False when the job was no longer ours (lease lost)."""
        ...


class EmailProvider(Protocol):
    """Sends one email; raises ``delivery.ProviderError`` (data) when it is not accepted."""

    async def send(self, message: EmailMessage) -> ProviderReceipt:
        """Deliver to the provider and return its receipt."""
        ...


class TemplateRenderer(Protocol):
    """Turns a template record and variables into a message; raises ``RenderError`` on a broken template."""

    def render(self, template: TemplateRecord, variables: Mapping[str, Any]) -> RenderedMessage:
        """Render subject, text and HTML."""
        ...


class RenderError(Exception):
    """The template could not be rendered with these variables (a missing variable, bad syntax)."""


# --- the scheduler's ports -----------------------------------------------------------------------------

PublishJobs = Callable[[list[int]], Awaitable[None]]


class ScheduleStore(Protocol):
    """The scheduler's statements on ``notification_jobs``: each one set-based, batch-limited, and
    ``FOR UPDATE SKIP LOCKED`` so the schedulers of several replicas take disjoint jobs."""

    async def requeue_due(self, channel: str, limit: int) -> list[int]:
        """Move due ``failed-temporary`` jobs back to ``pending``, not yet enqueued, and commit. The ids
        moved, FIFO by priority. (Committed before they are published: a claim that ran before the commit
        would see ``failed-temporary`` and drop the message, without waiting for the row lock.)"""
        ...

    async def mark_enqueued(self, job_ids: list[int]) -> None:
        """The broker confirmed these jobs' batch."""
        ...

    async def publish_unqueued(
        self, channel: str, limit: int, grace_seconds: float, publish: PublishJobs
    ) -> list[int]:
        """Pending jobs never published (``enqueued_at`` NULL; replayed, or untouched for ``grace_seconds``,
        so a dispatcher still publishing its freeze is not raced): mark them
        enqueued and ``publish`` them in one transaction (when ``publish`` raises, nothing changed). Their
        ``pending`` is already committed, so a claim that arrives meanwhile waits for the lock and then
        claims. The ids published."""
        ...

    async def reap_expired(self, channel: str, state: JobState, limit: int) -> list[int]:
        """Move ``processing`` jobs whose lease ended to ``state``, each with a log row saying the outcome
        is unknown. The ids reaped."""
        ...


class JobPublisher(Protocol):
    """Publishes a ``JobBatch`` and returns once the broker confirmed it."""

    async def publish(self, channel: Channel, job_ids: list[int]) -> None:
        """Publish the ids, in this order, as one batch."""
        ...
