"""``/twilio/inbound`` and ``/twilio/status``: Twilio's webhooks, each verified by ``X-Twilio-Signature``
(HMAC-SHA1 under the auth token over the public URL of the route plus the sorted POST parameters, compared
in constant time): 403 when it does not match."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, Router, post
from litestar.di import NamedDependency, Provide
from litestar.enums import MediaType
from litestar.exceptions import ClientException, PermissionDeniedException

from restock_admin.openapi import TOO_LARGE, error, form_body, header, operation_with, string, text
from restock_admin.twilio.services import InboundService, StatusService
from restock_common.signatures import verify_twilio

MAX_FORM_BYTES = 16 * 1024
TWIML = "application/xml"


class TwilioAuth:
    """Verifies Twilio's signature against the route's public URL (as Twilio called it)."""

    def __init__(self, auth_token: str, public_base_url: str) -> None:
        self.auth_token = auth_token
        self.public_base_url = public_base_url.rstrip("/")

    async def params(self, request: Request[Any, Any, Any]) -> dict[str, str]:
        """The POST parameters of a genuine request; ``PermissionDeniedException`` otherwise."""
        form = await request.form()
        params = {key: value for key, value in form.items() if isinstance(value, str)}
        query = request.url.query
        url = f"{self.public_base_url}{request.url.path}" + (f"?{query}" if query else "")
        if not verify_twilio(self.auth_token, url, params, request.headers.get("x-twilio-signature")):
            raise PermissionDeniedException(detail="invalid Twilio signature")
        return params


SIGNATURE = header(
    "X-Twilio-Signature", "base64 HMAC-SHA1 under the auth token of the route's public URL and the form"
)
UNREADABLE = error("Not a readable form (a malformed multipart body): refused before the signature.")
FORGED = error("The X-Twilio-Signature does not match: nothing was done.")
INBOUND_FORM = operation_with(
    request_body=form_body(
        "Twilio's incoming-message webhook (form-encoded, signed as a whole: every field Twilio sends).",
        {
            "MessageSid": string("Twilio's id of the message"),
            "From": string("The sender's phone number (E.164)"),
            "To": string("Our number"),
            "Body": string("The text: STOP-family keywords unsubscribe, START / UNSTOP / YES resume"),
        },
    ),
    parameters=[SIGNATURE],
)
STATUS_FORM = operation_with(
    request_body=form_body(
        "Twilio's message status callback (form-encoded, signed as a whole: every field Twilio sends).",
        {
            "MessageSid": string("Twilio's id of the message"),
            "MessageStatus": string("queued, sent, delivered, undelivered, failed, ..."),
            "ErrorCode": string("Twilio's error code when the message failed"),
        },
        required=["MessageSid", "MessageStatus"],
    ),
    parameters=[SIGNATURE],
)


@post(
    "/inbound",
    status_code=200,
    operation_class=INBOUND_FORM,
    responses={
        200: text("TwiML: the reply to send back, or an empty <Response/>.", TWIML),
        400: UNREADABLE,
        403: FORGED,
        413: TOO_LARGE,
    },
)
async def inbound(
    request: Request[Any, Any, Any], auth: NamedDependency[TwilioAuth], sms: NamedDependency[InboundService]
) -> Response[str]:
    return Response(await sms.handle(await auth.params(request)), media_type=TWIML)


@post(
    "/status",
    status_code=200,
    operation_class=STATUS_FORM,
    responses={
        200: text("Recorded (empty body).", MediaType.TEXT),
        400: error("Not a readable form, or no MessageSid and known MessageStatus in it."),
        403: FORGED,
        413: TOO_LARGE,
    },
)
async def status(
    request: Request[Any, Any, Any],
    auth: NamedDependency[TwilioAuth],
    statuses: NamedDependency[StatusService],
) -> Response[str]:
    if not await statuses.record(await auth.params(request)):
        raise ClientException(detail="MessageSid and a known MessageStatus are required")
    return Response("", media_type="text/plain")


def twilio_router(auth: TwilioAuth, sms: InboundService, statuses: StatusService) -> Router:
    """The ``/twilio`` routes, wired to their services."""
    return Router(
        path="/twilio",
        route_handlers=[inbound, status],
        dependencies={
            "auth": Provide(lambda: auth, sync_to_thread=False, use_cache=True),
            "sms": Provide(lambda: sms, sync_to_thread=False, use_cache=True),
            "statuses": Provide(lambda: statuses, sync_to_thread=False, use_cache=True),
        },
        request_max_body_size=MAX_FORM_BYTES,
    )
