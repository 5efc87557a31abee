"""``python -m restock_admin jobs replay`` as a real process against this run's database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime

import msgspec
import pytest

from restock_common.db.tables import AuditLog, NotificationJob, RestockEvent, Subscription, Tenant

pytestmark = pytest.mark.integration


def run_cli(test_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "restock_admin", *args],
        env={**os.environ, **test_env},
        capture_output=True,
        text=True,
        timeout=60,
    )


async def seed(*jobs: tuple[str, str]) -> list[int]:
    """A shop with one job per (job state, subscription state)."""
    tenant = Tenant(shop_domain="replay-cli.myshopify.com")
    await tenant.save()
    event = RestockEvent(tenant=tenant.id, variant_id=1, available=1, restock_window=1, source="webhook")
    await event.save()
    job_ids = []
    for index, (state, consent) in enumerate(jobs):
        subscription = Subscription(
            tenant=tenant.id,
            variant_id=1,
            channel="email",
            email=f"s{index}@example.com",
            contact_hash=f"h{index}",
            state=consent,
        )
        await subscription.save()
        job = NotificationJob(
            tenant=tenant.id,
            restock_event=event.id,
            subscription=subscription.id,
            variant_id=1,
            channel="email",
            notification_key=f"1:{subscription.id}:1",
            state=state,
            attempt=6,
            priority_at=datetime.now(UTC),
            enqueued_at=datetime.now(UTC),
        )
        await job.save()
        job_ids.append(int(job.id))
    return job_ids


async def states(job_ids: list[int]) -> list[tuple[str, int, object]]:
    rows = (
        await NotificationJob.select().where(NotificationJob.id.is_in(job_ids)).order_by(NotificationJob.id)
    )
    return [(row["state"], row["attempt"], row["enqueued_at"]) for row in rows]


async def test_jobs_replay_moves_replayable_jobs_to_pending_and_audits(
    test_env: dict[str, str], engine: object, clean_db: None
) -> None:
    dead, lost = await seed(("dead-letter", "confirmed"), ("indeterminate", "confirmed"))
    done = run_cli(
        test_env,
        "jobs",
        "replay",
        "--job",
        str(dead),
        "--job",
        str(lost),
        "--actor",
        "ops@example.com",
        "--reason",
        "smtp outage over",
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"replayed": [dead, lost], "refused": {}}
    assert await states([dead, lost]) == [("pending", 0, None), ("pending", 0, None)]
    [audit] = await AuditLog.select().where(AuditLog.action == "jobs.replay")
    assert audit["actor"] == "ops@example.com"
    assert msgspec.json.decode(audit["target_ids"]) == [dead, lost]
    assert msgspec.json.decode(audit["detail"])["reason"] == "smtp outage over"


async def test_jobs_replay_refuses_an_opted_out_job_and_exits_1(
    test_env: dict[str, str], engine: object, clean_db: None
) -> None:
    gone, sent = await seed(("dead-letter", "unsubscribed"), ("sent", "confirmed"))
    done = run_cli(test_env, "jobs", "replay", "--job", str(gone), "--job", str(sent), "--actor", "ops")
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout) == {
        "replayed": [],
        "refused": {str(gone): "opted-out", str(sent): "not-replayable-in-state:sent"},
    }
    assert [state for state, _, _ in await states([gone, sent])] == ["dead-letter", "sent"]
    assert len(await AuditLog.select().where(AuditLog.action == "jobs.replay")) == 1
    assert "@example.com" not in done.stdout + done.stderr
