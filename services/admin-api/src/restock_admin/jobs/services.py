"""The admin API's job operations: the orchestration between the controller, the ports and the replay
library, always within the caller's shop."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from restock_admin.jobs.ports import JobReader
from restock_admin.jobs.schemas import JobPage, ReplayOut, ReplayRequest
from restock_admin.staff.guard import Staff
from restock_common.jobs import JobState
from restock_common.replay import ReplayStore, replay

logger = logging.getLogger(__name__)


class JobService:
    """Lists a shop's jobs and replays them."""

    def __init__(self, reader: JobReader, replays: ReplayStore) -> None:
        self.reader = reader
        self.replays = replays

    async def page(
        self, staff: Staff, states: Sequence[JobState], limit: int, after_id: int | None
    ) -> JobPage:
        """One page of the shop's jobs in ``states``, newest first, after ``after_id``."""
        # One more than the page: whether a next page exists is known without an empty last request.
        jobs = await self.reader.page(staff.tenant_id, sorted(set(states)), limit + 1, after_id)
        more = len(jobs) > limit
        return JobPage(jobs=jobs[:limit], next_after_id=jobs[limit - 1].id if more else None)

    async def replay(self, staff: Staff, request: ReplayRequest) -> ReplayOut:
        """Replay (audited, as ``staff.actor``) the requested jobs of the staff's shop; others are refused."""
        result = await replay(
            self.replays, request.job_ids, staff.actor, request.reason.strip(), tenant_id=staff.tenant_id
        )
        logger.info(
            "admin api replay",
            extra={
                "tenant_id": staff.tenant_id,
                "staff_user_id": staff.user_id,
                "replayed": len(result.replayed),
                "refused": len(result.refused),
            },
        )
        refused = {str(job_id): reason for job_id, reason in result.refused.items()}
        return ReplayOut(replayed=result.replayed, refused=refused)
