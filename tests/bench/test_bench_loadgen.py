"""``bench/tools/loadgen.py`` against a real uvicorn + Litestar server on loopback: every answer is its own
request's, over reused connections, and a connection abandoned mid-answer never hands its late answer to
the next request."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterator
from types import ModuleType
from typing import Any

import pytest
import uvicorn
from litestar import Litestar, Request, post
from litestar.response import Stream

connections_seen: set[tuple[str, int]] = set()


@post("/echo", status_code=200)
async def echo(request: Request[Any, Any, Any]) -> dict[str, Any]:
    payload = json.loads(await request.body())
    if payload.get("sleep"):
        await asyncio.sleep(payload["sleep"])
    assert request.client is not None
    connections_seen.add((request.client.host, request.client.port))
    return {"n": payload["n"], "topic": request.headers.get("x-topic")}


@post("/chunked", status_code=200)
async def chunked() -> Stream:
    async def parts() -> AsyncIterator[bytes]:
        yield b"no length"

    return Stream(parts())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def server() -> AsyncIterator[str]:
    port = _free_port()
    config = uvicorn.Config(
        Litestar(route_handlers=[echo, chunked]), host="127.0.0.1", port=port, log_config=None, lifespan="off"
    )
    running = uvicorn.Server(config)
    task = asyncio.create_task(running.serve())
    for _ in range(500):  # uvicorn's ``started`` is a flag, not an event
        if running.started:
            break
        await asyncio.sleep(0.01)
    assert running.started, "the test server did not start"
    connections_seen.clear()
    yield f"http://127.0.0.1:{port}"
    running.should_exit = True
    await task


def requests(loadgen: ModuleType, url: str, count: int) -> Iterator[bytes]:
    for n in range(count):
        yield loadgen.encode_post(url, "/echo", json.dumps({"n": n}).encode(), {"X-Topic": f"t{n}"})


async def test_every_answer_is_its_own_requests_over_reused_connections(
    server: str, loadgen: ModuleType
) -> None:
    async with loadgen.Pool(server, 4) as pool:
        answers = await asyncio.gather(*(pool.request(raw) for raw in requests(loadgen, server, 60)))
    assert [answer.status for answer in answers] == [200] * 60
    assert [json.loads(answer.body) for answer in answers] == [{"n": n, "topic": f"t{n}"} for n in range(60)]
    assert len(connections_seen) <= 4  # 60 requests, at most the pool's 4 connections


async def test_a_request_abandoned_mid_answer_does_not_lend_its_answer_to_the_next(
    server: str, loadgen: ModuleType
) -> None:
    slow = loadgen.encode_post(server, "/echo", json.dumps({"n": "slow", "sleep": 0.5}).encode(), {})
    async with loadgen.Pool(server, 1) as pool:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await pool.request(slow)
        [raw] = requests(loadgen, server, 1)
        answer = await pool.request(raw)
    assert json.loads(answer.body) == {"n": 0, "topic": "t0"}


async def test_an_answer_without_content_length_is_an_error_not_a_guess(
    server: str, loadgen: ModuleType
) -> None:
    async with loadgen.Pool(server, 1) as pool:
        with pytest.raises(loadgen.ProtocolError):
            await pool.request(loadgen.encode_post(server, "/chunked", b"{}", {}))
