"""Double opt-in: the consumer of ``sender.<channel>.confirm`` that sends each confirmation at most once.

Rules
-----
- A ``ConfirmationRequested`` names a subscription; it is sent only while the subscription is still
  ``pending`` (one already confirmed, unsubscribed or erased is skipped and the message acked).
- Email: the confirmation template (the shop's latest ``confirmation`` version for the channel and
  locale, else the built-in one) with ``confirm_url`` = ``/c/{token}`` (``restock_common.links``,
  purpose ``confirm``), and a ``Message-ID`` derived from the request (``confirm:<id>:<requested_at>``),
  so a duplicate is recognisable at any peer. SMS: the text asking to reply YES, with the opt-out rule.
- At most once per request, even on redelivery: PostgreSQL is the truth (the ``confirmation-sent``
  consent event of this request, written after the provider accepted, is checked first), and a Redis
  ``SET NX`` guard with a short expiry (``confirm:<id>:<requested_at>``) stops two deliveries of one
  request sending at the same time. The guard expires, so a sender that died mid-send does not block the
  request forever: the redelivery waits for the guard, then finds no event and sends. (A death between
  the provider's acceptance and the event's commit sends twice: the window of one provider round trip.)
- A temporary provider failure or a configuration error releases the guard and requeues the message
  (``x-delivery-limit`` bounds the tries); a permanent one is logged and acked: the shopper gave an
  address or number that cannot receive it. A configuration error also pauses the channel (ADR 16), and
  while the channel is paused messages are held, not sent: they are requeued once it resumes.
- Each send is recorded in ``consent_events`` (``kind=confirmation-sent``, source ``sender``), with the
  channel, the request time and the provider's message id; never the address or number.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from restock_common.broker import Outcome
from restock_common.messages import Channel, ConfirmationRequested
from restock_common.telemetry import current_traceparent
from restock_sender import sms
from restock_sender.delivery import ProviderError, Retry, classify
from restock_sender.outbound import PublicLinks
from restock_sender.ports import (
    EmailMessage,
    EmailProvider,
    ProviderReceipt,
    RenderedMessage,
    RenderError,
    SmsMessage,
    SmsProvider,
    TemplateRecord,
    TemplateRenderer,
)
from restock_sender.templates import BUILTIN_CONFIRMATIONS, confirmation_variables

log = logging.getLogger(__name__)

GUARD_SECONDS = 60  # longer than one provider call with its timeout


@dataclass(frozen=True)
class ConfirmationTarget:
    """A subscription awaiting its confirmation, with what the message needs."""

    subscription_id: int
    tenant_id: int
    state: str
    shop_domain: str
    variant_id: int
    product_title: str | None
    email: str | None
    phone: str | None
    sms_opt_out_text: str
    template: TemplateRecord | None  # the shop's stored confirmation template, if any


class ConfirmationStore(Protocol):
    """The subscriptions and the consent evidence of confirmations."""

    async def target(self, subscription_id: int, channel: Channel) -> ConfirmationTarget | None:
        """The subscription (``None`` when it no longer exists or is for another channel)."""
        ...

    async def already_sent(self, subscription_id: int, requested_at: datetime) -> bool:
        """Whether this request's confirmation was already sent (its consent event exists)."""
        ...

    async def record_sent(
        self, target: ConfirmationTarget, channel: Channel, requested_at: datetime, message_id: str
    ) -> None:
        """The ``confirmation-sent`` consent event."""
        ...


class SendGuard(Protocol):
    """A short-lived exclusive claim on one request (Redis ``SET NX EX``)."""

    async def acquire(self, key: str, seconds: int) -> bool:
        """True when this caller now holds ``key``."""
        ...

    async def release(self, key: str) -> None:
        """Give ``key`` up (the send failed and may be tried again)."""
        ...


class Pause(Protocol):
    """The channel's pause (``restock_sender.pause.ChannelPause``)."""

    paused: bool

    async def pause(self, reason: str, error_code: str | None) -> None:
        """Pause the channel (its row and the alert)."""
        ...


def request_key(request: ConfirmationRequested) -> str:
    """The identity of one confirmation request (also the seed of the email's ``Message-ID``)."""
    return f"confirm:{request.subscription_id}:{request.requested_at.isoformat()}"


def _skip_reason(target: ConfirmationTarget | None, channel: Channel) -> str | None:
    if target is None:
        return "subscription-gone"
    if target.state != "pending":
        return f"subscription-{target.state}"
    if not (target.phone if channel == "sms" else target.email):
        return "no-contact"
    return None


class ConfirmationHandler:
    """Sends the confirmation of each request of one channel, at most once."""

    def __init__(
        self,
        channel: Channel,
        store: ConfirmationStore,
        guard: SendGuard,
        renderer: TemplateRenderer,
        links: PublicLinks,
        *,
        email: EmailProvider | None = None,
        sms_provider: SmsProvider | None = None,
        guard_seconds: int = GUARD_SECONDS,
        pause: Pause | None = None,
        pause_poll_seconds: float = 0.5,
    ) -> None:
        self.pause = pause
        self.pause_poll_seconds = pause_poll_seconds
        self.channel = channel
        self.store = store
        self.guard = guard
        self.renderer = renderer
        self.links = links
        self.email = email
        self.sms = sms_provider
        self.guard_seconds = guard_seconds

    async def __call__(self, request: ConfirmationRequested) -> Outcome:
        if request.channel != self.channel:
            log.error("confirmation for another channel", extra={"channel": request.channel})
            return Outcome.POISON
        await self._while_paused()
        key = request_key(request)
        held = await self._hold(request, key)
        if held is not None:
            return held
        try:
            outcome = await self._send_once(request, key)
        finally:  # sent (and recorded: PostgreSQL answers from now on) or not: the next delivery may go
            await self.guard.release(key)
        if outcome is Outcome.REQUEUE:
            await self._while_paused()  # a configuration error paused the channel: requeue once it resumes
        return outcome

    async def _while_paused(self) -> None:
        """Hold this message (unacked, so the broker sends no more than the prefetch) while the channel is
        paused (ADR 16): a paused channel's confirmations wait instead of running into the poison queue."""
        # Polled: ``paused`` is a flag the channel monitor sets from the row (no event to wait on).
        while self.pause is not None and self.pause.paused:  # noqa: ASYNC110
            await asyncio.sleep(self.pause_poll_seconds)

    async def _hold(self, request: ConfirmationRequested, key: str) -> Outcome | None:
        """``None`` once this delivery holds the guard; ``ACK`` when the request turns out sent (by the
        holder we waited for); ``REQUEUE`` when the guard outlived its expiry (Redis trouble)."""
        deadline = asyncio.get_running_loop().time() + self.guard_seconds + 1
        while not await self.store.already_sent(request.subscription_id, request.requested_at):
            if await self.guard.acquire(key, self.guard_seconds):
                return None
            if asyncio.get_running_loop().time() > deadline:
                return Outcome.REQUEUE
            await asyncio.sleep(0.2)  # another delivery is sending it, or died doing so (the guard expires)
        log.info("confirmation already sent", extra={"subscription_id": request.subscription_id})
        return Outcome.ACK

    async def _send_once(self, request: ConfirmationRequested, key: str) -> Outcome:
        target = await self.store.target(request.subscription_id, self.channel)
        reason = _skip_reason(target, self.channel)
        if reason is not None or target is None:
            log.info(
                "confirmation skipped", extra={"subscription_id": request.subscription_id, "reason": reason}
            )
            return Outcome.ACK
        try:
            receipt = await self._send(target, key)
        except ProviderError as error:
            return await self._failed(target, error)
        await self.store.record_sent(target, self.channel, request.requested_at, receipt.message_id)
        log.info(
            "confirmation sent", extra={"subscription_id": target.subscription_id, "channel": self.channel}
        )
        return Outcome.ACK

    async def _send(self, target: ConfirmationTarget, key: str) -> ProviderReceipt:
        confirm_url = self.links.confirm(target.subscription_id) if self.channel == "email" else ""
        variables = confirmation_variables(
            target.shop_domain, target.variant_id, target.product_title, confirm_url
        )
        rendered = self._render(target, variables)
        if self.channel == "sms":
            assert self.sms is not None
            assert target.phone is not None
            if not sms.is_e164(target.phone):
                raise ProviderError(
                    "response", "21211", "not a valid E.164 number", provider="twilio", status=400
                )
            body = sms.with_opt_out(rendered.text, target.sms_opt_out_text)
            return await self.sms.send(SmsMessage(target.phone, body, key, None, current_traceparent()))
        assert self.email is not None
        assert target.email is not None
        message = EmailMessage(
            to=target.email,
            subject=rendered.subject,
            text=rendered.text,
            html=rendered.html,
            notification_key=key,
            shop_domain=target.shop_domain,
            traceparent=current_traceparent(),
        )
        return await self.email.send(message)

    def _render(self, target: ConfirmationTarget, variables: dict[str, object]) -> RenderedMessage:
        """The shop's template; the built-in one if it fails (validated on save, so it should not): a
        shopper waiting for a confirmation is better served by our wording than by none."""
        builtin = BUILTIN_CONFIRMATIONS[self.channel]
        if target.template is not None:
            try:
                return self.renderer.render(target.template, variables)
            except RenderError:
                log.error(
                    "stored confirmation template does not render; built-in used",
                    extra={
                        "subscription_id": target.subscription_id,
                        "template_id": target.template.template_id,
                    },
                )
        return self.renderer.render(builtin, variables)

    async def _failed(self, target: ConfirmationTarget, error: ProviderError) -> Outcome:
        classification = classify(error)
        if classification.kind == "configuration" and self.pause is not None:
            await self.pause.pause(classification.reason, error.code)
        log.warning(
            "confirmation not sent",
            extra={
                "subscription_id": target.subscription_id,
                "error_kind": classification.kind,
                "error_code": error.code,
            },
        )
        again = isinstance(classification, Retry) or classification.kind == "configuration"
        return Outcome.REQUEUE if again else Outcome.ACK
