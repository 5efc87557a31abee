"""Replay as a decision (table-driven) and as one audited transaction (recording fake store)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from restock_common.replay import (
    ACTION,
    AuditEntry,
    JobSnapshot,
    ReplayResult,
    audit_entry,
    plan_replay,
    refusal,
    replay,
)


def snapshot(
    job_id: int = 1, state: str = "dead-letter", consent: str = "confirmed", **kw: Any
) -> JobSnapshot:
    return JobSnapshot(
        job_id=job_id, tenant_id=kw.pop("tenant_id", 7), state=state, subscription_state=consent, **kw
    )


@pytest.mark.parametrize(
    ("job", "expected"),
    [
        (snapshot(state="dead-letter"), None),
        (snapshot(state="indeterminate"), None),
        (None, "not-found"),
        (snapshot(state="sent"), "not-replayable-in-state:sent"),
        (snapshot(state="pending"), "not-replayable-in-state:pending"),
        (snapshot(state="processing"), "not-replayable-in-state:processing"),
        (snapshot(state="failed-temporary"), "not-replayable-in-state:failed-temporary"),
        (snapshot(state="failed-permanent"), "not-replayable-in-state:failed-permanent"),
        (snapshot(state="skipped-opted-out"), "not-replayable-in-state:skipped-opted-out"),
        (snapshot(consent="unsubscribed"), "opted-out"),
        (snapshot(unsubscribed_at=datetime(2026, 1, 1, tzinfo=UTC)), "opted-out"),
        (snapshot(consent="pending"), "not-confirmed"),
        (snapshot(state="sent", consent="unsubscribed"), "not-replayable-in-state:sent"),
    ],
)
def test_refusal(job: JobSnapshot | None, expected: str | None) -> None:
    assert refusal(job) == expected


def test_plan_keeps_request_order_and_counts_each_job_once() -> None:
    found = [snapshot(3), snapshot(1), snapshot(2, state="sent")]
    assert plan_replay([3, 2, 1, 3, 9], found) == ReplayResult(
        replayed=[3, 1], refused={2: "not-replayable-in-state:sent", 9: "not-found"}
    )


def test_audit_entry_names_the_shop_only_when_every_job_is_of_one_shop() -> None:
    result = ReplayResult([1], {2: "opted-out"})
    one = audit_entry([1, 2], result, "ops@example.com", "smtp outage", [snapshot(1), snapshot(2)])
    assert one == AuditEntry(
        tenant_id=7,
        actor="ops@example.com",
        action=ACTION,
        target_type="notification_job",
        target_ids=[1, 2],
        detail={"reason": "smtp outage", "replayed": [1], "refused": {"2": "opted-out"}},
    )
    mixed = audit_entry([1, 2], result, "ops", "", [snapshot(1), snapshot(2, tenant_id=8)])
    assert mixed.tenant_id is None


@dataclass
class RecordingReplayStore:
    """A ``ReplayStore`` over a dict of snapshots; records each call and whether it ran in the transaction."""

    jobs: dict[int, JobSnapshot]
    calls: list[tuple[str, bool]] = field(default_factory=list)
    audits: list[AuditEntry] = field(default_factory=list)
    committed: bool = False
    _open: bool = False

    def transaction(self) -> AbstractAsyncContextManager[Any]:
        @asynccontextmanager
        async def transaction() -> AsyncIterator[None]:
            self._open = True
            yield
            self._open, self.committed = False, True

        return transaction()

    async def lock(self, job_ids: Sequence[int], tenant_id: int | None = None) -> list[JobSnapshot]:
        self.calls.append(("lock", self._open))
        found = [self.jobs[job_id] for job_id in job_ids if job_id in self.jobs]
        return [job for job in found if tenant_id is None or job.tenant_id == tenant_id]

    async def reset(self, job_ids: Sequence[int]) -> list[int]:
        self.calls.append(("reset", self._open))
        for job_id in job_ids:
            self.jobs[job_id] = snapshot(job_id, state="pending")
        return list(job_ids)

    async def audit(self, entry: AuditEntry) -> None:
        self.calls.append(("audit", self._open))
        self.audits.append(entry)


async def test_replay_locks_resets_and_audits_in_one_transaction() -> None:
    store = RecordingReplayStore({1: snapshot(1), 2: snapshot(2, consent="unsubscribed")})
    result = await replay(store, [1, 2], "ops@example.com", "outage over")
    assert result == ReplayResult([1], {2: "opted-out"})
    assert store.calls == [("lock", True), ("reset", True), ("audit", True)]
    assert store.committed
    assert store.jobs[1].state == "pending"
    assert store.jobs[2].state == "dead-letter"
    [entry] = store.audits
    assert (entry.actor, entry.target_ids, entry.detail["refused"]) == (
        "ops@example.com",
        [1, 2],
        {"2": "opted-out"},
    )


async def test_a_replay_with_nothing_replayable_resets_nothing_but_is_still_audited() -> None:
    store = RecordingReplayStore({1: snapshot(1, state="sent")})
    result = await replay(store, [1], "ops", "")
    assert result.replayed == []
    assert [name for name, _ in store.calls] == ["lock", "audit"]


@pytest.mark.parametrize(("job_ids", "actor"), [([1], " "), ([], "ops")])
async def test_a_replay_needs_an_actor_and_jobs(job_ids: list[int], actor: str) -> None:
    store = RecordingReplayStore({1: snapshot(1)})
    with pytest.raises(ValueError):
        await replay(store, job_ids, actor, "")
    assert store.calls == []


async def test_a_scoped_replay_answers_another_shops_job_as_not_found_and_audits_under_its_shop() -> None:
    store = RecordingReplayStore({1: snapshot(1), 2: snapshot(2, tenant_id=8)})
    result = await replay(store, [1, 2], "shopify-staff:a:42", "outage over", tenant_id=7)
    assert result == ReplayResult([1], {2: "not-found"})
    assert store.jobs[2].state == "dead-letter"
    [entry] = store.audits
    assert entry.tenant_id == 7


async def test_a_scoped_replay_with_nothing_found_is_audited_under_its_shop() -> None:
    store = RecordingReplayStore({2: snapshot(2, tenant_id=8)})
    result = await replay(store, [2], "shopify-staff:a:42", "why", tenant_id=7)
    assert result == ReplayResult([], {2: "not-found"})
    assert store.audits[0].tenant_id == 7


async def test_a_store_ignoring_the_scope_still_cannot_cross_shops() -> None:
    class Unscoped(RecordingReplayStore):
        async def lock(self, job_ids: Sequence[int], tenant_id: int | None = None) -> list[JobSnapshot]:
            return await super().lock(job_ids)

    store = Unscoped({2: snapshot(2, tenant_id=8)})
    assert await replay(store, [2], "shopify-staff:a:42", "why", tenant_id=7) == ReplayResult(
        [], {2: "not-found"}
    )
    assert store.jobs[2].state == "dead-letter"


async def test_an_unscoped_replay_replays_any_shops_jobs() -> None:
    store = RecordingReplayStore({1: snapshot(1), 2: snapshot(2, tenant_id=8)})
    assert await replay(store, [1, 2], "ops", "") == ReplayResult([1, 2], {})
    assert store.audits[0].tenant_id is None  # two shops: the platform's action
