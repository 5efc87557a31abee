"""Fakes of admission's ports shared by the sender's unit tests (admission, metrics): a job's route, the
admission store, and the limiter's pure twin on the event loop's clock or a fixed instant."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from restock_common.rules import Rules
from restock_sender.limiter import Granted, Limit, Verdict, acquire
from restock_sender.ports import Deferral, JobRoute


def route(job_id: int, domain: str = "fast.test", **changes: Any) -> JobRoute:
    values: dict[str, Any] = {
        "job_id": job_id,
        "tenant_id": 1,
        "channel": "email",
        "recipient_domain": domain,
        "phone": None,
        "shop_timezone": "America/New_York",
        "rules": Rules(),
    }
    values.update(changes)
    return JobRoute(**values)


class FakeAdmissionStore:
    def __init__(self, *routes: JobRoute) -> None:
        self.by_id = {r.job_id: r for r in routes}
        self.deferred: list[Deferral] = []

    async def routes(self, job_ids: list[int]) -> dict[int, JobRoute]:
        return {job_id: self.by_id[job_id] for job_id in job_ids if job_id in self.by_id}

    async def defer(self, deferrals: list[Deferral]) -> int:
        self.deferred.extend(deferrals)
        return len(deferrals)


class ClockLimiter:
    """``limiter.acquire`` over an in-memory dict (the Redis script's twin); its clock is the event loop's,
    or a fixed instant. Records every granted send instant per limit key."""

    def __init__(self, now_us: int | None = None) -> None:
        self.calendars: dict[str, Sequence[int]] = {}
        self.now_us = now_us
        self.granted: list[tuple[str, int]] = []

    async def acquire(self, limits: Sequence[Limit], max_wait_us: int) -> Verdict:
        now = self.now_us if self.now_us is not None else int(asyncio.get_running_loop().time() * 1_000_000)
        verdict, self.calendars = acquire(self.calendars, limits, now, max_wait_us)
        if isinstance(verdict, Granted):
            self.granted.extend((limit.key, now + verdict.wait_us) for limit in limits)
        return verdict
