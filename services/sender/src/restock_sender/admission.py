"""Admission: may a pending job be claimed now, after a short reserved wait, or must it wait unclaimed?

Checked before the claim, cheapest first, so a job held back never spends an attempt and never holds a
concurrency slot (no head-of-line blocking: a saturated domain or shop delays only its own jobs):

1. the channel is paused (a configuration error, ``restock_sender.pause``): deferred by one probe
   interval, decision ``channel-paused``;
2. the shop's send window for the channel, in the shopper's zone (``restock_sender.windows``): deferred to
   the next opening, decision ``send-window``;
3. the rate limits (``restock_sender.limiter``, all at once in Redis):

   - granted within ``reservation`` (50 ms) -> admitted; the job sleeps the reserved wait, holding no slot;
   - denied, but the binding limit's backlog in this process (its wait plus the jobs already in its line,
     one interval each) is within ``queue`` (2 s) -> the job joins that limit's line: a FIFO in memory
     whose head alone asks Redis again, a little before the limit frees, and reserves the rest. The line
     keeps the limit filled to its rate at the cost of one Redis call per send; its reservations, a few
     intervals ahead, leave the shared global limit's time before them to every other domain (the
     limiter's calendars, ADR 25: no head-of-line blocking);
   - denied beyond that -> deferred in PostgreSQL, decision ``rate-limited:<limit>``, until two thirds of
     ``queue`` before its estimated turn (behind the line and the jobs already deferred on that limit), so
     the scheduler (one tick a second) brings the backlog back at the limit's pace while the line still
     has work: memory, unacked messages and re-admissions stay bounded however large the backlog.

A deferral is ``next_attempt_at`` on a job left ``pending`` (``delivery.Event.DEFER``); the job keeps its
``priority_at``, so deferred jobs come back FIFO by subscription time.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from restock_sender.limiter import Denied, Granted, Limit, LimitConfig, limits_for
from restock_sender.pause import ChannelPause
from restock_sender.ports import AdmissionStore, Deferral, DeliveryMetrics, JobRoute, RateLimiter
from restock_sender.windows import next_opening, parse_window, shopper_zone

log = logging.getLogger(__name__)

SEND_WINDOW = "send-window"
CHANNEL_PAUSED = "channel-paused"


def rate_limited(limit: str) -> str:
    """The decision of a job deferred by ``limit``."""
    return f"rate-limited:{limit}"


@dataclass(frozen=True)
class Admit:
    """Claim and send after ``wait`` seconds (the limits' reservation is already taken); or, with
    ``turn``, first wait in a limit's line (``LineTurn``). ``limits``: those the send was reserved on
    (empty: unthrottled)."""

    wait: float = 0.0
    turn: LineTurn | None = field(default=None, compare=False)
    limits: tuple[Limit, ...] = field(default=(), compare=False)


# A line's head reserves its send this far ahead (a first admission only a reservation's 50 ms): on a
# saturated domain under a shared global limit, the domain's instant is then taken before the other
# domains' sends, granted at once and up to 50 ms ahead in bursts, take the global instants around it;
# reserved later, each domain send was moved past such a burst and the domain lost 7 % of its rate. The
# time before the reservation stays free for other sends (the limiter's calendars, ADR 25).
LINE_HORIZON_SECONDS = 0.1
# A line reserves at most this much of its limit's sends that have not finished yet (at least two): its
# horizon, plus each send's lead, claim, staging and provider call (tens of ms), and few enough that sends
# falling behind (a slow event loop, a stalled peer) stop the line instead of piling up late, each holding
# a slot until the release guard lets it go.
LINE_IN_FLIGHT_SECONDS = 0.2


def line_in_flight(interval_us: int) -> int:
    """How many of a line's sends may hold a reservation and not be finished, at one per ``interval_us``."""
    return max(2, math.ceil(LINE_IN_FLIGHT_SECONDS * 1_000_000 / interval_us))


@dataclass
class _Line:
    """One limit's line in this process: FIFO turns (``lock``), sends reserved and not finished bounded
    (``in_flight``), and its members (joined and not done), so an idle line is forgotten."""

    lock: asyncio.Lock
    in_flight: asyncio.Semaphore
    members: int = 0


class LineTurn:
    """A job's place in a limit's line: ``wait()`` returns once the job holds a reservation, with the
    seconds still to sleep; ``done()`` (always, once the job's send is over or abandoned) gives its place
    back, which lets the line reserve for another."""

    def __init__(self, lines: LimitLines, key: str, line: _Line, limits: Sequence[Limit]) -> None:
        self._lines, self._key, self._line, self._limits = lines, key, line, limits
        self._queued = True  # counted in the line's length until it holds a reservation (or gives up)
        self._holding = False
        self._done = False

    async def wait(self) -> float:
        try:
            await self._line.in_flight.acquire()  # FIFO, like the lock
            self._holding = True
            async with self._line.lock:  # asyncio.Lock wakes its waiters in FIFO order
                return await self._lines.reserve(self._limits)
        finally:
            self._leave_queue()

    def done(self) -> None:
        if self._done:
            return
        self._done = True
        self._leave_queue()  # a turn never waited for (its task cancelled first) leaves no phantom length
        if self._holding:
            self._line.in_flight.release()
        self._lines.left_line(self._key, self._line)

    def _leave_queue(self) -> None:
        if self._queued:
            self._queued = False
            self._lines.left_queue(self._key)


class LimitLines:
    """This process's lines of jobs waiting for a saturated limit, one FIFO per binding key."""

    def __init__(self, limiter: RateLimiter, reservation_us: int) -> None:
        self.limiter = limiter
        self.reservation_us = reservation_us
        self.horizon_us = max(reservation_us, int(LINE_HORIZON_SECONDS * 1_000_000))
        self._lines: dict[str, _Line] = {}
        self._lengths: Counter[str] = Counter()  # per key: jobs still waiting for their reservation
        self._deferred_turns: dict[str, float] = {}  # per key: the latest turn promised to a deferred job
        self._denials: dict[str, tuple[float, int]] = {}  # per key with a line: the last denial (when, wait)

    def backlog_us(self, denied: Denied) -> int:
        """How long until a job denied so would be served, behind this process's line for that limit."""
        return denied.wait_us + self._lengths[denied.key] * denied.interval_us

    def noted(self, denied: Denied) -> None:
        """Remember the limiter's last denial on a key with a line (``beyond`` estimates the next one from
        it; a key without a line is not remembered, so recipient domains seen once cost nothing)."""
        if denied.key in self._lines:
            self._denials[denied.key] = (time.monotonic(), denied.wait_us)

    def beyond(self, limits: Sequence[Limit], horizon_us: int) -> Denied | None:
        """The first of ``limits`` with a line in this process so long that a job joining it now would be
        served later than ``horizon_us``, as the denial the limiter would give (its wait estimated from the
        last one on that key: never less than a reservation); or None. Such a job is deferred whatever the
        limiter says, so it is not asked."""
        for limit in limits:
            length = self._lengths[limit.key]
            if not length:
                continue
            at, wait_us = self._denials.get(limit.key, (0.0, 0))
            wait_us = max(self.reservation_us, wait_us - int((time.monotonic() - at) * 1_000_000))
            estimated = Denied(wait_us, limit.name, limit.key, limit.interval_us)
            if self.backlog_us(estimated) > horizon_us:
                return estimated
        return None

    def deferred_turn_us(self, denied: Denied) -> int:
        """The turn of a job deferred on this limit, in microseconds from now: behind the line *and* behind
        the jobs this process already deferred on it, one interval each, so a large backlog comes back
        spread at the limit's rate instead of all at once at every scheduler tick."""
        now = time.monotonic()
        turn = now + self.backlog_us(denied) / 1_000_000
        turn = max(turn, self._deferred_turns.get(denied.key, -math.inf) + denied.interval_us / 1_000_000)
        self._deferred_turns[denied.key] = turn
        return int((turn - now) * 1_000_000)

    def join(self, denied: Denied, limits: Sequence[Limit]) -> LineTurn:
        """Take a place in the binding limit's line now; the returned turn waits for it."""
        key = denied.key
        line = self._lines.get(key)
        if line is None:
            line = self._lines[key] = _Line(
                asyncio.Lock(), asyncio.Semaphore(line_in_flight(denied.interval_us))
            )
        line.members += 1
        self._lengths[key] += 1
        self.noted(denied)
        return LineTurn(self, key, line, limits)

    def left_queue(self, key: str) -> None:
        """A member got its reservation (or gave up waiting for it)."""
        self._lengths[key] -= 1
        if not self._lengths[key]:
            del self._lengths[key]

    def left_line(self, key: str, line: _Line) -> None:
        """A member is done: an empty line is forgotten (a recipient domain seen once costs nothing)."""
        line.members -= 1
        if not line.members and self._lines.get(key) is line:
            del self._lines[key]
            self._denials.pop(key, None)

    async def reserve(self, limits: Sequence[Limit]) -> float:
        """Ask until granted (a line's head only); the seconds still to sleep."""
        while True:
            verdict = await self.limiter.acquire(limits, self.horizon_us)
            if isinstance(verdict, Granted):
                return verdict.wait_us / 1_000_000
            # Wake when the instant is a horizon ahead and reserve it: sends keep exact spacing.
            await asyncio.sleep(max(verdict.wait_us - self.horizon_us, 1_000) / 1_000_000)


def window_opening(route: JobRoute, now: datetime) -> datetime | None:
    """When the job's send window next opens, if it is closed now (a malformed window never closes)."""
    rule = route.rules.send_windows.get(route.channel)
    if rule is None:
        return None
    try:
        window = parse_window(rule.start, rule.end)
    except ValueError as error:
        log.warning(
            "malformed send window ignored", extra={"tenant_id": route.tenant_id, "reason": str(error)}
        )
        return None
    phone = route.phone if route.channel == "sms" else None
    return next_opening(window, now, shopper_zone(phone, route.shop_timezone))


class Admission:
    """The pre-claim checks of one channel (see the module's rules)."""

    def __init__(
        self,
        store: AdmissionStore,
        limiter: RateLimiter,
        config: LimitConfig,
        pause: ChannelPause,
        metrics: DeliveryMetrics,
        clock: Callable[[], datetime],
        *,
        reservation_seconds: float,
        queue_seconds: float,
        pause_retry_seconds: float,
    ) -> None:
        self.store = store
        self.limiter = limiter
        self.config = config
        self.pause = pause
        self.metrics = metrics
        self.clock = clock
        self.queue_us = int(queue_seconds * 1_000_000)
        # A deferred job is due back this long before its turn: less than the line's horizon, so one that
        # comes back up to a scheduler tick late still finds room in the line instead of being deferred
        # again (churn), and more than a tick, so the line still has work when it arrives.
        self.return_lead_us = self.queue_us * 2 // 3
        self.lines = LimitLines(limiter, int(reservation_seconds * 1_000_000))
        self.pause_retry = timedelta(seconds=pause_retry_seconds)

    async def routes(self, job_ids: list[int]) -> dict[int, JobRoute]:
        """The batch's pending jobs, read once."""
        return await self.store.routes(job_ids)

    async def admit(self, route: JobRoute) -> Admit | Deferral:
        """Admit the job (after a wait) or say until when it is deferred."""
        now = self.clock()
        if self.pause.paused:
            return self._deferral(route, now + self.pause_retry, CHANNEL_PAUSED)
        opening = window_opening(route, now)
        if opening is not None:
            return self._deferral(route, opening, SEND_WINDOW)
        limits = limits_for(
            route.channel,
            self.config,
            tenant_id=route.tenant_id,
            shop_per_second=route.rules.sms_per_second
            if route.channel == "sms"
            else route.rules.email_per_second,
            recipient_domain=route.recipient_domain,
        )
        if not limits:
            return Admit()
        # Behind a line already longer than the horizon the job is deferred whatever the limiter says: a
        # backlog arriving at once (a restock's thousand jobs to one domain) costs no call each.
        verdict = self.lines.beyond(limits, self.queue_us) or await self.limiter.acquire(
            limits, self.lines.reservation_us
        )
        if isinstance(verdict, Granted):
            return Admit(verdict.wait_us / 1_000_000, limits=tuple(limits))
        self.lines.noted(verdict)
        if self.lines.backlog_us(verdict) > self.queue_us or verdict.limit == "unavailable":
            turn = self.lines.deferred_turn_us(verdict)
            until = now + timedelta(microseconds=max(turn - self.return_lead_us, verdict.wait_us // 2))
            return self._deferral(route, until, rate_limited(verdict.limit))
        self.metrics.deferred(route.channel, f"queued:{verdict.limit}")
        return Admit(turn=self.lines.join(verdict, limits), limits=tuple(limits))

    def _deferral(self, route: JobRoute, until: datetime, decision: str) -> Deferral:
        self.metrics.deferred(route.channel, decision)
        return Deferral(route.job_id, until, decision)

    async def defer_if_paused(self, job_id: int, channel: str) -> bool:
        """Defer an admitted job that has not started yet if the channel paused meanwhile (one refusal is
        enough: the others would meet the same). Whether it was deferred."""
        if not self.pause.paused:
            return False
        self.metrics.deferred(channel, CHANNEL_PAUSED)
        await self.store.defer([Deferral(job_id, self.clock() + self.pause_retry, CHANNEL_PAUSED)])
        return True

    async def defer(self, deferrals: list[Deferral]) -> None:
        """Write the batch's deferrals (one statement)."""
        deferred = await self.store.defer(deferrals)
        log.info("jobs deferred", extra={"jobs": len(deferrals), "deferred": deferred})
