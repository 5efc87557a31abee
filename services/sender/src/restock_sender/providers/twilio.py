"""``SmsProvider`` over Twilio's Messages API with the official client (``twilio`` 9, async).

The client is ``Client(account_sid, auth_token, http_client=AsyncTwilioHttpClient())`` with
``client.api.base_url`` pointed at ``RESTOCK_TWILIO_BASE_URL`` (the sandbox peer in development). The
client has no per-request headers, so the ``traceparent`` travels through its HTTP client: ours adds the
current W3C trace context to every request, and the peer (or a proxy) can join the job's trace.

Every failure becomes ``delivery.ProviderError`` data with ``provider="twilio"``: Twilio's error code and
HTTP status from its error JSON (``TwilioRestException``), or ``timeout`` / ``connection`` when no answer
came. The message is not in the error text: Twilio echoes the number ("The 'To' number +1... is not
valid"), and the handler redacts it before anything is stored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Final

import aiohttp
from twilio.base import values
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from restock_common.telemetry import current_traceparent
from restock_sender.delivery import ProviderError
from restock_sender.ports import ProviderReceipt, SentSms, SmsMessage

PROVIDER: Final = "twilio"


class TracingHttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]  # twilio ships no type hints
    """The client's aiohttp transport, adding the ``traceparent`` of the current span to each request."""

    async def request(
        self,
        method: str,
        url: str,
        params: Mapping[str, object] | None = None,
        data: Mapping[str, object] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        traceparent = current_traceparent()
        merged = dict(headers or {})
        if traceparent:
            merged["traceparent"] = traceparent
        return await super().request(
            method,
            url,
            params=dict(params) if params is not None else None,
            data=dict(data) if data is not None else None,
            headers=merged,
            auth=auth,
            timeout=timeout,
            allow_redirects=allow_redirects,
        )


def _quiet_http_log() -> logging.Logger:
    """The client logs every request's query at INFO, and the list's query is the shopper's number: its
    logger keeps warnings only (our own lines carry job ids)."""
    logger = logging.getLogger("restock_sender.providers.twilio.http")
    logger.setLevel(logging.WARNING)
    return logger


def provider_error(error: Exception) -> ProviderError:
    """A Twilio failure as data."""
    if isinstance(error, TwilioRestException):
        return ProviderError(
            "response", str(error.code), str(error.msg), provider=PROVIDER, status=error.status
        )
    if isinstance(error, TwilioServiceException):
        return ProviderError(
            "response",
            str(error.code),
            str(error.detail or error.title),
            provider=PROVIDER,
            status=error.status,
        )
    if isinstance(error, asyncio.TimeoutError | TimeoutError | aiohttp.ServerTimeoutError):
        return ProviderError("timeout", None, str(error) or "timed out", provider=PROVIDER)
    if isinstance(error, aiohttp.ClientError | OSError):
        return ProviderError("connection", None, f"{type(error).__name__}: {error}", provider=PROVIDER)
    return ProviderError("protocol", None, f"{type(error).__name__}: {error}", provider=PROVIDER)


class TwilioProvider:
    """Sends from one Twilio number through one pooled aiohttp session."""

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        base_url: str,
        sender: str,
        timeout: float = 30.0,
    ) -> None:
        self.sender = sender
        self.timeout = timeout
        self.http = TracingHttpClient(logger=_quiet_http_log())
        self.client = Client(account_sid, auth_token, http_client=self.http)
        self.client.api.base_url = base_url.rstrip("/")

    async def send(self, message: SmsMessage) -> ProviderReceipt:
        try:
            async with asyncio.timeout(self.timeout):
                created = await self.client.messages.create_async(
                    to=message.to,
                    from_=self.sender,
                    body=message.body,
                    status_callback=message.status_callback or values.unset,
                )
        except Exception as error:  # every failure becomes data (see provider_error)
            raise provider_error(error) from None
        response = f"{created.status} segments={created.num_segments}"
        return ProviderReceipt(PROVIDER, str(created.sid), response)

    async def sent_to(self, number: str, limit: int) -> list[SentSms]:
        """Newest first. No ``DateSent`` filter: a message still queued at Twilio has no send date yet and
        would be missed (then sent twice); the reaper compares creation times itself."""
        try:
            async with asyncio.timeout(self.timeout):
                found = await self.client.messages.list_async(
                    to=number, from_=self.sender, limit=limit, page_size=min(limit, 100)
                )
        except Exception as error:
            raise provider_error(error) from None
        return [
            SentSms(str(m.sid), str(m.to), m.body or "", m.date_created, str(m.status) if m.status else None)
            for m in found
        ]

    async def close(self) -> None:
        """Close the HTTP session (at shutdown)."""
        await self.http.close()
