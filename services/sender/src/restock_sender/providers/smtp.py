"""``EmailProvider`` over SMTP (aiosmtplib), with a small pool of persistent connections.

Opening an SMTP session (TCP, EHLO, STARTTLS, AUTH) costs several round trips, so connections are kept and
reused. A connection that failed (dropped, timed out, or the server said 421) is closed and reopened on its
next use; one that sat idle is probed with NOOP first, because servers drop idle sessions silently.
Every failure becomes ``delivery.ProviderError`` data: the reply code and text, or the kind of
failure when there was no reply.

A message goes in two steps (``prepare_staged``, ADR 23). *Staging* runs ``MAIL FROM``, ``RCPT TO``,
``DATA`` and writes the body, dot-stuffed, without the terminating ``<CRLF>.<CRLF>``: a server accepts
nothing before that line (RFC 5321 §4.1.1.4), and a session dropped before it delivers nothing, so staging
needs no provider-call mark and runs concurrently on the pool's sessions. *Finishing* writes the final dot
and reads the reply: only that is the part whose outcome a crash can lose. Each step is aiosmtplib's own
(``mail``, ``rcpt``, ``execute_command``, its line-ending and dot-stuffing rules), in the order its
``sendmail`` runs them. The ``Message-ID`` is derived from the notification key, so a duplicate
is recognisable at any peer, and the ``traceparent`` header carries the job's trace.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.message import EmailMessage as MimeMessage
from email.utils import formatdate, parseaddr
from typing import Literal

import aiosmtplib
from aiosmtplib.email import flatten_message
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

from restock_sender.delivery import ProviderError
from restock_sender.ports import EmailMessage, ProviderReceipt, StagedEmail

PROVIDER = "smtp"


def message_id(notification_key: str, shop_domain: str) -> str:
    """The deterministic ``Message-ID`` of one notification."""
    digest = hashlib.sha256(notification_key.encode()).hexdigest()[:32]
    return f"<{digest}@restock.{shop_domain}>"


def compose(message: EmailMessage, sender: str) -> MimeMessage:
    """A multipart (text + HTML) message with our headers."""
    mime = MimeMessage()
    mime["From"] = sender
    mime["To"] = message.to
    mime["Subject"] = message.subject
    mime["Date"] = formatdate(usegmt=True)
    mime["Message-ID"] = message_id(message.notification_key, message.shop_domain)
    if message.traceparent:
        mime["traceparent"] = message.traceparent
    if message.list_unsubscribe:
        # RFC 8058: a mail client unsubscribes with one POST to this URL, no cookie and no page.
        mime["List-Unsubscribe"] = f"<{message.list_unsubscribe}>"
        mime["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    mime.set_content(message.text)
    if message.html is not None:
        mime.add_alternative(message.html, subtype="html")
    return mime


def provider_error(error: Exception) -> ProviderError:
    """An SMTP failure as data."""
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused) and error.recipients:
        refused = error.recipients[0]
        return ProviderError("response", str(refused.code), refused.message)
    if isinstance(error, aiosmtplib.SMTPResponseException):
        return ProviderError("response", str(error.code), error.message)
    if isinstance(error, aiosmtplib.SMTPTimeoutError | asyncio.TimeoutError | TimeoutError):
        return ProviderError("timeout", None, str(error) or "timed out")
    if isinstance(error, aiosmtplib.SMTPServerDisconnected | aiosmtplib.SMTPConnectError | OSError):
        return ProviderError("connection", None, str(error) or type(error).__name__)
    return ProviderError("protocol", None, f"{type(error).__name__}: {error}")


def _keeps_connection(error: ProviderError) -> bool:
    """A refusal of one message leaves the session usable (aiosmtplib sent RSET); anything else does not."""
    return error.kind == "response" and error.code != "421"


@dataclass
class _Session:
    client: aiosmtplib.SMTP
    last_used: float = 0.0


class SmtpProvider:
    """Sends through one SMTP server over at most ``pool_size`` concurrent sessions."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        sender: str,
        username: str | None,
        password: str | None,
        tls: Literal["none", "starttls", "tls"],
        pool_size: int,
        timeout: float = 30.0,
        idle_probe_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sender = sender
        self.envelope_from = parseaddr(sender)[1]
        self.idle_probe_seconds = idle_probe_seconds
        self.clock = clock
        self._idle: asyncio.LifoQueue[_Session] = asyncio.LifoQueue()
        for _ in range(pool_size):
            client = aiosmtplib.SMTP(
                hostname=host,
                port=port,
                username=username,
                password=password,
                timeout=timeout,
                use_tls=tls == "tls",
                start_tls=tls == "starttls",
            )
            self._idle.put_nowait(_Session(client))

    async def send(self, message: EmailMessage) -> ProviderReceipt:
        return await self.prepare(message)()

    def prepare(self, message: EmailMessage) -> Callable[[], Awaitable[ProviderReceipt]]:
        try:
            mime = compose(message, self.sender)
        except (ValueError, TypeError) as error:
            raise ProviderError("protocol", "5.6.0", f"message could not be composed: {error}") from None
        return functools.partial(self._deliver, mime, message.to)

    async def _deliver(self, mime: MimeMessage, recipient: str) -> ProviderReceipt:
        session = await self._idle.get()
        try:
            response = await self._send(session, mime, recipient)
        finally:
            self._idle.put_nowait(session)
        return ProviderReceipt(PROVIDER, str(mime["Message-ID"]), response)

    async def _send(self, session: _Session, mime: MimeMessage, recipient: str) -> str:
        try:
            await self._ready(session)
            _, response = await session.client.send_message(
                mime, sender=self.envelope_from, recipients=[recipient]
            )
        except asyncio.CancelledError:
            # Cancelled mid-transaction (MAIL sent, DATA not finished): the session's state is unknown, and
            # the next message on it would meet "503 nested MAIL command". Start the next one afresh.
            session.client.close()
            raise
        except Exception as error:  # every SMTP failure becomes data (see provider_error)
            failure = provider_error(error)
            if not _keeps_connection(failure):
                session.client.close()
            raise failure from None
        session.last_used = self.clock()
        return response

    def prepare_staged(self, message: EmailMessage) -> Callable[[], Awaitable[StagedEmail]]:
        try:
            mime = compose(message, self.sender)
        except (ValueError, TypeError) as error:
            raise ProviderError("protocol", "5.6.0", f"message could not be composed: {error}") from None
        return functools.partial(self._stage, mime, message.to)

    async def _stage(self, mime: MimeMessage, recipient: str) -> StagedEmail:
        """Everything of the transaction but the final dot, on a session held until finish or abort."""
        session = await self._idle.get()
        try:
            await self._ready(session)
            await self._open_data(session.client, mime, recipient)
        except asyncio.CancelledError:
            session.client.close()  # mid-transaction: nothing delivered, the session state unknown
            self._idle.put_nowait(session)
            raise
        except Exception as error:
            failure = provider_error(error)
            await self._reset(session, failure)
            self._idle.put_nowait(session)
            raise failure from None
        return self._staged(session, str(mime["Message-ID"]))

    def _staged(self, session: _Session, message_id: str) -> StagedEmail:
        """The staged message: its session goes back to the pool exactly once, after the finish or when
        aborted (closed before the final dot, so the server discards the message)."""
        held: list[_Session] = [session]

        async def finish() -> ProviderReceipt:
            if not held:
                raise ProviderError("protocol", None, "staged message already finished or aborted")
            try:
                response = await self._finish(held[0])
            finally:
                self._idle.put_nowait(held.pop())
            return ProviderReceipt(PROVIDER, message_id, response)

        def abort() -> None:
            if held:
                held[0].client.close()
                self._idle.put_nowait(held.pop())

        return StagedEmail(finish=finish, abort=abort)

    async def _open_data(self, client: aiosmtplib.SMTP, mime: MimeMessage, recipient: str) -> None:
        """``MAIL``, ``RCPT``, ``DATA`` and the body without its terminating line (as ``send_message`` and
        ``sendmail`` would build them: SMTPUTF8, 8BITMIME and SIZE when the server offers them)."""
        utf8 = not (self.envelope_from + recipient).isascii()
        if utf8 and not client.supports_extension("smtputf8"):
            raise aiosmtplib.SMTPNotSupported("a non-ASCII address, and the server lacks SMTPUTF8")
        options = ["SMTPUTF8"] if utf8 else []
        eight_bit = client.supports_extension("8BITMIME")
        if eight_bit:
            options.append("BODY=8BITMIME")
        body = normalize_message_line_endings(
            flatten_message(mime, utf8=utf8, cte_type="8bit" if eight_bit else "7bit")
        )
        if not body.endswith(
            b"\r\n"
        ):  # the final dot must start a line of its own (aiosmtplib does the same)
            body += b"\r\n"
        if client.supports_extension("size"):
            options.insert(0, f"size={len(body)}")
        encoding = "utf-8" if utf8 else "ascii"
        await client.mail(self.envelope_from, options=options, encoding=encoding)
        await client.rcpt(recipient, encoding=encoding)
        response = await client.execute_command(b"DATA")
        if response.code != aiosmtplib.SMTPStatus.start_input:
            raise aiosmtplib.SMTPDataError(response.code, response.message)
        if client.protocol is None:
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        client.protocol.write(PERIOD_REGEX.sub(b"..", body))

    async def _finish(self, session: _Session) -> str:
        """The final dot and the server's reply: the message is accepted (250) or refused."""
        client = session.client
        try:
            response = await client.execute_command(b".")
            if response.code != aiosmtplib.SMTPStatus.completed:
                raise aiosmtplib.SMTPDataError(response.code, response.message)
        except asyncio.CancelledError:
            client.close()
            raise
        except Exception as error:
            failure = provider_error(error)
            await self._reset(session, failure)
            raise failure from None
        session.last_used = self.clock()
        return response.message

    @staticmethod
    async def _reset(session: _Session, failure: ProviderError) -> None:
        """After a refusal the session is kept (``RSET``, as aiosmtplib's ``sendmail`` does); after
        anything else it is closed and reopened on its next use."""
        if not _keeps_connection(failure):
            session.client.close()
            return
        try:
            await session.client.rset()
        except (aiosmtplib.SMTPException, OSError):
            session.client.close()

    async def _ready(self, session: _Session) -> None:
        """Connected, and recently known to be alive (reconnect when dropped)."""
        client = session.client
        if client.is_connected and self.clock() - session.last_used > self.idle_probe_seconds:
            try:
                await client.noop()
            except (aiosmtplib.SMTPException, OSError):
                client.close()
        if not client.is_connected:
            await client.connect()

    async def close(self) -> None:
        """QUIT every open session (at shutdown)."""
        while not self._idle.empty():
            client = self._idle.get_nowait().client
            if client.is_connected:
                try:
                    await client.quit()
                except (aiosmtplib.SMTPException, OSError):
                    client.close()
