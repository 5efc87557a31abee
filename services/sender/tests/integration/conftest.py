"""Fixtures of the sender's integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta

import pytest

from restock_common import keys
from restock_common.db.tables import InventoryItem, NotificationJob, RestockEvent, Subscription, Tenant
from restock_common.signatures import contact_hash
from restock_sandbox.smtp.inbox import Inbox
from restock_sandbox.smtp.server import InboxHandler, start_smtp_server

SeedEmailJobs = Callable[[str, int, Sequence[str]], Awaitable[list[NotificationJob]]]

DETECTED_AT = datetime(2026, 11, 1, tzinfo=UTC)


async def _seed_email_jobs(shop: str, variant: int, addresses: Sequence[str]) -> list[NotificationJob]:
    """One shop, one restock of ``variant``, and one confirmed subscription and pending, enqueued email job
    per address, FIFO in the order given."""
    tenant = Tenant(shop_domain=shop)
    await tenant.save()
    await InventoryItem(tenant=tenant.id, inventory_item_id=5, variant_id=variant, title="Red Scarf").save()
    window = keys.restock_window(DETECTED_AT)
    event = RestockEvent(
        tenant=tenant.id,
        variant_id=variant,
        available=9,
        restock_window=window,
        source="webhook",
        detected_at=DETECTED_AT,
    )
    await event.save()
    jobs = []
    for offset, address in enumerate(addresses):
        subscription = Subscription(
            tenant=tenant.id,
            variant_id=variant,
            channel="email",
            email=address,
            contact_hash=contact_hash(address),
            state="confirmed",
            subscribed_at=DETECTED_AT - timedelta(days=1) + timedelta(seconds=offset),
        )
        await subscription.save()
        job = NotificationJob(
            tenant=tenant.id,
            restock_event=event.id,
            subscription=subscription.id,
            variant_id=variant,
            channel="email",
            notification_key=keys.notification_key(variant, subscription.id, window),
            state="pending",
            priority_at=subscription.subscribed_at,
            enqueued_at=datetime.now(UTC),
        )
        await job.save()
        jobs.append(job)
    return jobs


@pytest.fixture
def seed_email_jobs() -> SeedEmailJobs:
    """``_seed_email_jobs``: (shop, variant, addresses) -> the jobs, FIFO."""
    return _seed_email_jobs


@asynccontextmanager
async def _sandbox_smtp(credentials: tuple[str, str] | None = None) -> AsyncIterator[tuple[Inbox, int]]:
    """The sandbox SMTP server (aiosmtpd) with its inbox and fault table on a free loopback port, requiring
    ``credentials`` (login, password) when given."""
    mailbox = Inbox()
    handler = InboxHandler(mailbox, lambda: datetime.now(UTC), credentials=credentials)
    server = await start_smtp_server(handler, "127.0.0.1", 0)
    try:
        yield mailbox, server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
def sandbox_smtp() -> Callable[..., AbstractAsyncContextManager[tuple[Inbox, int]]]:
    """``_sandbox_smtp``, for a test that configures the server itself."""
    return _sandbox_smtp


@pytest.fixture
async def inbox() -> AsyncIterator[tuple[Inbox, int]]:
    """The sandbox SMTP server without credentials: (its inbox, its port)."""
    async with _sandbox_smtp() as served:
        yield served
