"""A small asyncio TCP fault proxy for the fault suite (``tests/faults``): it sits between a service
and PostgreSQL, Redis or RabbitMQ and can, at any moment, add delay, refuse new connections, reset
every open connection, or black-hole traffic (accept and keep connections open but forward nothing:
a half-open peer, which only heartbeats or timeouts can detect).

Modes apply to new and open connections alike; ``reset()`` is a one-shot action. Nothing here imports
the code under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
import struct
from dataclasses import dataclass, field


class Mode(enum.Enum):
    FORWARD = "forward"  # forward everything (after ``delay_seconds``)
    REFUSE = "refuse"  # new connections are closed at once; open ones keep working
    BLACKHOLE = "blackhole"  # bytes are read and dropped in both directions; nothing is closed


@dataclass(eq=False)  # identity: links live in a set
class _Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class FaultProxy:
    """Listens on 127.0.0.1:<port> and forwards to ``upstream_host:upstream_port``."""

    def __init__(self, upstream_host: str, upstream_port: int, *, listen_port: int = 0) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listen_port = listen_port
        self.mode = Mode.FORWARD
        self.delay_seconds = 0.0
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self.accepted = 0

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self._listen_port)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self.reset()

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    @property
    def open_connections(self) -> int:
        return len(self._links)

    def reset(self) -> None:
        """Abort every open connection with a TCP RST (SO_LINGER 0), as a crashed peer or a middlebox
        would; the services see ECONNRESET, not a clean close."""
        for link in list(self._links):
            for writer in (link.client, link.upstream):
                _abort(writer)
            for task in link.tasks:
                task.cancel()
        self._links.clear()

    async def _accept(self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.mode is Mode.REFUSE:
            _abort(client)
            return
        try:
            upstream_reader, upstream = await asyncio.open_connection(*self.upstream)
        except OSError:
            _abort(client)
            return
        link = _Link(client, upstream)
        self._links.add(link)
        link.tasks = [
            asyncio.create_task(self._pump(client_reader, upstream, link)),
            asyncio.create_task(self._pump(upstream_reader, client, link)),
        ]

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link) -> None:
        try:
            while data := await reader.read(65536):
                if self.mode is Mode.BLACKHOLE:
                    continue
                if self.delay_seconds:
                    await asyncio.sleep(self.delay_seconds)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if link in self._links:
                self._links.discard(link)
                for side in (link.client, link.upstream):
                    with contextlib.suppress(Exception):
                        side.close()


def _abort(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport = writer.transport
    with contextlib.suppress(Exception):
        transport.abort()
