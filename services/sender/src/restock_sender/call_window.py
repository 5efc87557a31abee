"""The provider-call window (ADR 21, 23, 25): at most ``bound`` sends of a process between their mark and
their record, and the hand-over that lets one send's record carry the next send's mark.

A send *holds* the window from its mark to its record: a crash in between leaves its outcome unknown
(email: ``indeterminate``), so the bound is how many such jobs a crash can leave. Sends queue for it in
FIFO order. With email's default bound of one, every send of a process passes through here one at a
time, and each used to cost three round trips in a row (the mark, the SMTP final dot, the record) plus
the wake-up of the next in line: on a busy event loop about 6.5 ms, which capped a process at ~150
throttled sends a second (``bench/delivery`` (b)3).

The hand-over: a holder about to record its attempt takes the first waiting send that may go now
(``take_next``: its ``ready`` check, the release guard's, passes) and writes its own record and that
send's mark in one statement (``JobStore.record_and_mark``); it then leaves the window *to* that send,
which goes straight to its provider call. The bound still holds at every instant: the statement commits
the holder's record and the successor's mark together, and the successor only calls its provider once
it holds the window. If the statement fails, the successor goes back to the head of the line unmarked
(``requeue``) and marks itself when the window comes to it, as without the hand-over.

Pure asyncio, no I/O: the caller writes the statements.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class Waiter(Generic[T]):
    """A send waiting for the window: its payload (the claimed job), whether it may go now, and the
    future its entry is handed through."""

    payload: T
    ready: Callable[[], bool]
    entry: asyncio.Future[Entry] = field(repr=False)


@dataclass(frozen=True)
class Entry:
    """How a send came to hold the window: ``marked`` is ``None`` when it must mark itself, else what the
    previous holder's statement did with its mark (``False``: refused, its lease is gone: send nothing)."""

    marked: bool | None = None


class CallWindow(Generic[T]):
    """At most ``bound`` holders; the others wait in FIFO order (see the module's rules)."""

    def __init__(self, bound: int) -> None:
        if bound < 1:
            raise ValueError("the bound is at least one send")
        self._free = bound
        self._line: deque[Waiter[T]] = deque()

    async def enter(self, payload: T, ready: Callable[[], bool]) -> Entry:
        """Hold the window (returns once held). ``ready`` is asked at a hand-over: a send is handed the
        window, marked, only while it may call its provider at once."""
        if self._free > 0 and not self._line:
            self._free -= 1
            return Entry()
        waiter = Waiter(payload, ready, asyncio.get_running_loop().create_future())
        self._line.append(waiter)
        try:
            return await waiter.entry
        except asyncio.CancelledError:
            if waiter.entry.done() and not waiter.entry.cancelled():
                self.leave()  # it was handed the window as it was cancelled: pass it on
            else:
                self._forget(waiter)
            raise

    def take_next(self) -> Waiter[T] | None:
        """The first waiting send that may go now, out of the line (for the holder to mark it), or None."""
        for waiter in self._line:
            if not waiter.entry.done() and waiter.ready():
                self._line.remove(waiter)
                return waiter
        return None

    def requeue(self, waiter: Waiter[T]) -> None:
        """A taken send whose mark was not written goes back to the head of the line."""
        if not waiter.entry.done():
            self._line.appendleft(waiter)

    def leave(self, successor: Waiter[T] | None = None, marked: bool | None = None) -> None:
        """Give the window up: to ``successor`` (taken, and marked by the statement: ``marked``), else to
        the first send in line (it marks itself), else free it."""
        if successor is not None and not successor.entry.done():
            successor.entry.set_result(Entry(marked))
            return
        while self._line:
            waiter = self._line.popleft()
            if not waiter.entry.done():
                waiter.entry.set_result(Entry())
                return
        self._free += 1

    def _forget(self, waiter: Waiter[T]) -> None:
        with contextlib.suppress(ValueError):  # already taken out of the line
            self._line.remove(waiter)
