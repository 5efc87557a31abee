"""The sender's Prometheus metrics (spec "Pipeline Observability", issue 7 item 9) and its ``/metrics`` route.

One ``CollectorRegistry`` per app (built in ``app.py``), never the global one, so two apps in one test
process do not collide (which is why ``/metrics`` is our route: Litestar's ``PrometheusController`` always
serves the global ``REGISTRY``). The handler reports through the ``DeliveryMetrics`` port; the alerts the spec
asks for are PromQL over these series:

- queue latency, enqueue -> sent: ``restock_sender_queue_latency_seconds`` (histogram, from the job's
  ``enqueued_at``; a deferred job keeps it, so the wait for a limit or a window counts);
- sends by outcome: ``restock_sender_attempts_total{channel, outcome}`` (outcome = the job's new state);
- temporary vs permanent failure rate: ``restock_sender_failures_total{channel, kind}``
  (``temporary``, ``permanent``, ``configuration``) over ``attempts_total``;
- retry recovery rate: ``restock_sender_retry_recoveries_total`` (sent on attempt > 1) over
  ``failures_total{kind="temporary"}``;
- dead-letter backlog: ``restock_sender_dead_letter_backlog`` (gauge, refreshed by the channel monitor), and
  beside it ``restock_sender_indeterminate_backlog``, the jobs whose outcome is unknown (ADR 21, 28), which
  only an operator resolves;
- limiter: ``restock_sender_deferrals_total{channel, decision}`` (held back before the claim: in
  PostgreSQL as ``rate-limited:<limit>``, ``send-window``, ``channel-paused``; in a limit's in-memory
  line as ``queued:<limit>``) and ``restock_sender_limit_wait_seconds`` (admission to reserved send).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from litestar import get
from litestar.handlers import HTTPRouteHandler
from litestar.response import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from restock_sender.delivery import JobState
from restock_sender.ports import ClaimedJob, OperatorBacklog

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0)
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)


class SenderMetrics:
    """``DeliveryMetrics`` into a Prometheus registry."""

    def __init__(self, registry: CollectorRegistry, clock: Callable[[], datetime] | None = None) -> None:
        self.registry = registry
        self.clock = clock or (lambda: datetime.now(UTC))
        self.latency = Histogram(
            "restock_sender_queue_latency_seconds",
            "Seconds from a job's enqueue to its sent commit",
            ["channel"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.attempts = Counter(
            "restock_sender_attempts",
            "Attempts recorded, by the job's new state",
            ["channel", "outcome"],
            registry=registry,
        )
        self.failures = Counter(
            "restock_sender_failures",
            "Failed attempts by classification",
            ["channel", "kind"],
            registry=registry,
        )
        self.recoveries = Counter(
            "restock_sender_retry_recoveries",
            "Jobs sent on a retry (attempt > 1)",
            ["channel"],
            registry=registry,
        )
        self.backlog = Gauge(
            "restock_sender_dead_letter_backlog", "Jobs in dead-letter", ["channel"], registry=registry
        )
        self.indeterminate = Gauge(
            "restock_sender_indeterminate_backlog",
            "Jobs indeterminate (outcome unknown, never re-sent automatically)",
            ["channel"],
            registry=registry,
        )
        self.deferrals = Counter(
            "restock_sender_deferrals",
            "Jobs deferred unclaimed, by decision",
            ["channel", "decision"],
            registry=registry,
        )
        self.waits = Histogram(
            "restock_sender_limit_wait_seconds",
            "Reserved waits slept before a send (rate limits)",
            ["channel"],
            buckets=WAIT_BUCKETS,
            registry=registry,
        )

    def attempt_recorded(self, job: ClaimedJob, state: JobState, error_kind: str | None) -> None:
        self.attempts.labels(job.channel, state.value).inc()
        if error_kind is not None:
            self.failures.labels(job.channel, error_kind).inc()
        if state is JobState.SENT:
            if job.attempt > 1:
                self.recoveries.labels(job.channel).inc()
            if job.enqueued_at is not None:
                latency = (self.clock() - job.enqueued_at).total_seconds()
                self.latency.labels(job.channel).observe(max(latency, 0.0))

    def deferred(self, channel: str, decision: str) -> None:
        self.deferrals.labels(channel, decision).inc()

    def waited(self, channel: str, seconds: float) -> None:
        self.waits.labels(channel).observe(seconds)

    def operator_backlog(self, channel: str, backlog: OperatorBacklog) -> None:
        """The channel monitor's reading of the jobs that wait for an operator."""
        self.backlog.labels(channel).set(backlog.dead_letter)
        self.indeterminate.labels(channel).set(backlog.indeterminate)


def metrics_route(registry: CollectorRegistry) -> HTTPRouteHandler:
    """``GET /metrics``: the registry in Prometheus text format."""

    @get("/metrics", include_in_schema=False, sync_to_thread=False)
    def metrics() -> Response[bytes]:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return metrics
