"""The SMTP side: an aiosmtpd handler that consults the inbox's fault table, then stores the message."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

from restock_sandbox.smtp.inbox import Inbox

logger = logging.getLogger(__name__)

HOSTNAME = "smtp.sandbox.restock.localhost"


class InboxHandler:
    """aiosmtpd hooks: faults first, at the stage they name; accepted messages go to the inbox."""

    def __init__(self, inbox: Inbox, clock: Callable[[], datetime]) -> None:
        self.inbox = inbox
        self.clock = clock

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        fault = self.inbox.take_fault("rcpt", [address])
        if fault is not None:
            return fault.reply()
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        fault = self.inbox.take_fault("data", envelope.rcpt_tos)
        if fault is not None:
            return fault.reply()
        raw = envelope.original_content or b""
        message = self.inbox.store(raw, envelope.mail_from or "", list(envelope.rcpt_tos), self.clock())
        logger.info(
            "smtp message accepted", extra={"inbox_id": message.id, "recipients": len(message.rcpt_tos)}
        )
        return f"250 2.0.0 Ok: queued as {message.id}"


def _accept_any_login(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
) -> AuthResult:
    # A sandbox: any credentials are good, so a sender configured with RESTOCK_SMTP_USERNAME works too.
    return AuthResult(success=True)


async def start_smtp_server(handler: InboxHandler, host: str, port: int) -> asyncio.Server:
    """Listen on ``host:port`` in the running loop (the HTTP app's), until the server is closed."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: SMTP(
            handler,
            hostname=HOSTNAME,
            enable_SMTPUTF8=True,
            authenticator=_accept_any_login,
            auth_require_tls=False,
            loop=loop,
        ),
        host=host,
        port=port,
    )
