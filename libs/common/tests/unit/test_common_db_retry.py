"""Retrying on connection loss: which errors are retried, how often, and what the operation is told."""

from __future__ import annotations

import asyncpg
import pytest

from restock_common.db.retry import is_connection_loss, retry_on_connection_loss


@pytest.mark.parametrize(
    ("error", "lost"),
    [
        (asyncpg.exceptions.ConnectionDoesNotExistError("gone"), True),
        (asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"), True),
        (asyncpg.exceptions.CannotConnectNowError("starting up"), True),
        (asyncpg.InterfaceError("connection is closed"), True),
        (
            asyncpg.exceptions._base.InternalClientError(
                "cannot switch to state 15; another operation (2) is in progress"
            ),
            True,
        ),
        (ConnectionResetError(), True),
        (TimeoutError(), True),
        (asyncpg.exceptions.UniqueViolationError("duplicate key"), False),
        (asyncpg.exceptions.UndefinedColumnError("no such column"), False),
        (ValueError("bad"), False),
    ],
)
def test_only_connection_loss_is_retried(error: BaseException, lost: bool) -> None:
    assert is_connection_loss(error) is lost


class Flaky:
    """Fails with ``errors`` in turn, then answers."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.tries: list[int] = []

    async def __call__(self, number: int) -> str:
        self.tries.append(number)
        if self.errors:
            raise self.errors.pop(0)
        return "recorded"


async def _no_sleep(_: float) -> None:
    return None


async def test_a_write_that_lost_its_connection_is_tried_again_and_told_so() -> None:
    operation = Flaky(asyncpg.exceptions.AdminShutdownError("terminated"), ConnectionResetError())
    assert await retry_on_connection_loss(operation, what="record", sleep=_no_sleep) == "recorded"
    assert operation.tries == [1, 2, 3]


async def test_gives_up_after_the_last_delay() -> None:
    operation = Flaky(*(ConnectionResetError() for _ in range(5)))
    with pytest.raises(ConnectionResetError):
        await retry_on_connection_loss(operation, what="record", delays=(0.0, 0.0), sleep=_no_sleep)
    assert operation.tries == [1, 2, 3]


async def test_a_statement_error_fails_at_once() -> None:
    operation = Flaky(asyncpg.exceptions.UniqueViolationError("duplicate key"))
    with pytest.raises(asyncpg.exceptions.UniqueViolationError):
        await retry_on_connection_loss(operation, what="record", sleep=_no_sleep)
    assert operation.tries == [1]


async def test_an_isolated_iteration_cannot_leak_its_context_into_the_loop() -> None:
    import contextvars

    from restock_common.db.engine import isolated

    transaction: contextvars.ContextVar[str | None] = contextvars.ContextVar("transaction", default=None)

    async def iteration_whose_rollback_failed() -> str:
        transaction.set("dead connection")  # never reset, as Piccolo's failed rollback leaves it
        return "done"

    assert await isolated(iteration_whose_rollback_failed()) == "done"
    assert transaction.get() is None  # the next iteration starts clean
    await iteration_whose_rollback_failed()  # and without isolation it would not
    assert transaction.get() == "dead connection"


async def test_a_pool_that_cannot_close_is_terminated() -> None:
    import asyncio

    from restock_common.db.engine import close_pool

    class StuckPool:
        terminated = False

        async def close(self) -> None:
            await asyncio.Event().wait()  # a connection a dead transaction never gave back

        def terminate(self) -> None:
            self.terminated = True

    pool = StuckPool()
    async with asyncio.timeout(5):
        await close_pool(pool, timeout=0.05)
    assert pool.terminated


async def test_each_try_starts_in_a_clean_context() -> None:
    import contextvars

    transaction: contextvars.ContextVar[str | None] = contextvars.ContextVar("transaction", default=None)
    seen: list[str | None] = []

    async def write(number: int) -> str:
        seen.append(transaction.get())
        if number == 1:
            transaction.set("dead connection")  # the failed rollback leaves it set
            raise ConnectionResetError()
        return "recorded"

    assert await retry_on_connection_loss(write, what="record", sleep=_no_sleep) == "recorded"
    assert seen == [None, None]
