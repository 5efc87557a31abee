"""Recording a restock: the restock event and its ``restock.detected`` outbox message, in the caller's
transaction. One code path for both ways a restock fires: at once from a webhook (no debounce) and when
an armed variant's debounce ends (the scheduler, or the next webhook for that variant)."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime

from restock_common import keys, messages, telemetry, topology
from restock_common.rules import Rules
from restock_detector.ports import NewRestock, OutboxMessage, Tenant, UnitOfWork, VariantRef

log = logging.getLogger(__name__)


async def record_restock(
    work: UnitOfWork,
    tenant: Tenant,
    variant: VariantRef,
    available: int,
    at: datetime,
    rules: Rules,
    source: str = "webhook",
) -> int:
    """Write the restock (fired ``at``) and its outbox message; returns the restock event id. The caller
    wakes the relay after its transaction commits."""
    traceparent = telemetry.current_traceparent()
    window = keys.restock_window(at, rules.restock_window_seconds)
    event_id = await work.record_restock(
        NewRestock(
            tenant.id, variant.variant_id, variant.product_id, available, window, at, traceparent, source
        )
    )
    event = messages.RestockDetected(
        restock_event_id=event_id,
        tenant_id=tenant.id,
        shop_domain=tenant.shop_domain,
        variant_id=variant.variant_id,
        product_id=variant.product_id,
        available=available,
        restock_window=window,
        detected_at=at,
    )
    await work.enqueue(
        OutboxMessage(
            tenant.id,
            topology.RESTOCK_DETECTED,
            uuid.uuid4(),
            f"{tenant.id}:{variant.variant_id}",
            messages.encode(event).decode(),
            traceparent,
        )
    )
    log.info(
        "restock detected",
        extra={"tenant_id": tenant.id, "variant_id": variant.variant_id, "restock_event_id": event_id},
    )
    return event_id
