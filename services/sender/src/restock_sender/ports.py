"""The sender's ports (Protocols) and the data that crosses them.

The handler talks only to these; ``app.py`` wires the real adapters (PostgreSQL job store, SMTP provider,
Jinja renderer) and unit tests wire recording fakes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from restock_common.messages import Channel
from restock_common.rules import Rules
from restock_common.templating import RenderedMessage as RenderedMessage  # re-exported: defined once
from restock_common.templating import RenderError as RenderError
from restock_common.templating import TemplateRecord as TemplateRecord
from restock_sender.delivery import JobState, ProviderError, RetryPolicy
from restock_sender.limiter import Limit, Verdict


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
    # When the job's batch was (last) published: queue latency counts from here (metrics).
    enqueued_at: datetime | None = None
    # SMS (ADR 15): the subscription's E.164 number; the template version pinned at freeze (None: the
    # channel's built-in one) and the subscription's locale.
    phone: str | None = None
    template_id: int | None = None
    locale: str = "en"
    sms_opt_out_text: str = ""  # the shop's rule, appended to SMS alerts
    # The shopper bought the variant (order.created) or was notified the shop's maximum number of times.
    fulfilled_at: datetime | None = None


@dataclass(frozen=True)
class NotClaimable:
    """The job is not pending (already sent, claimed by another sender, gone): nothing to do."""

    job_id: int


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
    # RFC 8058 one-click unsubscribe of an alert: List-Unsubscribe and List-Unsubscribe-Post headers.
    list_unsubscribe: str | None = None


@dataclass(frozen=True)
class SmsMessage:
    """One SMS to one E.164 number; ``status_callback`` is where Twilio posts delivery receipts."""

    to: str
    body: str
    notification_key: str
    status_callback: str | None
    traceparent: str | None


@dataclass(frozen=True)
class SentSms:
    """A message the provider's list shows (the SMS lease reaper's evidence)."""

    sid: str
    to: str
    body: str
    created_at: datetime | None
    status: str | None


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
    segments: int | None = None  # SMS: how many segments the provider bills
    opted_out_at_provider: bool = False  # Twilio 21610: the subscription is unsubscribed in the same commit
    attempt_spent: bool = True  # False: the attempt is given back (``delivery.spends_attempt``)


class JobStore(Protocol):
    """Notification jobs in PostgreSQL: the claim (compare-and-set) and the attempt's record."""

    async def claim(self, job_id: int, lease_seconds: int) -> ClaimedJob | NotClaimable:
        """Move a pending job to processing (attempt + 1, lease) iff it is still pending."""
        ...

    async def release(self, job: ClaimedJob) -> bool:
        """Give a claim back (``processing`` -> ``pending``, the attempt not counted, to be published again)
        iff the job is still this claimed attempt: nothing reached the provider."""
        ...

    async def mark_provider_call(self, job: ClaimedJob) -> bool:
        """Commit, right before the provider call, that this attempt may reach the provider (ADR 21): a lease
        expiring without the mark is then known unsent and the job goes back to ``pending``. False (call
        nothing) when the job is no longer this attempt under a running lease."""
        ...

    async def record(self, record: AttemptRecord) -> bool:
        """In one transaction: the job's new state (only if still processing), the log row, and on
        ``sent`` the subscription's counters. False when the job was no longer ours (lease lost)."""
        ...

    async def record_and_mark(self, record: AttemptRecord, next_job: ClaimedJob) -> tuple[bool, bool]:
        """``record`` and ``mark_provider_call(next_job)`` committed together, in one round trip (the
        provider-call window handed over, ADR 25): whether the record moved its job, and whether the next
        job is marked. Never for a record that unsubscribes (``opted_out_at_provider``)."""
        ...


class EmailProvider(Protocol):
    """Sends one email; raises ``delivery.ProviderError`` (data) when it is not accepted."""

    async def send(self, message: EmailMessage) -> ProviderReceipt:
        """Deliver to the provider and return its receipt."""
        ...

    def prepare(self, message: EmailMessage) -> Callable[[], Awaitable[ProviderReceipt]]:
        """Compose the message now (raises ``ProviderError`` when it cannot be); the returned call delivers
        it. ``send`` in two steps, so the composing stays out of the provider-call window (ADR 21)."""
        ...


@dataclass(frozen=True)
class StagedEmail:
    """A message handed to the SMTP server up to, not including, the end of its data: nothing can be
    delivered before ``finish`` (which raises ``ProviderError`` data like ``send``); ``abort`` drops it
    (idempotent, and a no-op once finished)."""

    finish: Callable[[], Awaitable[ProviderReceipt]]
    abort: Callable[[], None]


@runtime_checkable
class StagingEmailProvider(Protocol):
    """An ``EmailProvider`` that can hand a message over in two steps (ADR 23), so that only the last one
    sits in the provider-call window."""

    def prepare_staged(self, message: EmailMessage) -> Callable[[], Awaitable[StagedEmail]]:
        """Compose the message now (raises ``ProviderError``); the returned call stages it (raises
        ``ProviderError`` when the server refuses it before its end: nothing was delivered)."""
        ...


class SmsProvider(Protocol):
    """Sends one SMS (raises ``delivery.ProviderError``) and lists what went to a number (the reaper)."""

    async def send(self, message: SmsMessage) -> ProviderReceipt:
        """Hand the message to the provider and return its receipt (the message SID)."""
        ...

    async def sent_to(self, number: str, limit: int) -> list[SentSms]:
        """The newest messages from our number to ``number``, newest first (at most ``limit``)."""
        ...


class TemplateStore(Protocol):
    """Stored template versions (immutable: cached per id) and their first use."""

    async def load(self, template_id: int) -> TemplateRecord | None:
        """The version, or ``None`` when it no longer exists."""
        ...

    async def mark_used(self, template_id: int) -> None:
        """Set ``first_used_at`` once (from then on the version can never be rewritten)."""
        ...


class TemplateRenderer(Protocol):
    """Turns a template record and variables into a message; raises ``RenderError`` on a broken template."""

    def render(self, template: TemplateRecord, variables: Mapping[str, Any]) -> RenderedMessage:
        """Render subject, text and HTML."""
        ...


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
        claims. Also pending jobs deferred by admission whose ``next_attempt_at`` is due (ADR 16). The ids
        published."""
        ...

    async def reap_unstarted(self, channel: str, limit: int) -> list[int]:
        """Move ``processing`` jobs whose lease ended before the provider call was marked (their sender
        died or stalled before calling it: nothing was sent) back to ``pending``, unpublished, with a log row.
        The ids moved, FIFO by priority, for the caller to publish."""
        ...

    async def reap_expired(self, channel: str, state: JobState, limit: int) -> list[int]:
        """Move ``processing`` jobs whose lease ended after the provider call was marked to ``state``, each
        with a log row saying the outcome is unknown. The ids reaped."""
        ...


class JobPublisher(Protocol):
    """Publishes a ``JobBatch`` and returns once the broker confirmed it."""

    async def publish(self, channel: Channel, job_ids: list[int]) -> None:
        """Publish the ids, in this order, as one batch."""
        ...


# --- admission: rate limits, send windows, channel pause (ADR 16) --------------------------------------


@dataclass(frozen=True)
class JobRoute:
    """What admission needs to know about a pending job *before* it is claimed (one read per batch), so a
    job deferred by a limit or a window never spends an attempt. ``phone`` stays in memory (time zone)."""

    job_id: int
    tenant_id: int
    channel: str
    recipient_domain: str | None
    phone: str | None
    shop_timezone: str | None
    rules: Rules


@dataclass(frozen=True)
class Deferral:
    """A pending job sent back to wait, unclaimed: published again at ``until``; ``decision`` says why
    (``rate-limited:<limit>``, ``send-window``, ``channel-paused``)."""

    job_id: int
    until: datetime
    decision: str


class AdmissionStore(Protocol):
    """The pre-claim read of a batch's pending jobs, and deferrals (a compare-and-set on ``pending``)."""

    async def routes(self, job_ids: list[int]) -> dict[int, JobRoute]:
        """The routes of those of ``job_ids`` still ``pending`` (a job absent here is not claimable)."""
        ...

    async def defer(self, deferrals: list[Deferral]) -> int:
        """Set ``next_attempt_at``, ``decision`` of those still ``pending`` (attempt untouched); a count."""
        ...


class RateLimiter(Protocol):
    """Every limit of one send at once, atomically across replicas (``restock_sender.limiter``)."""

    async def acquire(self, limits: Sequence[Limit], max_wait_us: int) -> Verdict:
        """Reserve a send on every limit within ``max_wait_us``, or take nothing and say which limit binds."""
        ...


@dataclass(frozen=True)
class PauseRecord:
    """A channel's row in ``channel_pauses``."""

    channel: str
    paused: bool
    reason: str | None
    error_code: str | None


@dataclass(frozen=True)
class OperatorBacklog:
    """A channel's jobs that wait for an operator: ``dead-letter`` (retries exhausted, a template that does
    not render) and ``indeterminate`` (the outcome unknowable; never re-sent automatically)."""

    dead_letter: int
    indeterminate: int


class PauseStore(Protocol):
    """``channel_pauses``: the sender pauses a channel and its probe resumes it; operators edit the row."""

    async def read(self, channel: str) -> PauseRecord | None:
        """The channel's row, if it was ever paused."""
        ...

    async def pause(self, channel: str, reason: str, error_code: str | None) -> None:
        """Mark the channel paused (idempotent; ``paused_at`` kept when already paused)."""
        ...

    async def resume(self, channel: str) -> bool:
        """Mark it resumed; False when it was not paused (an operator got there first)."""
        ...

    async def operator_backlog(self, channel: str) -> OperatorBacklog:
        """How many jobs of the channel wait for an operator (metrics, read on the monitor's tick)."""
        ...


class ProviderProbe(Protocol):
    """Tries the provider with our configuration without sending anything (SMTP login and envelope, a
    Twilio account fetch)."""

    async def probe(self) -> ProviderError | None:
        """``None`` when the provider accepts our configuration again; else what it answered."""
        ...


class DeliveryMetrics(Protocol):
    """What the sender counts (``restock_sender.metrics``); the handler reports, the registry keeps."""

    def attempt_recorded(self, job: ClaimedJob, state: JobState, error_kind: str | None) -> None:
        """An attempt's outcome committed (``state`` is the job's new state)."""
        ...

    def deferred(self, channel: str, decision: str) -> None:
        """A job was deferred unclaimed (by a limit, a window or a pause)."""
        ...

    def waited(self, channel: str, seconds: float) -> None:
        """A send slept this long for its reservation on the limits."""
        ...


class NoMetrics:
    """``DeliveryMetrics`` that counts nothing (unit tests, tools)."""

    def attempt_recorded(self, job: ClaimedJob, state: JobState, error_kind: str | None) -> None:
        return None

    def deferred(self, channel: str, decision: str) -> None:
        return None

    def waited(self, channel: str, seconds: float) -> None:
        return None
