"""The privacy jobs' reads; adapters in ``repository.py`` (writes go through the consent ledger)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from restock_common.rules import Rules


@dataclass(frozen=True)
class ShopRules:
    """One installed shop and its rules."""

    tenant_id: int
    rules: Rules


class ShopRulesReader(Protocol):
    """The shops the retention job covers."""

    async def shops(self) -> list[ShopRules]:
        """Every shop that still has data (installed or not yet redacted), with its rules."""
        ...


class ContactData(Protocol):
    """One contact's data at one shop, for an export."""

    async def tenant_id(self, shop_domain: str) -> int | None:
        """The shop's tenant id (installed or not), None when unknown."""
        ...

    async def export(self, tenant_id: int, contact_hash: str) -> dict[str, list[dict[str, Any]]]:
        """The contact's subscriptions, consent events and notification log metadata (JSON-ready)."""
        ...

    async def audit_export(self, tenant_id: int, actor: str, subscription_ids: list[int]) -> None:
        """Record the export in ``audit_log`` (ids only)."""
        ...
