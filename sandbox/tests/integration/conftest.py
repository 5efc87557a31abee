"""The sandbox served in-process on free ports, and a small receiver playing the app it talks to."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from litestar import Litestar, Request, Response, route
from litestar.params import FromPath

from restock_common.settings import Settings
from restock_sandbox.app import create_app, http_port

SECRET = "sandbox-test-secret"
SHOP = "sandbox-test.myshopify.com"
TWILIO_SID = "AC" + "5" * 32
TWILIO_TOKEN = "sandbox-twilio-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def served(app: Litestar, port: int) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on this loop until the block ends; its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    task = asyncio.create_task(server.serve())
    deadline = asyncio.get_running_loop().time() + 10
    while not server.started:
        assert not task.done(), "server failed to start"
        assert asyncio.get_running_loop().time() < deadline, "server did not start in time"
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@dataclass
class Received:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)  # when it arrived, for timing assertions


@dataclass
class Receiver:
    """Records every request; answers ``answers[path]`` (status, JSON) or 200 ``{"ok": true}``."""

    url: str = ""
    requests: list[Received] = field(default_factory=list)
    answers: dict[str, tuple[int, Any]] = field(default_factory=dict)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver()

    @route("/{path:path}", http_method=["GET", "POST", "PUT"])
    async def record(request: Request[Any, Any, Any], path: FromPath[str]) -> Response[Any]:
        state.requests.append(
            Received(
                request.method,
                path,
                list(request.query_params.multi_items()),
                dict(request.headers.items()),
                await request.body(),
            )
        )
        status, body = state.answers.get(path, (200, {"ok": True}))
        return Response(body, status_code=status)

    async with served(Litestar([record]), free_port()) as url:
        state.url = url
        yield state


@dataclass
class Sandbox:
    url: str
    settings: Settings


@pytest.fixture
def sandbox_settings(receiver: Receiver) -> Settings:
    """A sandbox on free ports whose shop talks to the receiver."""
    return Settings(
        shopify_api_secret=SECRET,
        shopify_api_base_url=f"http://127.0.0.1:{free_port()}",
        smtp_host="127.0.0.1",
        smtp_port=free_port(),
        sandbox_webhook_url=f"{receiver.url}/webhooks/shopify",
        sandbox_proxy_url=f"{receiver.url}/proxy",
        sandbox_shop_domain=SHOP,
        sandbox_twilio_inbound_url=f"{receiver.url}/twilio/inbound",
        twilio_account_sid=TWILIO_SID,
        twilio_auth_token=TWILIO_TOKEN,
    )


@pytest.fixture
def serve() -> Callable[[Litestar, int], AbstractAsyncContextManager[str]]:
    """``served``, for a test that starts and stops an app itself."""
    return served


@pytest.fixture
async def sandbox(sandbox_settings: Settings) -> AsyncIterator[Sandbox]:
    port = http_port(sandbox_settings)
    async with served(create_app(sandbox_settings), port) as url:
        yield Sandbox(url, sandbox_settings)
