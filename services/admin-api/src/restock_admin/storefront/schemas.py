"""The storefront API's bodies (msgspec; Litestar validates a request: 400 with the reason)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

from restock_common.messages import Channel

PositiveId = Annotated[int, msgspec.Meta(gt=0, le=2**63 - 1)]


class SubscribeRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A "Notify me" form. Unknown fields are ignored so an older widget and a newer API get along."""

    variant_id: PositiveId
    email: Annotated[str, msgspec.Meta(min_length=3, max_length=320)]
    channel: Channel = "email"
    product_id: PositiveId | None = None
    locale: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$", max_length=16)] = (
        "en"
    )
    quantity: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 1
    # The version of the consent wording the widget showed, kept as evidence with the signup.
    consent_text_version: Annotated[str, msgspec.Meta(min_length=1, max_length=32)] = "v1"


class SubscriptionOut(msgspec.Struct, frozen=True, kw_only=True):
    """A subscription as the storefront sees it (no contact details)."""

    id: int
    variant_id: int
    channel: str
    state: str
    subscribed_at: datetime
