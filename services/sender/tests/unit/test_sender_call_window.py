"""The provider-call window (ADR 21, 25): at most ``bound`` holders, FIFO, and the hand-over of the window,
marked, to the first waiting send that may go now."""

from __future__ import annotations

import asyncio

import pytest

from restock_sender.call_window import CallWindow, Entry


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def held_with_waiting(
    *names: str, ready: bool = True
) -> tuple[CallWindow[str], list[asyncio.Task[Entry]]]:
    """A window of one, held, with ``names`` waiting for it in that order (all ``ready`` or none)."""
    window = CallWindow[str](1)
    assert await window.enter("holder", lambda: True) == Entry(None)  # free: it marks itself
    waiting = [asyncio.create_task(window.enter(name, lambda: ready)) for name in names]
    await _settle()
    return window, waiting


def test_the_bound_is_at_least_one() -> None:
    with pytest.raises(ValueError, match="at least one"):
        CallWindow[int](0)


async def test_holders_never_exceed_the_bound_and_wait_in_order() -> None:
    window = CallWindow[int](2)
    entered: list[int] = []

    async def send(n: int) -> None:
        await window.enter(n, lambda: True)
        entered.append(n)

    tasks = [asyncio.create_task(send(n)) for n in range(1, 6)]
    await _settle()
    assert entered == [1, 2]
    window.leave()
    await _settle()
    assert entered == [1, 2, 3]
    window.leave()
    window.leave()
    await _settle()
    assert entered == [1, 2, 3, 4, 5]
    await asyncio.gather(*tasks)


async def test_a_hand_over_goes_to_the_first_waiting_send_that_may_go_now_marked() -> None:
    window = CallWindow[str](1)
    assert await window.enter("holder", lambda: True) == Entry(None)  # free: it marks itself
    guard_full = asyncio.create_task(window.enter("guard-full", lambda: False))
    ready = asyncio.create_task(window.enter("ready", lambda: True))
    await _settle()

    successor = window.take_next()
    assert successor is not None
    assert successor.payload == "ready"  # the guard would hold the first one: it is passed over
    window.leave(successor, marked=True)
    assert await ready == Entry(True)
    # It keeps its place: the window comes to it next, unmarked, when the new holder leaves.
    assert window.take_next() is None
    window.leave()
    assert await guard_full == Entry(None)


async def test_a_hand_over_whose_statement_failed_puts_the_send_back_first_unmarked() -> None:
    window, (first, second) = await held_with_waiting("first", "second")
    taken = window.take_next()
    assert taken is not None
    window.requeue(taken)  # the record-and-mark raised: nothing was marked
    window.leave()
    assert await first == Entry(None)
    assert not second.done()
    window.leave()
    assert await second == Entry(None)


async def test_a_refused_mark_is_handed_over_as_such() -> None:
    window, (late,) = await held_with_waiting("lease-gone")
    window.leave(window.take_next(), marked=False)
    assert await late == Entry(False)


async def test_a_cancelled_waiter_leaves_the_line() -> None:
    window, (gone, kept) = await held_with_waiting("gone", "kept")
    gone.cancel()
    await _settle()
    successor = window.take_next()
    assert successor is not None
    assert successor.payload == "kept"
    window.leave(successor, marked=True)
    assert await kept == Entry(True)


async def test_a_successor_cancelled_as_it_is_handed_the_window_passes_it_on() -> None:
    window, (cancelled, behind) = await held_with_waiting("cancelled", "behind")
    window.leave(window.take_next(), marked=True)  # handed to "cancelled"...
    cancelled.cancel()  # ...which is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert await behind == Entry(None)  # the window was passed on, not lost
