"""The fault proxy itself, against a tiny echo server: pass, delay, refuse, black-hole, reset."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from restock_sandbox.tcp_faults import FaultProxy, Mode


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(1024):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def _roundtrip(port: int, payload: bytes = b"ping", timeout: float = 2.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(payload)), timeout)
    finally:
        writer.close()


async def test_passes_bytes_both_ways(echo_port: int) -> None:
    async with FaultProxy("127.0.0.1", echo_port) as proxy:
        assert await _roundtrip(proxy.port) == b"ping"


async def test_refuse_closes_new_connections(echo_port: int) -> None:
    async with FaultProxy("127.0.0.1", echo_port) as proxy:
        proxy.mode = Mode.REFUSE
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await _roundtrip(proxy.port)
        proxy.mode = Mode.FORWARD
        assert await _roundtrip(proxy.port) == b"ping"


async def test_blackhole_keeps_the_connection_open_and_silent(echo_port: int) -> None:
    async with FaultProxy("127.0.0.1", echo_port) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        await asyncio.sleep(0.05)
        proxy.mode = Mode.BLACKHOLE
        writer.write(b"lost")
        await writer.drain()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.readexactly(4), 0.3)
        assert not reader.at_eof()
        assert proxy.open_connections == 1
        writer.close()


async def test_reset_aborts_open_connections(echo_port: int) -> None:
    async with FaultProxy("127.0.0.1", echo_port) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"a")
        assert await asyncio.wait_for(reader.readexactly(1), 2) == b"a"
        proxy.reset()
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(1), 2)
        writer.close()
        assert await _roundtrip(proxy.port) == b"ping"  # new connections work again


async def test_delay_is_applied(echo_port: int) -> None:
    async with FaultProxy("127.0.0.1", echo_port) as proxy:
        proxy.delay_seconds = 0.2
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await _roundtrip(proxy.port) == b"ping"
        # Two hops each delayed: a lower bound only (a lower bound cannot flake on a slow machine).
        assert loop.time() - started >= 0.4
