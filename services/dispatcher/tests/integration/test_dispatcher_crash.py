"""The real dispatcher process (``python -m restock_dispatcher``) killed with SIGKILL between a commit and
its publish, then restarted: every target ends with exactly one job and every released job is published
exactly once (the redelivered event, the wave timer and the publish sweeper all run after the restart)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from restock_common import keys, topology
from restock_common.broker import Broker
from restock_common.db.tables import NotificationJob, RestockEvent, Rule, Subscription, Tenant, WavePlan
from restock_common.messages import JobBatch, RestockDetected
from restock_common.rules import Rules, encode_rules
from restock_common.signatures import contact_hash
from restock_dispatcher.handler import BATCHES_PER_PAGE, FAULT_AFTER_COMMIT, FAULT_AFTER_CONFIRM
from restock_dispatcher.wave_timer import FAULT_AFTER_RELEASE

pytestmark = pytest.mark.integration

VARIANT = 7171
TARGETS = 40
# Short loops after the restart, so recovery does not wait for production intervals.
FAST = {
    "RESTOCK_PUBLISH_SWEEP_AFTER_SECONDS": "1",
    "RESTOCK_PUBLISH_SWEEP_INTERVAL_SECONDS": "0.2",
    "RESTOCK_WAVE_TICK_SECONDS": "0.2",
    "RESTOCK_JOB_BATCH_SIZE": "4",
}

Drain = Callable[[], Awaitable[list[JobBatch]]]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start(test_env: dict[str, str], log: Path, **extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, **test_env, **FAST, "RESTOCK_HTTP_PORT": str(free_port()), **extra}
    return subprocess.Popen(
        [sys.executable, "-m", "restock_dispatcher"],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


async def exited(process: subprocess.Popen[bytes], timeout: float = 60.0) -> int:
    deadline = asyncio.get_running_loop().time() + timeout
    while process.poll() is None:
        if asyncio.get_running_loop().time() > deadline:
            process.kill()
            process.wait()
            raise AssertionError("the dispatcher did not reach its fault point")
        await asyncio.sleep(0.1)
    return process.returncode


async def stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    return await exited(process, 30.0)


async def seed(rules: Rules, targets: int = TARGETS) -> tuple[Tenant, list[int]]:
    tenant = Tenant(shop_domain="crash-shop.myshopify.com")
    await tenant.save()
    await Rule(tenant=tenant.id, body=encode_rules(rules)).save()
    ids = []
    for n in range(targets):
        email = f"crash{n}@example.com"
        row = Subscription(
            tenant=tenant.id,
            variant_id=VARIANT,
            channel="email",
            email=email,
            contact_hash=contact_hash(email),
            state="confirmed",
            subscribed_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=n),
        )
        await row.save()
        ids.append(row.id)
    return tenant, ids


async def detected(tenant: Tenant, available: int) -> RestockDetected:
    now = datetime.now(UTC)
    event = RestockEvent(
        tenant=tenant.id,
        variant_id=VARIANT,
        available=available,
        restock_window=keys.restock_window(now),
        source="webhook",
        detected_at=now,
    )
    await event.save()
    return RestockDetected(
        restock_event_id=event.id,
        tenant_id=tenant.id,
        shop_domain=tenant.shop_domain,
        variant_id=VARIANT,
        available=available,
        restock_window=event.restock_window,
        detected_at=now,
    )


async def pending_ids() -> list[int]:
    rows = await NotificationJob.select(NotificationJob.id).where(NotificationJob.state == "pending")
    return sorted(row["id"] for row in rows)


async def collect_until(drain: Drain, expected: list[int], timeout: float = 30.0) -> Counter[int]:
    """Drain the email queue until every expected id was published, then a little longer: a duplicate
    published by a late loop would show up."""
    seen: Counter[int] = Counter()
    deadline = asyncio.get_running_loop().time() + timeout
    while not set(expected) <= set(seen):
        assert asyncio.get_running_loop().time() < deadline, f"never published: {set(expected) - set(seen)}"
        seen.update(job_id for batch in await drain() for job_id in batch.job_ids)
        await asyncio.sleep(0.1)
    await asyncio.sleep(2.5)  # several sweep and tick intervals, past the sweep delay
    seen.update(job_id for batch in await drain() for job_id in batch.job_ids)
    return seen


async def assert_one_job_per_target(targets: list[int]) -> None:
    rows = await NotificationJob.select(NotificationJob.subscription)
    assert sorted(row["subscription"] for row in rows) == sorted(targets)


async def test_killed_between_freeze_commit_and_publish_then_restarted(
    clean_db: None, broker: Broker, test_env: dict[str, str], email_queue: Drain, tmp_path: Path
) -> None:
    tenant, targets = await seed(Rules(waves_enabled=True, shoppers_per_unit=3, wave_interval_seconds=3600))
    await broker.publish(await detected(tenant, 5), topology.RESTOCK_DETECTED)
    log = tmp_path / "dispatcher.log"

    crashed = start(test_env, log, RESTOCK_FAULT_POINT=FAULT_AFTER_COMMIT)
    assert await exited(crashed) == -signal.SIGKILL, log.read_text()[-3000:]
    # The freeze committed (15 released in wave 1, 25 waiting) and nothing reached the broker.
    released = await pending_ids()
    assert len(released) == 15
    assert await email_queue() == []
    await assert_one_job_per_target(targets)

    restarted = start(test_env, log)
    try:
        seen = await collect_until(email_queue, released)
    finally:
        assert await stop(restarted) == 0, log.read_text()[-3000:]
    assert seen == Counter(released), "each released job exactly once, nothing else"
    await assert_one_job_per_target(targets)
    waiting = await NotificationJob.count().where(NotificationJob.state == "waiting")
    assert waiting == TARGETS - 15


async def test_killed_between_wave_release_and_publish_then_restarted(
    clean_db: None, broker: Broker, test_env: dict[str, str], email_queue: Drain, tmp_path: Path
) -> None:
    # A 1 s interval: the timer's wave 2 comes due right after wave 1.
    tenant, targets = await seed(Rules(waves_enabled=True, shoppers_per_unit=2, wave_interval_seconds=1))
    await broker.publish(await detected(tenant, 3), topology.RESTOCK_DETECTED)
    log = tmp_path / "dispatcher.log"

    crashed = start(test_env, log, RESTOCK_FAULT_POINT=FAULT_AFTER_RELEASE)
    assert await exited(crashed) == -signal.SIGKILL, log.read_text()[-3000:]
    [plan] = await WavePlan.select().where(WavePlan.variant_id == VARIANT)
    assert plan["wave"] == 2  # wave 2 committed, its publish never happened
    released = await pending_ids()
    assert len(released) == 12
    wave_1 = [job_id for batch in await email_queue() for job_id in batch.job_ids]
    # Wave 1 went out with the restock. On a loaded machine the timer's wave 2 (due 1 s later) can commit
    # before the restock's publish, which takes every pending unpublished job of the event: some of wave 2
    # then went out with it, and only the rest is stranded. Either way, each job once (asserted below).
    assert len(wave_1) >= 6
    assert len(set(wave_1)) == len(wave_1)
    assert set(wave_1) <= set(released)
    # A batch of wave 2 the restock's publish had sent when the kill came (its confirm and the commit marking
    # it enqueued never happened) is on the broker yet unmarked: the restart publishes it again, which the
    # sender's compare-and-set claim makes harmless (ADR 10). Only such jobs may go twice.
    unmarked = await NotificationJob.select(NotificationJob.id).where(
        (NotificationJob.state == "pending") & NotificationJob.enqueued_at.is_null()
    )
    sent_uncommitted = set(wave_1) & {row["id"] for row in unmarked}

    restarted = start(test_env, log)
    try:
        # Wave 2 (stranded), then waves 3.. every second until the line is empty.
        expected = sorted(set(released) - set(wave_1))

        async def everyone_released() -> bool:
            return await NotificationJob.count().where(NotificationJob.state == "waiting") == 0

        deadline = asyncio.get_running_loop().time() + 60
        while not await everyone_released():
            assert asyncio.get_running_loop().time() < deadline, "the line never emptied"
            await asyncio.sleep(0.2)
        everyone = await pending_ids()
        once = sorted(set(everyone) - set(wave_1))
        seen = await collect_until(email_queue, once + sorted(sent_uncommitted))
    finally:
        assert await stop(restarted) == 0, log.read_text()[-3000:]
    assert set(expected) <= set(seen)
    assert seen == Counter(once) + Counter(sent_uncommitted), "each job once, unless its mark was lost"
    await assert_one_job_per_target(targets)
    waves = await NotificationJob.select(NotificationJob.wave).where(NotificationJob.state == "pending")
    assert Counter(row["wave"] for row in waves) == {1: 6, 2: 6, 3: 6, 4: 6, 5: 6, 6: 6, 7: 4}


async def test_killed_between_a_pages_confirms_and_its_cursor_commit_then_restarted(
    clean_db: None, broker: Broker, test_env: dict[str, str], email_queue: Drain, tmp_path: Path
) -> None:
    """Waves off: the freeze's jobs go by the event's cursor (ADR 24), pages of BATCHES_PER_PAGE batches of
    one job here. Killed once the second page's batches were confirmed, before its cursor committed: the
    restarted dispatcher (the redelivered event) carries on from the first page's cursor. The second page
    is on the broker twice (the sender's compare-and-set claim sends each job once), every other job
    exactly once, and none is lost."""
    targets = BATCHES_PER_PAGE * 2 + 20
    tenant, subscriptions = await seed(Rules(), targets)
    event = await detected(tenant, 5)
    await broker.publish(event, topology.RESTOCK_DETECTED)
    log = tmp_path / "dispatcher.log"

    one_job_batches = {"RESTOCK_JOB_BATCH_SIZE": "1"}
    crashed = start(test_env, log, RESTOCK_FAULT_POINT=f"{FAULT_AFTER_CONFIRM}@2", **one_job_batches)
    assert await exited(crashed) == -signal.SIGKILL, log.read_text()[-3000:]
    jobs = await pending_ids()
    assert len(jobs) == targets
    [row] = await RestockEvent.select().where(RestockEvent.id == event.restock_event_id)
    assert row["published_at"] is None
    assert row["published_through_id"] == jobs[BATCHES_PER_PAGE - 1]  # the first page committed

    restarted = start(test_env, log, **one_job_batches)
    try:
        seen = await collect_until(email_queue, jobs)
    finally:
        assert await stop(restarted) == 0, log.read_text()[-3000:]
    second_page = jobs[BATCHES_PER_PAGE : 2 * BATCHES_PER_PAGE]
    assert seen == Counter(jobs) + Counter(second_page)
    [row] = await RestockEvent.select().where(RestockEvent.id == event.restock_event_id)
    assert row["published_at"] is not None
    await assert_one_job_per_target(subscriptions)
