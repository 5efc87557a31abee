"""Manual replay of notification jobs: ``dead-letter`` / ``indeterminate`` jobs back to ``pending``, audited.

Rules
-----
- Only ``dead-letter`` and ``indeterminate`` jobs are replayed: they are the states the sender's
  ``delivery.TRANSITIONS`` moves to ``pending`` on ``replay`` (its unit tests check the two agree).
  Any other state (``sent``, ``failed-permanent``, a job being sent ...) is refused.
- A replay never overrides consent: a job whose subscription is unsubscribed, or not (any more) confirmed,
  is refused.
- A replayed job starts a new attempt series: attempt 0, no ``next_attempt_at``, no lease, decision
  ``replayed``, and ``enqueued_at`` NULL: the sender's scheduler publishes pending jobs never published.
- A replay scoped to a shop (``tenant_id``: a shop's staff in the admin API) sees only that shop's jobs: any
  other id is refused ``not-found``, exactly like an id that does not exist, and is neither locked nor
  touched. Unscoped (the CLI: platform operators) it replays any shop's jobs.
- The jobs are locked first, then reset, and one ``audit_log`` row (actor, reason, the requested ids, what
  was replayed and why each refusal) is written, all in one transaction: two replays cannot interleave
  and an unaudited replay cannot exist.

Used by ``python -m restock_admin jobs replay`` and the admin API (``POST /admin/api/jobs/replay``). The
decision (``plan_replay``) is pure; the statements live in ``PiccoloReplayStore``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from restock_common.db.engine import transaction as db_transaction
from restock_common.db.tables import AuditLog, NotificationJob
from restock_common.jobs import NEEDS_AN_OPERATOR

REPLAYABLE_STATES = NEEDS_AN_OPERATOR
REPLAYED_STATE = "pending"
REPLAYED_DECISION = "replayed"
ACTION = "jobs.replay"


@dataclass(frozen=True)
class JobSnapshot:
    """What the replay decision needs to know about one job (read under a row lock)."""

    job_id: int
    tenant_id: int
    state: str
    subscription_state: str
    unsubscribed_at: datetime | None = None


@dataclass(frozen=True)
class ReplayResult:
    """The jobs moved back to pending, and the refused ones with the reason of each."""

    replayed: list[int] = field(default_factory=list)
    refused: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditEntry:
    """One ``audit_log`` row."""

    tenant_id: int | None
    actor: str
    action: str
    target_type: str
    target_ids: list[int]
    detail: dict[str, Any]


def refusal(job: JobSnapshot | None) -> str | None:
    """Why this job may not be replayed (``None``: it may)."""
    if job is None:
        return "not-found"
    if job.state not in REPLAYABLE_STATES:
        return f"not-replayable-in-state:{job.state}"
    if job.subscription_state == "unsubscribed" or job.unsubscribed_at is not None:
        return "opted-out"
    if job.subscription_state != "confirmed":
        return "not-confirmed"
    return None


def plan_replay(job_ids: Iterable[int], snapshots: Iterable[JobSnapshot]) -> ReplayResult:
    """Which of the requested jobs are replayed (in request order, each once) and which are refused."""
    found = {snapshot.job_id: snapshot for snapshot in snapshots}
    replayed: list[int] = []
    refused: dict[int, str] = {}
    for job_id in dict.fromkeys(job_ids):
        reason = refusal(found.get(job_id))
        if reason is None:
            replayed.append(job_id)
        else:
            refused[job_id] = reason
    return ReplayResult(replayed, refused)


def audit_entry(
    job_ids: Sequence[int],
    result: ReplayResult,
    actor: str,
    reason: str,
    snapshots: Iterable[JobSnapshot],
    tenant_id: int | None = None,
) -> AuditEntry:
    """The audit row of a replay. Its tenant is the scope's shop when scoped (even if no id was found), else
    the jobs' shop when they all belong to one (a shop's admin sees it), else NULL (an operator's cross-shop
    action)."""
    tenants = {snapshot.tenant_id for snapshot in snapshots}
    if tenant_id is None and len(tenants) == 1:
        tenant_id = tenants.pop()
    return AuditEntry(
        tenant_id=tenant_id,
        actor=actor,
        action=ACTION,
        target_type="notification_job",
        target_ids=list(dict.fromkeys(job_ids)),
        detail={
            "reason": reason,
            "replayed": result.replayed,
            "refused": {str(job_id): why for job_id, why in result.refused.items()},
        },
    )


class ReplayStore(Protocol):
    """Where jobs are locked, reset and the replay audited; all calls happen inside ``transaction()``."""

    def transaction(self) -> AbstractAsyncContextManager[Any]:
        """One database transaction (the calls below made inside it join it)."""
        ...

    async def lock(self, job_ids: Sequence[int], tenant_id: int | None = None) -> list[JobSnapshot]:
        """The existing jobs among ``job_ids`` (only those of ``tenant_id`` when given; no other row is
        read or locked), locked until the transaction ends."""
        ...

    async def reset(self, job_ids: Sequence[int]) -> list[int]:
        """Move these (replayable) jobs back to pending as a new attempt series; the ids moved."""
        ...

    async def audit(self, entry: AuditEntry) -> None:
        """Write the audit row."""
        ...


async def replay(
    store: ReplayStore, job_ids: Sequence[int], actor: str, reason: str, *, tenant_id: int | None = None
) -> ReplayResult:
    """Replay ``job_ids`` on behalf of ``actor``, only among ``tenant_id``'s jobs when given (see the
    module's rules)."""
    if not actor.strip():
        raise ValueError("a replay needs an actor")
    if not job_ids:
        raise ValueError("no job to replay")
    async with store.transaction():
        snapshots = await store.lock(job_ids, tenant_id)
        # The store's filter is the scope; this keeps a store that ignored it from crossing shops.
        snapshots = [s for s in snapshots if tenant_id is None or s.tenant_id == tenant_id]
        plan = plan_replay(job_ids, snapshots)
        moved = await store.reset(plan.replayed) if plan.replayed else []
        # The rows were locked, so nothing can leave a replayable state in between; kept as a guard.
        lost = {job_id: "changed-concurrently" for job_id in plan.replayed if job_id not in moved}
        result = ReplayResult(
            [job_id for job_id in plan.replayed if job_id in moved], {**plan.refused, **lost}
        )
        await store.audit(audit_entry(job_ids, result, actor, reason, snapshots, tenant_id))
    return result


_LOCK = """
SELECT j.id, j.tenant, j.state, s.state AS subscription_state, s.unsubscribed_at
  FROM notification_jobs j JOIN subscriptions s ON s.id = j.subscription
 WHERE j.id = ANY({}::bigint[]) AND ({}::bigint IS NULL OR j.tenant = {}::bigint)
   FOR UPDATE OF j
"""

_RESET = """
UPDATE notification_jobs
   SET state = {}, attempt = 0, next_attempt_at = NULL, lease_until = NULL, decision = {},
       enqueued_at = NULL, updated_at = now()
 WHERE id = ANY({}::bigint[]) AND state = ANY({}::text[])
RETURNING id
"""


class PiccoloReplayStore:
    """``ReplayStore`` over the tables' Piccolo engine."""

    def transaction(self) -> AbstractAsyncContextManager[Any]:
        engine: Any = NotificationJob._meta.db
        return db_transaction(engine)

    async def lock(self, job_ids: Sequence[int], tenant_id: int | None = None) -> list[JobSnapshot]:
        rows = await NotificationJob.raw(_LOCK, list(job_ids), tenant_id, tenant_id)
        return [
            JobSnapshot(
                row["id"], row["tenant"], row["state"], row["subscription_state"], row["unsubscribed_at"]
            )
            for row in rows
        ]

    async def reset(self, job_ids: Sequence[int]) -> list[int]:
        replayable = sorted(state.value for state in REPLAYABLE_STATES)
        rows = await NotificationJob.raw(_RESET, REPLAYED_STATE, REPLAYED_DECISION, list(job_ids), replayable)
        return [int(row["id"]) for row in rows]

    async def audit(self, entry: AuditEntry) -> None:
        await AuditLog.insert(
            AuditLog(
                tenant=entry.tenant_id,
                actor=entry.actor,
                action=entry.action,
                target_type=entry.target_type,
                target_ids=entry.target_ids,
                detail=entry.detail,
            )
        )
