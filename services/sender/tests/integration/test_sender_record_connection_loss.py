"""An attempt's outcome survives a lost database connection (the fault suite's ``pg_terminate_backend`` case
in miniature): the provider has answered, the connection is gone, and the record is written anyway, once."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
from piccolo.engine.postgres import PostgresEngine

from restock_common import keys
from restock_common.db.engine import bind_tables, close_engine
from restock_common.db.tables import (
    NotificationJob,
    NotificationLog,
    RestockEvent,
    Subscription,
    Tenant,
)
from restock_common.settings import Settings
from restock_common.signatures import contact_hash
from restock_sender.adapters.job_store import PiccoloJobStore
from restock_sender.delivery import JobState
from restock_sender.ports import AttemptRecord, ClaimedJob, ProviderReceipt

pytestmark = pytest.mark.integration

SHOP = "record-loss-shop.myshopify.com"
VARIANT = 5151


APPLICATION = "record-loss-test"


@pytest.fixture
async def store(engine: PostgresEngine, settings: Settings, clean_db: None) -> AsyncIterator[PiccoloJobStore]:
    """A store on a pool of its own, whose connections alone the test terminates (by application name): the
    session's shared pool and every other test's connections are left alone."""
    own = PostgresEngine(
        config={"dsn": settings.database_url, "server_settings": {"application_name": APPLICATION}},
        extensions=(),
    )
    await own.start_connection_pool(min_size=1, max_size=4)
    bind_tables(own)
    try:
        yield PiccoloJobStore(own)
    finally:
        bind_tables(engine)
        await close_engine(own)


async def _claimed(store: PiccoloJobStore, address: str, shop: str = SHOP) -> ClaimedJob:
    tenant = Tenant(shop_domain=shop)
    await tenant.save()
    detected_at = datetime(2026, 6, 1, tzinfo=UTC)
    window = keys.restock_window(detected_at)
    event = RestockEvent(
        tenant=tenant.id, variant_id=VARIANT, available=1, restock_window=window, source="webhook"
    )
    await event.save()
    subscription = Subscription(
        tenant=tenant.id,
        variant_id=VARIANT,
        channel="email",
        email=address,
        contact_hash=contact_hash(address),
        state="confirmed",
    )
    await subscription.save()
    job = NotificationJob(
        tenant=tenant.id,
        restock_event=event.id,
        subscription=subscription.id,
        variant_id=VARIANT,
        channel="email",
        notification_key=keys.notification_key(VARIANT, subscription.id, window),
        priority_at=subscription.subscribed_at,
    )
    await job.save()
    claimed = await store.claim(int(job.id), 60)
    assert isinstance(claimed, ClaimedJob)
    return claimed


def _sent(job: ClaimedJob) -> AttemptRecord:
    receipt = ProviderReceipt("smtp", "<id@restock>", "250 2.0.0 queued")
    return AttemptRecord(
        job=job, state=JobState.SENT, provider="smtp", receipt=receipt, started_at=datetime.now(UTC)
    )


async def _terminate_the_stores_connections(settings: Settings) -> int:
    connection = await asyncpg.connect(settings.database_url)
    try:
        rows = await connection.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = $1",
            APPLICATION,
        )
        return len(rows)
    finally:
        await connection.close()


async def test_the_outcome_is_recorded_after_the_connection_was_terminated(
    store: PiccoloJobStore, settings: Settings
) -> None:
    job = await _claimed(store, "ada@example.com")
    assert await _terminate_the_stores_connections(settings) >= 1

    assert await store.record(_sent(job)) is True

    row = await NotificationJob.select(NotificationJob.state).where(NotificationJob.id == job.job_id).first()
    assert row == {"state": "sent"}
    logs = await NotificationLog.select(NotificationLog.outcome).where(NotificationLog.job == job.job_id)
    assert logs == [{"outcome": "sent"}]


async def test_a_retry_after_a_commit_whose_answer_was_lost_writes_nothing_twice(
    store: PiccoloJobStore,
) -> None:
    job = await _claimed(store, "grace@example.com")
    record = _sent(job)
    assert await store._record(record, retrying=False) is True  # committed; say its answer was lost

    assert await store._record(record, retrying=True) is True  # the retry sees it and writes nothing

    logs = await NotificationLog.select(NotificationLog.outcome).where(NotificationLog.job == job.job_id)
    assert logs == [{"outcome": "sent"}]


async def test_a_claim_given_back_is_pending_again_with_its_attempt_uncounted(store: PiccoloJobStore) -> None:
    job = await _claimed(store, "linus@example.com")
    assert job.attempt == 1

    assert await store.release(job) is True
    assert await store.release(job) is False  # no longer this claimed attempt: nothing changes

    row = (
        await NotificationJob.select(
            NotificationJob.state,
            NotificationJob.attempt,
            NotificationJob.enqueued_at,
            NotificationJob.lease_until,
        )
        .where(NotificationJob.id == job.job_id)
        .first()
    )
    assert row == {"state": "pending", "attempt": 0, "enqueued_at": None, "lease_until": None}
    again = await store.claim(job.job_id, 60)
    assert isinstance(again, ClaimedJob)
    assert again.attempt == 1


async def _mark(job_id: int) -> dict[str, object] | None:
    return (
        await NotificationJob.select(NotificationJob.provider_called_at, NotificationJob.state)
        .where(NotificationJob.id == job_id)
        .first()
    )


async def test_the_provider_call_mark_is_committed_once_and_survives_a_lost_connection(
    store: PiccoloJobStore, settings: Settings
) -> None:
    job = await _claimed(store, "barbara@example.com")
    assert (await _mark(job.job_id)) == {"provider_called_at": None, "state": "processing"}
    assert await _terminate_the_stores_connections(settings) >= 1

    assert await store.mark_provider_call(job) is True  # retried on a fresh connection
    first = (await _mark(job.job_id) or {})["provider_called_at"]
    assert first is not None
    assert await store.mark_provider_call(job) is True  # a retry whose answer was lost: idempotent
    assert (await _mark(job.job_id) or {})["provider_called_at"] == first

    # A new claim (after a release, or a reaper's resend) starts unmarked.
    assert await store.release(job) is True
    again = await store.claim(job.job_id, 60)
    assert isinstance(again, ClaimedJob)
    assert (await _mark(job.job_id) or {})["provider_called_at"] is None


async def test_the_mark_is_refused_once_the_lease_ended_or_the_attempt_is_not_ours(
    store: PiccoloJobStore,
) -> None:
    job = await _claimed(store, "edsger@example.com")
    stale = dataclasses.replace(job, attempt=job.attempt + 1)
    assert await store.mark_provider_call(stale) is False  # another attempt's claim

    await NotificationJob.update({NotificationJob.lease_until: datetime(2026, 1, 1, tzinfo=UTC)}).where(
        NotificationJob.id == job.job_id
    )
    assert await store.mark_provider_call(job) is False  # the reaper may already be sending it back
    assert (await _mark(job.job_id) or {})["provider_called_at"] is None


# --- the provider-call window handed over (ADR 25): a record carries the next send's mark -----------------


async def _logs(job_id: int) -> list[dict[str, object]]:
    return list(await NotificationLog.select(NotificationLog.outcome).where(NotificationLog.job == job_id))


async def test_a_record_and_the_next_sends_mark_commit_together(store: PiccoloJobStore) -> None:
    sent = await _claimed(store, "alan@example.com")
    following = await _claimed(store, "kurt@example.com", shop="record-loss-other.myshopify.com")
    assert await store.mark_provider_call(sent) is True

    assert await store.record_and_mark(_sent(sent), following) == (True, True)

    assert (await _mark(sent.job_id) or {})["state"] == "sent"
    assert await _logs(sent.job_id) == [{"outcome": "sent"}]
    assert (await _mark(following.job_id) or {})["provider_called_at"] is not None
    assert await _logs(following.job_id) == []  # marked, not recorded: it has not been sent yet


async def test_the_record_commits_when_the_next_sends_mark_is_refused(store: PiccoloJobStore) -> None:
    sent = await _claimed(store, "hedy@example.com")
    following = await _claimed(store, "emmy@example.com", shop="record-loss-other.myshopify.com")
    await NotificationJob.update({NotificationJob.lease_until: datetime(2026, 1, 1, tzinfo=UTC)}).where(
        NotificationJob.id == following.job_id
    )

    assert await store.record_and_mark(_sent(sent), following) == (True, False)

    assert await _logs(sent.job_id) == [{"outcome": "sent"}]
    assert (await _mark(following.job_id) or {})["provider_called_at"] is None


async def test_a_record_and_mark_survives_a_lost_connection_and_a_lost_answer_once(
    store: PiccoloJobStore, settings: Settings
) -> None:
    sent = await _claimed(store, "john@example.com")
    following = await _claimed(store, "claude@example.com", shop="record-loss-other.myshopify.com")
    record = _sent(sent)
    assert await _terminate_the_stores_connections(settings) >= 1

    assert await store.record_and_mark(record, following) == (True, True)  # retried on a fresh connection
    first = (await _mark(following.job_id) or {})["provider_called_at"]
    # A retry whose previous try committed, its answer lost: nothing logged twice, the mark kept.
    assert await store._record_and_mark(record, following, retrying=True) == (True, True)

    assert await _logs(sent.job_id) == [{"outcome": "sent"}]
    assert (await _mark(following.job_id) or {})["provider_called_at"] == first


async def test_a_late_record_of_an_earlier_attempt_never_overwrites_the_attempt_that_took_the_job_over(
    store: PiccoloJobStore,
) -> None:
    # Attempt 1 ran past its lease; the job was given back and claimed again (attempt 2, processing again).
    # Attempt 1's record arrives late: logged, but the job stays attempt 2's, whose record then applies.
    first = await _claimed(store, "ada@example.com")
    await NotificationJob.update({NotificationJob.state: "pending"}).where(NotificationJob.id == first.job_id)
    second = await store.claim(first.job_id, 60)
    assert isinstance(second, ClaimedJob)
    assert second.attempt == first.attempt + 1

    late = dataclasses.replace(_sent(first), state=JobState.FAILED_TEMPORARY, error_kind="temporary")
    assert await store.record(late) is False
    row = await NotificationJob.select(NotificationJob.state, NotificationJob.attempt).where(
        NotificationJob.id == first.job_id
    )
    assert row == [{"state": "processing", "attempt": second.attempt}]

    assert await store.record(_sent(second)) is True
    logs = (
        await NotificationLog.select(NotificationLog.attempt, NotificationLog.outcome)
        .where(NotificationLog.job == first.job_id)
        .order_by(NotificationLog.attempt)
    )
    assert logs == [
        {"attempt": first.attempt, "outcome": "failed-temporary"},
        {"attempt": second.attempt, "outcome": "sent"},
    ]
    assert (
        await NotificationJob.select(NotificationJob.state).where(NotificationJob.id == first.job_id)
    ) == [{"state": "sent"}]


async def test_a_configuration_error_gives_its_attempt_back_so_a_pause_never_spends_the_retry_budget(
    store: PiccoloJobStore,
) -> None:
    job = await _claimed(store, "ada@example.com")
    refused = dataclasses.replace(
        _sent(job),
        state=JobState.PENDING,
        receipt=None,
        error_kind="configuration",
        error_code="535",
        attempt_spent=False,  # as the handler records a configuration error (delivery.spends_attempt)
    )
    assert await store.record(refused) is True
    row = await NotificationJob.select(NotificationJob.state, NotificationJob.attempt).where(
        NotificationJob.id == job.job_id
    )
    assert row == [{"state": "pending", "attempt": job.attempt - 1}]
    logs = await NotificationLog.select(NotificationLog.attempt).where(NotificationLog.job == job.job_id)
    assert logs == [{"attempt": job.attempt}]  # the attempt is still logged under its number
    again = await store.claim(job.job_id, 60)
    assert isinstance(again, ClaimedJob)
    assert again.attempt == job.attempt


async def test_a_claim_of_a_job_published_but_not_yet_marked_enqueued_gives_it_an_enqueued_instant(
    store: PiccoloJobStore,
) -> None:
    # The scheduler publishes a retry, then marks it enqueued: a claim can come in between. It still has an
    # enqueued instant (its claim's), so its send is in the queue-latency histogram; one set is kept.
    first = await _claimed(store, "ada@example.com")
    assert first.enqueued_at is not None  # never published (seeded): the claim is its first sign of life
    marked = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    back = {NotificationJob.state: "pending", NotificationJob.enqueued_at: marked}
    await NotificationJob.update(back).where(NotificationJob.id == first.job_id)
    again = await store.claim(first.job_id, 60)
    assert isinstance(again, ClaimedJob)
    assert again.enqueued_at == marked
