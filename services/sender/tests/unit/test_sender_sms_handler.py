"""The SMS path, stored templates, the lease reaper's decision and confirmations, with recording fakes."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from restock_common.broker import Outcome
from restock_common.faults import FaultPoints
from restock_common.links import LinkSigner
from restock_common.messages import ConfirmationRequested
from restock_sender.confirmations import ConfirmationHandler, ConfirmationTarget, request_key
from restock_sender.delivery import Event, JobState, ProviderError, RetryPolicy
from restock_sender.handler import JobHandler
from restock_sender.lease import ExpiredSms, SmsLeaseReaper, sent_message
from restock_sender.outbound import PublicLinks, SmsOutbound
from restock_sender.ports import (
    AttemptRecord,
    ClaimedJob,
    EmailMessage,
    NotClaimable,
    ProviderReceipt,
    SentSms,
    SmsMessage,
    TemplateRecord,
)
from restock_sender.scheduler import Scheduler
from restock_sender.templates import BUILTIN_SMS, JinjaRenderer

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
PHONE = "+14155550123"
LINKS = PublicLinks(LinkSigner("unit-secret"), "https://restock.example")


def sms_job(job_id: int = 1, **changes: Any) -> ClaimedJob:
    values: dict[str, Any] = {
        "job_id": job_id,
        "tenant_id": 1,
        "subscription_id": 10 + job_id,
        "variant_id": 42,
        "channel": "sms",
        "notification_key": f"42:{10 + job_id}:7",
        "attempt": 1,
        "traceparent": None,
        "shop_domain": "shop.myshopify.com",
        "product_title": "Blue Shirt",
        "email": None,
        "phone": PHONE,
        "subscription_state": "confirmed",
        "unsubscribed_at": None,
        "policy": RetryPolicy(3, 30.0, 3600.0),
        "sms_opt_out_text": "Reply STOP to opt out.",
    }
    values.update(changes)
    return ClaimedJob(**values)


class FakeJobStore:
    def __init__(self, *jobs: ClaimedJob) -> None:
        self.jobs = {job.job_id: job for job in jobs}
        self.records: list[AttemptRecord] = []
        self.marked: list[int] = []  # provider-call marks, in order

    async def claim(self, job_id: int, lease_seconds: int) -> ClaimedJob | NotClaimable:
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


class FakeTwilio:
    """Accepts messages (SIDs SM1, SM2 ...) or raises the queued errors; lists what it accepted."""

    def __init__(
        self, *errors: ProviderError, accept_then_lose: bool = False, list_error: bool = False
    ) -> None:
        self.errors = list(errors)
        self.accept_then_lose = accept_then_lose
        self.list_error = list_error
        self.sent: list[SmsMessage] = []
        self.listed: list[SentSms] = []

    async def send(self, message: SmsMessage) -> ProviderReceipt:
        if self.errors:
            raise self.errors.pop(0)
        self.sent.append(message)
        self.listed.insert(0, SentSms(f"SM{len(self.sent)}", message.to, message.body, NOW, "queued"))
        if self.accept_then_lose:
            raise ProviderError("connection", None, "ServerDisconnectedError", provider="twilio")
        return ProviderReceipt("twilio", f"SM{len(self.sent)}", "queued segments=1")

    async def sent_to(self, number: str, limit: int) -> list[SentSms]:
        if self.list_error:
            raise ProviderError("response", "20500", "boom", provider="twilio", status=500)
        return [message for message in self.listed if message.to == number][:limit]


class FakeTemplates:
    def __init__(self, *records: TemplateRecord) -> None:
        self.records = {record.template_id: record for record in records}
        self.marked: list[int] = []

    async def load(self, template_id: int) -> TemplateRecord | None:
        return self.records.get(template_id)

    async def mark_used(self, template_id: int) -> None:
        self.marked.append(template_id)


def sms_handler(
    store: FakeJobStore, twilio: FakeTwilio, templates: FakeTemplates | None = None
) -> JobHandler:
    return JobHandler(
        store=store,
        provider=twilio,
        renderer=JinjaRenderer(),
        template=BUILTIN_SMS,
        faults=FaultPoints(None),
        clock=lambda: NOW,
        rng=lambda: 0.5,
        lease_seconds=120,
        outbound=SmsOutbound(twilio, LINKS, clock=lambda: NOW),
        templates=templates,
    )


async def test_an_sms_is_sent_with_the_opt_out_text_segments_and_the_status_callback() -> None:
    store, twilio = FakeJobStore(sms_job()), FakeTwilio()
    assert await sms_handler(store, twilio).handle(1) is JobState.SENT
    [message] = twilio.sent
    assert message.to == PHONE
    assert message.body.endswith("\nReply STOP to opt out.")
    assert message.status_callback == "https://restock.example/twilio/status?job=1&attempt=1"
    [record] = store.records
    assert (record.provider, record.receipt and record.receipt.message_id, record.segments) == (
        "twilio",
        "SM1",
        1,
    )
    assert record.template is BUILTIN_SMS


async def test_21610_is_permanent_and_unsubscribes_and_the_number_is_redacted() -> None:
    refused = ProviderError(
        "response", "21610", f"Attempt to send to unsubscribed {PHONE}", provider="twilio"
    )
    store = FakeJobStore(sms_job())
    assert await sms_handler(store, FakeTwilio(refused)).handle(1) is JobState.FAILED_PERMANENT
    [record] = store.records
    assert record.opted_out_at_provider is True
    assert PHONE not in (record.error_detail or "")


async def test_other_permanent_errors_do_not_unsubscribe() -> None:
    invalid = ProviderError("response", "21211", "invalid", provider="twilio", status=400)
    store = FakeJobStore(sms_job())
    assert await sms_handler(store, FakeTwilio(invalid)).handle(1) is JobState.FAILED_PERMANENT
    assert store.records[0].opted_out_at_provider is False


@pytest.mark.parametrize(("phone", "reason"), [(None, "no-contact"), ("", "no-contact")])
async def test_an_sms_job_without_a_number_is_skipped(phone: str | None, reason: str) -> None:
    store, twilio = FakeJobStore(sms_job(phone=phone)), FakeTwilio()
    assert await sms_handler(store, twilio).handle(1) is JobState.SKIPPED_OPTED_OUT
    assert store.records[0].decision == reason
    assert twilio.sent == []


async def test_a_number_that_is_not_e164_is_refused_without_calling_twilio() -> None:
    store, twilio = FakeJobStore(sms_job(phone="0612345678")), FakeTwilio()
    assert await sms_handler(store, twilio).handle(1) is JobState.FAILED_PERMANENT
    assert (store.records[0].error_code, twilio.sent) == ("21211", [])
    assert store.marked == []  # refused while the message was built: the provider-call mark never came


async def test_a_lost_answer_is_resolved_from_the_message_list() -> None:
    store, twilio = FakeJobStore(sms_job()), FakeTwilio(accept_then_lose=True)
    assert await sms_handler(store, twilio).handle(1) is JobState.SENT
    assert store.records[0].receipt is not None
    assert store.records[0].receipt.message_id == "SM1"
    assert len(twilio.sent) == 1


async def test_a_lost_answer_not_in_the_list_is_a_temporary_failure() -> None:
    lost = ProviderError("timeout", None, "timed out", provider="twilio")
    store = FakeJobStore(sms_job())
    assert await sms_handler(store, FakeTwilio(lost)).handle(1) is JobState.FAILED_TEMPORARY


async def test_a_pinned_template_is_loaded_marked_used_and_logged() -> None:
    stored = TemplateRecord(
        "restock", 3, "", "{{ product_title }}! Reply STOP to opt out.", None, template_id=9
    )
    store, twilio, templates = FakeJobStore(sms_job(template_id=9)), FakeTwilio(), FakeTemplates(stored)
    assert await sms_handler(store, twilio, templates).handle(1) is JobState.SENT
    assert twilio.sent[0].body == "Blue Shirt! Reply STOP to opt out."  # the opt-out text is not doubled
    assert templates.marked == [9]
    assert store.records[0].template is stored


async def test_a_pinned_template_that_is_gone_dead_letters_the_job() -> None:
    store, twilio = FakeJobStore(sms_job(template_id=9)), FakeTwilio()
    assert await sms_handler(store, twilio, FakeTemplates()).handle(1) is JobState.DEAD_LETTER
    assert (store.records[0].error_kind, store.records[0].decision, twilio.sent) == (
        "configuration",
        "template-error",
        [],
    )


# --- the lease reaper ---------------------------------------------------------------------------------


def listed(body: str, at: datetime, sid: str = "SMa", to: str = PHONE) -> SentSms:
    return SentSms(sid, to, body, at, "delivered")


@pytest.mark.parametrize(
    ("candidates", "expected"),
    [
        ([], None),
        ([listed("hello", NOW)], "SMa"),
        ([listed("hello", NOW - timedelta(seconds=59))], "SMa"),  # within the clock-skew margin
        ([listed("hello", NOW - timedelta(minutes=5))], None),  # an older message: not this attempt's
        ([listed("other body", NOW)], None),
        ([listed("other", NOW, "SMb"), listed("hello", NOW, "SMc")], "SMc"),
        ([SentSms("SMd", PHONE, "hello", None, "queued")], "SMd"),
    ],
)
def test_sent_message(candidates: list[SentSms], expected: str | None) -> None:
    found = sent_message(candidates, "hello", NOW, timedelta(seconds=60))
    assert (found.sid if found else None) == expected


class FakeLeaseStore:
    def __init__(self, *expired: ExpiredSms) -> None:
        self.expired = list(expired)
        self.resolved: list[tuple[int, Event, str | None]] = []

    async def expired_sms(self, limit: int) -> list[ExpiredSms]:
        return self.expired[:limit]

    async def resolve(self, expired: ExpiredSms, event: Event, message: SentSms | None) -> bool:
        self.resolved.append((expired.job.job_id, event, message.sid if message else None))
        return True


def reaper(store: FakeLeaseStore, twilio: FakeTwilio) -> SmsLeaseReaper:
    return SmsLeaseReaper(store, twilio, JinjaRenderer(), None, BUILTIN_SMS)


async def test_the_reaper_finds_the_sent_message_and_resends_the_missing_one() -> None:
    twilio = FakeTwilio()
    sent_job, lost_job = sms_job(1), sms_job(2, phone="+14155550124")
    body = "shop.myshopify.com: Blue Shirt is back in stock. https://shop.myshopify.com/variants/42"
    twilio.listed = [listed(f"{body}\nReply STOP to opt out.", NOW, "SMx")]
    store = FakeLeaseStore(ExpiredSms(sent_job, NOW), ExpiredSms(lost_job, NOW))
    resolution = await reaper(store, twilio).reap(10)
    assert (resolution.sent, resolution.resend, resolution.unresolved) == ([1], [2], [])
    assert store.resolved == [(1, Event.FOUND_AT_PROVIDER, "SMx"), (2, Event.NOT_AT_PROVIDER, None)]


async def test_the_reaper_leaves_the_job_alone_when_twilio_cannot_be_asked() -> None:
    store = FakeLeaseStore(ExpiredSms(sms_job(), NOW))
    resolution = await reaper(store, FakeTwilio(list_error=True)).reap(10)
    assert (resolution.unresolved, store.resolved) == ([1], [])


# --- confirmations ------------------------------------------------------------------------------------


class FakeConfirmationStore:
    def __init__(self, target: ConfirmationTarget | None) -> None:
        self.current = target
        self.events: list[tuple[int, datetime, str]] = []

    async def target(self, subscription_id: int, channel: str) -> ConfirmationTarget | None:
        return self.current

    async def already_sent(self, subscription_id: int, requested_at: datetime) -> bool:
        return any(event[:2] == (subscription_id, requested_at) for event in self.events)

    async def record_sent(
        self, target: ConfirmationTarget, channel: str, requested_at: datetime, message_id: str
    ) -> None:
        self.events.append((target.subscription_id, requested_at, message_id))


class FakeGuard:
    def __init__(self) -> None:
        self.held: set[str] = set()

    async def acquire(self, key: str, seconds: int) -> bool:
        if key in self.held:
            return False
        self.held.add(key)
        return True

    async def release(self, key: str) -> None:
        self.held.discard(key)


class FakeEmail:
    def __init__(self, *errors: ProviderError) -> None:
        self.errors = list(errors)
        self.sent: list[EmailMessage] = []

    def prepare(self, message: EmailMessage) -> Callable[[], Awaitable[ProviderReceipt]]:
        return functools.partial(self.send, message)  # a subclass's ``send`` is the one prepared

    async def send(self, message: EmailMessage) -> ProviderReceipt:
        if self.errors:
            raise self.errors.pop(0)
        self.sent.append(message)
        return ProviderReceipt("smtp", f"<{len(self.sent)}@x>", "250 OK")


def target(**changes: Any) -> ConfirmationTarget:
    values: dict[str, Any] = {
        "subscription_id": 5,
        "tenant_id": 1,
        "state": "pending",
        "shop_domain": "shop.myshopify.com",
        "variant_id": 42,
        "product_title": "Blue Shirt",
        "email": "ann@example.com",
        "phone": None,
        "sms_opt_out_text": "Reply STOP to opt out.",
        "template": None,
    }
    values.update(changes)
    return ConfirmationTarget(**values)


REQUEST = ConfirmationRequested(tenant_id=1, subscription_id=5, channel="email", requested_at=NOW)


def confirmations(
    store: FakeConfirmationStore, email: FakeEmail, guard: FakeGuard | None = None
) -> ConfirmationHandler:
    return ConfirmationHandler("email", store, guard or FakeGuard(), JinjaRenderer(), LINKS, email=email)


async def test_a_confirmation_is_sent_once_with_a_verifiable_link_and_recorded() -> None:
    store, email, guard = FakeConfirmationStore(target()), FakeEmail(), FakeGuard()
    handler = confirmations(store, email, guard)
    assert await handler(REQUEST) is Outcome.ACK
    assert await handler(REQUEST) is Outcome.ACK
    [message] = email.sent
    assert message.notification_key == request_key(REQUEST)  # the Message-ID's seed: one per request
    link = next(word for word in message.text.split() if "/c/" in word)
    assert LinkSigner("unit-secret").verify("confirm", link.rsplit("/", 1)[1]).subscription_id == 5
    assert store.events == [(5, NOW, "<1@x>")]
    assert guard.held == set()  # released: PostgreSQL answers redeliveries from now on


@pytest.mark.parametrize(
    "current",
    [None, target(state="confirmed"), target(state="unsubscribed"), target(email=None)],
)
async def test_a_confirmation_is_not_sent_to_a_subscription_no_longer_pending(
    current: ConfirmationTarget | None,
) -> None:
    email = FakeEmail()
    assert await confirmations(FakeConfirmationStore(current), email)(REQUEST) is Outcome.ACK
    assert email.sent == []


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (ProviderError("response", "451", "try later"), Outcome.REQUEUE),
        (ProviderError("response", "535", "auth"), Outcome.REQUEUE),
        (ProviderError("response", "550", "no such user"), Outcome.ACK),
        # The server may have it (ADR 28): requeued, the shopper could get the confirmation twice.
        (ProviderError("lost-reply", None, "connection after the final dot"), Outcome.ACK),
    ],
)
async def test_a_failed_confirmation_is_requeued_unless_permanent_or_maybe_delivered_and_releases_its_guard(
    error: ProviderError, outcome: Outcome
) -> None:
    store, guard = FakeConfirmationStore(target()), FakeGuard()
    assert await confirmations(store, FakeEmail(error), guard)(REQUEST) is outcome
    assert store.events == []
    assert guard.held == set()


async def test_a_broken_stored_confirmation_template_falls_back_to_the_built_in_one() -> None:
    broken = TemplateRecord("confirmation", 1, "x", "{{ nope }}", None, template_id=3)
    email = FakeEmail()
    assert await confirmations(FakeConfirmationStore(target(template=broken)), email)(REQUEST) is Outcome.ACK
    assert email.sent[0].subject == "Confirm your back-in-stock alert from shop.myshopify.com"


async def test_a_delivery_waiting_for_a_concurrent_one_acks_once_that_one_recorded_the_send() -> None:
    store, email, guard = FakeConfirmationStore(target()), FakeEmail(), FakeGuard()
    guard.held.add(request_key(REQUEST))  # another delivery of the same request is sending it

    async def the_other_delivery_finishes() -> None:
        await asyncio.sleep(0.3)
        store.events.append((5, NOW, "<other@x>"))
        guard.held.clear()

    finishing = asyncio.create_task(the_other_delivery_finishes())
    assert await confirmations(store, email, guard)(REQUEST) is Outcome.ACK
    await finishing
    assert email.sent == []


class FakePause:
    def __init__(self, paused: bool = False) -> None:
        self.paused = paused
        self.reasons: list[str | None] = []
        self.paused_now = asyncio.Event()

    async def pause(self, reason: str, error_code: str | None) -> None:
        self.paused = True
        self.reasons.append(error_code)
        self.paused_now.set()


async def resume_later(pause: FakePause, seconds: float = 0.2) -> None:
    await asyncio.sleep(seconds)
    pause.paused = False


async def test_a_paused_channel_holds_a_confirmation_until_it_resumes() -> None:
    store, email, pause = FakeConfirmationStore(target()), FakeEmail(), FakePause(paused=True)
    handler = ConfirmationHandler(
        "email", store, FakeGuard(), JinjaRenderer(), LINKS, email=email, pause=pause, pause_poll_seconds=0.01
    )
    resuming = asyncio.create_task(resume_later(pause))
    assert await handler(REQUEST) is Outcome.ACK
    await resuming
    assert len(email.sent) == 1


async def test_a_configuration_error_pauses_the_channel_and_requeues_once_it_resumes() -> None:
    refused = ProviderError("response", "535", "5.7.8 bad credentials")
    store, email, pause = FakeConfirmationStore(target()), FakeEmail(refused), FakePause()
    handler = ConfirmationHandler(
        "email", store, FakeGuard(), JinjaRenderer(), LINKS, email=email, pause=pause, pause_poll_seconds=0.01
    )

    async def resume_once_paused() -> None:
        await pause.paused_now.wait()
        await resume_later(pause)

    resuming = asyncio.create_task(resume_once_paused())
    assert await handler(REQUEST) is Outcome.REQUEUE
    await resuming
    assert (pause.reasons, email.sent, store.events) == (["535"], [], [])


class IdleScheduleStore:
    """Nothing due, nothing unpublished; records what was marked enqueued."""

    def __init__(self) -> None:
        self.marked: list[list[int]] = []

    async def requeue_due(self, channel: str, limit: int) -> list[int]:
        return []

    async def mark_enqueued(self, job_ids: list[int]) -> None:
        self.marked.append(job_ids)

    async def publish_unqueued(
        self, channel: str, limit: int, grace_seconds: float, publish: Any
    ) -> list[int]:
        return []

    async def reap_unstarted(self, channel: str, limit: int) -> list[int]:
        return []

    async def reap_expired(self, channel: str, state: JobState, limit: int) -> list[int]:
        raise AssertionError("an SMS job is never marked indeterminate")


class RecordingPublisher:
    def __init__(self) -> None:
        self.batches: list[tuple[str, list[int]]] = []

    async def publish(self, channel: str, job_ids: list[int]) -> None:
        self.batches.append((channel, job_ids))


async def test_the_sms_scheduler_publishes_the_jobs_its_reaper_sent_back_to_pending() -> None:
    twilio = FakeTwilio()
    body = "shop.myshopify.com: Blue Shirt is back in stock. https://shop.myshopify.com/variants/42"
    twilio.listed = [listed(f"{body}\nReply STOP to opt out.", NOW, "SMx")]
    leases = FakeLeaseStore(ExpiredSms(sms_job(1), NOW), ExpiredSms(sms_job(2, phone="+14155550124"), NOW))
    store, publisher = IdleScheduleStore(), RecordingPublisher()
    scheduler = Scheduler(
        store,
        publisher,
        "sms",
        batch_size=10,
        grace_seconds=30,
        interval=1,
        lease_reaper=reaper(leases, twilio),
    )
    assert (await scheduler.tick()).reaped == 2
    assert (publisher.batches, store.marked) == ([("sms", [2])], [[2]])
