"""The Twilio peer's state and side effects: accept a message, play its life (status callbacks), deliver
inbound messages. The wire formats are in ``messages`` and ``faults``; the routes in ``routes``.

Every callback and inbound webhook is signed as Twilio signs it (``restock_common.signatures``: HMAC-SHA1
over the URL and the sorted POST parameters), so the official ``RequestValidator`` accepts it. Logs name
message sids only, never a phone number.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import uuid
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from restock_common.signatures import twilio_signature
from restock_sandbox.twilio.faults import DELIVERY_ERRORS, TwilioFault, TwilioFaultTable
from restock_sandbox.twilio.messages import API_VERSION, MessageRecord
from restock_sandbox.twilio.segments import segment

logger = logging.getLogger(__name__)

TIMEOUT_SECONDS = 15.0  # Twilio waits 15 s for a webhook's answer
MAX_BODY_CHARS = 1600


def new_sid(prefix: str = "SM") -> str:
    """A Twilio sid: two letters and 32 hex digits."""
    return prefix + uuid.uuid4().hex


def basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    """(user, password) of an HTTP Basic ``Authorization`` header, or None."""
    if not authorization or not authorization.lower().startswith("basic "):
        return None
    try:
        user, _, password = base64.b64decode(authorization[6:].strip(), validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return user, password


def create_error(form: Mapping[str, str]) -> int | None:
    """The Twilio error code a create request's form earns before any fault, or None when it is valid."""
    to, body = form.get("To", "").strip(), form.get("Body")
    if not to:
        return 21604
    if not (to.startswith("+") and to[1:].isdigit() and 8 <= len(to) <= 16 and to[1] != "0"):
        return 21211
    if not form.get("From") and not form.get("MessagingServiceSid"):
        return 21603
    if not body:
        return 21602
    return 21617 if len(body) > MAX_BODY_CHARS else None


@dataclass
class Callback:
    """One status callback or inbound webhook the peer sent, and what it got."""

    kind: str  # "status" or "inbound"
    url: str
    params: dict[str, str]
    signature: str
    status: int | None
    body: str | None
    error: str | None
    sent_at: datetime


class TwilioPeer:
    """Messages, faults and callbacks of one sandbox Twilio account."""

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        from_number: str,
        inbound_url: str,
        http: httpx.AsyncClient,
        clock: Callable[[], datetime],
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.from_number = from_number
        self.inbound_url = inbound_url
        self.http = http
        self.clock = clock
        self.messages: list[MessageRecord] = []
        self.callbacks: list[Callback] = []
        self.faults = TwilioFaultTable()
        # Between acceptance and ``sent``: Twilio's first callback comes a moment after the API's answer,
        # never before the sender could record the sid; POST /twilio/config changes it.
        self.status_delay_seconds = 0.25
        # Off: statuses still advance, but nobody is called back (a load test that is not about receipts).
        self.status_callbacks = True
        self._tasks: set[asyncio.Task[None]] = set()

    def authenticated(self, authorization: str | None) -> bool:
        """Whether the request's Basic credentials are this account's sid and auth token (constant time)."""
        credentials = basic_credentials(authorization) or ("", "")
        user_ok = hmac.compare_digest(credentials[0].encode(), self.account_sid.encode())
        token_ok = hmac.compare_digest(credentials[1].encode(), self.auth_token.encode())
        return user_ok and token_ok

    def accept(
        self, form: Mapping[str, str], headers: Mapping[str, str], fault: TwilioFault | None
    ) -> MessageRecord:
        """Record an accepted message (``queued``) and start its life in the background."""
        body = form["Body"]
        segmentation = segment(body)
        record = MessageRecord(
            sid=new_sid(),
            account_sid=self.account_sid,
            to=form["To"].strip(),
            from_=form.get("From") or self.from_number,
            body=body,
            num_segments=segmentation.segments,
            encoding=segmentation.encoding,
            date_created=self.clock(),
            status_callback=form.get("StatusCallback") or None,
            messaging_service_sid=form.get("MessagingServiceSid") or None,
            headers=dict(headers),
            traceparent=headers.get("traceparent"),
        )
        self.messages.append(record)
        logger.info(
            "twilio message accepted", extra={"message_sid": record.sid, "segments": record.num_segments}
        )
        self._start(self._life(record, fault))
        return record

    def _start(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def flush(self) -> None:
        """Wait for every message's life in flight (at shutdown, so no callback is lost)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _life(self, record: MessageRecord, fault: TwilioFault | None) -> None:
        """queued -> sent -> delivered, or -> undelivered / failed with the fault's error code."""
        if self.status_delay_seconds:
            await asyncio.sleep(self.status_delay_seconds)
        if fault is not None and fault.delivery_error and fault.final_status == "failed":
            await self._advance(record, "failed", fault.code)
            return
        await self._advance(record, "sent", None)
        if fault is not None and fault.delivery_error:
            await self._advance(record, fault.final_status, fault.code)
        else:
            await self._advance(record, "delivered", None)

    async def _advance(self, record: MessageRecord, status: str, error_code: int | None) -> None:
        now = self.clock()
        record.status, record.date_updated = status, now
        if status == "sent":
            record.date_sent = now
        if error_code is not None:
            record.error_code, record.error_message = error_code, DELIVERY_ERRORS[error_code]
        if record.status_callback and self.status_callbacks:
            await self._post("status", record.status_callback, status_params(record))

    async def _post(self, kind: str, url: str, params: dict[str, str]) -> Callback:
        signature = twilio_signature(self.auth_token, url, params)
        headers = {"X-Twilio-Signature": signature, "User-Agent": "TwilioProxy/1.1"}
        sent_at = self.clock()
        try:
            response = await self.http.post(url, data=params, headers=headers, timeout=TIMEOUT_SECONDS)
            status, body, error = response.status_code, response.text, None
        except httpx.HTTPError as failure:
            status, body, error = None, None, f"{type(failure).__name__}: {failure}"
        callback = Callback(kind, url, params, signature, status, body, error, sent_at)
        self.callbacks.append(callback)
        logger.info(
            "twilio webhook sent",
            extra={"kind": kind, "message_sid": params.get("MessageSid"), "status": status, "error": error},
        )
        return callback

    async def inbound(self, from_: str, body: str, to: str | None) -> Callback:
        """A shopper's SMS to our number, posted to the app's inbound webhook as Twilio does."""
        return await self._post(
            "inbound", self.inbound_url, inbound_params(self.account_sid, from_, to or self.from_number, body)
        )

    def clear(self) -> None:
        """Forget every message and callback."""
        self.messages.clear()
        self.callbacks.clear()


def status_params(record: MessageRecord) -> dict[str, str]:
    """A status callback's form parameters."""
    params = {
        "MessageSid": record.sid,
        "SmsSid": record.sid,
        "AccountSid": record.account_sid,
        "MessageStatus": record.status,
        "SmsStatus": record.status,
        "To": record.to,
        "From": record.from_,
        "ApiVersion": API_VERSION,
    }
    if record.messaging_service_sid:
        params["MessagingServiceSid"] = record.messaging_service_sid
    if record.error_code is not None:
        params["ErrorCode"] = str(record.error_code)
    return params


def inbound_params(account_sid: str, from_: str, to: str, body: str) -> dict[str, str]:
    """An inbound message webhook's form parameters."""
    sid = new_sid()
    return {
        "MessageSid": sid,
        "SmsMessageSid": sid,
        "SmsSid": sid,
        "AccountSid": account_sid,
        "From": from_,
        "To": to,
        "Body": body,
        "NumMedia": "0",
        "NumSegments": str(segment(body).segments),
        "SmsStatus": "received",
        "ApiVersion": API_VERSION,
    }
