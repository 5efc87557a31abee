"""``/inbox`` (read and clear what the SMTP server accepted) and ``/smtp/faults`` (the fault table)."""

from __future__ import annotations

import time
from typing import Annotated

import msgspec
from litestar import Controller, delete, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, QueryParameter

from restock_sandbox.smtp.inbox import FaultRule, Inbox, InboxStats, Stage, StoredMessage


class FaultIn(msgspec.Struct, frozen=True, kw_only=True):
    """A rule for ``POST /smtp/faults``; see ``restock_sandbox.smtp.inbox`` for its meaning."""

    match: Annotated[str, msgspec.Meta(min_length=1, max_length=320)]
    code: Annotated[int, msgspec.Meta(ge=400, le=599)]
    message: Annotated[str, msgspec.Meta(max_length=200)] = "4.3.0 sandbox fault"
    times: Annotated[int, msgspec.Meta(ge=1)] | None = 1
    stage: Stage = "rcpt"
    # An outage: the rule answers every matching attempt (whatever ``times`` says) for this many seconds.
    seconds: Annotated[float, msgspec.Meta(gt=0, le=3_600)] | None = None


class InboxController(Controller):
    """What the sandbox SMTP server received."""

    path = "/inbox"

    @get("/")
    async def list_messages(
        self, inbox: NamedDependency[Inbox], to: Annotated[str | None, QueryParameter()] = None
    ) -> list[StoredMessage]:
        return inbox.received(to)

    @get("/stats")
    async def stats(self, inbox: NamedDependency[Inbox]) -> InboxStats:
        return inbox.stats()

    @get("/message-ids")
    async def message_ids(self, inbox: NamedDependency[Inbox]) -> list[str | None]:
        """Every message's Message-ID in arrival order: the fault suite matches them to jobs without
        reading 10,000 bodies."""
        return [message.message_id for message in inbox.messages]

    @delete("/")
    async def clear(self, inbox: NamedDependency[Inbox]) -> None:
        inbox.clear()


class FaultController(Controller):
    """The SMTP server's failure injection."""

    path = "/smtp/faults"

    @post("/")
    async def add(self, inbox: NamedDependency[Inbox], data: JSONBody[FaultIn]) -> list[dict[str, object]]:
        if data.seconds is None:
            rule = FaultRule(data.match, data.code, data.message, data.times, data.stage)
        else:
            rule = FaultRule(
                data.match, data.code, data.message, None, data.stage, time.monotonic() + data.seconds
            )
        inbox.add_fault(rule)
        return [vars(rule) for rule in inbox.faults]

    @get("/")
    async def list_faults(self, inbox: NamedDependency[Inbox]) -> list[dict[str, object]]:
        return [vars(rule) for rule in inbox.faults]

    @delete("/")
    async def clear(self, inbox: NamedDependency[Inbox]) -> None:
        inbox.clear_faults()
