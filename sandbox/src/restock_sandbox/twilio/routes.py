"""The Twilio peer's routes, under ``/twilio``.

The API, as the official client calls it (base URL ``http://<sandbox>/twilio``):
  ``POST /twilio/2010-04-01/Accounts/{sid}/Messages.json``   create (form: To, From, Body, StatusCallback,
                                                              MessagingServiceSid); HTTP Basic sid:token
  ``GET  /twilio/2010-04-01/Accounts/{sid}/Messages.json``   list (To, From, DateSent, DateSent>, DateSent<,
                                                              PageSize, Page)
  ``GET  /twilio/2010-04-01/Accounts/{sid}/Messages/{MessageSid}.json``   fetch one
Sandbox control (JSON): ``/twilio/messages`` (GET ?to=, DELETE), ``/twilio/callbacks`` (GET),
``/twilio/faults`` (POST, GET, DELETE), ``/twilio/inbound`` (POST), ``/twilio/stats`` (GET),
``/twilio/config`` (POST).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.response.base import ASGIResponse
from litestar.types import Receive, Scope, Send

from restock_sandbox.twilio.faults import (
    FinalStatus,
    Mode,
    TwilioFault,
    error_body,
    is_known_code,
    twilio_error,
)
from restock_sandbox.twilio.messages import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    MessageRecord,
    list_filter,
    max_in_window,
    page,
    resource,
)
from restock_sandbox.twilio.peer import TwilioPeer, create_error

Peer = NamedDependency[TwilioPeer]


def _error(code: int, to: str = "") -> Response[Any]:
    status, body = error_body(code, to)
    headers = {"WWW-Authenticate": 'Basic realm="Twilio API"'} if status == 401 else None
    return Response(body, status_code=status, headers=headers)


class _StartOnly(ASGIResponse):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", b"4096")]
        await send({"type": "http.response.start", "status": 201, "headers": headers})


class _Dropped(Response[None]):
    """An answer that starts and never finishes: uvicorn closes the connection under the client (and logs
    one line, "ASGI callable returned without completing response")."""

    def __init__(self) -> None:
        super().__init__(None, status_code=201)

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> ASGIResponse:
        return _StartOnly(status_code=201)


def _dropped() -> Response[Any]:
    return _Dropped()


def _guard(request: Request[Any, Any, Any], account_sid: str, twilio: TwilioPeer) -> Response[Any] | None:
    if not twilio.authenticated(request.headers.get("authorization")):
        return _error(20003)
    return None if account_sid == twilio.account_sid else _error(20404)


class MessagesApi(Controller):
    """Twilio's Messages resource, as the official client calls it."""

    path = "/twilio/2010-04-01/Accounts/{account_sid:str}"

    @post("/Messages.json")
    async def create(
        self, account_sid: FromPath[str], request: Request[Any, Any, Any], twilio: Peer
    ) -> Response[Any]:
        if (refusal := _guard(request, account_sid, twilio)) is not None:
            return refusal
        form = {key: str(value) for key, value in (await request.form()).items()}
        if (code := create_error(form)) is not None:
            return _error(code, form.get("To", ""))
        fault = twilio.faults.take(form["To"].strip())
        if fault is not None and fault.mode == "drop":
            return _dropped()
        if fault is not None and fault.mode == "error" and not fault.delivery_error:
            return _error(fault.code or 20500, form["To"])
        if fault is not None and fault.mode == "delay":
            await asyncio.sleep(fault.delay_ms / 1000)
        record = twilio.accept(form, dict(request.headers.items()), fault)
        if fault is not None and fault.mode == "drop-after-accept":
            return _dropped()
        return Response(resource(record), status_code=201)

    @get("/Messages.json")
    async def list_messages(
        self, account_sid: FromPath[str], request: Request[Any, Any, Any], twilio: Peer
    ) -> Response[Any]:
        if (refusal := _guard(request, account_sid, twilio)) is not None:
            return refusal
        params = dict(request.query_params.items())
        wanted = list_filter(params)
        try:
            wanted.validate()
            size = int(params.get("PageSize", DEFAULT_PAGE_SIZE))
            number = int(params.get("Page", 0))
        except ValueError as bad:
            return Response(twilio_error(20001, 400, f"Invalid parameter: {bad}"), status_code=400)
        if not (1 <= size <= MAX_PAGE_SIZE) or number < 0:
            return Response(twilio_error(20001, 400, "Invalid PageSize or Page"), status_code=400)
        return Response(page(twilio.account_sid, twilio.messages, wanted, number, size), status_code=200)

    @get("/Messages/{message_sid:str}")
    async def fetch(
        self,
        account_sid: FromPath[str],
        message_sid: FromPath[str],
        request: Request[Any, Any, Any],
        twilio: Peer,
    ) -> Response[Any]:
        if (refusal := _guard(request, account_sid, twilio)) is not None:
            return refusal
        sid = message_sid.removesuffix(".json")
        found = next((m for m in twilio.messages if m.sid == sid), None)
        return _error(20404) if found is None else Response(resource(found), status_code=200)


class SentMessage(msgspec.Struct, frozen=True, kw_only=True):
    """An accepted message as the control API shows it (``accepted_at`` for rate observation)."""

    sid: str
    to: str
    from_: str = msgspec.field(name="from")
    body: str
    segments: int
    encoding: str
    status: str
    error_code: int | None
    status_callback: str | None
    traceparent: str | None
    headers: dict[str, str]
    accepted_at: datetime
    date_sent: datetime | None


def _shown(record: MessageRecord) -> SentMessage:
    return SentMessage(
        sid=record.sid,
        to=record.to,
        from_=record.from_,
        body=record.body,
        segments=record.num_segments,
        encoding=record.encoding,
        status=record.status,
        error_code=record.error_code,
        status_callback=record.status_callback,
        traceparent=record.traceparent,
        headers=record.headers,
        accepted_at=record.date_created,
        date_sent=record.date_sent,
    )


class TwilioFaultIn(msgspec.Struct, frozen=True, kw_only=True):
    """A rule for ``POST /twilio/faults``; see ``restock_sandbox.twilio.faults`` for its meaning."""

    match: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    mode: Mode = "error"
    code: int | None = None
    times: Annotated[int, msgspec.Meta(ge=1)] | None = 1
    delay_ms: Annotated[int, msgspec.Meta(ge=0, le=600_000)] = 0
    final_status: FinalStatus = "undelivered"


class InboundIn(msgspec.Struct, frozen=True, kw_only=True):
    """``POST /twilio/inbound``: a shopper texts ``body`` from ``from`` (to our number by default)."""

    from_: Annotated[str, msgspec.Meta(min_length=2, max_length=32)] = msgspec.field(name="from")
    body: Annotated[str, msgspec.Meta(max_length=1600)]
    to: str | None = None


class ConfigIn(msgspec.Struct, frozen=True, kw_only=True):
    """``POST /twilio/config``: the delay between acceptance and the ``sent`` status (default 250 ms), and
    whether status callbacks are made at all (default on). A field left out keeps its value."""

    status_delay_ms: Annotated[int, msgspec.Meta(ge=0, le=600_000)] | None = None
    status_callbacks: bool | None = None


class TwilioControl(Controller):
    """The sandbox side: what was sent, the fault table, inbound messages, rates."""

    path = "/twilio"

    @get("/messages")
    async def sent(
        self, twilio: Peer, to: Annotated[str | None, QueryParameter()] = None
    ) -> list[SentMessage]:
        return [_shown(m) for m in twilio.messages if to is None or m.to == to]

    @delete("/messages")
    async def clear(self, twilio: Peer) -> None:
        twilio.clear()

    @get("/callbacks")
    async def callbacks(self, twilio: Peer) -> list[dict[str, Any]]:
        return [vars(c) for c in twilio.callbacks]

    @post("/faults")
    async def add_fault(self, twilio: Peer, data: JSONBody[TwilioFaultIn]) -> Response[Any]:
        if data.mode == "error" and (data.code is None or not is_known_code(data.code)):
            return Response(
                {"detail": f"mode error needs a known Twilio code, got {data.code}"}, status_code=400
            )
        twilio.faults.add(
            TwilioFault(data.match, data.mode, data.code, data.times, data.delay_ms, data.final_status)
        )
        return Response([vars(rule) for rule in twilio.faults.rules], status_code=201)

    @get("/faults")
    async def list_faults(self, twilio: Peer) -> list[dict[str, Any]]:
        return [vars(rule) for rule in twilio.faults.rules]

    @delete("/faults")
    async def clear_faults(self, twilio: Peer) -> None:
        twilio.faults.clear()

    @post("/inbound", status_code=200)
    async def inbound(self, twilio: Peer, data: JSONBody[InboundIn]) -> dict[str, Any]:
        callback = await twilio.inbound(data.from_, data.body, data.to)
        return {
            "status": callback.status,
            "body": callback.body,
            "error": callback.error,
            "params": callback.params,
        }

    @get("/stats")
    async def stats(self, twilio: Peer) -> dict[str, Any]:
        accepted = [m.date_created for m in twilio.messages]
        per_recipient = Counter(m.to for m in twilio.messages)
        return {
            "accepted": len(accepted),
            "recipients": len(per_recipient),
            # Messages beyond the first to one number: each restock alert goes to a number once.
            "duplicates": sum(n - 1 for n in per_recipient.values()),
            "segments": sum(m.num_segments for m in twilio.messages),
            "max_in_any_1s": max_in_window(accepted, 1.0),
            "first_accepted_at": min(accepted, default=None),
            "last_accepted_at": max(accepted, default=None),
        }

    @post("/config", status_code=200)
    async def configure(self, twilio: Peer, data: JSONBody[ConfigIn]) -> dict[str, Any]:
        if data.status_delay_ms is not None:
            twilio.status_delay_seconds = data.status_delay_ms / 1000
        if data.status_callbacks is not None:
            twilio.status_callbacks = data.status_callbacks
        return {
            "status_delay_ms": round(twilio.status_delay_seconds * 1000),
            "status_callbacks": twilio.status_callbacks,
        }
