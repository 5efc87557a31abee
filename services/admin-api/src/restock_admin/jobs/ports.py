"""The admin API's job ports; the adapter in ``repository.py``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from restock_admin.jobs.schemas import JobOut


class JobReader(Protocol):
    """A shop's notification jobs, read for operators."""

    async def page(
        self, tenant_id: int, states: Sequence[str], limit: int, before_id: int | None
    ) -> list[JobOut]:
        """Up to ``limit`` of the shop's jobs in ``states`` with an id below ``before_id`` (None: from the
        newest), newest first."""
        ...
