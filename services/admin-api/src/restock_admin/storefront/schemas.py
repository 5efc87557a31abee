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
    channel: Channel = "email"
    email: Annotated[str, msgspec.Meta(min_length=3, max_length=320)] | None = None
    phone: Annotated[str, msgspec.Meta(min_length=3, max_length=32)] | None = None
    # The storefront's country (ISO 3166-1 alpha-2, Liquid's ``localization.country.iso_code``): the region a
    # phone number written without its +country code is read in. Without it, only +E.164 numbers parse.
    country: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z]{2}$")] | None = None
    # The shopper ticked the consent box. Required (true) for SMS; for email the submitted form is the
    # request itself, but an explicit ``false`` is still a refusal.
    consent: bool | None = None
    product_id: PositiveId | None = None
    locale: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$", max_length=16)] = (
        "en"
    )
    quantity: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 1
    # The version of the consent wording the widget showed, kept as evidence with the signup.
    consent_text_version: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._-]{1,32}$")] = "v1"


class SubscriptionOut(msgspec.Struct, frozen=True, kw_only=True):
    """A subscription as the storefront sees it (no contact details). ``state`` ``pending`` means: a
    confirmation is on its way (check your inbox / reply YES)."""

    id: int
    variant_id: int
    channel: str
    state: str
    subscribed_at: datetime


class ViewBeacon(msgspec.Struct, frozen=True, kw_only=True):
    """A product page view, for the signup-rate KPI: a variant id and nothing about the viewer."""

    variant_id: PositiveId
