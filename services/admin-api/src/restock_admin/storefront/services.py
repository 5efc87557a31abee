"""Storefront signups and view beacons: the orchestration between the HTTP controller, the pure rules and
the ports. Refusals are exceptions the controller maps to 4xx answers; nothing is written before every
check passed."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from restock_admin.storefront import limits
from restock_admin.storefront.ports import (
    HitCounter,
    PendingElsewhere,
    ShopDirectory,
    Subscribed,
    SubscriptionStore,
    ViewCounter,
)
from restock_admin.storefront.schemas import SubscribeRequest
from restock_admin.storefront.signup import build_signup, hash_ip

logger = logging.getLogger(__name__)


class UnknownShop(LookupError):
    """The shop is not registered, or uninstalled the app."""


class UnknownVariant(LookupError):
    """The variant is not in the shop's synced catalogue."""


class PendingConfirmation(RuntimeError):
    """The contact has another unconfirmed subscription at this shop (the double opt-in abuse guard)."""


class RateLimited(RuntimeError):
    """Too many signups from this IP or for this contact; retry after ``retry_after`` seconds."""

    def __init__(self, limit: str, retry_after: int) -> None:
        super().__init__(f"too many signups ({limit}); retry after {retry_after} s")
        self.limit = limit
        self.retry_after = retry_after


@dataclass(frozen=True)
class SignupLimits:
    """The two signup limits (``restock_admin.storefront.limits``)."""

    per_ip: limits.Limit
    per_contact: limits.Limit


class SignupService:
    """Turns a verified App Proxy request into a subscription."""

    def __init__(
        self,
        shops: ShopDirectory,
        subscriptions: SubscriptionStore,
        counter: HitCounter,
        signup_limits: SignupLimits,
        secret: str,
        clock: Callable[[], datetime],
    ) -> None:
        self.shops = shops
        self.subscriptions = subscriptions
        self.counter = counter
        self.limits = signup_limits
        self.secret = secret
        self.clock = clock

    async def subscribe(self, shop_domain: str, form: SubscribeRequest, client_ip: str | None) -> Subscribed:
        """Subscribe (idempotently), or raise ``RateLimited``, ``UnknownShop``, ``SignupRejected``
        (``ConsentMissing``), ``UnknownVariant`` or ``PendingConfirmation``."""
        now = self.clock()
        ip_hash = hash_ip(client_ip, self.secret)
        await self._within(self.limits.per_ip, ip_hash or "unknown", now)
        shop = await self.shops.signup_context(shop_domain, form.variant_id)
        if shop is None:
            raise UnknownShop(shop_domain)
        signup = build_signup(shop.tenant_id, form, shop.double_opt_in, ip_hash, now)
        # A shop whose catalogue is not synced yet cannot tell: the signup is taken (ADR 17).
        if shop.variant_known is False:
            raise UnknownVariant(form.variant_id)
        await self._within(self.limits.per_contact, f"{shop.tenant_id}:{signup.contact_hash}", now)
        result = await self.subscriptions.subscribe(signup)
        if isinstance(result, PendingElsewhere):
            raise PendingConfirmation(signup.contact_hash)
        logger.info(
            "storefront signup",
            extra={
                "tenant_id": shop.tenant_id,
                "subscription_id": result.subscription.id,
                "variant_id": signup.variant_id,
                "channel": signup.channel,
                "contact_hash": signup.contact_hash,
                "state": result.subscription.state,
                "new_subscription": result.created,
                "confirmation_requested": result.confirmation_requested,
            },
        )
        return result

    async def _within(self, limit: limits.Limit, subject: str, now: datetime) -> None:
        current = limits.window(limit, subject, now)
        hits = await self.counter.hit(current.key, limit.window_seconds + 1)
        wait = None if hits is None else limits.retry_after(limit, hits, current)
        if wait is not None:
            logger.warning("signup rate limited", extra={"limit": limit.name, "retry_after_seconds": wait})
            raise RateLimited(limit.name, wait)


class ViewService:
    """Counts storefront product views per variant per UTC day."""

    def __init__(self, views: ViewCounter, clock: Callable[[], datetime]) -> None:
        self.views = views
        self.clock = clock

    async def count(self, shop_domain: str, variant_id: int) -> None:
        """Count one view, or raise ``UnknownShop``."""
        if not await self.views.count_view(
            shop_domain, variant_id, self.clock().astimezone(UTC).date().isoformat()
        ):
            raise UnknownShop(shop_domain)
