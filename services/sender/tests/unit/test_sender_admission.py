"""Admission before the claim, with recording fakes: pause, send window and limits defer a job unclaimed,
a reserved wait holds no slot, and a saturated limit never delays another recipient's mail."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from admission_fakes import ClockLimiter, FakeAdmissionStore, route

from restock_common.faults import FaultPoints
from restock_common.messages import JobBatch
from restock_common.rules import Rules, SendWindowRule
from restock_sender.admission import Admission, Admit, LimitLines, line_in_flight
from restock_sender.delivery import JobState, ProviderError, RetryPolicy
from restock_sender.handler import BatchHandler, JobHandler
from restock_sender.limiter import Denied, Granted, Limit, LimitConfig, Verdict
from restock_sender.pause import ChannelPause
from restock_sender.ports import (
    AttemptRecord,
    ClaimedJob,
    Deferral,
    EmailMessage,
    NoMetrics,
    NotClaimable,
    OperatorBacklog,
    PauseRecord,
    ProviderReceipt,
)
from restock_sender.templates import BUILTIN_EMAIL, JinjaRenderer

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)  # 07:00 in New York
CONFIG = LimitConfig(
    global_per_second={"email": None, "sms": None},
    domain_limits={"slow.test": 1.0},
    domain_default_per_second=None,
    sender_mps=None,
    sender_number=None,
)


def claimed(job_id: int, domain: str) -> ClaimedJob:
    return ClaimedJob(
        job_id=job_id,
        tenant_id=1,
        subscription_id=100 + job_id,
        variant_id=42,
        channel="email",
        notification_key=f"42:{100 + job_id}:7",
        attempt=1,
        traceparent=None,
        shop_domain="shop.myshopify.com",
        product_title="Shirt",
        email=f"shopper{job_id}@{domain}",
        subscription_state="confirmed",
        unsubscribed_at=None,
        policy=RetryPolicy(3, 30.0, 3600.0),
    )


class FakePauseStore:
    def __init__(self) -> None:
        self.paused: list[tuple[str, str, str | None]] = []

    async def read(self, channel: str) -> PauseRecord | None:
        return None

    async def pause(self, channel: str, reason: str, error_code: str | None) -> None:
        self.paused.append((channel, reason, error_code))

    async def resume(self, channel: str) -> bool:
        return False

    async def operator_backlog(self, channel: str) -> OperatorBacklog:
        return OperatorBacklog(0, 0)


class FakeJobStore:
    def __init__(self, *jobs: ClaimedJob) -> None:
        self.jobs = {job.job_id: job for job in jobs}
        self.claims: list[int] = []
        self.records: list[AttemptRecord] = []
        self.marked: list[int] = []  # provider-call marks, in order

    async def claim(self, job_id: int, lease_seconds: int) -> ClaimedJob | NotClaimable:
        self.claims.append(job_id)
        job = self.jobs.pop(job_id, None)
        return job if job is not None else NotClaimable(job_id)

    async def mark_provider_call(self, job: ClaimedJob) -> bool:
        self.marked.append(job.job_id)
        return True

    async def record(self, record: AttemptRecord) -> bool:
        self.records.append(record)
        return True

    async def record_and_mark(self, record: AttemptRecord, next_job: ClaimedJob) -> tuple[bool, bool]:
        """The record, then the next job's mark (the real store commits both at once)."""
        applied = await self.record(record)
        return applied, await self.mark_provider_call(next_job)


class SlowProvider:
    """Takes ``delay`` per send; records the order of recipients; raises the error set for a recipient."""

    def __init__(self, delay: float = 0.0, errors: Mapping[str, ProviderError] | None = None) -> None:
        self.delay = delay
        self.errors = dict(errors or {})
        self.sent: list[str] = []

    def prepare(self, message: EmailMessage) -> Callable[[], Awaitable[ProviderReceipt]]:
        return functools.partial(self.send, message)  # a subclass's ``send`` is the one prepared

    async def send(self, message: EmailMessage) -> ProviderReceipt:
        await asyncio.sleep(self.delay)
        if message.to in self.errors:
            raise self.errors[message.to]
        self.sent.append(message.to)
        return ProviderReceipt("smtp", f"<{message.notification_key}>", "250 OK")


def admission(
    store: FakeAdmissionStore,
    pause: ChannelPause,
    limiter: ClockLimiter | None = None,
    *,
    queue: float = 1.0,
    config: LimitConfig = CONFIG,
) -> Admission:
    return Admission(
        store,
        limiter or ClockLimiter(now_us=0),
        config,
        pause,
        NoMetrics(),
        lambda: NOW,
        reservation_seconds=0.05,
        queue_seconds=queue,
        pause_retry_seconds=30.0,
    )


def batch_handler(
    jobs: FakeJobStore, provider: SlowProvider, gate: Admission, pause: ChannelPause, concurrency: int = 4
) -> BatchHandler:
    handler = JobHandler(
        store=jobs,
        provider=provider,
        renderer=JinjaRenderer(),
        template=BUILTIN_EMAIL,
        faults=FaultPoints(None),
        clock=lambda: NOW,
        rng=lambda: 0.5,
        lease_seconds=120,
        pause=pause,
    )
    return BatchHandler(handler, "email", concurrency, FaultPoints(None), admission=gate)


async def test_a_paused_channel_defers_every_job_unclaimed() -> None:
    pause = ChannelPause("email", FakePauseStore())
    pause.paused = True
    store = FakeAdmissionStore(route(1), route(2))
    jobs = FakeJobStore(claimed(1, "fast.test"), claimed(2, "fast.test"))
    outcome = await batch_handler(jobs, SlowProvider(), admission(store, pause), pause)(
        JobBatch(channel="email", job_ids=[1, 2])
    )
    assert outcome.value == "ack"
    assert jobs.claims == []
    assert store.deferred == [
        Deferral(1, NOW + timedelta(seconds=30), "channel-paused"),
        Deferral(2, NOW + timedelta(seconds=30), "channel-paused"),
    ]


async def test_outside_the_send_window_the_job_waits_for_the_opening_in_the_shoppers_zone() -> None:
    rules = Rules(send_windows={"sms": SendWindowRule(start="09:00", end="20:00")})
    gate = admission(FakeAdmissionStore(), ChannelPause("sms", FakePauseStore()))
    # 12:00 UTC is 13:00 in Paris (open) but 07:00 in New York (closed until 09:00 EST = 14:00 UTC).
    paris = route(1, channel="sms", phone="+33612345678", rules=rules)
    assert await gate.admit(paris) == Admit(0.0)
    shop_zone = route(2, channel="sms", phone="+15005550006", rules=rules)  # several zones: the shop's
    assert await gate.admit(shop_zone) == Deferral(
        2, datetime(2026, 11, 25, 14, 0, tzinfo=UTC), "send-window"
    )
    # The window is the SMS channel's: email is not held.
    assert await gate.admit(route(3, rules=rules)) == Admit(0.0)


async def test_a_malformed_window_never_holds_a_job() -> None:
    rules = Rules(send_windows={"email": SendWindowRule(start="9am", end="20:00")})
    gate = admission(FakeAdmissionStore(), ChannelPause("email", FakePauseStore()))
    assert await gate.admit(route(1, rules=rules)) == Admit(0.0)


async def test_limits_admit_then_queue_within_the_horizon_then_defer_naming_the_limit() -> None:
    gate = admission(FakeAdmissionStore(), ChannelPause("email", FakePauseStore()), queue=1.0)
    first, second, third = [await gate.admit(route(i, "slow.test")) for i in range(1, 4)]
    # 1/s on slow.test: the first goes now; the second's turn is 1 s away, within the 1 s queue: it joins
    # the line; the third's turn is 2 s away: deferred in PostgreSQL, due back two thirds of the queue
    # (0.67 s) before its turn.
    assert first == Admit(0.0)
    assert isinstance(second, Admit)
    assert second.turn is not None
    assert isinstance(third, Deferral)
    assert (third.job_id, third.decision) == (3, "rate-limited:domain")
    # Further deferrals on the same limit are spread one interval apart, not all due at the next tick.
    later = [await gate.admit(route(i, "slow.test")) for i in range(4, 7)]
    offsets = [(d.until - NOW).total_seconds() for d in [third, *later] if isinstance(d, Deferral)]
    assert [round(offset, 2) for offset in offsets] == [1.33, 2.33, 3.33, 4.33]
    # 4/s for the shop: a turn within the 50 ms reservation is slept, not queued.
    limiter = ClockLimiter(now_us=1_000_000)
    gate = admission(FakeAdmissionStore(), ChannelPause("email", FakePauseStore()), limiter)
    shop = route(4, "fast.test", rules=Rules(email_per_second=4.0))
    assert await gate.admit(shop) == Admit(0.0)
    limiter.now_us = 1_210_000
    assert await gate.admit(shop) == Admit(0.04)


async def test_a_line_serves_its_jobs_in_order_at_the_limits_spacing() -> None:
    limiter = ClockLimiter()
    config = LimitConfig({"email": None}, {"slow.test": 20.0}, None, None, None)
    gate = admission(
        FakeAdmissionStore(), ChannelPause("email", FakePauseStore()), limiter, queue=1.0, config=config
    )
    verdicts = [await gate.admit(route(i, "slow.test")) for i in range(1, 7)]
    served: list[int] = []

    async def serve(job_id: int, admitted: Admit | Deferral) -> None:
        assert isinstance(admitted, Admit)
        wait = await admitted.turn.wait() if admitted.turn is not None else admitted.wait
        await asyncio.sleep(wait)
        served.append(job_id)
        if admitted.turn is not None:
            admitted.turn.done()

    await asyncio.gather(*(serve(i, v) for i, v in enumerate(verdicts, 1)))
    assert served == [1, 2, 3, 4, 5, 6]  # FIFO within the limit
    instants = sorted(at for key, at in limiter.granted if key.endswith("slow.test"))
    assert len(instants) == 6
    assert all(b - a >= 50_000 for a, b in pairwise(instants))  # 20/s: 50 ms apart


@pytest.mark.parametrize(
    ("per_second", "in_flight"),
    [(1.0, 2), (5.0, 2), (10.0, 2), (50.0, 10), (200.0, 40), (1000.0, 200)],  # 200 ms of sends, at least 2
)
def test_a_line_reserves_for_at_most_200_ms_of_its_limits_sends(per_second: float, in_flight: int) -> None:
    assert line_in_flight(Limit("domain", "k", per_second).interval_us) == in_flight


async def test_a_line_stops_reserving_while_its_sends_are_not_finished() -> None:
    """ADR 25: sends that fell behind (a slow loop, a stalled peer) hold the line's next reservation back,
    instead of the line reserving on at the limit's rate and the late sends piling up in slots."""

    class Granting:
        async def acquire(self, limits: Sequence[Limit], max_wait_us: int) -> Verdict:
            return Granted(0)

    lines = LimitLines(Granting(), 50_000)  # type: ignore[arg-type]
    slow = Limit("domain", "k", 5.0)  # 200 ms apart: two sends in flight at most
    denied = Denied(0, "domain", slow.key, slow.interval_us)
    turns = [lines.join(denied, [slow]) for _ in range(4)]
    waits = [asyncio.create_task(turn.wait()) for turn in turns]
    await asyncio.sleep(0.01)
    assert [w.done() for w in waits] == [True, True, False, False]
    turns[0].done()  # the first send finished: the third may reserve
    await asyncio.sleep(0.01)
    assert [w.done() for w in waits] == [True, True, True, False]
    for turn in turns[1:3]:
        turn.done()
    await asyncio.sleep(0.01)
    assert all(w.done() for w in waits)
    turns[3].done()
    turns[3].done()  # done twice (a finally after a done) gives back one place only
    never_waited = lines.join(denied, [slow])  # its task cancelled before it asked for its turn
    never_waited.done()
    assert lines.backlog_us(denied) == 0
    assert not lines._lines  # an idle line is forgotten, with its last denial
    assert not lines._denials
    lines.noted(Denied(30_000, "domain", "seen-once.test", slow.interval_us))
    assert not lines._denials  # a denial on a key without a line is not kept


async def test_behind_a_line_longer_than_the_horizon_jobs_are_deferred_without_asking_the_limiter() -> None:
    class Counting(ClockLimiter):
        calls = 0

        async def acquire(self, limits: Sequence[Limit], max_wait_us: int) -> Verdict:
            Counting.calls += 1
            return await super().acquire(limits, max_wait_us)

    config = LimitConfig({"email": None}, {"slow.test": 20.0}, None, None, None)  # 50 ms apart
    gate = admission(
        FakeAdmissionStore(),
        ChannelPause("email", FakePauseStore()),
        Counting(now_us=0),
        queue=0.2,
        config=config,
    )
    verdicts = [await gate.admit(route(i, "slow.test")) for i in range(1, 11)]
    # Granted now and 50 ms ahead, then three in the line (100-200 ms), then deferred without a call.
    lined = [v for v in verdicts if isinstance(v, Admit) and v.turn is not None]
    deferred = [v for v in verdicts if isinstance(v, Deferral)]
    assert len(lined) == 3
    assert [v.decision for v in deferred] == ["rate-limited:domain"] * 5
    assert Counting.calls == 5
    assert [d.until for d in deferred] == sorted(d.until for d in deferred)  # spread, FIFO


async def test_a_saturated_domain_never_delays_mail_to_other_domains() -> None:
    pause = ChannelPause("email", FakePauseStore())
    slow = [route(i, "slow.test") for i in range(1, 6)]
    fast = [route(i, "fast.test") for i in range(6, 9)]
    store = FakeAdmissionStore(*slow, *fast)
    jobs = FakeJobStore(*(claimed(r.job_id, r.recipient_domain or "") for r in [*slow, *fast]))
    provider = SlowProvider()
    config = LimitConfig({"email": None}, {"slow.test": 10.0}, None, None, None)
    gate = admission(store, pause, ClockLimiter(), queue=0.15, config=config)
    await batch_handler(jobs, provider, gate, pause, concurrency=1)(
        JobBatch(channel="email", job_ids=[1, 2, 3, 4, 5, 6, 7, 8])
    )
    # slow 1 goes now; slow 2 waits in the line (100 ms), outside the only slot: the fast ones go first.
    assert provider.sent == [
        "shopper1@slow.test",
        "shopper6@fast.test",
        "shopper7@fast.test",
        "shopper8@fast.test",
        "shopper2@slow.test",
    ]
    assert [d.job_id for d in store.deferred] == [3, 4, 5]  # beyond the line's horizon: in PostgreSQL
    assert {d.decision for d in store.deferred} == {"rate-limited:domain"}
    assert sorted(jobs.claims) == [1, 2, 6, 7, 8]  # a deferred job is never claimed: no attempt spent


async def test_a_reserved_wait_holds_no_slot() -> None:
    class Reserving:
        async def acquire(self, limits: Sequence[Limit], max_wait_us: int) -> Verdict:
            return Granted(300_000 if any(limit.key.endswith("slow.test") for limit in limits) else 0)

    pause = ChannelPause("email", FakePauseStore())
    store = FakeAdmissionStore(route(1, "slow.test"), route(2, "fast.test"))
    config = LimitConfig({"email": 1000.0}, {"slow.test": 1.0}, None, None, None)
    gate = admission(store, pause, Reserving(), config=config)  # type: ignore[arg-type]
    jobs = FakeJobStore(claimed(1, "slow.test"), claimed(2, "fast.test"))
    provider = SlowProvider()
    await batch_handler(jobs, provider, gate, pause, concurrency=1)(JobBatch(channel="email", job_ids=[1, 2]))
    # Job 1 came first but sleeps its reservation outside the only slot: job 2 is sent meanwhile.
    assert provider.sent == ["shopper2@fast.test", "shopper1@slow.test"]


async def test_a_send_held_back_by_its_limits_spacing_waits_for_it_holding_no_slot() -> None:
    """ADR 25: granted at once, the second send to a 2/s domain is still released half a second after the
    first (this process's spacing); it waits for that outside the only slot, so mail to another domain
    behind it in the batch goes first."""

    class Granting:
        async def acquire(self, limits: Sequence[Limit], max_wait_us: int) -> Verdict:
            return Granted(0)

    pause = ChannelPause("email", FakePauseStore())
    store = FakeAdmissionStore(route(1, "slow.test"), route(2, "slow.test"), route(3, "fast.test"))
    config = LimitConfig({"email": 1000.0}, {"slow.test": 2.0}, None, None, None)
    gate = admission(store, pause, Granting(), config=config)  # type: ignore[arg-type]
    jobs = FakeJobStore(claimed(1, "slow.test"), claimed(2, "slow.test"), claimed(3, "fast.test"))
    provider = SlowProvider()
    await batch_handler(jobs, provider, gate, pause, concurrency=1)(
        JobBatch(channel="email", job_ids=[1, 2, 3])
    )
    assert provider.sent == ["shopper1@slow.test", "shopper3@fast.test", "shopper2@slow.test"]


async def test_a_configuration_error_pauses_the_channel_and_returns_the_job_due_at_once() -> None:
    pauses = FakePauseStore()
    pause = ChannelPause("email", pauses)
    store = FakeAdmissionStore(route(1), route(2))
    jobs = FakeJobStore(claimed(1, "fast.test"), claimed(2, "fast.test"))
    refused = ProviderError("response", "535", "5.7.8 Authentication credentials invalid")
    provider = SlowProvider(errors={"shopper1@fast.test": refused})
    await batch_handler(jobs, provider, admission(store, pause), pause, concurrency=1)(
        JobBatch(channel="email", job_ids=[1, 2])
    )
    [record] = jobs.records
    assert record.state is JobState.PENDING
    assert record.decision == "channel-paused"
    assert record.next_attempt_at == NOW  # due again as soon as the channel resumes
    assert pause.paused
    assert pauses.paused == [("email", "authentication or policy refused (535)", "535")]
    # Job 2 was admitted before the refusal and waited for the slot: deferred, never claimed.
    assert jobs.claims == [1]
    assert provider.sent == []
    assert store.deferred == [Deferral(2, NOW + timedelta(seconds=30), "channel-paused")]


class Stale:
    """Grants every send at once, as if each reservation had been made long ago (a loaded machine)."""

    async def acquire(self, limits: Sequence[Limit], max_wait_us: int) -> Verdict:
        return Granted(0)


class TimedProvider(SlowProvider):
    """Records the loop time of each provider call."""

    def __init__(self) -> None:
        super().__init__()
        self.instants: list[float] = []

    async def send(self, message: EmailMessage) -> ProviderReceipt:
        self.instants.append(asyncio.get_running_loop().time())
        return await super().send(message)


async def test_sends_whose_reservations_went_stale_still_reach_the_provider_one_interval_apart() -> None:
    pause = ChannelPause("email", FakePauseStore())
    store = FakeAdmissionStore(*(route(i, "slow.test") for i in range(1, 4)))
    config = LimitConfig({"email": None}, {"slow.test": 20.0}, None, None, None)
    gate = admission(store, pause, Stale(), config=config)  # type: ignore[arg-type]
    jobs = FakeJobStore(*(claimed(i, "slow.test") for i in range(1, 4)))
    provider = TimedProvider()
    started = asyncio.get_running_loop().time()
    await batch_handler(jobs, provider, gate, pause, concurrency=4)(
        JobBatch(channel="email", job_ids=[1, 2, 3])
    )
    # Released one interval apart (20/s: 50 ms): the k-th call comes no sooner than k intervals after the
    # start. A lower bound from sleeps on the loop's monotonic clock, not a timing.
    assert len(provider.instants) == 3
    assert all(at >= started + k * 0.05 - 1e-6 for k, at in enumerate(provider.instants)), provider.instants


async def test_late_sends_to_several_domains_never_exceed_a_shared_limit_at_the_call() -> None:
    """The release guard counts the calls actually made on *every* limit of a send (ADR 23): sends
    reserved long ago on three domains (each its own tightest limit, so the planned spacing does not meet)
    still make at most two calls within any second on the global 2/s limit they share."""

    domains = ["a.test", "b.test", "c.test"]
    pause = ChannelPause("email", FakePauseStore())
    store = FakeAdmissionStore(*(route(i, domain) for i, domain in enumerate(domains, 1)))
    config = LimitConfig({"email": 2.0}, dict.fromkeys(domains, 1.0), None, None, None)
    gate = admission(store, pause, Stale(), config=config)  # type: ignore[arg-type]
    jobs = FakeJobStore(*(claimed(i, domain) for i, domain in enumerate(domains, 1)))
    provider = TimedProvider()
    await batch_handler(jobs, provider, gate, pause, concurrency=4)(
        JobBatch(channel="email", job_ids=[1, 2, 3])
    )
    # A lower bound from sleeps on the loop's monotonic clock, not a timing: the third call waited for the
    # first to leave its second.
    first, _, third = sorted(provider.instants)
    assert third >= first + 1.0 - 1e-6, provider.instants


async def test_the_release_guard_counts_a_call_when_it_goes_out_after_its_mark_not_before() -> None:
    """A send whose provider-call mark commits slowly goes out late: the guard counts it then (ADR 23).
    Counted before its mark, it would leave room in the second it is actually sent in, and three calls
    would reach the provider within one second on a 2/s limit."""

    class SlowMark(FakeJobStore):
        async def mark_provider_call(self, job: ClaimedJob) -> bool:
            if job.job_id == 1:
                await asyncio.sleep(0.9)
            return await super().mark_provider_call(job)

    domains = ["a.test", "b.test", "c.test", "d.test"]
    pause = ChannelPause("email", FakePauseStore())
    store = FakeAdmissionStore(*(route(i, domain) for i, domain in enumerate(domains, 1)))
    config = LimitConfig({"email": 2.0}, dict.fromkeys(domains, 1.0), None, None, None)
    gate = admission(store, pause, Stale(), config=config)  # type: ignore[arg-type]
    jobs = SlowMark(*(claimed(i, domain) for i, domain in enumerate(domains, 1)))
    provider = TimedProvider()
    await batch_handler(jobs, provider, gate, pause, concurrency=4)(
        JobBatch(channel="email", job_ids=[1, 2, 3, 4])
    )
    instants = sorted(provider.instants)
    assert len(instants) == 4
    # Lower bounds from sleeps on the loop's monotonic clock: any three calls span at least a second.
    assert all(third - first >= 1.0 - 1e-6 for first, third in zip(instants, instants[2:], strict=False))
