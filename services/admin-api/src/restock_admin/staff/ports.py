"""The staff side's ports; adapters in ``repository.py``, fakes in the unit tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class StaffAccess:
    """An installed shop's tenant, and the staff user's role there (None: no grant)."""

    tenant_id: int
    role: str | None


class StaffDirectory(Protocol):
    """Which shops are installed and who of their staff may do what."""

    async def access(self, shop_domain: str, user_id: str) -> StaffAccess | None:
        """The shop's tenant and the user's role; None when the shop is unknown or uninstalled."""
        ...


class StaffGrants(Protocol):
    """Where roles are granted and revoked, each change audited."""

    async def grant(self, shop_domain: str, user_id: str, role: str, actor: str) -> bool:
        """Give (or change) the user's role at the shop; False when the shop is not registered."""
        ...

    async def revoke(self, shop_domain: str, user_id: str, actor: str) -> bool:
        """Take the user's role at the shop away; False when there was none."""
        ...
