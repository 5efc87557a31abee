"""The last step of an attempt, per channel: a rendered template becomes the provider's message and is sent.

- Email: ``EmailMessage`` with the ``traceparent`` and, for alerts, RFC 8058 one-click unsubscribe
  (``List-Unsubscribe: <url>`` and ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``); the same URL is
  the template's ``unsubscribe_url`` variable, so it is in the body too.
- SMS: the text part, with the shop's opt-out sentence appended unless the template has it; the number is
  checked to be E.164 before Twilio is called (refused as Twilio would, code 21211); the segment count
  (GSM-7 / UCS-2) is recorded; Twilio posts delivery receipts to ``{public}/twilio/status?job=..&attempt=..``.
  A call that ends without an answer (timeout, dropped connection) may still have been accepted: Twilio's
  message list is asked at once, as the lease reaper would (``lease.sent_message``), and a message found
  there is the receipt; retrying blindly would send it twice.

An attempt goes prepare (build the message) -> stage (hand it over as far as it can go without being
deliverable) -> send (the provider call proper, the only step between the provider-call mark and the
record, ADR 21 and 23). Email stages everything of the SMTP transaction but the final dot when the provider
can; SMS has nothing to stage (one HTTP request is the whole call).

``PublicLinks`` makes every public URL a message carries, signed with ``restock_common.links``.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol
from urllib.parse import urlencode

from restock_common import links
from restock_common.telemetry import current_traceparent
from restock_sender import sms
from restock_sender.delivery import ProviderError
from restock_sender.lease import sent_message
from restock_sender.ports import (
    ClaimedJob,
    EmailMessage,
    EmailProvider,
    ProviderReceipt,
    RenderedMessage,
    SmsMessage,
    SmsProvider,
    StagedEmail,
    StagingEmailProvider,
)

INVALID_NUMBER_CODE = "21211"  # Twilio's code for an invalid 'To' number: classified by the same row
LOOKUP_LIMIT = 50
LOOKUP_MARGIN = timedelta(seconds=60)  # clock skew between Twilio and us


@dataclass(frozen=True)
class PublicLinks:
    """The admin-api's public URLs, under ``RESTOCK_PUBLIC_BASE_URL``."""

    signer: links.LinkSigner
    public_base_url: str

    def unsubscribe(self, subscription_id: int) -> str:
        """One-click unsubscribe (RFC 8058): ``/u/{token}``."""
        return links.unsubscribe_url(self.public_base_url, self.signer.token("unsubscribe", subscription_id))

    def confirm(self, subscription_id: int) -> str:
        """Double opt-in confirmation: ``/c/{token}``."""
        return links.confirm_url(self.public_base_url, self.signer.token("confirm", subscription_id))

    def sms_status_callback(self, job_id: int, attempt: int) -> str:
        """Where Twilio posts the delivery receipts of one attempt (signed by Twilio, verified there)."""
        query = urlencode({"job": job_id, "attempt": attempt})
        return f"{self.public_base_url.rstrip('/')}/twilio/status?{query}"


@dataclass(frozen=True)
class Sent:
    """The provider's receipt, with the SMS segment count."""

    receipt: ProviderReceipt
    segments: int | None = None


Send = Callable[[], Awaitable[Sent]]  # a prepared message's provider call


def _nothing_to_abort() -> None:
    return None


@dataclass(frozen=True)
class Staged:
    """A message handed over as far as it goes without being deliverable: ``send`` is the rest (the call
    a crash can leave unknown); ``abort`` drops what was handed over (idempotent; a no-op after ``send``)."""

    send: Send
    abort: Callable[[], None] = _nothing_to_abort


Stage = Callable[[], Awaitable[Staged]]  # raises delivery.ProviderError: refused, and nothing delivered


class Outbound(Protocol):
    """One channel's provider call."""

    @property
    def provider(self) -> str:
        """The provider's name in log rows (``smtp``, ``twilio``)."""
        ...

    def prepare(self, job: ClaimedJob, rendered: RenderedMessage, unsubscribe_url: str | None) -> Stage:
        """Build the channel's message now, before the provider-call mark (raises
        ``delivery.ProviderError`` when it cannot be built: nothing is sent); the returned call stages it
        (raises ``delivery.ProviderError`` when refused before it could be delivered) and gives the send.
        Only the send sits in the window a crash leaves unknown."""
        ...


class EmailOutbound:
    """Alerts by email."""

    provider = "smtp"

    def __init__(self, email: EmailProvider) -> None:
        self.email = email

    def prepare(self, job: ClaimedJob, rendered: RenderedMessage, unsubscribe_url: str | None) -> Stage:
        assert job.email is not None  # the handler's skip rule refused a job without an address
        message = EmailMessage(
            to=job.email,
            subject=rendered.subject,
            text=rendered.text,
            html=rendered.html,
            notification_key=job.notification_key,
            shop_domain=job.shop_domain,
            traceparent=current_traceparent(),
            list_unsubscribe=unsubscribe_url or None,
        )
        if isinstance(self.email, StagingEmailProvider):
            return functools.partial(self._stage, self.email.prepare_staged(message))
        deliver = self.email.prepare(message)

        async def send() -> Sent:
            return Sent(await deliver())

        async def unstaged() -> Staged:  # a provider that cannot stage: the whole call is the send
            return Staged(send)

        return unstaged

    @staticmethod
    async def _stage(stage: Callable[[], Awaitable[StagedEmail]]) -> Staged:
        staged = await stage()

        async def send() -> Sent:
            return Sent(await staged.finish())

        return Staged(send, staged.abort)


class SmsOutbound:
    """Alerts by SMS."""

    provider = "twilio"

    def __init__(
        self,
        sms_provider: SmsProvider,
        public: PublicLinks | None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.sms = sms_provider
        self.public = public
        self.clock = clock

    def prepare(self, job: ClaimedJob, rendered: RenderedMessage, unsubscribe_url: str | None) -> Stage:
        number = job.phone or ""
        if not sms.is_e164(number):
            raise ProviderError(
                "response",
                INVALID_NUMBER_CODE,
                "refused before sending: not a valid E.164 number",
                provider="twilio",
                status=400,
            )
        body = sms.with_opt_out(rendered.text, job.sms_opt_out_text)
        callback = self.public.sms_status_callback(job.job_id, job.attempt) if self.public else None
        message = SmsMessage(number, body, job.notification_key, callback, current_traceparent())
        send = functools.partial(self._send, message)

        async def stage() -> Staged:  # one HTTP request is the whole call: nothing to stage
            return Staged(send)

        return stage

    async def _send(self, message: SmsMessage) -> Sent:
        started = self.clock()
        try:
            receipt = await self.sms.send(message)
        except ProviderError as error:
            if error.kind not in ("timeout", "connection"):
                raise
            receipt = await self._accepted_anyway(message, started, error)
        return Sent(receipt, sms.segments(message.body).segments)

    async def _accepted_anyway(
        self, message: SmsMessage, started: datetime, error: ProviderError
    ) -> ProviderReceipt:
        """The receipt of a message Twilio accepted although its answer was lost; else ``error`` again."""
        try:
            candidates = await self.sms.sent_to(message.to, LOOKUP_LIMIT)
        except ProviderError:
            raise error from None
        found = sent_message(candidates, message.body, started, LOOKUP_MARGIN)
        if found is None:
            raise error
        return ProviderReceipt(
            self.provider, found.sid, f"{found.status} (answer lost; found in the message list)"
        )
