"""The paused channel's probes against the sandbox peers over the wire: they pass with good credentials
and report a configuration error (SMTP 535, Twilio 20003) while the provider refuses, sending nothing."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn

from restock_common.settings import Settings
from restock_sandbox.app import create_app as create_sandbox
from restock_sender.adapters.provider_probes import SmtpProbe, TwilioProbe
from restock_sender.delivery import Configuration, classify

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def peers(settings: Settings) -> AsyncIterator[tuple[Settings, httpx.AsyncClient]]:
    """The sandbox (Twilio API and SMTP server) served on this loop; settings pointing at it."""
    port = free_port()
    local = settings.model_copy(
        update={
            "shopify_api_base_url": f"http://127.0.0.1:{port}",
            "twilio_base_url": f"http://127.0.0.1:{port}/twilio",
            "smtp_host": "127.0.0.1",
            "smtp_port": free_port(),
            "public_base_url": f"http://127.0.0.1:{free_port()}",
            "sandbox_webhook_url": f"http://127.0.0.1:{free_port()}/webhooks/shopify",
        }
    )
    server = uvicorn.Server(
        uvicorn.Config(create_sandbox(local), host="127.0.0.1", port=port, log_config=None, lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "sandbox failed to start"
        await asyncio.sleep(0.01)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        yield local, client
    server.should_exit = True
    await task


def smtp_probe(settings: Settings) -> SmtpProbe:
    return SmtpProbe(
        host=settings.smtp_host,
        port=settings.smtp_port,
        sender=settings.smtp_from,
        username=None,
        password=None,
        tls="none",
    )


async def test_smtp_probe_reports_535_until_the_fault_is_cleared_and_sends_nothing(
    peers: tuple[Settings, httpx.AsyncClient],
) -> None:
    settings, sandbox = peers
    await sandbox.post(
        "/smtp/faults/",
        json={"match": "*", "code": 535, "message": "5.7.8 Authentication failed", "times": None},
    )
    refused = await smtp_probe(settings).probe()
    assert refused is not None
    assert refused.code == "535"
    assert isinstance(classify(refused), Configuration)
    await sandbox.delete("/smtp/faults/")
    assert await smtp_probe(settings).probe() is None
    assert (await sandbox.get("/inbox/")).json() == []  # a probe never sends a message


async def test_twilio_probe_passes_with_our_credentials_and_reports_20003_without_them(
    peers: tuple[Settings, httpx.AsyncClient],
) -> None:
    settings, sandbox = peers
    good = TwilioProbe(
        base_url=settings.twilio_base_url,
        account_sid=settings.twilio_account_sid,
        auth_token=settings.twilio_auth_token.get_secret_value(),
    )
    assert await good.probe() is None
    bad = TwilioProbe(
        base_url=settings.twilio_base_url, account_sid=settings.twilio_account_sid, auth_token="not-the-token"
    )
    refused = await bad.probe()
    assert refused is not None
    assert (refused.code, refused.status) == ("20003", 401)
    assert isinstance(classify(refused), Configuration)
    assert (await sandbox.get("/twilio/messages")).json() == []
