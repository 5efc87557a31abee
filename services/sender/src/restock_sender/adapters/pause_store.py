"""``PauseStore`` in PostgreSQL: the ``channel_pauses`` row of a channel (one per channel, UNIQUE)."""

from __future__ import annotations

from piccolo.engine.postgres import PostgresEngine

from restock_common.db.tables import ChannelPause
from restock_common.jobs import NEEDS_AN_OPERATOR
from restock_sender.delivery import JobState
from restock_sender.ports import OperatorBacklog, PauseRecord

_READ = "SELECT channel, paused, reason, error_code FROM channel_pauses WHERE channel = {}"

# paused_at is the first refusal of this pause: a repeat (another replica, another job) keeps it.
_PAUSE = """
INSERT INTO channel_pauses (channel, paused, reason, error_code, paused_at, resumed_at, updated_at)
VALUES ({}, true, {}, {}, now(), NULL, now())
ON CONFLICT (channel) DO UPDATE
   SET paused = true, reason = EXCLUDED.reason, error_code = EXCLUDED.error_code,
       paused_at = CASE WHEN channel_pauses.paused THEN channel_pauses.paused_at ELSE now() END,
       resumed_at = NULL, updated_at = now()
"""

_RESUME = """
UPDATE channel_pauses SET paused = false, resumed_at = now(), updated_at = now()
 WHERE channel = {} AND paused
RETURNING id
"""

# Over the small partial index of such jobs (notification_jobs_needs_operator), not the channel's every job:
# the states are written into the statement as literals, so the planner can prove the index's predicate.
_NEEDS_AN_OPERATOR = ", ".join(f"'{state.value}'" for state in sorted(NEEDS_AN_OPERATOR))
_OPERATOR_BACKLOG = f"""
SELECT count(*) FILTER (WHERE state = {{}}) AS dead_letter,
       count(*) FILTER (WHERE state = {{}}) AS indeterminate
  FROM notification_jobs
 WHERE channel = {{}} AND state IN ({_NEEDS_AN_OPERATOR})
"""


class PiccoloPauseStore:
    """``PauseStore`` over the Piccolo engine."""

    def __init__(self, engine: PostgresEngine) -> None:
        self.engine = engine

    async def read(self, channel: str) -> PauseRecord | None:
        rows = await ChannelPause.raw(_READ, channel)
        if not rows:
            return None
        row = rows[0]
        return PauseRecord(row["channel"], bool(row["paused"]), row["reason"], row["error_code"])

    async def pause(self, channel: str, reason: str, error_code: str | None) -> None:
        await ChannelPause.raw(_PAUSE, channel, reason, error_code)

    async def resume(self, channel: str) -> bool:
        return bool(await ChannelPause.raw(_RESUME, channel))

    async def operator_backlog(self, channel: str) -> OperatorBacklog:
        [row] = await ChannelPause.raw(
            _OPERATOR_BACKLOG, JobState.DEAD_LETTER.value, JobState.INDETERMINATE.value, channel
        )
        return OperatorBacklog(dead_letter=int(row["dead_letter"]), indeterminate=int(row["indeterminate"]))
