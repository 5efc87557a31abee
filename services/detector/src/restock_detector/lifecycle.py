"""The shop's lifecycle and Shopify's mandatory compliance webhooks, inside one webhook's transaction.

Rules
-----
- ``app/uninstalled``: the tenant is marked ``uninstalled_at``; from then on its webhooks are refused
  (404) and its armed variants never fire. Its data stays until ``shop/redact``.
- ``customers/data_request``: recorded in ``audit_log`` with the ids it names and the ids of the
  subscriptions we hold for that customer, for the operator to answer the merchant.
- ``customers/redact``: the shop's subscriptions of that customer (matched by ``contact_hash`` of the
  payload's email and phone, the only way we can match without storing contacts elsewhere) lose their
  email and phone and get ``redacted_at``; audited with their ids.
- ``shop/redact`` (48 h after an uninstall): the tenant row is deleted, and every row it owns with it by
  cascade; its audit row has no tenant, or the cascade would take it too.
Audit rows carry ids only: never an email address or a phone number.
"""

from __future__ import annotations

from datetime import datetime

from restock_common import signatures, telemetry
from restock_detector import payloads
from restock_detector.ports import AuditEntry, Tenant, UnitOfWork

ACTOR = "shopify"
PRIVACY_TOPICS = frozenset({payloads.CUSTOMERS_DATA_REQUEST, payloads.CUSTOMERS_REDACT, payloads.SHOP_REDACT})


async def uninstall(work: UnitOfWork, tenant: Tenant, now: datetime) -> dict[str, object]:
    """``app/uninstalled``."""
    await work.mark_uninstalled(tenant.id, now)
    await work.audit(_entry(tenant.id, "app.uninstalled", "shop", [], {"shop_domain": tenant.shop_domain}))
    return {"status": "uninstalled"}


async def privacy(
    work: UnitOfWork, tenant: Tenant, topic: str, request: payloads.PrivacyRequest, now: datetime
) -> dict[str, object]:
    """One of ``PRIVACY_TOPICS``."""
    detail = _named_ids(request)
    action = f"privacy.{topic}"
    if topic == payloads.SHOP_REDACT:
        await work.delete_tenant(tenant.id)
        detail |= {"tenant_id": tenant.id, "shop_domain": tenant.shop_domain}
        await work.audit(_entry(None, action, "shop", [request.shop_id], detail))
        return {"status": "deleted"}
    hashes = _contact_hashes(request.customer)
    if topic == payloads.CUSTOMERS_REDACT:
        ids = await work.redact_contacts(tenant.id, hashes, now) if hashes else []
        status = "redacted"
    else:
        ids = await work.subscriptions_of(tenant.id, hashes) if hashes else []
        status = "recorded"
    customer = [request.customer.id] if request.customer and request.customer.id is not None else []
    await work.audit(_entry(tenant.id, action, "customer", customer, detail | {"subscription_ids": ids}))
    return {"status": status, "subscriptions": len(ids)}


def _named_ids(request: payloads.PrivacyRequest) -> dict[str, object]:
    detail: dict[str, object] = {"shop_id": request.shop_id}
    if request.customer is not None and request.customer.id is not None:
        detail["customer_id"] = request.customer.id
    if request.orders_requested:
        detail["orders_requested"] = request.orders_requested
    if request.orders_to_redact:
        detail["orders_to_redact"] = request.orders_to_redact
    if request.data_request is not None and request.data_request.id is not None:
        detail["data_request_id"] = request.data_request.id
    return detail


def _contact_hashes(customer: payloads.Customer | None) -> list[str]:
    if customer is None:
        return []
    contacts = (contact for contact in (customer.email, customer.phone) if contact and contact.strip())
    return sorted({signatures.contact_hash(contact) for contact in contacts})


def _entry(
    tenant_id: int | None, action: str, target_type: str, target_ids: list[int], detail: dict[str, object]
) -> AuditEntry:
    return AuditEntry(tenant_id, action, target_type, target_ids, detail, telemetry.current_trace_id())
