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
import email.generator
import email.policy
import functools
import hashlib
import io
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.charset import QP, Charset
from email.header import Header
from email.message import EmailMessage as MimeMessage
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from email.utils import formataddr, formatdate, parseaddr
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


def compose(message: EmailMessage, sender: str) -> Message:
    """A multipart (text + HTML) message with our headers.

    Built with the ``compat32`` classes (``MIMENonMultipart``, ``MIMEMultipart``): ~0.4 ms per message
    composed and flattened here, against 1.4 ms with ``email.policy.default``'s header objects, which
    parse and re-fold every header (ADR 23). Bodies are UTF-8 in quoted-printable, non-ASCII display names and
    subjects RFC 2047 encoded words. ``compat32`` cannot write an internationalized address (SMTPUTF8,
    RFC 6531): a message to or from one is built by ``_compose_smtputf8``. Both refuse a header value with
    a line break (header injection) with ``ValueError``."""
    from_name, from_address = parseaddr(sender)
    to_name, to_address = parseaddr(message.to)
    if not (from_address + to_address).isascii():
        return _compose_smtputf8(message, sender)
    for value in (
        sender,
        message.to,
        message.subject,
        message.traceparent or "",
        message.list_unsubscribe or "",
    ):
        if "\r" in value or "\n" in value:
            raise ValueError("a header value may not contain a line break")
    text = _text_part(message.text, "plain")
    mime: Message = text
    if message.html is not None:
        mime = MIMEMultipart("alternative")
        mime.attach(text)
        mime.attach(_text_part(message.html, "html"))
    mime["From"] = formataddr((from_name, from_address), charset="utf-8")
    mime["To"] = formataddr((to_name, to_address), charset="utf-8")
    # Encoded words of at most 75 characters each (RFC 2047), folded between them.
    mime["Subject"] = (
        message.subject
        if message.subject.isascii()
        else Header(message.subject, "utf-8", header_name="Subject").encode()
    )
    _add_our_headers(mime, message)
    return mime


def _add_our_headers(mime: Message, message: EmailMessage) -> None:
    """Date, the deterministic Message-ID, the trace and one-click unsubscribe, after From, To, Subject."""
    mime["Date"] = formatdate(usegmt=True)
    mime["Message-ID"] = message_id(message.notification_key, message.shop_domain)
    if message.traceparent:
        mime["traceparent"] = message.traceparent
    if message.list_unsubscribe:
        # RFC 8058: a mail client unsubscribes with one POST to this URL, no cookie and no page.
        mime["List-Unsubscribe"] = f"<{message.list_unsubscribe}>"
        mime["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"


# UTF-8 bodies in quoted-printable: 7-bit clean for any server, and readable (base64 text is a spam signal).
_UTF8_QP = Charset("utf-8")
_UTF8_QP.body_encoding = QP


def _text_part(body: str, subtype: str) -> MIMENonMultipart:
    part = MIMENonMultipart("text", subtype, charset="utf-8")
    part.set_payload(body, _UTF8_QP)
    return part


# compat32 folds any header longer than 78 characters, even a single token such as a long List-Unsubscribe
# URL, by breaking right after the colon; some receivers then read the value with a leading space. The
# headers ``compose`` writes are short, or one token, or already folded encoded words (Subject, names).
_UNFOLDED = email.policy.compat32.clone(max_line_length=0)


def flatten(mime: Message, *, utf8: bool, eight_bit: bool) -> bytes:
    """The message as DATA bytes: ``compose``'s compat32 message as it is (7-bit, unfolded headers), a
    ``_compose_smtputf8`` one by aiosmtplib's rules (UTF-8 headers, 8-bit when the server takes it)."""
    if isinstance(mime, MimeMessage):
        return flatten_message(mime, utf8=utf8, cte_type="8bit" if eight_bit else "7bit")
    with io.BytesIO() as out:
        email.generator.BytesGenerator(out, mangle_from_=False, policy=_UNFOLDED).flatten(mime)
        return out.getvalue()


def _compose_smtputf8(message: EmailMessage, sender: str) -> MimeMessage:
    """``compose`` for an internationalized address: ``email.policy.default`` writes it as UTF-8, for a
    server that offers SMTPUTF8 (``_open_data`` refuses one that does not)."""
    mime = MimeMessage()
    mime["From"] = sender
    mime["To"] = message.to
    mime["Subject"] = message.subject
    _add_our_headers(mime, message)
    mime.set_content(message.text)
    if message.html is not None:
        mime.add_alternative(message.html, subtype="html")
    return mime


def provider_error(error: Exception) -> ProviderError:
    """An SMTP failure as data."""
    if isinstance(error, ProviderError):  # already classified where it happened (``_connect``)
        return error
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


async def _connect(client: aiosmtplib.SMTP) -> None:
    """Connect (TLS, STARTTLS and AUTH as configured). A server that cannot be used as configured (no
    STARTTLS, no AUTH for our credentials, a TLS handshake it or we refuse) is a ``setup`` error, which
    pauses the channel instead of spending recipients' attempts; a 535 is a reply, classified by its code."""
    try:
        await client.connect()
    except aiosmtplib.SMTPException as error:
        client.close()  # half set up (say, connected without AUTH): never used for a message
        if isinstance(error.__cause__, ssl.SSLError) or type(error) in _SETUP_ERRORS:
            raise ProviderError("setup", None, str(error)) from None
        raise
    except ssl.SSLError as error:  # a STARTTLS handshake (implicit TLS's comes wrapped, above)
        client.close()
        raise ProviderError("setup", None, f"TLS handshake failed: {error}") from None


# What aiosmtplib raises, unwrapped, when the server lacks what our settings ask for (STARTTLS, AUTH).
_SETUP_ERRORS = (aiosmtplib.SMTPException, aiosmtplib.SMTPNotSupported)


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

    async def _deliver(self, mime: Message, recipient: str) -> ProviderReceipt:
        session = await self._idle.get()
        try:
            response = await self._send(session, mime, recipient)
        finally:
            self._idle.put_nowait(session)
        return ProviderReceipt(PROVIDER, str(mime["Message-ID"]), response)

    async def _send(self, session: _Session, mime: Message, recipient: str) -> str:
        """The whole transaction at once: the staged path's two steps back to back."""
        await self._open(session, mime, recipient)
        return await self._finish(session)

    def prepare_staged(self, message: EmailMessage) -> Callable[[], Awaitable[StagedEmail]]:
        try:
            mime = compose(message, self.sender)
        except (ValueError, TypeError) as error:
            raise ProviderError("protocol", "5.6.0", f"message could not be composed: {error}") from None
        return functools.partial(self._stage, mime, message.to)

    async def _stage(self, mime: Message, recipient: str) -> StagedEmail:
        """Everything of the transaction but the final dot, on a session held until finish or abort."""
        session = await self._idle.get()
        try:
            await self._open(session, mime, recipient)
        except BaseException:
            self._idle.put_nowait(session)
            raise
        return self._staged(session, str(mime["Message-ID"]))

    async def _open(self, session: _Session, mime: Message, recipient: str) -> None:
        """``_open_data`` on a ready session; a failure becomes data, the session reset or closed."""
        try:
            await self._ready(session)
            await self._open_data(session.client, mime, recipient)
        except asyncio.CancelledError:
            # Mid-transaction (MAIL sent, DATA not finished): nothing delivered, the session's state unknown,
            # and the next message on it would meet "503 nested MAIL command". Start the next one afresh.
            session.client.close()
            raise
        except Exception as error:  # every SMTP failure becomes data (see provider_error)
            failure = provider_error(error)
            await self._reset(session, failure)
            raise failure from None

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

    async def _open_data(self, client: aiosmtplib.SMTP, mime: Message, recipient: str) -> None:
        """``MAIL``, ``RCPT``, ``DATA`` and the body without its terminating line (as ``send_message`` and
        ``sendmail`` would build them: SMTPUTF8, 8BITMIME and SIZE when the server offers them)."""
        # The extensions are known only after EHLO, which ``mail`` would send too late for the checks below:
        # on a fresh session every one of them read "not offered" (as ``sendmail`` does: EHLO, else HELO).
        if client.is_ehlo_or_helo_needed:
            try:
                await client.ehlo()
            except aiosmtplib.SMTPHeloError:
                if not client.is_connected:
                    raise
                await client.helo()
        utf8 = not (self.envelope_from + recipient).isascii()
        if utf8 and not client.supports_extension("smtputf8"):
            raise aiosmtplib.SMTPNotSupported("a non-ASCII address, and the server lacks SMTPUTF8")
        options = ["SMTPUTF8"] if utf8 else []
        eight_bit = client.supports_extension("8BITMIME")
        if eight_bit:
            options.append("BODY=8BITMIME")
        body = normalize_message_line_endings(flatten(mime, utf8=utf8, eight_bit=eight_bit))
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
        """The final dot and the server's reply: the message is accepted (250) or refused. Once the dot is
        written, a lost connection or a timeout leaves the outcome unknown: the server may have accepted
        the message (RFC 5321 4.1.1.4; RFC 1047), so that is a ``lost-reply``, never retried (ADR 28)."""
        client = session.client
        transport = client.protocol.transport if client.protocol is not None else None
        dot_written = False
        try:
            if transport is None or transport.is_closing():
                # Dropped while staged: the dot never leaves, and a server discards an unterminated message.
                raise aiosmtplib.SMTPServerDisconnected("connection lost before the final dot")
            dot_written = True  # execute_command writes it before its first await
            response = await client.execute_command(b".")
            if response.code != aiosmtplib.SMTPStatus.completed:
                raise aiosmtplib.SMTPDataError(response.code, response.message)
        except asyncio.CancelledError:
            client.close()
            raise
        except Exception as error:
            failure = provider_error(error)
            if dot_written and failure.kind in ("timeout", "connection"):
                failure = ProviderError("lost-reply", None, f"{failure.kind} after the final dot")
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
            await _connect(client)

    async def close(self) -> None:
        """QUIT every open session (at shutdown)."""
        while not self._idle.empty():
            client = self._idle.get_nowait().client
            if client.is_connected:
                try:
                    await client.quit()
                except (aiosmtplib.SMTPException, OSError):
                    client.close()
