"""The sender's ports (Protocols) and the data that crosses them.

The handler talks only to these; ``app.py`` wires the real adapters (PostgreSQL job store, SMTP provider,
Jinja renderer) and unit tests wire recording fakes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

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
