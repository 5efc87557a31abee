"""The SMS lease reaper: a job left in ``processing`` by a dead sender, resolved by asking Twilio.

Rules
-----
- An SMS job past its lease was claimed (attempt N committed) and then its sender died: before the Twilio
  call, after it, or between Twilio's answer and our commit. Twilio's message list can tell which.
- We ask for the newest messages from our number to the job's number (``To`` and ``From`` filters, no
  ``DateSent`` filter: a message still queued at Twilio has no send date and would be missed, then sent
  twice), and look for one created at or after the claim (minus ``margin`` for clock skew between Twilio
  and PostgreSQL) whose body is exactly the body this attempt sent. The body is re-rendered from what
  the attempt used: the template version pinned on the job (immutable once used) or the built-in one, the
  same variables, the same opt-out rule. Bodies differ between jobs to one number (the product title and
  URL name the variant, and a subscription is one contact on one variant), so body + number + time
  identify the attempt's message.
- Found: the job is ``sent`` with the message SID (``found-at-provider``) and the subscription counted
  as notified. Not found: back to ``pending`` (``not-at-provider``) and republished: the next claim is a
  new attempt. Twilio cannot be asked (timeout, 5xx, our credentials): the job stays ``processing`` and
  the next tick asks again; never ``indeterminate`` while Twilio can be asked later.
- The resolution is a compare-and-set on (``processing``, attempt N, lease expired): a second reaper, or
  a slow sender that finally commits, wins or loses as a whole; the loser writes nothing.

Known limit: a product title edited between the send and the reaping changes the re-rendered body, and
the message is sent again (written down in ADR 15).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from restock_sender.delivery import Event, ProviderError
from restock_sender.ports import (
    ClaimedJob,
    RenderError,
    SentSms,
    SmsProvider,
    TemplateRecord,
    TemplateRenderer,
    TemplateStore,
)
from restock_sender.sms import with_opt_out
from restock_sender.templates import restock_variables

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExpiredSms:
    """A ``processing`` SMS job past its lease, with when its attempt was claimed."""

    job: ClaimedJob
    claimed_at: datetime


def sent_message(
    candidates: Sequence[SentSms], body: str, claimed_at: datetime, margin: timedelta
) -> SentSms | None:
    """The message of this attempt among the number's messages, if it went out (pure)."""
    earliest = claimed_at - margin
    for message in candidates:
        if message.body == body and (message.created_at is None or message.created_at >= earliest):
            return message
    return None


class LeaseStore(Protocol):
    """The SMS reaper's statements on ``notification_jobs``."""

    async def expired_sms(self, limit: int) -> list[ExpiredSms]:
        """``processing`` SMS jobs whose lease ended, oldest lease first."""
        ...

    async def resolve(self, expired: ExpiredSms, event: Event, message: SentSms | None) -> bool:
        """Apply ``event``'s transition (with a log row) iff the job is still this expired attempt."""
        ...


@dataclass(frozen=True)
class Resolution:
    """What one pass resolved: jobs found sent, jobs sent back to ``pending``, jobs left for later."""

    sent: list[int]
    resend: list[int]
    unresolved: list[int]


class SmsLeaseReaper:
    """Resolves expired SMS leases against Twilio's message list."""

    def __init__(
        self,
        store: LeaseStore,
        provider: SmsProvider,
        renderer: TemplateRenderer,
        templates: TemplateStore | None,
        builtin: TemplateRecord,
        *,
        margin: timedelta = timedelta(seconds=60),
        lookup_limit: int = 50,
    ) -> None:
        self.store = store
        self.provider = provider
        self.renderer = renderer
        self.templates = templates
        self.builtin = builtin
        self.margin = margin
        self.lookup_limit = lookup_limit

    async def reap(self, limit: int) -> Resolution:
        """One pass over at most ``limit`` expired jobs."""
        resolution = Resolution([], [], [])
        for expired in await self.store.expired_sms(limit):
            event = await self._ask(expired)
            if event is None:
                resolution.unresolved.append(expired.job.job_id)
                continue
            found = event[1]
            if await self.store.resolve(expired, event[0], found):
                (resolution.sent if found else resolution.resend).append(expired.job.job_id)
        return resolution

    async def _ask(self, expired: ExpiredSms) -> tuple[Event, SentSms | None] | None:
        job = expired.job
        body = await self._body(job)
        if body is None or not job.phone:
            return (
                Event.NOT_AT_PROVIDER,
                None,
            )  # nothing could have been sent: the send fails again, classified
        try:
            candidates = await self.provider.sent_to(job.phone, self.lookup_limit)
        except ProviderError as error:
            log.warning(
                "twilio could not be asked about an expired sms lease; retried next tick",
                extra={"job_id": job.job_id, "error_kind": error.kind, "error_code": error.code},
            )
            return None
        found = sent_message(candidates, body, expired.claimed_at, self.margin)
        return (Event.FOUND_AT_PROVIDER, found) if found else (Event.NOT_AT_PROVIDER, None)

    async def _body(self, job: ClaimedJob) -> str | None:
        """The body this attempt sent (as ``SmsOutbound`` built it)."""
        template: TemplateRecord | None = self.builtin
        if job.template_id is not None and self.templates is not None:
            template = await self.templates.load(job.template_id)
        if template is None:
            return None
        variables = restock_variables(job.shop_domain, job.variant_id, job.product_title)
        try:
            rendered = self.renderer.render(template, variables)
        except RenderError:
            return None
        return with_opt_out(rendered.text, job.sms_opt_out_text)
