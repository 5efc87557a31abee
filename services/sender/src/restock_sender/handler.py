"""Sending: one job (claim -> re-check consent -> render -> stage -> mark -> send -> record) and one batch.

The order is the guarantee. The claim commits ``processing`` before the provider is called, so a
redelivered batch finds the job taken and sends nothing twice; the message is staged (handed over as far
as it goes without being deliverable: SMTP up to the final dot, ADR 23); right before the call the claim
is marked (committed), so a lease that expires unmarked is known unsent and the job is sent again (ADR 21);
the attempt's outcome and its log row commit together after the call. Every outcome goes through
``_conclude``, the one place a job's next state is decided (by ``delivery.TRANSITIONS``) and handed to the
store.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
import re
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

from restock_common.broker import Outcome
from restock_common.faults import FaultPoints
from restock_common.messages import Channel, JobBatch
from restock_common.telemetry import current_trace_id
from restock_sender.admission import CHANNEL_PAUSED, Admission, Admit
from restock_sender.call_window import CallWindow, Waiter
from restock_sender.delivery import (
    UNRENDERABLE_DECISION,
    Classification,
    Decision,
    Event,
    JobState,
    Permanent,
    ProviderError,
    classify,
    decide,
    next_state,
    spends_attempt,
)
from restock_sender.limiter import Limit, Releases
from restock_sender.outbound import EmailOutbound, Outbound, PublicLinks, Staged
from restock_sender.pause import ChannelPause
from restock_sender.ports import (
    AttemptRecord,
    ClaimedJob,
    Deferral,
    DeliveryMetrics,
    EmailProvider,
    JobStore,
    NoMetrics,
    NotClaimable,
    ProviderReceipt,
    RenderError,
    SmsProvider,
    TemplateRecord,
    TemplateRenderer,
    TemplateStore,
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
    if job.fulfilled_at is not None:
        # The shopper bought it since the freeze (or had their alerts): an alert now would be noise.
        return "fulfilled"
    if not (job.phone if job.channel == "sms" else job.email):
        return "no-contact"
    return None


def _redacted(detail: str, *contacts: str | None) -> str:
    """Provider replies often echo the recipient; personal data stays in ``subscriptions`` only."""
    for contact in filter(None, contacts):
        detail = re.sub(re.escape(contact), "<recipient>", detail, flags=re.IGNORECASE)
    return detail


# A reserved send (rate limits, ADR 16) is prepared this long before its instant and waits in its slot
# for the rest: long enough for a claim and a render on a loaded machine, short enough to hold few slots.
PREPARE_LEAD_SECONDS = 0.025


class _Release:
    """When a throttled send may call its provider (ADR 16, 23, 25): at its reserved instant, and at least
    one interval after this process's previous planned release on its tightest limit (a job whose turn came
    late does not go out in a bunch with the sends reserved after it; only the tightest: a saturated
    domain's releases, planned ahead, must not hold the shared global limit's other sends); then only when
    this process's calls actually made on every limit of the send stay within their count
    (``limiter.Releases``), checked again once the send holds its place in the provider-call window.

    The instant is planned once, before the send takes a slot (``BatchHandler``), so a send waits for it
    holding nothing: planned inside the slot, a domain's sends that came late each waited there one
    interval behind the other, and the slots they held were missing to every other domain (ADR 25)."""

    def __init__(
        self, send_at: float, limits: tuple[Limit, ...], planned: dict[str, float], releases: Releases
    ) -> None:
        self.send_at = send_at  # the reserved instant, on the event loop's clock
        self.limits = limits
        self.planned = planned  # per tightest limit key: this process's next release, no sooner
        self.releases = releases
        self._at: float | None = None

    def plan(self) -> float:
        """The release instant on the event loop's clock, fixed by the first call (sends are planned in the
        order they were admitted)."""
        if self._at is None:
            tightest = max(self.limits, key=lambda limit: limit.interval_us)
            now = asyncio.get_running_loop().time()
            self._at = max(self.send_at, now, self.planned.get(tightest.key, -math.inf))
            # The nominal interval, not the headroom's wider one: a send that came late is followed at the
            # limit's own rate until the backlog is back on its reservations (the guard keeps the count).
            self.planned[tightest.key] = self._at + 1.0 / tightest.per_second
        return self._at

    async def wait(self) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, self.plan() - loop.time()))
        # A guard wait ends when the oldest counted call leaves its window: a deadline, not an event.
        while (wait := self.releases.wait(self.limits, loop.time())) > 0:  # noqa: ASYNC110
            await asyncio.sleep(wait)

    def ready(self) -> bool:
        """Whether a call now would keep every limit within its count (nothing is counted yet)."""
        return self.releases.wait(self.limits, asyncio.get_running_loop().time()) <= 0

    async def at_call(self) -> None:
        """Count the call, right before it is made (after the mark, whose commit time varies): the count
        is of the instants calls actually went out. Waits only if another send took the room meanwhile."""
        loop = asyncio.get_running_loop()
        while not self.releases.take(self.limits, loop.time()):  # noqa: ASYNC110 - a deadline, not an event
            await asyncio.sleep(self.releases.wait(self.limits, loop.time()))


# The current task's release (set per task by BatchHandler; ``None``: an unthrottled send goes at once).
_release: contextvars.ContextVar[_Release | None] = contextvars.ContextVar("release", default=None)


class _NotStarted(Exception):
    """A job of a batch left unclaimed because the process is stopping."""


@dataclass
class _Progress:
    """How far one attempt got: past this, an exception may follow a message the provider accepted."""

    provider_called: bool = False


def _always() -> bool:
    return True


@dataclass
class _Held:
    """The provider-call window as one send holds it: how it came in (``marked``: by the previous holder's
    statement, ``None``: it marks itself) and whom it hands the window to when it leaves."""

    window: CallWindow[ClaimedJob] | None
    marked: bool | None
    successor: Waiter[ClaimedJob] | None = None
    successor_marked: bool | None = None


class JobHandler:
    """Delivers one notification job on its channel (``outbound``: email unless told otherwise)."""

    def __init__(
        self,
        store: JobStore,
        provider: EmailProvider | SmsProvider,
        renderer: TemplateRenderer,
        template: TemplateRecord,
        faults: FaultPoints,
        clock: Callable[[], datetime],
        rng: Callable[[], float],
        lease_seconds: int,
        *,
        outbound: Outbound | None = None,
        templates: TemplateStore | None = None,
        links: PublicLinks | None = None,
        metrics: DeliveryMetrics | None = None,
        pause: ChannelPause | None = None,
        unconfirmed_sends: int | None = None,
    ) -> None:
        self.store = store
        # Sends past their provider-call mark and not yet recorded, at most (None: no bound).
        self._window: CallWindow[ClaimedJob] | None = (
            CallWindow(unconfirmed_sends) if unconfirmed_sends else None
        )
        self.provider = provider
        self.outbound: Outbound = outbound or EmailOutbound(cast(EmailProvider, provider))
        self.renderer = renderer
        self.template = template  # the channel's built-in alert, for jobs without a pinned template
        self.templates = templates
        self.links = links
        self.metrics: DeliveryMetrics = metrics or NoMetrics()
        self.pause = pause  # a configuration error pauses the channel (ADR 16)
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
        progress = _Progress()
        with tracer.start_as_current_span(
            "send notification", context=_job_context(claim), attributes=attributes
        ):
            try:
                return await self._attempt(claim, progress)
            except Exception:
                if not progress.provider_called:
                    await self._give_back(claim)
                raise

    async def _give_back(self, job: ClaimedJob) -> None:
        """The attempt failed (a lost database connection, say) before the provider was called: nothing was
        sent, so the claim is given back rather than left to expire into ``indeterminate``."""
        try:
            released = await self.store.release(job)
        except Exception:  # the lease is the backstop
            log.exception(
                "claim could not be given back; its lease will expire", extra={"job_id": job.job_id}
            )
            return
        log.warning(
            "attempt failed before the provider call; claim given back",
            extra={"job_id": job.job_id, "released": released},
        )

    async def _attempt(self, job: ClaimedJob, progress: _Progress) -> JobState | None:
        started = self.clock()
        reason = _skip_reason(job)
        if reason is not None:
            return await self._conclude(job, Decision(Event.OPTED_OUT), started, decision_note=reason)
        unsubscribe_url = self.links.unsubscribe(job.subscription_id) if self.links else ""
        variables = restock_variables(job.shop_domain, job.variant_id, job.product_title, unsubscribe_url)
        template = await self._template(job)
        try:
            if template is None:
                raise RenderError(f"template {job.template_id} pinned on the job does not exist")
            rendered = self.renderer.render(template, variables)
        except RenderError as error:
            # Not the channel's fault (no pause) nor the recipient's, and the version is pinned, so no retry
            # can render it: dead-lettered at once, where the backlog gauge and operators see it (ADR 28).
            log.error(
                "pinned template does not render; job dead-lettered",
                extra={"job_id": job.job_id, "template_id": job.template_id, "reason": str(error)[:200]},
            )
            return await self._conclude(
                job,
                Decision(Event.UNRENDERABLE),
                started,
                decision_note=UNRENDERABLE_DECISION,
                variables=variables,
                error_kind="configuration",
                error_detail=str(error)[:2000],
                template=template,
            )
        try:
            staged = await self.outbound.prepare(job, rendered, unsubscribe_url)()
        except ProviderError as error:  # refused before anything could be delivered (a bad number, a 550)
            return await self._failed(job, error, started, variables, template)
        try:
            return await self._send_staged(job, staged, progress, started, variables, template)
        finally:
            staged.abort()  # not sent (a refused mark, a lost database, a cancel): nothing is delivered

    async def _send_staged(
        self,
        job: ClaimedJob,
        staged: Staged,
        progress: _Progress,
        started: datetime,
        variables: Mapping[str, Any],
        template: TemplateRecord | None,
    ) -> JobState | None:
        """Mark, call, record. From the mark to the record, a crash leaves the outcome unknown: this process
        keeps at most ``unconfirmed_sends`` jobs there (email; ADR 21), so a crash leaves no more
        indeterminate jobs. Staging (all of SMTP but the final dot, ADR 23) stays out of it."""
        async with self._provider_call_window(job) as held:
            marked = held.marked if held.marked is not None else await self.store.mark_provider_call(job)
            if not marked:
                log.warning(
                    "lease ended before the provider call; nothing sent", extra={"job_id": job.job_id}
                )
                return None
            self.faults.reach("before_provider_call")
            progress.provider_called = True
            release = _release.get()
            if release is not None:
                await release.at_call()
            try:
                sent = await staged.send()
            except ProviderError as error:
                return await self._failed(job, error, started, variables, template, held=held)
            self.faults.reach("after_provider_ok_before_commit")
            return await self._conclude(
                job,
                decide(None, job.attempt, job.policy, self.rng),
                started,
                variables=variables,
                receipt=sent.receipt,
                template=template,
                segments=sent.segments,
                held=held,
            )

    @contextlib.asynccontextmanager
    async def _provider_call_window(self, job: ClaimedJob) -> AsyncIterator[_Held]:
        """Inside the bound on unconfirmed sends, at the task's reserved instant, with room under the
        release guard (ADR 23). The guard is checked only once the bound is held, so a send that queued
        for the bound is not let out in a bunch with the sends behind it; when it must wait, it waits
        outside the bound, so nobody else's send waits behind a saturated limit's. The call itself is
        counted after the mark (``_Release.at_call``); with one unconfirmed send (email's default) nobody
        can take the room in between. A send handed the window by the previous holder (ADR 25) comes in
        already marked, and only while its guard lets it go at once."""
        release = _release.get()
        window = self._window
        ready = release.ready if release is not None else _always
        while True:
            if release is not None:
                await release.wait()
            if window is None:
                held = _Held(None, None)
                break
            entry = await window.enter(job, ready)
            held = _Held(window, entry.marked)
            if entry.marked is not None or ready():
                break
            window.leave()
        try:
            yield held
        finally:
            if window is not None:
                window.leave(held.successor, held.successor_marked)

    async def _record(self, record: AttemptRecord, held: _Held | None) -> bool:
        """The attempt's record; from inside the window, with the mark of the first send waiting for it
        that may go now, in the same statement (ADR 25), and the window then goes to that send."""
        window = held.window if held is not None else None
        successor = window.take_next() if window is not None and not record.opted_out_at_provider else None
        if held is None or window is None or successor is None:
            return await self.store.record(record)
        try:
            applied, marked = await self.store.record_and_mark(record, successor.payload)
        except BaseException:
            window.requeue(successor)  # unmarked: it marks itself once the window comes to it
            raise
        held.successor, held.successor_marked = successor, marked
        return applied

    async def _template(self, job: ClaimedJob) -> TemplateRecord | None:
        """The version pinned at freeze (marked used from now on), or the channel's built-in one."""
        if job.template_id is None or self.templates is None:
            return self.template
        # Marked first: from then on the version cannot be rewritten, so what is loaded (and cached) stays.
        await self.templates.mark_used(job.template_id)
        return await self.templates.load(job.template_id)

    async def _failed(
        self,
        job: ClaimedJob,
        error: ProviderError,
        started: datetime,
        variables: Mapping[str, Any],
        template: TemplateRecord | None = None,
        *,
        held: _Held | None = None,
    ) -> JobState:
        classification: Classification = classify(error)
        if classification.kind == "configuration":
            log.error(
                "provider refused our configuration; job returned to pending",
                extra={"job_id": job.job_id, "error_code": error.code, "reason": classification.reason},
            )
            if self.pause is not None:
                await self.pause.pause(classification.reason, error.code)
        elif classification.kind == "unknown":
            log.error(
                "provider's answer lost after the request went out; job indeterminate, not sent again",
                extra={"job_id": job.job_id, "error_kind": error.kind},
            )
        decision = decide(classification, job.attempt, job.policy, self.rng)
        return await self._conclude(
            job,
            decision,
            started,
            decision_note=CHANNEL_PAUSED if classification.kind == "configuration" else None,
            variables=variables,
            error_kind=classification.kind,
            error_code=error.code,
            error_detail=_redacted(f"{error.kind}: {error.detail}", job.email, job.phone)[:2000],
            template=template,
            opted_out_at_provider=isinstance(classification, Permanent) and classification.opted_out,
            held=held,
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
        template: TemplateRecord | None = None,
        segments: int | None = None,
        opted_out_at_provider: bool = False,
        held: _Held | None = None,
    ) -> JobState:
        """Decide the next state from the table and record the attempt: the one place state is written
        (``held``: the provider-call window this attempt holds, whose next send the record may mark)."""
        state = next_state(job.state, decision.event)
        retry_at = started + timedelta(seconds=decision.retry_in) if decision.retry_in is not None else None
        record = AttemptRecord(
            job=job,
            state=state,
            provider=None if variables is None else self.outbound.provider,
            receipt=receipt,
            error_kind=error_kind,
            error_code=error_code,
            error_detail=error_detail,
            next_attempt_at=retry_at,
            decision=decision_note,
            template=None if variables is None else (template or self.template),
            variables=dict(variables or {}),
            trace_id=current_trace_id(),
            started_at=started,
            segments=segments,
            opted_out_at_provider=opted_out_at_provider,
            attempt_spent=spends_attempt(decision.event),
        )
        applied = await self._record(record, held)
        self.metrics.attempt_recorded(job, state, error_kind)
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

    def __init__(
        self,
        jobs: JobHandler,
        channel: Channel,
        concurrency: int,
        faults: FaultPoints,
        *,
        admission: Admission | None = None,
    ) -> None:
        self.jobs = jobs
        self.channel = channel
        self.faults = faults
        self.admission = admission  # None: every job is claimed at once (no limits, windows or pause)
        self._next_release: dict[str, float] = {}  # per limit key: no release of this process sooner
        self._releases = Releases()  # this process's provider calls per limit (the release guard)
        self._slots = asyncio.Semaphore(concurrency)
        self._stopping = False

    async def __call__(self, batch: JobBatch) -> Outcome:
        if batch.channel != self.channel:
            log.error(
                "batch for another channel", extra={"channel": batch.channel, "jobs": len(batch.job_ids)}
            )
            return Outcome.POISON
        results = await self._run_in_order(batch.job_ids)
        failures = [result for result in results if isinstance(result, BaseException)]
        if failures and all(isinstance(failure, _NotStarted) for failure in failures):
            log.info("stopping: batch requeued with jobs not started", extra={"not_started": len(failures)})
            return Outcome.REQUEUE
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
        failure: Exception | None = None
        try:
            await self._start_admitted(job_ids, tasks)
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            raise
        except Exception as error:  # admission failed: the started jobs finish, the batch is requeued
            failure = error
        results: list[object] = list(await asyncio.gather(*tasks, return_exceptions=True))
        return results if failure is None else [*results, failure]

    async def _start_admitted(self, job_ids: list[int], tasks: list[asyncio.Task[JobState | None]]) -> None:
        """Start each admitted job in FIFO order: now (in a free slot) or after its reserved wait (holding no
        slot meanwhile); write the deferrals of the others (ADR 16: no head-of-line blocking)."""
        if self.admission is None:
            for job_id in job_ids:
                await self._slots.acquire()
                tasks.append(asyncio.create_task(self._run(job_id)))
            return
        routes = await self.admission.routes(job_ids)
        loop = asyncio.get_running_loop()
        deferrals: list[Deferral] = []
        for job_id in job_ids:
            route = routes.get(job_id)
            if route is None:  # no longer pending: nothing to claim
                continue
            verdict = await self.admission.admit(route)
            if isinstance(verdict, Deferral):
                deferrals.append(verdict)
                continue
            release = None if verdict.turn is not None else self._release(verdict.wait, verdict.limits)
            if verdict.turn is not None or (
                release is not None and release.plan() - loop.time() > PREPARE_LEAD_SECONDS
            ):
                tasks.append(asyncio.create_task(self._run_after(job_id, verdict, release)))
            else:
                await self._slots.acquire()
                tasks.append(asyncio.create_task(self._run_paced(job_id, release)))
        if deferrals:
            await self.admission.defer(deferrals)

    def _release(self, wait: float, limits: tuple[Limit, ...]) -> _Release | None:
        """The release of a send reserved ``wait`` seconds from now (``None``: unthrottled, goes at once)."""
        if not limits:
            return None
        send_at = asyncio.get_running_loop().time() + wait
        return _Release(send_at, limits, self._next_release, self._releases)

    async def _run_after(self, job_id: int, admitted: Admit, release: _Release | None) -> JobState | None:
        """A job with a reservation: sleep (no slot) until shortly before its planned release, then claim,
        render and stage in a slot, and call the provider at that instant itself (``_Release``), so the
        claim's, the render's and the staging's varying delays do not bunch sends at the provider."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            if admitted.turn is not None:  # in a limit's line: the reservation comes with the turn
                release = self._release(await admitted.turn.wait(), admitted.limits)
            at = release.plan() if release is not None else loop.time()
            await asyncio.sleep(max(0.0, at - loop.time() - PREPARE_LEAD_SECONDS))
            self.jobs.metrics.waited(self.channel, at - started)
            await self._slots.acquire()
            _release.set(release)
            return await self._run(job_id)
        finally:
            if admitted.turn is not None:
                admitted.turn.done()

    async def _run_paced(self, job_id: int, release: _Release | None) -> JobState | None:
        """A job admitted (nearly) at once, already in its slot."""
        _release.set(release)
        return await self._run(job_id)

    def stop_starting(self) -> None:
        """Graceful shutdown: jobs already started finish; the rest of every batch is left unclaimed, and
        its message requeued, instead of working through the whole prefetched backlog before exiting."""
        self._stopping = True

    async def _run(self, job_id: int) -> JobState | None:
        try:
            if self._stopping:
                raise _NotStarted(job_id)
            if self.admission is not None and await self.admission.defer_if_paused(job_id, self.channel):
                return None
            return await self.jobs.handle(job_id)
        finally:
            self._slots.release()
