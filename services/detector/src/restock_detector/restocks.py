"""Recording a restock: the restock event and its ``restock.detected`` outbox message, in the caller's
transaction and in one statement. One code path for both ways a restock fires: at once from a webhook (no
debounce) and when an armed variant's debounce ends (the scheduler, or the next webhook for that variant)."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime

from restock_common import keys, messages, telemetry
from restock_common.rules import Rules
from restock_detector.ports import NewRestock, RestockMessage, Tenant, VariantRef, VariantWrites

log = logging.getLogger(__name__)


async def record_restock(
    work: VariantWrites,
    tenant: Tenant,
    variant: VariantRef,
    available: int,
    at: datetime,
    rules: Rules,
    source: str = "webhook",
) -> int | None:
    """Write the restock (fired ``at``) and its outbox message; returns the restock event id (None: ``work``
    collects writes for later, and whoever writes them logs the id). The caller wakes the relay after its
    transaction commits."""
    traceparent = telemetry.current_traceparent()
    window = keys.restock_window(at, rules.restock_window_seconds)
    event = messages.RestockDetected(
        restock_event_id=EVENT_ID_PLACEHOLDER,
        tenant_id=tenant.id,
        shop_domain=tenant.shop_domain,
        variant_id=variant.variant_id,
        product_id=variant.product_id,
        available=available,
        restock_window=window,
        detected_at=at,
    )
    before, after = around_event_id(messages.encode(event).decode())
    event_id = await work.record_restock(
        NewRestock(
            tenant.id, variant.variant_id, variant.product_id, available, window, at, traceparent, source
        ),
        RestockMessage(uuid.uuid4(), f"{tenant.id}:{variant.variant_id}", before, after, traceparent),
    )
    if event_id is not None:
        log_restock(tenant.id, variant.variant_id, event_id)
    return event_id


def log_restock(tenant_id: int, variant_id: int, restock_event_id: int) -> None:
    log.info(
        "restock detected",
        extra={"tenant_id": tenant_id, "variant_id": variant_id, "restock_event_id": restock_event_id},
    )


# The event's id is known only once its row is inserted, in the same statement as the outbox row: the
# message is encoded with this stand-in and the statement writes the real id in its place.
EVENT_ID_PLACEHOLDER = -1


def around_event_id(encoded: str) -> tuple[str, str]:
    """The encoded ``RestockDetected`` before and after its placeholder id: joined around a real id they are
    exactly the message encoded with that id (msgspec writes an int as its decimal digits)."""
    key = f'"restock_event_id":{EVENT_ID_PLACEHOLDER}'
    before, found, after = encoded.partition(key)
    if not found or key in after:
        raise ValueError("the encoded restock must name its placeholder id exactly once")
    return before + '"restock_event_id":', after
