"""``ports.LinkReader`` on PostgreSQL."""

from __future__ import annotations

from restock_admin.public.ports import LinkedSubscription
from restock_common.db.tables import Subscription


class PiccoloLinkReader:
    """Subscriptions by id."""

    async def subscription(self, subscription_id: int) -> LinkedSubscription | None:
        row = (
            await Subscription.select(
                Subscription.id, Subscription.tenant, Subscription.contact_hash, Subscription.state
            )
            .where(Subscription.id == subscription_id)
            .first()
        )
        if row is None:
            return None
        return LinkedSubscription(row["id"], row["tenant"], row["contact_hash"], row["state"])
