"""Fixtures of the sender's integration tests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from restock_common import keys
from restock_common.db.tables import InventoryItem, NotificationJob, RestockEvent, Subscription, Tenant
from restock_common.signatures import contact_hash

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
