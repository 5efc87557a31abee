"""Retrying a statement whose connection was lost, for writes that must not be dropped.

A sender that has the provider's answer in memory and then loses its PostgreSQL connection (a failover, an
administrator's ``pg_terminate_backend``, a restart) must not give up on recording it: the job would sit in
``processing`` until its lease ran out and end ``indeterminate`` although its outcome was known. So the
write is tried again, on a fresh pooled connection, a few times within a couple of seconds (well inside any
lease). Only connection loss is retried; a constraint violation or a bad statement fails at once.

The operation gets the try number (1, 2, ...): from the second on, the previous try may have committed with
only its answer lost, and the operation must check before writing twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import asyncpg

log = logging.getLogger(__name__)

T = TypeVar("T")

# Seconds to wait before each retry: about 15.5 s in all, half the shortest lease we run with (the record
# must land before the reaper takes the job). Many tries, more than a sender's pool holds connections,
# because each may draw another dead one (after a failover every pooled connection is dead, and each is
# found out by use); 4.5 s was once not enough for a second termination wave in the fault suite.
RETRY_DELAYS: Sequence[float] = (0.05, 0.1, 0.2, 0.4, 0.8, *([1.0] * 14))

CONNECTION_LOSS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,  # the connection failed or does not exist any more
    asyncpg.exceptions.OperatorInterventionError,  # pg_terminate_backend, shutdown, "cannot connect now"
    asyncpg.InterfaceError,  # the connection was closed under the statement
    # "cannot switch to state N; another operation (2) is in progress": the server's FATAL (57P01) arrived
    # and the client is waiting for a ReadyForQuery that will never come; the close is noticed a moment
    # later. The fault suite's pg_terminate_backend case met it at the record of a sent message.
    asyncpg.exceptions._base.InternalClientError,
    ConnectionError,
    TimeoutError,
)


def is_connection_loss(error: BaseException) -> bool:
    """Whether ``error`` means the connection went away, not that the statement was wrong (pure)."""
    return isinstance(error, CONNECTION_LOSS)


async def retry_on_connection_loss(
    operation: Callable[[int], Awaitable[T]],
    *,
    what: str,
    delays: Sequence[float] = RETRY_DELAYS,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """``operation(try_number)``, tried again after each delay while it fails by connection loss."""
    for number, delay in enumerate([*delays, None], start=1):
        try:
            # Each try in a task of its own: a failed try's transaction, whose rollback died with the
            # connection, stays in Piccolo's context variable and would make every later try nest in it
            # (``restock_common.db.engine.isolated``).
            return await asyncio.ensure_future(operation(number))
        except Exception as error:
            if delay is None or not is_connection_loss(error):
                raise
            log.warning(
                "database connection lost; retrying",
                extra={"operation": what, "try": number, "error": type(error).__name__},
            )
            await sleep(delay)
    raise AssertionError("unreachable: the last try returns or raises")
