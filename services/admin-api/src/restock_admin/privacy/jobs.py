"""The privacy jobs: the retention run (a background task of the admin-api and a CLI command) and the
export of one contact's data (a CLI command, the merchant's answer to ``customers/data_request``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from datetime import datetime

from restock_admin.consent import Change, Event
from restock_admin.ports import ConsentLedger, Evidence, RetentionDue
from restock_admin.privacy.ports import ContactData, ShopRulesReader
from restock_admin.privacy.retention import cutoffs
from restock_common.db.engine import isolated
from restock_common.signatures import contact_hash

logger = logging.getLogger(__name__)

BATCH = 500


async def run_retention(
    shops: ShopRulesReader, ledger: ConsentLedger, now: datetime, batch: int = BATCH
) -> dict[int, int]:
    """One retention pass over every shop: subscriptions erased per tenant id (see ``retention``)."""
    erased: dict[int, int] = {}
    for shop in await shops.shops():
        due = cutoffs(shop.rules, now)
        target = RetentionDue(shop.tenant_id, due.unconfirmed_before, due.ended_before, batch)
        total = 0
        while True:
            applied = await ledger.apply(target, (Event.EXPIRE, Event.REDACT), Evidence("retention"), now)
            redacted = sum(
                isinstance(each.outcome, Change) and each.outcome.kind == "redacted" for each in applied
            )
            total += redacted
            if redacted < batch:
                break
        if total:
            erased[shop.tenant_id] = total
            logger.info(
                "retention erased personal data", extra={"tenant_id": shop.tenant_id, "subscriptions": total}
            )
    return erased


class RetentionTask:
    """``run_retention`` every ``interval_seconds`` in the serving process, from its start until its stop."""

    def __init__(
        self,
        shops: ShopRulesReader,
        ledger: ConsentLedger,
        clock: Callable[[], datetime],
        interval_seconds: float,
    ) -> None:
        self.shops = shops
        self.ledger = ledger
        self.clock = clock
        self.interval_seconds = interval_seconds
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="retention")

    async def stop(self) -> None:
        """Let the current pass finish its batch, then return."""
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                await isolated(run_retention(self.shops, self.ledger, self.clock()))
            except Exception:
                logger.exception("retention pass failed; next pass at the next interval")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval_seconds)


class UnknownShopError(LookupError):
    """The shop of an export is not registered."""


async def export_contact(data: ContactData, shop_domain: str, contact: str, actor: str) -> str:
    """The JSON export of one contact's data at one shop (``contact``: a normalised email or E.164 phone);
    audited. ``UnknownShopError`` when the shop is not registered."""
    tenant_id = await data.tenant_id(shop_domain)
    if tenant_id is None:
        raise UnknownShopError(shop_domain)
    exported = await data.export(tenant_id, contact_hash(contact))
    ids = [row["id"] for row in exported["subscriptions"]]
    await data.audit_export(tenant_id, actor, ids)
    document = {"shop": shop_domain, "contact_hash": contact_hash(contact), **exported}
    return json.dumps(document, indent=2, sort_keys=True, default=str)
