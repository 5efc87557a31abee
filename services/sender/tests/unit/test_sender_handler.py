"""The send orchestration with recording fakes: which state each outcome records, and what is sent."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from restock_common.broker import Outcome
from restock_common.faults import FaultPoints
from restock_common.messages import JobBatch
from restock_sender.delivery import JobState, ProviderError, RetryPolicy
from restock_sender.handler import BatchHandler, JobHandler
from restock_sender.ports import (
    AttemptRecord,
    ClaimedJob,
    EmailMessage,
    NotClaimable,
    ProviderReceipt,
    RenderedMessage,
    RenderError,
    StagedEmail,
    TemplateRecord,
)
from restock_sender.templates import BUILTIN_EMAIL, JinjaRenderer

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
POLICY = RetryPolicy(max_attempts=3, base_seconds=30.0, cap_seconds=3600.0)


def claimed(job_id: int = 1, **changes: Any) -> ClaimedJob:
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
        "product_title": "Blue <Shirt>",
        "email": "a@example.com",
        "subscription_state": "confirmed",
        "unsubscribed_at": None,
        "policy": POLICY,
    }
    values.update(changes)
    return ClaimedJob(**values)


class FakeJobStore:
    """Hands out the given jobs once each (a second claim is NotClaimable) and records every attempt."""

    def __init__(self, *jobs: ClaimedJob) -> None:
        self.jobs = {job.job_id: job for job in jobs}
        self.claims: list[int] = []
        self.records: list[AttemptRecord] = []
        self.marked: list[int] = []  # provider-call marks, in order
        self.released: list[int] = []
        self.handed_over: list[tuple[int, int]] = []  # (recorded job, job marked in the same statement)

    async def claim(self, job_id: int, lease_seconds: int) -> ClaimedJob | NotClaimable:
        self.claims.append(job_id)
        job = self.jobs.pop(job_id, None)
        return job if job is not None else NotClaimable(job_id)

    async def release(self, job: ClaimedJob) -> bool:
        self.released.append(job.job_id)
        return True

    async def mark_provider_call(self, job: ClaimedJob) -> bool:
        self.marked.append(job.job_id)
        return True

    async def record(self, record: AttemptRecord) -> bool:
        self.records.append(record)
        return True

    async def record_and_mark(self, record: AttemptRecord, next_job: ClaimedJob) -> tuple[bool, bool]:
        """The record, then the next job's mark (the real store commits both at once)."""
        self.handed_over.append((record.job.job_id, next_job.job_id))
        applied = await self.record(record)
        return applied, await self.mark_provider_call(next_job)


class FakeProvider:
    """Accepts every message, or raises the error configured for its recipient."""

    def __init__(self, errors: Mapping[str, ProviderError] | None = None) -> None:
        self.errors = dict(errors or {})
        self.sent: list[EmailMessage] = []

    def prepare(self, message: EmailMessage) -> Callable[[], Awaitable[ProviderReceipt]]:
        return functools.partial(self.send, message)  # a subclass's ``send`` is the one prepared

    async def send(self, message: EmailMessage) -> ProviderReceipt:
        if message.to in self.errors:
            raise self.errors[message.to]
        self.sent.append(message)
        return ProviderReceipt("smtp", f"<{message.notification_key}>", "250 OK")


class BrokenRenderer:
    def render(self, template: TemplateRecord, variables: Mapping[str, Any]) -> RenderedMessage:
        raise RenderError("undefined variable")


class RecordingFaults(FaultPoints):
    def __init__(self) -> None:
        super().__init__(None)
        self.reached: list[str] = []

    def reach(self, name: str) -> None:
        self.reached.append(name)


def make_handler(
    store: FakeJobStore,
    provider: FakeProvider,
    renderer: Any = None,
    faults: FaultPoints | None = None,
    unconfirmed_sends: int | None = None,
) -> JobHandler:
    return JobHandler(
        store=store,
        provider=provider,
        renderer=renderer or JinjaRenderer(),
        template=BUILTIN_EMAIL,
        faults=faults or FaultPoints(None),
        clock=lambda: NOW,
        rng=lambda: 0.5,
        lease_seconds=120,
        unconfirmed_sends=unconfirmed_sends,
    )


async def test_sent_path_renders_sends_and_records_sent() -> None:
    store, provider, faults = FakeJobStore(claimed()), FakeProvider(), RecordingFaults()
    assert await make_handler(store, provider, faults=faults).handle(1) is JobState.SENT
    [message] = provider.sent
    assert message.to == "a@example.com"
    assert message.subject == "Blue <Shirt> is back in stock"
    assert message.html is not None
    assert "Blue &lt;Shirt&gt;" in message.html
    assert "https://shop.myshopify.com/variants/42" in message.text
    [record] = store.records
    assert record.state is JobState.SENT
    assert record.receipt is not None
    assert record.receipt.response == "250 OK"
    assert record.template is BUILTIN_EMAIL
    assert record.variables["product_url"] == "https://shop.myshopify.com/variants/42"
    assert "a@example.com" not in repr(dict(record.variables))
    assert faults.reached == ["after_claim", "before_provider_call", "after_provider_ok_before_commit"]
    assert store.marked == [1]


async def test_job_carries_its_stored_trace_into_the_message() -> None:
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    store, provider = FakeJobStore(claimed(traceparent=traceparent)), FakeProvider()
    await make_handler(store, provider).handle(1)
    assert provider.sent[0].traceparent is not None
    assert provider.sent[0].traceparent.split("-")[1] == "0af7651916cd43dd8448eb211c80319c"
    assert store.records[0].trace_id == "0af7651916cd43dd8448eb211c80319c"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"subscription_state": "unsubscribed", "unsubscribed_at": NOW}, "opted-out"),
        ({"unsubscribed_at": NOW}, "opted-out"),
        ({"subscription_state": "pending"}, "opted-out"),
        ({"email": None}, "no-contact"),
        ({"fulfilled_at": NOW}, "fulfilled"),
    ],
)
async def test_opted_out_subscription_is_skipped_without_sending(
    changes: dict[str, Any], reason: str
) -> None:
    store, provider = FakeJobStore(claimed(**changes)), FakeProvider()
    assert await make_handler(store, provider).handle(1) is JobState.SKIPPED_OPTED_OUT
    assert provider.sent == []
    assert store.records[0].state is JobState.SKIPPED_OPTED_OUT
    assert store.records[0].decision == reason


async def test_permanent_failure_records_failed_permanent_with_the_reply() -> None:
    error = ProviderError("response", "550", "5.1.1 <A@Example.com>: User unknown")
    store, provider = FakeJobStore(claimed()), FakeProvider({"a@example.com": error})
    assert await make_handler(store, provider).handle(1) is JobState.FAILED_PERMANENT
    [record] = store.records
    assert (record.error_kind, record.error_code) == ("permanent", "550")
    assert record.error_detail is not None
    assert "User unknown" in record.error_detail
    assert "example.com" not in record.error_detail.lower()  # the recipient is not copied into logs
    assert record.next_attempt_at is None


async def test_temporary_failure_schedules_the_next_attempt() -> None:
    error = ProviderError("response", "451", "4.3.0 Try later")
    store, provider = FakeJobStore(claimed(attempt=2)), FakeProvider({"a@example.com": error})
    assert await make_handler(store, provider).handle(1) is JobState.FAILED_TEMPORARY
    [record] = store.records
    assert record.error_kind == "temporary"
    assert record.next_attempt_at == NOW + timedelta(seconds=30.0)  # ceiling 60 s at attempt 2, rng 0.5


async def test_temporary_failure_on_the_last_attempt_dead_letters() -> None:
    error = ProviderError("timeout", None, "timed out")
    store, provider = FakeJobStore(claimed(attempt=3)), FakeProvider({"a@example.com": error})
    assert await make_handler(store, provider).handle(1) is JobState.DEAD_LETTER
    assert store.records[0].next_attempt_at is None


async def test_configuration_error_returns_the_job_to_pending() -> None:
    error = ProviderError("response", "535", "5.7.8 Authentication credentials invalid")
    store, provider = FakeJobStore(claimed()), FakeProvider({"a@example.com": error})
    assert await make_handler(store, provider).handle(1) is JobState.PENDING
    assert store.records[0].error_kind == "configuration"
    assert store.records[0].attempt_spent is False  # a pause never spends the retry budget


async def test_an_unrenderable_pinned_template_dead_letters_the_job_and_sends_nothing() -> None:
    # Before: back to pending with no due time, published by nobody: stuck for good, unseen (ADR 28).
    store, provider = FakeJobStore(claimed()), FakeProvider()
    assert await make_handler(store, provider, renderer=BrokenRenderer()).handle(1) is JobState.DEAD_LETTER
    assert provider.sent == []
    [record] = store.records
    assert (record.error_kind, record.decision) == ("configuration", "template-error")


async def test_an_answer_lost_after_the_request_went_out_makes_the_job_indeterminate_never_retried() -> None:
    error = ProviderError("lost-reply", None, "connection after the final dot")
    store, provider = FakeJobStore(claimed(attempt=1)), FakeProvider({"a@example.com": error})
    assert await make_handler(store, provider).handle(1) is JobState.INDETERMINATE
    [record] = store.records
    assert (record.error_kind, record.next_attempt_at) == ("unknown", None)


async def test_a_provider_unusable_as_configured_returns_the_job_to_pending() -> None:
    error = ProviderError("setup", None, "SMTP STARTTLS extension not supported by server.")
    store, provider = FakeJobStore(claimed()), FakeProvider({"a@example.com": error})
    assert await make_handler(store, provider).handle(1) is JobState.PENDING
    assert store.records[0].error_kind == "configuration"


async def test_a_job_not_claimable_is_neither_sent_nor_recorded() -> None:
    store, provider = FakeJobStore(), FakeProvider()
    assert await make_handler(store, provider).handle(1) is None
    assert provider.sent == []
    assert store.records == []


async def test_batch_runs_jobs_in_order_and_acks_after_all_recorded() -> None:
    store, provider, faults = (
        FakeJobStore(*(claimed(i) for i in range(1, 6))),
        FakeProvider(),
        RecordingFaults(),
    )
    batches = BatchHandler(make_handler(store, provider), "email", concurrency=2, faults=faults)
    assert await batches(JobBatch(channel="email", job_ids=[1, 2, 3, 4, 5])) is Outcome.ACK
    assert store.claims == [1, 2, 3, 4, 5]
    assert len(store.records) == 5
    assert faults.reached == ["after_commit_before_ack"]


async def test_same_batch_twice_sends_nothing_twice() -> None:
    store, provider = FakeJobStore(claimed(1), claimed(2)), FakeProvider()
    batches = BatchHandler(make_handler(store, provider), "email", concurrency=4, faults=FaultPoints(None))
    batch = JobBatch(channel="email", job_ids=[1, 2])
    assert await batches(batch) is Outcome.ACK
    assert await batches(batch) is Outcome.ACK
    assert len(provider.sent) == 2


async def test_batch_concurrency_is_bounded() -> None:
    running = peak = 0

    class SlowProvider(FakeProvider):
        async def send(self, message: EmailMessage) -> ProviderReceipt:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            running -= 1
            return await super().send(message)

    store = FakeJobStore(*(claimed(i) for i in range(1, 21)))
    batches = BatchHandler(
        make_handler(store, SlowProvider()), "email", concurrency=3, faults=FaultPoints(None)
    )
    assert await batches(JobBatch(channel="email", job_ids=list(range(1, 21)))) is Outcome.ACK
    assert peak == 3


async def test_batch_is_requeued_when_a_job_could_not_be_recorded() -> None:
    class FailingStore(FakeJobStore):
        async def record(self, record: AttemptRecord) -> bool:
            raise ConnectionError("database went away")

    store, provider = FailingStore(claimed(1)), FakeProvider()
    batches = BatchHandler(make_handler(store, provider), "email", concurrency=2, faults=FaultPoints(None))
    assert await batches(JobBatch(channel="email", job_ids=[1])) is Outcome.REQUEUE
    # The provider took it: the claim is not given back (its lease decides), so it is never sent twice.
    assert len(provider.sent) == 1
    assert store.released == []


async def test_a_failure_before_the_provider_call_gives_the_claim_back() -> None:
    class BrokenRenderer:
        def render(self, template: Any, variables: Any) -> Any:
            raise ConnectionError("template store went away")  # not a RenderError: an infrastructure failure

    store, provider = FakeJobStore(claimed(1)), FakeProvider()
    with pytest.raises(ConnectionError):
        await make_handler(store, provider, renderer=BrokenRenderer()).handle(1)
    assert provider.sent == []
    assert store.released == [1]
    assert store.records == []


async def test_batch_for_another_channel_is_poison() -> None:
    store = FakeJobStore(claimed(1))
    batches = BatchHandler(
        make_handler(store, FakeProvider()), "email", concurrency=2, faults=FaultPoints(None)
    )
    assert await batches(JobBatch(channel="sms", job_ids=[1])) is Outcome.POISON
    assert store.claims == []


async def test_stopping_finishes_the_started_jobs_and_requeues_the_batch_with_the_rest() -> None:
    started, release = asyncio.Event(), asyncio.Event()

    class HeldProvider(FakeProvider):
        async def send(self, message: EmailMessage) -> ProviderReceipt:
            started.set()
            await release.wait()
            return await super().send(message)

    store, provider = FakeJobStore(*(claimed(i) for i in range(1, 6))), HeldProvider()
    batches = BatchHandler(make_handler(store, provider), "email", concurrency=1, faults=FaultPoints(None))
    running = asyncio.create_task(batches(JobBatch(channel="email", job_ids=[1, 2, 3, 4, 5])))
    await started.wait()  # job 1 is at the provider; 2..5 wait for the one slot

    batches.stop_starting()
    release.set()

    assert await running is Outcome.REQUEUE
    assert store.claims == [1]  # the others were never claimed: still pending, redelivered with the batch
    assert [record.state for record in store.records] == [JobState.SENT]


class WindowStore(FakeJobStore):
    """Counts the jobs between their provider-call mark and their record (the ones a crash would leave
    indeterminate), and can refuse the mark or lose its connection."""

    def __init__(self, *jobs: ClaimedJob, refuse_mark: bool = False, mark_error: bool = False) -> None:
        super().__init__(*jobs)
        self.refuse_mark = refuse_mark
        self.mark_error = mark_error
        self.unconfirmed = 0
        self.peak_unconfirmed = 0

    async def mark_provider_call(self, job: ClaimedJob) -> bool:
        if self.mark_error:
            raise ConnectionError("database went away")
        if self.refuse_mark:
            return False
        await super().mark_provider_call(job)
        self.unconfirmed += 1
        self.peak_unconfirmed = max(self.peak_unconfirmed, self.unconfirmed)
        return True

    async def record(self, record: AttemptRecord) -> bool:
        await asyncio.sleep(0)
        if record.job.job_id in self.marked:
            self.unconfirmed -= 1
        return await super().record(record)


class YieldingProvider(FakeProvider):
    async def send(self, message: EmailMessage) -> ProviderReceipt:
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return await super().send(message)


@pytest.mark.parametrize(("unconfirmed_sends", "peak"), [(1, 1), (2, 2), (None, 4)])
async def test_unconfirmed_sends_bound_the_jobs_a_crash_could_leave_indeterminate(
    unconfirmed_sends: int | None, peak: int
) -> None:
    store, provider = WindowStore(*(claimed(i) for i in range(1, 13))), YieldingProvider()
    batches = BatchHandler(
        make_handler(store, provider, unconfirmed_sends=unconfirmed_sends),
        "email",
        concurrency=4,
        faults=FaultPoints(None),
    )
    assert await batches(JobBatch(channel="email", job_ids=list(range(1, 13)))) is Outcome.ACK
    assert len(provider.sent) == 12
    assert store.peak_unconfirmed == peak
    assert store.unconfirmed == 0


def one_window_batches(store: FakeJobStore, provider: FakeProvider) -> BatchHandler:
    """Four sends at once through a window of one unconfirmed send (email's default)."""
    return BatchHandler(
        make_handler(store, provider, unconfirmed_sends=1), "email", concurrency=4, faults=FaultPoints(None)
    )


async def test_with_one_unconfirmed_send_each_record_carries_the_next_sends_mark() -> None:
    """ADR 25: the window is handed over, marked, instead of each send marking itself after its record."""
    store, provider = WindowStore(*(claimed(i) for i in range(1, 13))), YieldingProvider()
    batches = one_window_batches(store, provider)
    assert await batches(JobBatch(channel="email", job_ids=list(range(1, 13)))) is Outcome.ACK
    assert len(provider.sent) == 12
    assert sorted(store.marked) == list(range(1, 13))  # each marked once, by itself or by a hand-over
    assert len(store.handed_over) >= 6  # four sends at once keep a successor waiting most of the time
    assert all(recorded != marked for recorded, marked in store.handed_over)
    assert store.peak_unconfirmed == 1


class HandOverRefused(WindowStore):
    """The statement that records one send and marks the next: its mark refused, or the whole of it lost."""

    def __init__(self, *jobs: ClaimedJob, fail: bool) -> None:
        super().__init__(*jobs)
        self.fail = fail

    async def record_and_mark(self, record: AttemptRecord, next_job: ClaimedJob) -> tuple[bool, bool]:
        self.handed_over.append((record.job.job_id, next_job.job_id))
        if self.fail:
            raise ConnectionError("database went away")
        return await self.record(record), False  # the next job's lease ended meanwhile


async def test_a_send_handed_the_window_with_its_mark_refused_sends_nothing() -> None:
    store, provider = HandOverRefused(*(claimed(i) for i in range(1, 5)), fail=False), YieldingProvider()
    batches = one_window_batches(store, provider)
    assert await batches(JobBatch(channel="email", job_ids=[1, 2, 3, 4])) is Outcome.ACK
    successors = {marked for _, marked in store.handed_over}
    assert successors  # the first send's record was handed a successor
    sent = {int(message.notification_key.split(":")[1]) - 10 for message in provider.sent}
    assert not sent & successors  # refused: nothing sent, nothing recorded for them
    assert {record.job.job_id for record in store.records} == sent


async def test_a_hand_over_whose_statement_failed_leaves_the_next_send_to_mark_itself() -> None:
    store, provider = HandOverRefused(*(claimed(i) for i in range(1, 5)), fail=True), YieldingProvider()
    batches = one_window_batches(store, provider)
    # The holders' records failed (as a record that lost its database does): the batch is retried.
    assert await batches(JobBatch(channel="email", job_ids=[1, 2, 3, 4])) is Outcome.REQUEUE
    assert len(provider.sent) == 4  # every successor still marked itself and went out...
    assert sorted(store.marked) == [1, 2, 3, 4]  # ...once
    # (Their records all failed, so each stays marked and unrecorded, as a failed record always left it.)


async def test_a_claim_whose_lease_ended_before_the_mark_sends_nothing() -> None:
    store, provider = WindowStore(claimed(1), refuse_mark=True), FakeProvider()
    assert await make_handler(store, provider).handle(1) is None
    assert provider.sent == []
    assert store.records == []
    assert store.released == []  # not ours any more: the reaper (or the next claim) owns it


async def test_a_mark_that_lost_its_database_gives_the_claim_back_unsent() -> None:
    store, provider, faults = WindowStore(claimed(1), mark_error=True), FakeProvider(), RecordingFaults()
    with pytest.raises(ConnectionError):
        await make_handler(store, provider, faults=faults).handle(1)
    assert provider.sent == []
    assert store.released == [1]
    assert "before_provider_call" not in faults.reached


async def test_the_message_is_composed_before_the_mark_so_only_the_provider_call_is_serialised() -> None:
    events: list[tuple[str, int]] = []

    class Store(FakeJobStore):
        async def mark_provider_call(self, job: ClaimedJob) -> bool:
            events.append(("mark", job.job_id))
            return await super().mark_provider_call(job)

    class Composing(FakeProvider):
        def prepare(self, message: EmailMessage) -> Callable[[], Awaitable[ProviderReceipt]]:
            events.append(("compose", int(message.notification_key.split(":")[1]) - 10))
            return super().prepare(message)

    store = Store(*(claimed(i) for i in range(1, 4)))
    batches = BatchHandler(
        make_handler(store, Composing(), unconfirmed_sends=1),
        "email",
        concurrency=3,
        faults=FaultPoints(None),
    )
    assert await batches(JobBatch(channel="email", job_ids=[1, 2, 3])) is Outcome.ACK
    for job_id in (1, 2, 3):
        assert events.index(("compose", job_id)) < events.index(("mark", job_id)), events


class StagingProvider(FakeProvider):
    """Stages like SMTP (ADR 23): everything but the final step before the window, the rest inside it.
    Counts the messages staged and not yet finished or aborted, and refuses at staging for ``refuse``."""

    def __init__(self, refuse: Mapping[str, ProviderError] | None = None) -> None:
        super().__init__()
        self.refuse = dict(refuse or {})
        self.open = 0
        self.peak_open = 0
        self.aborted: list[str] = []

    def prepare_staged(self, message: EmailMessage) -> Callable[[], Awaitable[StagedEmail]]:
        return functools.partial(self._stage, message)

    async def _stage(self, message: EmailMessage) -> StagedEmail:
        await asyncio.sleep(0)
        if message.to in self.refuse:
            raise self.refuse[message.to]
        self.open += 1
        self.peak_open = max(self.peak_open, self.open)
        done: list[bool] = []

        async def finish() -> ProviderReceipt:
            done.append(True)
            self.open -= 1
            return await self.send(message)

        def abort() -> None:
            if not done:
                done.append(True)
                self.open -= 1
                self.aborted.append(message.to)

        return StagedEmail(finish=finish, abort=abort)


async def test_staging_runs_concurrently_outside_the_window_and_only_the_finish_is_serialised() -> None:
    store, provider = WindowStore(*(claimed(i) for i in range(1, 13))), StagingProvider()
    batches = one_window_batches(store, provider)
    assert await batches(JobBatch(channel="email", job_ids=list(range(1, 13)))) is Outcome.ACK
    assert len(provider.sent) == 12
    assert store.peak_unconfirmed == 1  # the bound holds
    assert provider.peak_open > 1  # while several messages were staged at once, outside it
    assert provider.open == 0
    assert provider.aborted == []


async def test_a_refused_mark_aborts_the_staged_message_so_nothing_is_delivered() -> None:
    store, provider = WindowStore(claimed(1), refuse_mark=True), StagingProvider()
    assert await make_handler(store, provider).handle(1) is None
    assert provider.sent == []
    assert provider.aborted == ["a@example.com"]
    assert provider.open == 0


async def test_a_mark_that_lost_its_database_aborts_the_staged_message_and_gives_the_claim_back() -> None:
    store, provider = WindowStore(claimed(1), mark_error=True), StagingProvider()
    with pytest.raises(ConnectionError):
        await make_handler(store, provider).handle(1)
    assert provider.aborted == ["a@example.com"]
    assert store.released == [1]


@pytest.mark.parametrize(
    ("error", "state"),
    [
        (ProviderError("response", "550", "5.1.1 no such user"), JobState.FAILED_PERMANENT),
        (ProviderError("response", "451", "4.3.0 try later"), JobState.FAILED_TEMPORARY),
        (ProviderError("connection", None, "refused"), JobState.FAILED_TEMPORARY),
    ],
)
async def test_a_refusal_while_staging_is_classified_as_before_and_needs_no_mark(
    error: ProviderError, state: JobState
) -> None:
    store = WindowStore(claimed(1))
    provider = StagingProvider(refuse={"a@example.com": error})
    assert await make_handler(store, provider).handle(1) is state
    [record] = store.records
    assert (record.error_kind, record.error_code) == (
        "permanent" if state is JobState.FAILED_PERMANENT else "temporary",
        error.code,
    )
    assert store.marked == []  # nothing could have been delivered: nothing to leave indeterminate
    assert provider.sent == []
