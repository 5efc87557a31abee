"""The email sender's real stack (batch handler, job handler, SMTP provider, PostgreSQL job store) against the
sandbox SMTP server's slow answers, dropped connections and AUTH refusals, one job per case.

- A reply slower than the provider's timeout, or a connection dropped before the message was sent, is a
  temporary failure: ``failed-temporary``, retried later.
- A slow reply within the timeout is only slow: ``sent``.
- A connection dropped (or a reply timed out) after the final dot, the peer having stored the message,
  leaves the outcome unknown: ``indeterminate``, never retried automatically (a retry could deliver it
  twice).
- Credentials the server refuses (535) pause the channel: the job waits ``pending``, nothing is lost.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from restock_common.broker import Outcome
from restock_common.db.tables import ChannelPause as ChannelPauseRow
from restock_common.db.tables import NotificationJob, NotificationLog
from restock_common.faults import FaultPoints
from restock_common.messages import JobBatch
from restock_common.settings import Settings
from restock_sandbox.smtp.inbox import FaultRule, Inbox
from restock_sender.adapters.pause_store import PiccoloPauseStore
from restock_sender.app import build_batch_handler
from restock_sender.pause import ChannelPause
from restock_sender.ports import OperatorBacklog
from restock_sender.providers.smtp import SmtpProvider

# The integration conftest's fixtures: (shop, variant, addresses) -> the jobs seeded; the sandbox SMTP server.
SeedEmailJobs = Callable[[str, int, Sequence[str]], Awaitable[list[NotificationJob]]]
SandboxSmtp = Callable[..., AbstractAsyncContextManager[tuple[Inbox, int]]]

pytestmark = pytest.mark.integration

SHOP = "faults-shop.myshopify.com"
VARIANT = 5151
ADDRESS = "ada@example.com"
# The provider's per-command timeout (its ``timeout``; production keeps the default 30 s), small here so a
# slow answer can outlast it quickly.
TIMEOUT_SECONDS = 1.0


def provider(port: int, *, username: str | None = None, password: str | None = None) -> SmtpProvider:
    return SmtpProvider(
        host="127.0.0.1",
        port=port,
        sender="Restock <alerts@restock.localhost>",
        username=username,
        password=password,
        tls="none",
        pool_size=1,
        timeout=TIMEOUT_SECONDS,
    )


async def send_one(
    settings: Settings, engine: Any, smtp: SmtpProvider, job_id: int, pause: ChannelPause | None = None
) -> Outcome:
    """One batch of one job through the production batch handler, as the consumer would hand it over."""
    handler = build_batch_handler(settings, engine, smtp, FaultPoints(None), pause=pause)
    try:
        return await handler(JobBatch(channel="email", job_ids=[job_id]))
    finally:
        await smtp.close()


async def job_and_logs(job_id: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    [job] = await NotificationJob.select().where(NotificationJob.id == job_id)
    logs = await NotificationLog.select().where(NotificationLog.job == job_id).order_by(NotificationLog.id)
    return job, logs


def failure_kind(log: dict[str, Any]) -> str | None:
    """What went wrong on the wire (the provider error's kind), which the handler writes at the head of the
    log row's ``error_detail`` (``"timeout: ..."``); ``error_kind`` holds its classification."""
    detail = log["error_detail"]
    return None if detail is None else detail.split(":", 1)[0]


# (case, the sandbox's rule, the job's state, the log row's (error_kind, failure kind), messages in the inbox)
FAULTS = [
    (
        "slow RCPT answer beyond the timeout",
        FaultRule(ADDRESS, None, delay_seconds=TIMEOUT_SECONDS + 1.5),
        "failed-temporary",
        ("temporary", "timeout"),
        0,
    ),
    (
        "connection dropped at RCPT",
        FaultRule(ADDRESS, None, drop=True),
        "failed-temporary",
        ("temporary", "connection"),
        0,
    ),
    (
        "slow RCPT answer within the timeout",
        FaultRule(ADDRESS, None, delay_seconds=TIMEOUT_SECONDS / 2),
        "sent",
        (None, None),
        1,
    ),
    (
        "slow reply to the final dot within the timeout",
        FaultRule(ADDRESS, None, stage="data", delay_seconds=TIMEOUT_SECONDS / 2),
        "sent",
        (None, None),
        1,
    ),
    (
        "reply to the final dot slower than the timeout, the message accepted",
        FaultRule(ADDRESS, None, stage="data", delay_seconds=TIMEOUT_SECONDS + 1.5),
        "indeterminate",
        ("unknown", "lost-reply"),
        1,
    ),
    (
        "connection dropped after the final dot, the message accepted",
        FaultRule(ADDRESS, None, stage="data", drop=True, accepted=True),
        "indeterminate",
        ("unknown", "lost-reply"),
        1,
    ),
]


@pytest.mark.parametrize(
    ("rule", "state", "kinds", "delivered"),
    [case[1:] for case in FAULTS],
    ids=[case[0] for case in FAULTS],
)
async def test_a_wire_fault_ends_the_job_in_its_state_with_one_log_row(
    clean_db: None,
    engine: Any,
    settings: Settings,
    inbox: tuple[Inbox, int],
    seed_email_jobs: SeedEmailJobs,
    rule: FaultRule,
    state: str,
    kinds: tuple[str | None, str | None],
    delivered: int,
) -> None:
    mailbox, port = inbox
    [job] = await seed_email_jobs(SHOP, VARIANT, [ADDRESS])
    mailbox.add_fault(rule)

    assert await send_one(settings, engine, provider(port), job.id) is Outcome.ACK

    row, logs = await job_and_logs(job.id)
    assert row["state"] == state
    [log] = logs
    assert (log["outcome"], log["error_kind"], failure_kind(log)) == (state, *kinds)
    assert len(mailbox.received(ADDRESS)) == delivered
    assert mailbox.faults == []  # the rule met exactly the one attempt
    if state == "indeterminate":  # left for an operator's replay: no retry is scheduled
        assert row["next_attempt_at"] is None
    # What the channel monitor reads for the backlog gauges: the job counted where an operator looks.
    backlog = await PiccoloPauseStore(engine).operator_backlog("email")
    assert backlog == OperatorBacklog(dead_letter=0, indeterminate=int(state == "indeterminate"))


@pytest.mark.parametrize(
    ("password", "state", "paused"),
    [("right-password", "sent", False), ("wrong-password", "pending", True)],
)
async def test_credentials_the_server_refuses_pause_the_channel_and_the_job_waits_pending(
    clean_db: None,
    engine: Any,
    settings: Settings,
    sandbox_smtp: SandboxSmtp,
    seed_email_jobs: SeedEmailJobs,
    password: str,
    state: str,
    paused: bool,
) -> None:
    [job] = await seed_email_jobs(SHOP, VARIANT, [ADDRESS])
    pause = ChannelPause("email", PiccoloPauseStore(engine))
    async with sandbox_smtp(credentials=("restock", "right-password")) as (mailbox, port):
        smtp = provider(port, username="restock", password=password)
        assert await send_one(settings, engine, smtp, job.id, pause) is Outcome.ACK

    row, [log] = await job_and_logs(job.id)
    assert (row["state"], log["outcome"]) == (state, state)
    assert pause.paused is paused
    rows = await ChannelPauseRow.select().where(ChannelPauseRow.channel == "email")
    assert [(r["paused"], r["error_code"]) for r in rows] == ([(True, "535")] if paused else [])
    if paused:  # the job is not at fault: no attempt's failure is charged to it, nothing dead-lettered
        assert (log["error_kind"], log["error_code"]) == ("configuration", "535")
        assert await NotificationJob.count().where(NotificationJob.state == "dead-letter") == 0
        assert mailbox.received() == []
