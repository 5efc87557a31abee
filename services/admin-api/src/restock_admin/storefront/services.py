"""Storefront signups: the orchestration between the HTTP controller, the pure rules and the ports."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from restock_admin.storefront.ports import Subscribed, SubscriptionStore, TenantDirectory
from restock_admin.storefront.schemas import SubscribeRequest
from restock_admin.storefront.signup import build_signup

logger = logging.getLogger(__name__)


class UnknownShop(LookupError):
    """The shop is not registered, or uninstalled the app."""


class SignupService:
    """Turns a verified App Proxy request into a subscription."""

    def __init__(
        self,
        tenants: TenantDirectory,
        subscriptions: SubscriptionStore,
        secret: str,
        clock: Callable[[], datetime],
    ) -> None:
        self.tenants = tenants
        self.subscriptions = subscriptions
        self.secret = secret
        self.clock = clock

    async def subscribe(self, shop_domain: str, form: SubscribeRequest, client_ip: str | None) -> Subscribed:
        """Subscribe (idempotently); ``UnknownShop`` or ``SignupRejected`` when it cannot."""
        tenant_id = await self.tenants.installed_tenant_id(shop_domain)
        if tenant_id is None:
            raise UnknownShop(shop_domain)
        signup = build_signup(tenant_id, form, client_ip, self.secret, self.clock())
        result = await self.subscriptions.subscribe(signup)
        logger.info(
            "storefront signup",
            extra={
                "tenant_id": tenant_id,
                "subscription_id": result.subscription.id,
                "variant_id": signup.variant_id,
                "contact_hash": signup.contact_hash,
                "new_subscription": result.created,
            },
        )
        return result
