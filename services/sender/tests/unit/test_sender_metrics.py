"""The sender's Prometheus series (spec "Pipeline Observability") with recording fakes: the real handler,
admission and channel monitor report into a ``SenderMetrics`` on a registry of the test's own, and each
test compares every series that moved, so a series that stops moving, or moves for the wrong label, fails.

Series: queue latency, attempts by outcome, failures by kind, retry recoveries, dead-letter backlog,
deferrals and limit waits."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from admission_fakes import ClockLimiter, FakeAdmissionStore, route
from prometheus_client import CollectorRegistry

from restock_common.faults import FaultPoints
from restock_common.messages import JobBatch
from restock_common.rules import Rules, SendWindowRule
from restock_sender.admission import Admission
from restock_sender.delivery import JobState, ProviderError, RetryPolicy
from restock_sender.handler import BatchHandler, JobHandler
from restock_sender.limiter import Granted, Limit, LimitConfig, Verdict
from restock_sender.metrics import SenderMetrics
from restock_sender.pause import ChannelMonitor, ChannelPause, ConsumerSwitch
from restock_sender.ports import (
    AttemptRecord,
    ClaimedJob,
    Deferral,
    EmailMessage,
    NotClaimable,
    OperatorBacklog,
    PauseRecord,
    ProviderReceipt,
)
from restock_sender.templates import BUILTIN_EMAIL, JinjaRenderer

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)  # 07:00 in New York
ENQUEUED = NOW - timedelta(seconds=90)
POLICY = RetryPolicy(max_attempts=3, base_seconds=30.0, cap_seconds=3600.0)
CONFIG = LimitConfig({"email": None, "sms": None}, {"slow.test": 1.0}, None, None, None)

LATENCY_COUNT = "restock_sender_queue_latency_seconds_count{channel=email}"
LATENCY_SUM = "restock_sender_queue_latency_seconds_sum{channel=email}"
RECOVERIES = "restock_sender_retry_recoveries_total{channel=email}"
WAIT_COUNT = "restock_sender_limit_wait_seconds_count{channel=email}"
WAIT_SUM = "restock_sender_limit_wait_seconds_sum{channel=email}"
BACKLOG_NAME = "restock_sender_dead_letter_backlog"
INDETERMINATE_NAME = "restock_sender_indeterminate_backlog"


def attempts(outcome: str) -> str:
    return f"restock_sender_attempts_total{{channel=email,outcome={outcome}}}"


def failures(kind: str) -> str:
    return f"restock_sender_failures_total{{channel=email,kind={kind}}}"


def deferrals(decision: str, channel: str = "email") -> str:
    return f"restock_sender_deferrals_total{{channel={channel},decision={decision}}}"


def moved(metrics: SenderMetrics) -> dict[str, float]:
    """Every non-zero sample of the registry but histogram buckets and creation times."""
    return {
        f"{sample.name}{{{','.join(f'{k}={v}' for k, v in sorted(sample.labels.items()))}}}": sample.value
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.value != 0 and not sample.name.endswith(("_bucket", "_created"))
    }


def new_metrics() -> SenderMetrics:
    return SenderMetrics(CollectorRegistry(), clock=lambda: NOW)


def claimed(job_id: int = 1, domain: str = "example.com", **changes: Any) -> ClaimedJob:
    values: dict[str, Any] = {
        "job_id": job_id,
        "tenant_id": 1,
        "subscription_id": 10 + job_id,
        "variant_id": 42,
        "channel": "email",
        "notification_key": f"42:{10 + job_id}:7",
        "attempt": 1,
        "traceparent": None,
        "shop_domain": "shop.myshopify.com",
        "product_title": "Shirt",
        "email": f"shopper{job_id}@{domain}",
        "subscription_state": "confirmed",
        "unsubscribed_at": None,
        "policy": POLICY,
        "enqueued_at": ENQUEUED,
    }
    values.update(changes)
    return ClaimedJob(**values)


# -- SenderMetrics itself: which series an attempt's outcome moves -------------------------------------


@pytest.mark.parametrize(
    ("state", "error_kind", "attempt", "series"),
    [
        (JobState.SENT, None, 1, {attempts("sent"): 1, LATENCY_COUNT: 1, LATENCY_SUM: 90.0}),
        (  # sent on a retry: a recovery
            JobState.SENT,
            None,
            3,
            {attempts("sent"): 1, RECOVERIES: 1, LATENCY_COUNT: 1, LATENCY_SUM: 90.0},
        ),
        (
            JobState.FAILED_TEMPORARY,
            "temporary",
            2,
            {attempts("failed-temporary"): 1, failures("temporary"): 1},
        ),
        (
            JobState.FAILED_PERMANENT,
            "permanent",
            2,
            {attempts("failed-permanent"): 1, failures("permanent"): 1},
        ),
        (JobState.DEAD_LETTER, "temporary", 3, {attempts("dead-letter"): 1, failures("temporary"): 1}),
        (JobState.PENDING, "configuration", 1, {attempts("pending"): 1, failures("configuration"): 1}),
        (JobState.SKIPPED_OPTED_OUT, None, 2, {attempts("skipped-opted-out"): 1}),
    ],
)
def test_an_attempts_outcome_moves_its_series_and_no_other(
    state: JobState, error_kind: str | None, attempt: int, series: dict[str, float]
) -> None:
    metrics = new_metrics()
    metrics.attempt_recorded(claimed(attempt=attempt), state, error_kind)
    assert moved(metrics) == series


def test_a_send_never_published_has_no_queue_latency() -> None:
    metrics = new_metrics()
    metrics.attempt_recorded(claimed(enqueued_at=None), JobState.SENT, None)
    assert moved(metrics) == {attempts("sent"): 1}


def test_queue_latency_is_observed_into_its_bucket() -> None:
    metrics = new_metrics()
    metrics.attempt_recorded(claimed(), JobState.SENT, None)  # 90 s
    registry = metrics.registry
    assert (
        registry.get_sample_value(
            "restock_sender_queue_latency_seconds_bucket", {"channel": "email", "le": "60.0"}
        )
        == 0
    )
    assert (
        registry.get_sample_value(
            "restock_sender_queue_latency_seconds_bucket", {"channel": "email", "le": "300.0"}
        )
        == 1
    )


# -- the handler reports each attempt it records ------------------------------------------------------


class FakeJobStore:
    """Hands out the given jobs once each and records every attempt."""

    def __init__(self, *jobs: ClaimedJob) -> None:
        self.jobs = {job.job_id: job for job in jobs}
        self.claims: list[int] = []
        self.records: list[AttemptRecord] = []

    async def claim(self, job_id: int, lease_seconds: int) -> ClaimedJob | NotClaimable:
        self.claims.append(job_id)
        job = self.jobs.pop(job_id, None)
        return job if job is not None else NotClaimable(job_id)

    async def release(self, job: ClaimedJob) -> bool:
        return True

    async def mark_provider_call(self, job: ClaimedJob) -> bool:
        return True

    async def record(self, record: AttemptRecord) -> bool:
        self.records.append(record)
        return True

    async def record_and_mark(self, record: AttemptRecord, next_job: ClaimedJob) -> tuple[bool, bool]:
        return await self.record(record), True


class FakeProvider:
    """Accepts every message, or raises the error set for its recipient."""

    def __init__(self, errors: Mapping[str, ProviderError] | None = None) -> None:
        self.errors = dict(errors or {})
        self.sent: list[str] = []

    def prepare(self, message: EmailMessage) -> Callable[[], Awaitable[ProviderReceipt]]:
        return functools.partial(self.send, message)

    async def send(self, message: EmailMessage) -> ProviderReceipt:
        if message.to in self.errors:
            raise self.errors[message.to]
        self.sent.append(message.to)
        return ProviderReceipt("smtp", f"<{message.notification_key}>", "250 OK")


class FakePauseStore:
    def __init__(self) -> None:
        self.backlog = OperatorBacklog(dead_letter=0, indeterminate=0)

    async def read(self, channel: str) -> PauseRecord | None:
        return None

    async def pause(self, channel: str, reason: str, error_code: str | None) -> None:
        return None

    async def resume(self, channel: str) -> bool:
        return False

    async def operator_backlog(self, channel: str) -> OperatorBacklog:
        return self.backlog


def job_handler(
    store: FakeJobStore, provider: FakeProvider, metrics: SenderMetrics, pause: ChannelPause | None = None
) -> JobHandler:
    return JobHandler(
        store=store,
        provider=provider,
        renderer=JinjaRenderer(),
        template=BUILTIN_EMAIL,
        faults=FaultPoints(None),
        clock=lambda: NOW,
        rng=lambda: 0.5,
        lease_seconds=120,
        metrics=metrics,
        pause=pause,
    )


@pytest.mark.parametrize(
    ("attempt", "error", "state", "series"),
    [
        (
            2,
            None,
            JobState.SENT,
            {attempts("sent"): 1, RECOVERIES: 1, LATENCY_COUNT: 1, LATENCY_SUM: 90.0},
        ),
        (
            1,
            ProviderError("response", "451", "4.3.0 Try later"),
            JobState.FAILED_TEMPORARY,
            {attempts("failed-temporary"): 1, failures("temporary"): 1},
        ),
        (
            2,
            ProviderError("response", "550", "5.1.1 User unknown"),
            JobState.FAILED_PERMANENT,
            {attempts("failed-permanent"): 1, failures("permanent"): 1},
        ),
        (
            3,
            ProviderError("timeout", None, "timed out"),
            JobState.DEAD_LETTER,
            {attempts("dead-letter"): 1, failures("temporary"): 1},
        ),
        (
            1,
            ProviderError("response", "535", "5.7.8 Authentication credentials invalid"),
            JobState.PENDING,
            {attempts("pending"): 1, failures("configuration"): 1},
        ),
    ],
)
async def test_the_handler_reports_each_recorded_attempt(
    attempt: int, error: ProviderError | None, state: JobState, series: dict[str, float]
) -> None:
    job = claimed(attempt=attempt)
    errors = {} if error is None else {job.email or "": error}
    metrics = new_metrics()
    pause = ChannelPause("email", FakePauseStore())
    assert await job_handler(FakeJobStore(job), FakeProvider(errors), metrics, pause).handle(1) is state
    assert moved(metrics) == series


async def test_a_temporary_failure_then_a_send_on_the_retry_is_one_recovery() -> None:
    metrics = new_metrics()
    job = claimed()
    refused = FakeProvider({job.email or "": ProviderError("response", "451", "4.3.0 Try later")})
    await job_handler(FakeJobStore(job), refused, metrics).handle(1)
    await job_handler(FakeJobStore(claimed(attempt=2)), FakeProvider(), metrics).handle(1)
    assert moved(metrics) == {
        attempts("failed-temporary"): 1,
        failures("temporary"): 1,
        attempts("sent"): 1,
        RECOVERIES: 1,
        LATENCY_COUNT: 1,
        LATENCY_SUM: 90.0,
    }


async def test_a_job_not_claimable_counts_nothing() -> None:
    metrics = new_metrics()
    assert await job_handler(FakeJobStore(), FakeProvider(), metrics).handle(1) is None
    assert moved(metrics) == {}


# -- admission: deferrals and the limits' waits -------------------------------------------------------


class Reserving:
    """Grants every send, ``wait_us`` ahead."""

    def __init__(self, wait_us: int) -> None:
        self.wait_us = wait_us

    async def acquire(self, limits: Sequence[Limit], max_wait_us: int) -> Verdict:
        return Granted(self.wait_us)


def admission(
    store: FakeAdmissionStore,
    pause: ChannelPause,
    metrics: SenderMetrics,
    limiter: Any = None,
    config: LimitConfig = CONFIG,
) -> Admission:
    return Admission(
        store,
        limiter or ClockLimiter(now_us=0),
        config,
        pause,
        metrics,
        lambda: NOW,
        reservation_seconds=0.05,
        queue_seconds=1.0,
        pause_retry_seconds=30.0,
    )


def batch_handler(
    jobs: FakeJobStore, provider: FakeProvider, gate: Admission, pause: ChannelPause, metrics: SenderMetrics
) -> BatchHandler:
    handler = job_handler(jobs, provider, metrics, pause)
    return BatchHandler(handler, "email", 1, FaultPoints(None), admission=gate)


async def test_each_deferral_is_counted_by_its_decision() -> None:
    metrics = new_metrics()
    gate = admission(FakeAdmissionStore(), ChannelPause("email", FakePauseStore()), metrics)
    # 1/s on slow.test: the first goes now, the second joins the limit's line, the third is deferred.
    verdicts = [await gate.admit(route(i, "slow.test")) for i in range(1, 4)]
    assert [type(v).__name__ for v in verdicts] == ["Admit", "Admit", "Deferral"]
    rules = Rules(send_windows={"sms": SendWindowRule(start="09:00", end="20:00")})
    assert isinstance(await gate.admit(route(4, channel="sms", phone="+15005550006", rules=rules)), Deferral)
    gate.pause.paused = True
    assert isinstance(await gate.admit(route(5)), Deferral)
    assert moved(metrics) == {
        deferrals("queued:domain"): 1,
        deferrals("rate-limited:domain"): 1,
        deferrals("send-window", channel="sms"): 1,
        deferrals("channel-paused"): 1,
    }


async def test_a_job_admitted_before_the_channel_paused_is_counted_when_deferred_at_its_start() -> None:
    metrics = new_metrics()
    pause = ChannelPause("email", FakePauseStore())
    store = FakeAdmissionStore(route(1), route(2))
    jobs = FakeJobStore(claimed(1, "fast.test"), claimed(2, "fast.test"))
    refused = ProviderError("response", "535", "5.7.8 Authentication credentials invalid")
    provider = FakeProvider({"shopper1@fast.test": refused})
    await batch_handler(jobs, provider, admission(store, pause, metrics), pause, metrics)(
        JobBatch(channel="email", job_ids=[1, 2])
    )
    assert [d.job_id for d in store.deferred] == [2]  # admitted, then deferred before its claim
    assert moved(metrics) == {
        attempts("pending"): 1,
        failures("configuration"): 1,
        deferrals("channel-paused"): 1,
    }


async def test_a_reserved_wait_is_observed_as_a_limit_wait() -> None:
    metrics = new_metrics()
    pause = ChannelPause("email", FakePauseStore())
    store = FakeAdmissionStore(route(1, "slow.test"))
    gate = admission(store, pause, metrics, Reserving(100_000))  # granted 100 ms ahead
    jobs = FakeJobStore(claimed(1, "slow.test", enqueued_at=None))
    provider = FakeProvider()
    await batch_handler(jobs, provider, gate, pause, metrics)(JobBatch(channel="email", job_ids=[1]))
    assert provider.sent == ["shopper1@slow.test"]
    series = moved(metrics)
    assert series.pop(WAIT_SUM) == pytest.approx(0.1, abs=0.01)  # the planned wait, not a measured one
    assert series == {WAIT_COUNT: 1, attempts("sent"): 1}


async def test_a_send_that_goes_at_once_observes_no_wait() -> None:
    metrics = new_metrics()
    pause = ChannelPause("email", FakePauseStore())
    gate = admission(FakeAdmissionStore(route(1)), pause, metrics)  # fast.test: no limit
    jobs = FakeJobStore(claimed(1, "fast.test", enqueued_at=None))
    await batch_handler(jobs, FakeProvider(), gate, pause, metrics)(JobBatch(channel="email", job_ids=[1]))
    assert moved(metrics) == {attempts("sent"): 1}


# -- the channel monitor refreshes the dead-letter backlog ----------------------------------------------


class IdleConsumer:
    async def stop(self) -> None:
        return None


class NeverProbed:
    async def probe(self) -> ProviderError | None:
        raise AssertionError("a channel that is not paused is not probed")


async def test_each_monitor_tick_sets_the_operator_backlogs_to_the_stores_counts() -> None:
    async def start() -> Any:
        return IdleConsumer()

    metrics = new_metrics()
    store = FakePauseStore()
    monitor = ChannelMonitor(
        ChannelPause("email", store),
        NeverProbed(),
        ConsumerSwitch(start),
        interval=30.0,
        backlog=metrics.operator_backlog,  # as the app wires it
    )
    readings: list[tuple[float | None, float | None]] = []
    for dead, unknown in ((3, 2), (1, 2), (0, 0)):  # gauges: set to each reading, not added up
        store.backlog = OperatorBacklog(dead_letter=dead, indeterminate=unknown)
        await monitor.tick()
        readings.append(
            (
                metrics.registry.get_sample_value(BACKLOG_NAME, {"channel": "email"}),
                metrics.registry.get_sample_value(INDETERMINATE_NAME, {"channel": "email"}),
            )
        )
    assert readings == [(3, 2), (1, 2), (0, 0)]
