"""Rate-limit arithmetic: which limits a send is under, and whether it may go now, later, or not yet.

Theory of operation
-------------------
Every send is checked against *all* the limits that apply to it at once (``limits_for``): the channel's
global rate, the shop's rate (rules ``email_per_second`` / ``sms_per_second``), the recipient's mailbox
provider (email) and the Twilio sender number's MPS (SMS). A limit of ``r`` per second has an emission
interval ``T = ceil(1e6 / r)`` microseconds, and keeps a *calendar*: the instants of the sends reserved on
it that can still matter (those less than ``T`` in the past, and the reservations ahead).

``acquire`` looks for the earliest instant ``s >= now`` that lies at least ``T`` away from every instant in
the calendar of every limit of the send. When ``s - now`` is within ``max_wait`` the send is *granted*
with a reservation: ``s`` is written into every one of its calendars, and the caller sends at ``s`` (it
sleeps ``s - now``, holding nothing). Otherwise it is *denied*: no calendar changes (a denied send takes
nothing from the other limits), and the answer carries the wait and which limit was binding, so the job
waits its turn without blocking anyone (``admission``).

Why a calendar and not GCRA's single "theoretical arrival time" per limit (ADR 16, replaced by ADR 25):
with one pointer per limit, a send reserved ``s - now`` ahead on a saturated domain moves the shared global
limit's pointer to ``s`` as well, and the global limit's time between now and ``s`` is lost to everyone.
At 50/s on one domain, reserved ~25 ms ahead each, that left the global limit idle for most of every
second, and mail to every other domain queued behind it (``bench/delivery`` (b)3: other domains' p99
1.3-2.6 s, the domain itself at 87 %). A calendar keeps the time before a reservation free: another
domain's send takes it, as long as it stays ``T`` from the reservation. Two sends granted on one limit are
still at least ``T`` apart at their reserved instants, so any one-second window holds at most ``r`` of them
(for integer ``r``), and because a send takes the earliest instant that fits, a limit with enough demand is
filled (what a mix of sends loses is less than ``T`` before each reservation ahead it cannot fill). The
calendars hold only the last ``T`` and the reservation horizon (``max_wait``, 50 ms by default), a few
entries each, so the Redis Lua twin (``adapters/redis_limiter.py``) is a handful of sorted-set calls over
the keys, atomic across replicas.

Headroom, and the release guard (ADR 23). A reservation is an instant; the peer counts when a message
*arrives*, after a claim, a render, a database commit and a network write, each with its own jitter, and
after any stall of the sender or of the peer. With spacing of exactly ``1/r`` a window at the peer holds
``r`` sends only if no two sends one second apart drift toward each other at all. So each limit is spaced
for ``r * (1 - headroom)`` (``RESTOCK_LIMIT_HEADROOM``, 4 % by default): ``r`` sends then span
``1 / (1 - headroom)`` seconds, and the peer stays at or below ``r`` in every one-second window while
the jitter between sends a second apart stays under about ``headroom`` seconds (40 ms), at the price of
filling at most ``1 - headroom`` of the limit. A send whose reservation came late (a loaded machine,
sends queued behind the provider-call window) would still go out in a bunch with the ones reserved after
it; ``Releases`` guards the instant of the provider call itself, in this process: at most ``floor(r)``
calls (at least one) on each limit of the send in any window of ``(1 + headroom)`` seconds (``1/r`` times
that below one per second), counted over the calls actually made, so a late send waits only when it
would break the count, and a backlog that fell behind catches up without ever exceeding it.

Times are integer microseconds (exact in Lua's doubles as in Python). Pure: no I/O, the clock is an input.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

LimitName = Literal["global", "shop", "domain", "sender", "unavailable"]

KEY_PREFIX = "restock:slots:{rl}:"  # one hash tag: every key of one script lands on one Redis Cluster slot

# Mailbox providers publish no numeric inbound rate; they throttle (Gmail 421 4.7.28, Microsoft 451
# 4.7.650, Yahoo 421 4.7.0 [TS0x]) when a sender's volume looks unusual for its reputation. KumoMTA's
# shipped shaping.toml defaults every destination to 100/s (GCRA: sends one interval apart, as here) and
# tightens the big providers through connection limits (Google: 5 connections) and suspensions on those
# replies. Our assumption: a shop's restock burst comes from one sending IP with modest reputation, so we
# start the big providers well below 100/s; raise them with RESTOCK_EMAIL_DOMAIN_LIMITS as reputation
# grows. Aliases share a key.
DEFAULT_DOMAIN_LIMITS: Mapping[str, float] = {
    "gmail.com": 20.0,
    "googlemail.com": 20.0,
    "outlook.com": 10.0,
    "hotmail.com": 10.0,
    "live.com": 10.0,
    "msn.com": 10.0,
    "yahoo.com": 10.0,
    "ymail.com": 10.0,
    "aol.com": 10.0,
    "icloud.com": 5.0,
    "me.com": 5.0,
    "mac.com": 5.0,
}

DOMAIN_ALIASES: Mapping[str, str] = {
    "googlemail.com": "gmail.com",
    "hotmail.com": "outlook.com",
    "live.com": "outlook.com",
    "msn.com": "outlook.com",
    "ymail.com": "yahoo.com",
    "me.com": "icloud.com",
    "mac.com": "icloud.com",
}


@dataclass(frozen=True)
class Limit:
    """One rate a send must stay under: ``name`` says which kind (decisions, metrics), ``key`` which one."""

    name: LimitName
    key: str
    per_second: float
    headroom: float = 0.0  # spaced for per_second * (1 - headroom): see the module's rules

    @property
    def interval_us(self) -> int:
        """The emission interval: sends on this limit are at least this many microseconds apart."""
        return math.ceil(1_000_000 / (self.per_second * (1.0 - self.headroom)))

    @property
    def release_cap(self) -> int:
        """The most provider calls of one process on this limit within ``release_span`` seconds."""
        return max(1, math.floor(self.per_second))

    @property
    def release_span(self) -> float:
        """The window, in seconds, that ``release_cap`` counts over: one second (or ``1/r`` below one per
        second), widened by the headroom so the peer's window stays within the limit despite jitter."""
        return max(1.0, 1.0 / self.per_second) * (1.0 + self.headroom)


@dataclass(frozen=True)
class LimitConfig:
    """The process-wide limits (from Settings): per channel, per mailbox provider, per sender number."""

    global_per_second: Mapping[str, float | None]
    domain_limits: Mapping[str, float | None]
    domain_default_per_second: float | None
    sender_mps: float | None
    sender_number: str | None
    headroom: float = 0.0


@dataclass(frozen=True)
class Granted:
    """Send after ``wait_us`` microseconds (0: now); the reservation is already taken on every limit.
    ``at_us`` is the reserved instant on the limiter's clock (for measurements; not compared)."""

    wait_us: int
    at_us: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Denied:
    """Not within ``max_wait``: nothing was taken. ``limit`` was binding (``key``, one send per
    ``interval_us``); ``wait_us`` until it frees. ``unavailable``: the limiter could not be asked."""

    wait_us: int
    limit: LimitName
    key: str = field(default="", compare=False)
    interval_us: int = field(default=0, compare=False)


Verdict = Granted | Denied


def domain_limit(domain: str, config: LimitConfig) -> Limit | None:
    """The mailbox-provider limit of a recipient domain (settings override the defaults; ``None``
    in a setting removes a default)."""
    domain = domain.strip().lower()
    if domain in config.domain_limits:
        rate = config.domain_limits[domain]
    elif domain in DEFAULT_DOMAIN_LIMITS:
        rate = DEFAULT_DOMAIN_LIMITS[domain]
    else:
        rate = config.domain_default_per_second
    if rate is None or rate <= 0:
        return None
    key = f"{KEY_PREFIX}email:domain:{DOMAIN_ALIASES.get(domain, domain)}"
    return Limit("domain", key, rate, config.headroom)


def limits_for(
    channel: str,
    config: LimitConfig,
    *,
    tenant_id: int,
    shop_per_second: float | None,
    recipient_domain: str | None,
) -> list[Limit]:
    """Every limit one send is under (empty: unthrottled)."""
    limits: list[Limit] = []
    headroom = config.headroom
    global_rate = config.global_per_second.get(channel)
    if global_rate:
        limits.append(Limit("global", f"{KEY_PREFIX}{channel}:global", global_rate, headroom))
    if shop_per_second:
        limits.append(Limit("shop", f"{KEY_PREFIX}{channel}:shop:{tenant_id}", shop_per_second, headroom))
    if channel == "email" and recipient_domain:
        limit = domain_limit(recipient_domain, config)
        if limit is not None:
            limits.append(limit)
    if channel == "sms" and config.sender_mps and config.sender_number:
        key = f"{KEY_PREFIX}sms:sender:{config.sender_number}"
        limits.append(Limit("sender", key, config.sender_mps, headroom))
    return limits


Calendars = Mapping[str, Sequence[int]]


def acquire(
    calendars: Calendars, limits: Sequence[Limit], now_us: int, max_wait_us: int
) -> tuple[Verdict, dict[str, Sequence[int]]]:
    """The earliest instant at least one interval from every reservation of every limit (see the module's
    rules): the verdict, and the calendars after it (each limit's pruned of what can no longer matter)."""
    booked = {
        limit.key: tuple(sorted(t for t in calendars.get(limit.key, ()) if t > now_us - limit.interval_us))
        for limit in limits
    }
    start, binding, moved = now_us, None, True
    while moved:  # each pass moves past a reservation or ends: calendars are finite
        moved = False
        for limit in limits:
            instants = booked[limit.key]
            # The last reservation before start + T clashes if it is after start - T; every instant
            # before its end clashes with it, so moving there skips no instant that fits.
            last = bisect.bisect_left(instants, start + limit.interval_us) - 1
            if last >= 0 and instants[last] > start - limit.interval_us:
                start, binding, moved = instants[last] + limit.interval_us, limit, True
        if start - now_us > max_wait_us:
            assert binding is not None  # only a clash moves start past now
            updated = {**calendars, **booked}
            return Denied(start - now_us, binding.name, binding.key, binding.interval_us), updated
    updated = {**calendars, **{key: tuple(sorted((*instants, start))) for key, instants in booked.items()}}
    return Granted(start - now_us, start), updated


class Releases:
    """The provider calls this process made on each limit, in the last ``release_span`` seconds: the guard
    at the call itself (see the module's rules). ``now`` is any monotonic clock, in seconds."""

    def __init__(self) -> None:
        self._calls: dict[str, deque[float]] = {}

    def wait(self, limits: Sequence[Limit], now: float) -> float:
        """Seconds until a call now would keep every limit within its count (0.0: it may go now)."""
        wait = 0.0
        for limit in limits:
            calls = self._calls.get(limit.key)
            if calls is None:
                continue
            while calls and calls[0] <= now - limit.release_span:
                calls.popleft()
            if not calls:
                del self._calls[limit.key]  # an idle limit (a recipient domain seen once) costs nothing
                continue
            if len(calls) >= limit.release_cap:
                wait = max(wait, calls[-limit.release_cap] + limit.release_span - now)
        return wait

    def take(self, limits: Sequence[Limit], now: float) -> bool:
        """Count a call now on every limit, if ``wait`` allows it; whether it was counted."""
        if self.wait(limits, now) > 0:
            return False
        for limit in limits:
            self._calls.setdefault(limit.key, deque()).append(now)
        return True
