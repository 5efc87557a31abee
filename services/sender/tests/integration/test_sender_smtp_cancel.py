"""A send cancelled in the middle of its SMTP transaction leaves no half-open transaction on the pooled
session (the next message on it would otherwise meet "503 nested MAIL command", classified permanent: a
lost alert)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP as SMTPServer

from restock_sender.ports import EmailMessage
from restock_sender.providers.smtp import SmtpProvider

pytestmark = pytest.mark.integration


class StallFirstRcpt:
    """Holds the first RCPT until released; accepts everything else."""

    def __init__(self) -> None:
        self.stalled = asyncio.Event()
        self.release = asyncio.Event()
        self.rcpts = 0
        self.accepted: list[str] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        self.rcpts += 1
        if self.rcpts == 1:
            self.stalled.set()
            await self.release.wait()
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.accepted.extend(envelope.rcpt_tos)
        return "250 2.0.0 Ok"


@pytest.fixture
async def peer() -> AsyncIterator[tuple[StallFirstRcpt, int]]:
    handler = StallFirstRcpt()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTPServer(handler, loop=loop), "127.0.0.1", 0)
    yield handler, server.sockets[0].getsockname()[1]
    handler.release.set()
    server.close()


def _message(to: str) -> EmailMessage:
    return EmailMessage(to, "Back", "It is back.", None, f"key-{to}", "shop.myshopify.com", None)


async def test_the_next_send_after_a_cancelled_one_goes_through(peer: tuple[StallFirstRcpt, int]) -> None:
    handler, port = peer
    provider = SmtpProvider(
        host="127.0.0.1",
        port=port,
        sender="a@restock.localhost",
        username=None,
        password=None,
        tls="none",
        pool_size=1,
        timeout=10,
    )
    try:
        first = asyncio.create_task(provider.send(_message("first@example.com")))
        await handler.stalled.wait()  # MAIL accepted, RCPT in flight
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        handler.release.set()

        receipt = await provider.send(_message("second@example.com"))  # the same (only) pooled session

        assert receipt.response.startswith("2.0.0") or "Ok" in receipt.response
        assert handler.accepted == ["second@example.com"]
    finally:
        await provider.close()
