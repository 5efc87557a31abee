"""Sending: one job (claim -> re-check consent -> render -> send -> record) and one batch of jobs.

The order is the guarantee. The claim commits ``processing`` before the provider is called, so a
redelivered batch finds the job taken and sends nothing twice; the attempt's outcome and its log row
commit together after the call. Every outcome goes through ``_conclude``, the one place a job's next state
is decided (by ``delivery.TRANSITIONS``) and handed to the store.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

from restock_common.broker import Outcome
from restock_common.faults import FaultPoints
from restock_common.messages import Channel, JobBatch
from restock_common.telemetry import current_trace_id, current_traceparent
from restock_sender.delivery import (
    Classification,
    Decision,
    Event,
    JobState,
    ProviderError,
    classify,
    decide,
    next_state,
)
from restock_sender.ports import (
    AttemptRecord,
    ClaimedJob,
    EmailMessage,
    EmailProvider,
    JobStore,
    NotClaimable,
    ProviderReceipt,
    RenderError,
    TemplateRecord,
    TemplateRenderer,
)
from restock_sender.templates import restock_variables

log = logging.getLogger(__name__)
tracer = trace.get_tracer("restock.sender")


def _job_context(job: ClaimedJob) -> otel_context.Context | None:
    """The job's own trace (stored at freeze), so a retry hours later joins the restock's trace."""
    return propagate.extract({"traceparent": job.traceparent}) if job.traceparent else None


def _skip_reason(job: ClaimedJob) -> str | None:
    """Why this job must not be sent any more (consent is re-checked at send time), if it must not."""
    if job.subscription_state != "confirmed" or job.unsubscribed_at is not None:
        return "opted-out"
    if not job.email:
        return "no-contact"
    return None


def _redacted(detail: str, address: str | None) -> str:
    """Provider replies often echo the recipient; personal data stays in ``subscriptions`` only."""
    if not address:
        return detail
    return re.sub(re.escape(address), "<recipient>", detail, flags=re.IGNORECASE)


class JobHandler:
    """Delivers one notification job by email."""

    def __init__(
        self,
        store: JobStore,
        provider: EmailProvider,
        renderer: TemplateRenderer,
        template: TemplateRecord,
        faults: FaultPoints,
        clock: Callable[[], datetime],
        rng: Callable[[], float],
        lease_seconds: int,
    ) -> None:
        self.store = store
        self.provider = provider
        self.renderer = renderer
        self.template = template
        self.faults = faults
        self.clock = clock
        self.rng = rng
        self.lease_seconds = lease_seconds

    async def handle(self, job_id: int) -> JobState | None:
        """The job's new state, or ``None`` when it was not ours to send."""
        claim = await self.store.claim(job_id, self.lease_seconds)
        if isinstance(claim, NotClaimable):
            log.info("job not claimable, skipped", extra={"job_id": job_id})
            return None
        self.faults.reach("after_claim")
        attributes = {"restock.job_id": claim.job_id, "restock.attempt": claim.attempt}
        with tracer.start_as_current_span(
            "send notification", context=_job_context(claim), attributes=attributes
        ):
            return await self._attempt(claim)

    async def _attempt(self, job: ClaimedJob) -> JobState:
        started = self.clock()
        reason = _skip_reason(job)
        if reason is not None:
            return await self._conclude(job, Decision(Event.OPTED_OUT), started, decision_note=reason)
        variables = restock_variables(job.shop_domain, job.variant_id, job.product_title)
        try:
            rendered = self.renderer.render(self.template, variables)
        except RenderError as error:
            return await self._conclude(
                job,
                Decision(Event.CONFIGURATION_ERROR),
                started,
                variables=variables,
                error_kind="configuration",
                error_detail=str(error),
            )
        assert job.email is not None  # _skip_reason refused a job without an address
        message = EmailMessage(
            to=job.email,
            subject=rendered.subject,
            text=rendered.text,
            html=rendered.html,
            notification_key=job.notification_key,
            shop_domain=job.shop_domain,
            traceparent=current_traceparent(),
        )
        self.faults.reach("before_provider_call")
        try:
            receipt = await self.provider.send(message)
        except ProviderError as error:
            return await self._failed(job, error, started, variables)
        self.faults.reach("after_provider_ok_before_commit")
        return await self._conclude(
            job,
            decide(None, job.attempt, job.policy, self.rng),
            started,
            variables=variables,
            receipt=receipt,
        )

    async def _failed(
        self, job: ClaimedJob, error: ProviderError, started: datetime, variables: Mapping[str, Any]
    ) -> JobState:
        classification: Classification = classify(error)
        if classification.kind == "configuration":
            log.error(
                "provider refused our configuration; job returned to pending",
                extra={"job_id": job.job_id, "error_code": error.code, "reason": classification.reason},
            )
        decision = decide(classification, job.attempt, job.policy, self.rng)
        return await self._conclude(
            job,
            decision,
            started,
            variables=variables,
            error_kind=classification.kind,
            error_code=error.code,
            error_detail=_redacted(f"{error.kind}: {error.detail}", job.email)[:2000],
        )

    async def _conclude(
        self,
        job: ClaimedJob,
        decision: Decision,
        started: datetime,
        *,
        decision_note: str | None = None,
        variables: Mapping[str, Any] | None = None,
        receipt: ProviderReceipt | None = None,
        error_kind: str | None = None,
        error_code: str | None = None,
        error_detail: str | None = None,
    ) -> JobState:
        """Decide the next state from the table and record the attempt: the one place state is written."""
        state = next_state(job.state, decision.event)
        retry_at = started + timedelta(seconds=decision.retry_in) if decision.retry_in is not None else None
        record = AttemptRecord(
            job=job,
            state=state,
            provider=None if variables is None else "smtp",
            receipt=receipt,
            error_kind=error_kind,
            error_code=error_code,
            error_detail=error_detail,
            next_attempt_at=retry_at,
            decision=decision_note,
            template=None if variables is None else self.template,
            variables=dict(variables or {}),
            trace_id=current_trace_id(),
            started_at=started,
        )
        applied = await self.store.record(record)
        log.info(
            "attempt recorded",
            extra={
                "job_id": job.job_id,
                "attempt": job.attempt,
                "state": state.value,
                "applied": applied,
                "error_code": error_code,
            },
        )
        return state


class BatchHandler:
    """The consumer handler of ``jobs.<channel>``: every job of a batch, started in FIFO order, at most
    ``concurrency`` at once across all batches of this process; acked when every outcome committed."""

    def __init__(self, jobs: JobHandler, channel: Channel, concurrency: int, faults: FaultPoints) -> None:
        self.jobs = jobs
        self.channel = channel
        self.faults = faults
        self._slots = asyncio.Semaphore(concurrency)

    async def __call__(self, batch: JobBatch) -> Outcome:
        if batch.channel != self.channel:
            log.error(
                "batch for another channel", extra={"channel": batch.channel, "jobs": len(batch.job_ids)}
            )
            return Outcome.POISON
        results = await self._run_in_order(batch.job_ids)
        failures = [result for result in results if isinstance(result, BaseException)]
        if failures:
            # Finished jobs are recorded and will not be claimed again; the rest is retried on redelivery.
            log.error(
                "jobs failed in batch; requeued",
                extra={"failed": len(failures), "jobs": len(results)},
                exc_info=failures[0],
            )
            return Outcome.REQUEUE
        self.faults.reach("after_commit_before_ack")
        return Outcome.ACK

    async def _run_in_order(self, job_ids: list[int]) -> list[object]:
        tasks: list[asyncio.Task[JobState | None]] = []
        try:
            for job_id in job_ids:
                await self._slots.acquire()
                tasks.append(asyncio.create_task(self._run(job_id)))
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            raise
        return list(await asyncio.gather(*tasks, return_exceptions=True))

    async def _run(self, job_id: int) -> JobState | None:
        try:
            return await self.jobs.handle(job_id)
        finally:
            self._slots.release()
