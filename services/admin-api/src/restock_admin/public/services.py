"""The public links' orchestration: verify the token, apply the consent event, choose the page."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from restock_admin.consent import Change, Event, Refused
from restock_admin.ports import AlreadyUsed, Applied, ConsentLedger, ContactAtShop, Evidence, Subscriptions
from restock_admin.public import pages
from restock_admin.public.ports import LinkReader
from restock_common.links import ExpiredLink, InvalidLink, LinkSigner

logger = logging.getLogger(__name__)

MAX_TOKEN_LENGTH = 512


class LinkService:
    """``/c/{token}`` and ``/u/{token}``."""

    def __init__(
        self,
        signer: LinkSigner,
        ledger: ConsentLedger,
        reader: LinkReader,
        confirm_max_age_seconds: int,
        clock: Callable[[], datetime],
    ) -> None:
        self.signer = signer
        self.ledger = ledger
        self.reader = reader
        self.confirm_max_age_seconds = confirm_max_age_seconds
        self.clock = clock

    async def confirm(self, token: str, ip_hash: str | None) -> pages.Page:
        """Confirm a pending subscription, once."""
        try:
            claims = self.signer.verify("confirm", token[:MAX_TOKEN_LENGTH], self.confirm_max_age_seconds)
        except ExpiredLink:
            return self._refused_link("expired", pages.EXPIRED)
        except InvalidLink:
            return self._refused_link("invalid", pages.INVALID)
        evidence = Evidence("email-link", ip_hash)
        result = await self.ledger.apply_once(
            claims.token_id, "confirm", claims.subscription_id, Event.CONFIRM, evidence, self.clock()
        )
        if isinstance(result, AlreadyUsed):
            return self._refused_link("reused", pages.USED, claims.subscription_id)
        self._log("confirmation link", result)
        if not result:
            return pages.GONE
        outcome = result[0].outcome
        return pages.refused(outcome.reason) if isinstance(outcome, Refused) else pages.CONFIRMED

    async def unsubscribe_page(self, token: str, action: str) -> pages.Page:
        """``GET /u/{token}``: the choice page (nothing changes on a GET: link scanners follow links)."""
        subscription_id = self._unsubscribe_claim(token)
        if subscription_id is None:
            return pages.INVALID
        if await self.reader.subscription(subscription_id) is None:
            return pages.GONE
        return pages.unsubscribe_choice(action)

    async def unsubscribe(
        self, token: str, whole_shop: bool, one_click: bool, ip_hash: str | None
    ) -> pages.Page:
        """``POST /u/{token}``: stop this alert, or every alert of this contact at this shop. Idempotent."""
        subscription_id = self._unsubscribe_claim(token)
        if subscription_id is None:
            return pages.INVALID
        evidence = Evidence(
            "list-unsubscribe" if one_click else "email-link",
            ip_hash,
            {"scope": "shop" if whole_shop else "this"},
        )
        known = await self.reader.subscription(subscription_id)
        if known is None:
            return pages.GONE
        target = (
            ContactAtShop(known.tenant_id, known.contact_hash)
            if whole_shop
            else Subscriptions((subscription_id,))
        )
        applied = await self.ledger.apply(target, Event.UNSUBSCRIBE, evidence, self.clock())
        self._log("unsubscribe link", applied)
        return pages.UNSUBSCRIBED_SHOP if whole_shop else pages.UNSUBSCRIBED

    def _unsubscribe_claim(self, token: str) -> int | None:
        try:
            return self.signer.verify("unsubscribe", token[:MAX_TOKEN_LENGTH]).subscription_id
        except InvalidLink:
            logger.info("public link refused", extra={"purpose": "unsubscribe", "verdict": "invalid"})
            return None

    @staticmethod
    def _refused_link(verdict: str, page: pages.Page, subscription_id: int | None = None) -> pages.Page:
        logger.info(
            "public link refused",
            extra={"purpose": "confirm", "verdict": verdict, "subscription_id": subscription_id},
        )
        return page

    @staticmethod
    def _log(what: str, applied: list[Applied]) -> None:
        for each in applied:
            logger.info(
                what,
                extra={
                    "tenant_id": each.tenant_id,
                    "subscription_id": each.subscription_id,
                    "before": each.before,
                    "after": each.outcome.state.value if isinstance(each.outcome, Change) else each.before,
                    "changed": isinstance(each.outcome, Change),
                },
            )
