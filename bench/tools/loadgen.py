"""A lean HTTP/1.1 load generator for open-loop benchmarks: keep-alive connections on loopback, requests
encoded before the run, responses parsed just enough (status line, ``Content-Length``, body).

Why not httpx here: the generator shares the machine's two cores with the servers it measures. Measured at
500 requests/s (bench/detector.py, stop 14), httpx's clients took 50-60 % of a core, as much as the
detector itself; every millisecond they spent was taken from the servers under test and showed up as their
latency. This client costs a small fraction of that per request, so the figures are the servers'.

It speaks only what the benchmarks need: ``POST`` with a body, answers with a ``Content-Length`` (Litestar
and uvicorn send one for JSON), one request at a time per connection. Anything else is an error, never a
guess.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from urllib.parse import urlsplit


class ProtocolError(Exception):
    """An answer this client does not parse (chunked, no length, a closed connection)."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes


def encode_post(url: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """One ``POST`` as bytes on the wire (HTTP/1.1, keep-alive)."""
    host = urlsplit(url).netloc
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items() if name.lower() != "content-length"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def exchange(self, request: bytes) -> Answer:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, _, header_block = head.partition(b"\r\n")
        try:
            status = int(status_line.split(b" ", 2)[1])
        except (IndexError, ValueError) as error:
            raise ProtocolError(f"bad status line {status_line!r}") from error
        length = None
        for line in header_block.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        if length is None:
            raise ProtocolError("an answer without Content-Length")
        return Answer(status, await self.reader.readexactly(length))

    def close(self) -> None:
        self.writer.close()


class Pool:
    """``size`` keep-alive connections to one server; a request waits for a free one (that wait is part
    of its latency, as with any client's pool). A connection that failed or timed out mid-answer is closed
    and replaced, so a late answer can never be read as the next request's."""

    def __init__(self, url: str, size: int) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.size = size
        self.idle: asyncio.Queue[_Connection | None] = asyncio.Queue()
        self.open: set[_Connection] = set()

    async def __aenter__(self) -> Pool:
        for _ in range(self.size):
            self.idle.put_nowait(None)  # a slot: connected on first use
        return self

    async def __aexit__(self, *_: object) -> None:
        for connection in self.open:
            connection.close()
        self.open.clear()

    async def request(self, raw: bytes) -> Answer:
        connection = await self.idle.get()
        try:
            if connection is None:
                reader, writer = await asyncio.open_connection(self.host, self.port)
                connection = _Connection(reader, writer)
                self.open.add(connection)
            answer = await connection.exchange(raw)
        except BaseException:
            if connection is not None:
                self.open.discard(connection)
                with contextlib.suppress(Exception):
                    connection.close()
            self.idle.put_nowait(None)
            raise
        self.idle.put_nowait(connection)
        return answer
