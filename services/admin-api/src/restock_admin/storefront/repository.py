"""The storefront's ports on PostgreSQL (Piccolo)."""

from __future__ import annotations

from typing import Any

from restock_admin.storefront.ports import StoredSubscription, Subscribed
from restock_admin.storefront.signup import Signup
from restock_common.db.tables import ConsentEvent, Subscription, Tenant

_RETURNED = (
    Subscription.id,
    Subscription.variant_id,
    Subscription.channel,
    Subscription.state,
    Subscription.subscribed_at,
)


def _stored(row: dict[str, Any]) -> StoredSubscription:
    return StoredSubscription(
        id=row["id"],
        variant_id=row["variant_id"],
        channel=row["channel"],
        state=row["state"],
        subscribed_at=row["subscribed_at"],
    )


class PiccoloTenantDirectory:
    """Tenants from the ``tenants`` table."""

    async def installed_tenant_id(self, shop_domain: str) -> int | None:
        row = (
            await Tenant.select(Tenant.id)
            .where((Tenant.shop_domain == shop_domain) & Tenant.uninstalled_at.is_null())
            .first()
        )
        return None if row is None else int(row["id"])


class PiccoloSubscriptionStore:
    """Subscriptions and consent events, written together."""

    async def subscribe(self, signup: Signup) -> Subscribed:
        async with Subscription._meta.db.transaction():
            # The Unique constraint decides, not a prior SELECT: two concurrent identical signups
            # cannot both insert, and the loser reads the winner's row once it has committed.
            inserted = await (
                Subscription.insert(self._row(signup))
                .on_conflict(
                    target=(
                        Subscription.tenant,
                        Subscription.variant_id,
                        Subscription.channel,
                        Subscription.contact_hash,
                    ),
                    action="DO NOTHING",
                )
                .returning(*_RETURNED)
            )
            if not inserted:
                return Subscribed(await self._existing(signup), created=False)
            subscription = _stored(inserted[0])
            await ConsentEvent.insert(
                ConsentEvent(
                    tenant=signup.tenant_id,
                    subscription=subscription.id,
                    kind="subscribed",
                    source="storefront",
                    consent_text_version=signup.consent_text_version,
                    ip_hash=signup.ip_hash,
                    detail={"state": signup.state, "locale": signup.locale},
                    occurred_at=signup.subscribed_at,
                )
            )
            return Subscribed(subscription, created=True)

    @staticmethod
    def _row(signup: Signup) -> Subscription:
        return Subscription(
            tenant=signup.tenant_id,
            variant_id=signup.variant_id,
            product_id=signup.product_id,
            channel=signup.channel,
            email=signup.email,
            contact_hash=signup.contact_hash,
            locale=signup.locale,
            quantity=signup.quantity,
            state=signup.state,
            source="storefront",
            consent_text_version=signup.consent_text_version,
            ip_hash=signup.ip_hash,
            subscribed_at=signup.subscribed_at,
            confirmed_at=signup.confirmed_at,
        )

    @staticmethod
    async def _existing(signup: Signup) -> StoredSubscription:
        row = (
            await Subscription.select(*_RETURNED)
            .where(
                (Subscription.tenant == signup.tenant_id)
                & (Subscription.variant_id == signup.variant_id)
                & (Subscription.channel == signup.channel)
                & (Subscription.contact_hash == signup.contact_hash)
            )
            .first()
        )
        if row is None:  # ON CONFLICT saw a row this transaction cannot: only if it was deleted meanwhile
            raise RuntimeError("conflicting subscription vanished; the signup can be retried")
        return _stored(row)
