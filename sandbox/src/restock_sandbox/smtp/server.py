"""The SMTP side: an aiosmtpd handler that consults the inbox's fault table, then stores the message."""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from restock_sandbox.smtp.inbox import Inbox

logger = logging.getLogger(__name__)

HOSTNAME = "smtp.sandbox.restock.localhost"


class InboxHandler:
    """aiosmtpd hooks: faults first, at the stage they name; accepted messages go to the inbox.

    ``credentials`` (login, password): when given, a session must log in with them before MAIL (530
    otherwise) and any other login is refused with 535; when None, any login, or none, is good."""

    def __init__(
        self,
        inbox: Inbox,
        clock: Callable[[], datetime],
        *,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self.inbox = inbox
        self.clock = clock
        self.credentials = credentials

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        """aiosmtpd's authenticator (PLAIN and LOGIN): ``auth`` faults first, then the credentials."""
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False, message=INVALID_CREDENTIALS)
        fault = self.inbox.take_fault("auth", [data.login.decode(errors="replace")])
        if fault is not None:
            return AuthResult(success=False, handled=False, message=fault.reply())
        if self.credentials is None or _same_credentials(self.credentials, data):
            return AuthResult(success=True, auth_data=data)
        return AuthResult(success=False, handled=False, message=INVALID_CREDENTIALS)

    async def handle_MAIL(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        if self.credentials is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        fault = self.inbox.take_fault("rcpt", [address])
        if fault is not None:
            await asyncio.sleep(fault.delay_seconds)
            if fault.drop:
                return _hang_up(server)
            if fault.code is not None:
                return fault.reply()
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        fault = self.inbox.take_fault("data", envelope.rcpt_tos)
        if fault is None:
            return self._accept(envelope)
        reply = self._accept(envelope) if fault.stores_message else None
        await asyncio.sleep(fault.delay_seconds)
        if fault.drop:
            return _hang_up(server)
        return reply or fault.reply()

    def _accept(self, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        message = self.inbox.store(raw, envelope.mail_from or "", list(envelope.rcpt_tos), self.clock())
        logger.info(
            "smtp message accepted", extra={"inbox_id": message.id, "recipients": len(message.rcpt_tos)}
        )
        return f"250 2.0.0 Ok: queued as {message.id}"


INVALID_CREDENTIALS = "535 5.7.8 Authentication credentials invalid"


def _same_credentials(expected: tuple[str, str], given: LoginPassword) -> bool:
    login, password = (value.encode() for value in expected)
    # Both compared, in constant time, whatever the first says.
    same_login = hmac.compare_digest(login, given.login)
    return hmac.compare_digest(password, given.password) and same_login


def _hang_up(server: SMTP) -> str:
    """Close the connection with no reply. ``abort`` discards the transport at once, so the reply aiosmtpd
    writes for the returned string goes nowhere, and the session's task is cancelled when the loss lands."""
    transport = server.transport
    assert isinstance(transport, asyncio.WriteTransport)  # a TCP session's transport
    transport.abort()
    return "421 4.4.2 connection dropped (never sent)"


async def start_smtp_server(handler: InboxHandler, host: str, port: int) -> asyncio.Server:
    """Listen on ``host:port`` in the running loop (the HTTP app's), until the server is closed."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: SMTP(
            handler,
            hostname=HOSTNAME,
            enable_SMTPUTF8=True,
            # The handler checks logins; AUTH is offered without TLS, as a development peer on loopback.
            authenticator=handler.authenticate,
            auth_require_tls=False,
            loop=loop,
        ),
        host=host,
        port=port,
    )
