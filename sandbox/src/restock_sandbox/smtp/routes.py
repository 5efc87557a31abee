"""``/inbox`` (read and clear what the SMTP server accepted) and ``/smtp/faults`` (the fault table)."""

from __future__ import annotations

import time
from typing import Annotated, Any

import msgspec
from litestar import Controller, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, QueryParameter

from restock_sandbox.smtp.inbox import FaultRule, Inbox, InboxStats, Stage, StoredMessage


class FaultIn(msgspec.Struct, frozen=True, kw_only=True):
    """A rule for ``POST /smtp/faults``; see ``restock_sandbox.smtp.inbox`` for its meaning."""

    match: Annotated[str, msgspec.Meta(min_length=1, max_length=320)]
    code: Annotated[int, msgspec.Meta(ge=400, le=599)] | None = None
    message: Annotated[str, msgspec.Meta(max_length=200)] = "4.3.0 sandbox fault"
    times: Annotated[int, msgspec.Meta(ge=1)] | None = 1
    stage: Stage = "rcpt"
    # An outage: the rule answers every matching attempt (whatever ``times`` says) for this many seconds.
    seconds: Annotated[float, msgspec.Meta(gt=0, le=3_600)] | None = None
    delay_seconds: Annotated[float, msgspec.Meta(ge=0, le=600)] = 0.0
    drop: bool = False
    accepted: bool = False

    def problem(self) -> str | None:
        """Why the rule means nothing, or None."""
        if self.code is None and not self.drop and not self.delay_seconds:
            return "a rule needs a code, drop or delay_seconds"
        if self.drop and self.code is not None:
            return "a dropped connection answers no code"
        if self.accepted and not (self.drop and self.stage == "data"):
            return "accepted only applies to a drop at stage data"
        if self.stage == "auth" and (self.code is None or self.drop or self.delay_seconds):
            return "an auth rule answers a code, without delay or drop"
        return None

    def rule(self, now: float) -> FaultRule:
        """The table's rule (an outage's end measured from ``now``, a ``time.monotonic()`` instant)."""
        return FaultRule(
            self.match,
            self.code,
            self.message,
            None if self.seconds is not None else self.times,
            self.stage,
            None if self.seconds is None else now + self.seconds,
            delay_seconds=self.delay_seconds,
            drop=self.drop,
            accepted=self.accepted,
        )


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
    async def add(self, inbox: NamedDependency[Inbox], data: JSONBody[FaultIn]) -> Response[Any]:
        problem = data.problem()
        if problem is not None:
            return Response({"detail": problem}, status_code=400)
        inbox.add_fault(data.rule(time.monotonic()))
        return Response([vars(rule) for rule in inbox.faults], status_code=201)

    @get("/")
    async def list_faults(self, inbox: NamedDependency[Inbox]) -> list[dict[str, object]]:
        return [vars(rule) for rule in inbox.faults]

    @delete("/")
    async def clear(self, inbox: NamedDependency[Inbox]) -> None:
        inbox.clear_faults()
