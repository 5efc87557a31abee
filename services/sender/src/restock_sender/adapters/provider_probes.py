"""``ProviderProbe``s: does the provider accept our configuration again? Nothing is ever sent.

SMTP: a fresh session does what a send does up to the message itself (connect, STARTTLS/TLS, AUTH when
credentials are set, ``MAIL FROM`` and ``RCPT TO`` our own address) and then ``RSET`` and ``QUIT``:
servers that refuse a bad login at AUTH (535) or an unauthenticated envelope at MAIL/RCPT (530, 535) are
both caught. Twilio: one page of one message of our account (``GET /2010-04-01/Accounts/{sid}/Messages.json
?PageSize=1``, the read the lease reaper makes too) with our credentials: 401 with 20003 while they are
wrong.
"""

from __future__ import annotations

from email.utils import parseaddr
from typing import Literal

import aiosmtplib
import httpx

from restock_sender.delivery import ProviderError
from restock_sender.providers.smtp import provider_error


class SmtpProbe:
    """The SMTP server's verdict on our login and envelope."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        sender: str,
        username: str | None,
        password: str | None,
        tls: Literal["none", "starttls", "tls"],
        timeout: float = 10.0,
    ) -> None:
        self.envelope_from = parseaddr(sender)[1]
        self._options = {
            "hostname": host,
            "port": port,
            "username": username,
            "password": password,
            "timeout": timeout,
            "use_tls": tls == "tls",
            "start_tls": tls == "starttls",
        }

    async def probe(self) -> ProviderError | None:
        client = aiosmtplib.SMTP(**self._options)  # type: ignore[arg-type]
        try:
            await client.connect()  # logs in when credentials are set
            await client.mail(self.envelope_from)
            await client.rcpt(self.envelope_from)
            await client.rset()
            await client.quit()
        except Exception as error:  # every failure is the probe's answer (as ProviderError data)
            client.close()
            return provider_error(error)
        return None


class TwilioProbe:
    """Twilio's verdict on our account SID and auth token."""

    def __init__(self, *, base_url: str, account_sid: str, auth_token: str, timeout: float = 10.0) -> None:
        self.url = f"{base_url.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Messages.json?PageSize=1"
        self.auth = (account_sid, auth_token)
        self.timeout = timeout

    async def probe(self) -> ProviderError | None:
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                response = await client.get(self.url, auth=self.auth)
        except httpx.TimeoutException as error:
            return ProviderError("timeout", None, str(error) or "timed out", provider="twilio")
        except httpx.HTTPError as error:
            return ProviderError("connection", None, str(error) or type(error).__name__, provider="twilio")
        if response.status_code == 200:
            return None
        code = _twilio_code(response)
        return ProviderError(
            "response", code, f"http {response.status_code}", provider="twilio", status=response.status_code
        )


def _twilio_code(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    code = body.get("code") if isinstance(body, dict) else None
    return str(code) if code is not None else None
